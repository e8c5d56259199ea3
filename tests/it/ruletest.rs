//! `palisade test` and the analysts' guide: the shipped rules load and pass their tests, every
//! shipped rule has a case that makes it fire, a failing case prints its diff and exits 1, and
//! every example in `rules/README.md` is what palisade really prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade::detect::sigma::SigmaDocument;
use palisade::ruletest::{is_test_file, spec};

use crate::support::bin;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `palisade ARGS` in `dir` with the demo pseudonymisation key: stdout and exit code.
fn palisade(dir: &Path, args: &[&str]) -> (String, i32) {
    let out = bin()
        .args(args)
        .current_dir(dir)
        .env_remove("PALISADE_PSEUDONYM_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = out.status.code().unwrap_or(-1);
    (stdout, code)
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, target).unwrap();
    }
}

#[test]
fn shipped_rules_load_and_pass_their_tests() {
    // One rule per shipped rule file.
    let shipped = files(&repo().join("rules"))
        .iter()
        .filter(|f| palisade::detect::is_rule_file(f))
        .count();
    assert!(shipped >= 16, "{shipped}");
    let (out, code) = palisade(&repo(), &["check", "rules"]);
    assert_eq!(
        (out, code),
        (
            format!("checked {shipped} rules: {shipped} ok, 0 failed\n"),
            0
        )
    );

    let (out, code) = palisade(&repo(), &["test", "rules"]);
    assert_eq!(code, 0, "{out}");
    let cases: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("test ") && !l.starts_with("test result"))
        .collect();
    assert!(cases.len() >= 20, "{out}");
    assert!(cases.iter().all(|l| l.ends_with(" ... ok")), "{out}");
    let files: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" tests from ").map(|(_, f)| f))
        .collect();
    assert_eq!(
        files,
        [
            "rules/auth/auth.tests.yml",
            "rules/equipment/equipment.tests.yml",
            "rules/equipment/pumps.tests.yml",
            "rules/network/network.tests.yml",
            "rules/physical/badge_revoked.tests.yml",
            "rules/physical/sensor_limits.tests.yml",
            "rules/scada/scada.tests.yml",
        ]
    );
    assert!(
        out.ends_with(&format!(
            "\ntest result: ok. {} passed; 0 failed\n",
            cases.len()
        )),
        "{out}"
    );
}

#[test]
fn every_shipped_rule_has_a_case_that_makes_it_fire() {
    let all = files(&repo().join("rules"));
    let mut expected = BTreeSet::new();
    for file in all.iter().filter(|f| is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        let tests = spec::parse(&text).unwrap();
        for case in &tests.cases {
            expected.extend(case.expect.iter().map(|e| e.rule.name.clone()));
        }
    }
    let mut untested = Vec::new();
    for file in &all {
        let text = std::fs::read_to_string(file).unwrap();
        // A rule may be named by its id or, for Sigma, its name.
        let names: Vec<String> = if file.extension().is_some_and(|e| e == "sql") {
            text.lines()
                .filter_map(|l| l.strip_prefix("-- id:"))
                .map(|id| id.trim().to_string())
                .collect()
        } else if palisade::detect::baseline::rule::is_baseline_file(file) {
            vec![
                palisade::detect::baseline::rule::parse(file, &text)
                    .unwrap()
                    .id,
            ]
        } else if file.extension().is_some_and(|e| e == "yml") && !is_test_file(file) {
            palisade::detect::sigma::parse(file, &text)
                .unwrap()
                .into_iter()
                .filter_map(|d| match d {
                    SigmaDocument::Rule(r) => Some(r.meta),
                    _ => None,
                })
                .flat_map(|m| m.id.into_iter().chain(m.name))
                .collect()
        } else {
            continue;
        };
        if !names.iter().any(|n| expected.contains(n)) {
            untested.push(file.display().to_string());
        }
    }
    assert!(
        untested.is_empty(),
        "rules no test case expects an alert from: {untested:?}"
    );
}

#[test]
fn a_failing_case_prints_its_diff_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("doors")).unwrap();
    std::fs::copy(
        repo().join("rules/physical/badge_revoked.yml"),
        dir.path().join("doors/badge_revoked.yml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("doors/badge_revoked.tests.yml"),
        "rules: [badge_revoked_attempt]
tests:
  - name: a revoked badge denied at a door fires
    stream: badge
    events:
      - {ts: 2026-01-05T02:30:00Z, badge_id: B-1042, holder: ann, site: pump-3, door: d1, zone: z, result: denied, reason: revoked}
    expect:
      - {rule: badge_revoked_attempt, entity: B-1042}
  - name: an expired badge is not this rule's business
    stream: badge
    events:
      - {ts: 2026-01-05T02:31:00Z, badge_id: B-7, holder: bob, site: pump-3, door: d1, zone: z, result: denied, reason: revoked}
    expect: []
",
    )
    .unwrap();
    let (out, code) = palisade(dir.path(), &["test", "doors"]);
    assert_eq!(
        out,
        r#"running 2 tests from doors/badge_revoked.tests.yml
test a revoked badge denied at a door fires ... ok
test an expired badge is not this rule's business ... FAILED

failures:

---- an expired badge is not this rule's business ----
expected alerts:
  (none)
actual alerts:
  badge_revoked_attempt  entity=B-7  x1
      evidence {"badge_id":"B-7","door":"d1","holder":"bob","reason":"revoked","result":"denied","site":"pump-3","zone":"z"}
diff:
+ badge_revoked_attempt  entity=B-7  x1

test result: FAILED. 1 passed; 1 failed
"#
    );
    assert_eq!(code, 1);

    // A mistake in the file itself is not a failing case: exit 2, with its position.
    std::fs::write(
        dir.path().join("doors/badge_revoked.tests.yml"),
        "tests:\n  - name: n\n    stream: badge\n    events: [{ts: 1}]\n    expcet: []\n",
    )
    .unwrap();
    let (out, code) = palisade(dir.path(), &["test", "doors/badge_revoked.tests.yml"]);
    assert!(
        out.starts_with(
            "error: doors/badge_revoked.tests.yml:5:5: unknown key `expcet` in a test case"
        ),
        "{out}"
    );
    assert_eq!(code, 2);
}

/// A fenced block of the README: its info string and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    lines: Vec::new(),
                    line: n + 1,
                })
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(block), _) => block.lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

/// The README, from top to bottom, in a copy of the rules folder: a block with `file=PATH` in
/// its info string writes that file; a `console` block runs each `$ palisade ...` command and
/// compares its stdout with the lines that follow, and its exit code with `exit=N` (default 0).
#[test]
fn the_rule_writing_guide_shows_what_palisade_prints() {
    let readme = std::fs::read_to_string(repo().join("rules/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("rules"), &dir.path().join("rules"));
    let mut commands = 0;
    for block in blocks(&readme) {
        let mut words = block.info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let attr = |key: &str| {
            block
                .info
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if let Some(path) = attr("file") {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, block.lines.join("\n") + "\n").unwrap();
        }
        if lang != "console" {
            continue;
        }
        let exit: i32 = attr("exit").map_or(0, |e| e.parse().unwrap());
        let mut rest = block.lines.as_slice();
        while let Some((command, after)) = rest.split_first() {
            let args: Vec<&str> = command
                .strip_prefix("$ palisade ")
                .unwrap_or_else(|| {
                    panic!(
                        "README.md:{}: a console block runs `$ palisade ...`",
                        block.line
                    )
                })
                .split_whitespace()
                .collect();
            let end = after
                .iter()
                .position(|l| l.starts_with("$ "))
                .unwrap_or(after.len());
            let expected = after[..end].join("\n");
            let (out, code) = palisade(dir.path(), &args);
            assert_eq!(
                out.trim_end(),
                expected.trim_end(),
                "README.md:{}: `{command}` printed otherwise",
                block.line
            );
            assert_eq!(
                code, exit,
                "README.md:{}: `{command}` exit code",
                block.line
            );
            commands += 1;
            rest = &after[end..];
        }
    }
    assert!(
        commands >= 7,
        "only {commands} commands found in the README"
    );
}
