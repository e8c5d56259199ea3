//! Rule plan tests: real SigmaHQ rules over a small process-creation batch, the condition
//! semantics (neq, null, absent columns, keywords across columns, refused rules), placeholders,
//! field references and time modifiers through the rule parser, and the whole corpus in one
//! plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, LargeStringArray, StringArray,
    StringViewArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{Field, Schema};

use super::*;
use crate::detect::sigma::rule::{SigmaDocument, parse};

fn rule_from(name: &str, text: &str) -> SigmaRule {
    let docs = parse(Path::new(name), text).unwrap_or_else(|e| panic!("{e}"));
    match docs.into_iter().next() {
        Some(SigmaDocument::Rule(r)) => r,
        other => panic!("{name}: not a rule: {other:?}"),
    }
}

fn corpus_rule(file: &str) -> SigmaRule {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/sigma/rules/windows/process_creation")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    rule_from(file, &text)
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

/// The rows each rule selects.
fn selected(plan: &SigmaPlan, batch: &RecordBatch) -> Vec<Vec<usize>> {
    plan.evaluate(batch)
        .unwrap()
        .iter()
        .map(|b| b.set_indices().collect())
        .collect()
}

#[test]
fn real_process_creation_rules_select_the_right_rows() {
    let files = [
        "proc_creation_win_7zip_password_compression.yml",
        "proc_creation_win_attrib_hiding_files.yml",
        "proc_creation_win_bcdedit_boot_conf_tamper.yml",
        "proc_creation_win_certoc_load_dll.yml",
    ];
    let mut b = PlanBuilder::new();
    for (i, f) in files.iter().enumerate() {
        assert_eq!(b.add_rule(&corpus_rule(f)).unwrap(), i);
    }
    let plan = b.build().unwrap();
    // Row by row: what it is, then which rule (if any) must fire.
    let rows: [[Option<&str>; 6]; 11] = [
        // Image, OriginalFileName, Description, CommandLine, ParentImage, ParentCommandLine
        // 0: 7-Zip with a password: 7zip rule.
        [
            Some(r"C:\Program Files\7-Zip\7z.exe"),
            Some("7z.exe"),
            Some("7-Zip Console"),
            Some(r"7z.exe a -pSecret out.7z C:\lsass.dmp"),
            Some(r"C:\Windows\explorer.exe"),
            None,
        ],
        // 1: 7-Zip without a password: nothing.
        [
            Some(r"C:\Program Files\7-Zip\7z.exe"),
            None,
            Some("7-Zip Console"),
            Some("7z.exe a out.7z notes.txt"),
            None,
            None,
        ],
        // 2: attrib hiding a file: attrib rule.
        [
            Some(r"C:\Windows\System32\attrib.exe"),
            None,
            None,
            Some(r"attrib.exe +h +s C:\Users\x\evil.exe"),
            Some(r"C:\Windows\explorer.exe"),
            None,
        ],
        // 3: attrib on desktop.ini: filtered (filter_main_msiexec).
        [
            Some(r"C:\Windows\System32\ATTRIB.EXE"),
            None,
            None,
            Some(r"attrib +s +h C:\Users\x\desktop.ini /S"),
            None,
            None,
        ],
        // 4: the Intel driver install: filtered (escaped `\*` are literal stars).
        [
            Some(r"C:\Windows\System32\attrib.exe"),
            None,
            None,
            Some(r"+R +H +S +A \*.cui"),
            Some(r"C:\Windows\System32\cmd.exe"),
            Some(r"C:\WINDOWS\system32\*.bat"),
        ],
        // 5: same, but a different batch file: the filter does not apply, the rule fires.
        [
            Some(r"C:\Windows\System32\attrib.exe"),
            None,
            None,
            Some(r"+R +H +S +A \*.cui"),
            Some(r"C:\Windows\System32\cmd.exe"),
            Some(r"C:\WINDOWS\system32\setup.bat"),
        ],
        // 6: renamed bcdedit disabling recovery: bcdedit rule (OriginalFileName, `all`).
        [
            Some(r"C:\Temp\b.exe"),
            Some("bcdedit.exe"),
            None,
            Some("b.exe /set {default} recoveryenabled No"),
            None,
            None,
        ],
        // 7: bcdedit with only one of the two `all` values: nothing.
        [
            Some(r"C:\Windows\System32\bcdedit.exe"),
            None,
            None,
            Some("bcdedit /set {default} bootstatuspolicy displayallfailures"),
            None,
            None,
        ],
        // 8: certoc loading a DLL with a slash (windash variant): certoc rule.
        [
            Some(r"C:\Windows\System32\certoc.exe"),
            None,
            None,
            Some(r"certoc.exe /LoadDLL C:\x.dll"),
            None,
            None,
        ],
        // 9: the right command line from another program: nothing.
        [
            Some(r"C:\Windows\System32\notcertoc.exe.bak"),
            None,
            None,
            Some(r"x.exe -LoadDLL C:\x.dll"),
            None,
            None,
        ],
        // 10: an empty event: nothing.
        [None, None, None, None, None, None],
    ];
    let col = |i: usize| -> Vec<Option<&str>> { rows.iter().map(|r| r[i]).collect() };
    // Mixed string layouts, as different decoders produce them.
    let batch = batch(vec![
        ("Image", Arc::new(StringArray::from(col(0)))),
        ("OriginalFileName", Arc::new(StringArray::from(col(1)))),
        ("Description", Arc::new(StringViewArray::from(col(2)))),
        ("CommandLine", Arc::new(LargeStringArray::from(col(3)))),
        ("ParentImage", Arc::new(StringArray::from(col(4)))),
        ("ParentCommandLine", Arc::new(StringArray::from(col(5)))),
    ]);
    assert_eq!(
        selected(&plan, &batch),
        [vec![0], vec![2, 5], vec![6], vec![8]]
    );
}

const SYNTHETIC: &str = r"title: ports
logsource:
    category: test
detection:
    sel_user:
        User|neq: 'admin'
    sel_port:
        DestPort|gte: 1024
    filter:
        Host: null
    condition: all of sel_* and not filter
---
title: keywords
logsource:
    category: test
detection:
    keywords:
        - 'mimikatz'
        - 'sekurlsa'
    absent:
        NotInBatch: null
    condition: keywords and absent
---
title: missing column
logsource:
    category: test
detection:
    sel:
        NotInBatch|contains: 'x'
    condition: not sel
---
title: or of lists
logsource:
    category: test
detection:
    a:
        User:
            - bob
            - carol
    b:
        DestPort|lt: 2001
    c:
        - Cmd|contains: mimikatz
        - Host: h3
    condition: (a or b) and not c
";

#[test]
fn negation_nulls_absent_columns_and_keywords() {
    let docs = parse(Path::new("s.yml"), SYNTHETIC).unwrap();
    let mut b = PlanBuilder::new();
    for d in &docs {
        let SigmaDocument::Rule(r) = d else { panic!() };
        b.add_rule(r).unwrap();
    }
    let plan = b.build().unwrap();
    let batch = batch(vec![
        (
            "User",
            Arc::new(StringArray::from(vec![
                Some("admin"),
                Some("bob"),
                None,
                Some("carol"),
            ])),
        ),
        (
            "DestPort",
            Arc::new(Int64Array::from(vec![2000, 80, 4444, 8080])),
        ),
        (
            "Host",
            Arc::new(StringArray::from(vec![
                Some("mimikatz-host"),
                Some("h2"),
                Some("h3"),
                None,
            ])),
        ),
        (
            "Cmd",
            Arc::new(StringArray::from(vec![
                None,
                Some("run mimikatz"),
                Some("x"),
                Some("SEKURLSA::x"),
            ])),
        ),
    ]);
    assert_eq!(
        selected(&plan, &batch),
        [
            // Row 2: a null user is not `admin` (`neq` is the negation of the match); row 3:
            // no host, filtered.
            vec![2],
            // Keywords found in any string column, case-insensitively.
            vec![0, 1, 3],
            vec![0, 1, 2, 3],
            // (a or b): rows 0, 1, 3; c (either map of the list): rows 1, 2.
            vec![0, 3],
        ]
    );
}

#[test]
fn a_refused_rule_is_located_and_leaves_the_plan_unchanged() {
    let mut b = PlanBuilder::new();
    let ok = rule_from(
        "ok.yml",
        "title: ok\nlogsource:\n    category: t\ndetection:\n    sel:\n        A: x\n    condition: sel\n",
    );
    assert_eq!(b.add_rule(&ok).unwrap(), 0);
    // The second entry is refused after the first was checked: neither is registered.
    let unresolved = rule_from(
        "f.yml",
        "title: f\nlogsource:\n    category: t\ndetection:\n    sel:\n        A: x\n        B|expand: '%servers%'\n    condition: sel\n",
    );
    let err = b.add_rule(&unresolved).unwrap_err();
    assert_eq!(err.source.feature, "expand");
    assert_eq!((err.pos.line, err.pos.column), (7, 19));
    let located = err.into_sigma_error(Path::new("f.yml"));
    assert!(located.is_unsupported());
    assert!(
        located
            .to_string()
            .starts_with("f.yml:7:19: unsupported feature `expand`: placeholder `%servers%`"),
        "{located}"
    );
    assert_eq!(b.add_rule(&ok).unwrap(), 1);
    let plan = b.build().unwrap();
    assert_eq!(plan.rules(), 2);
    let batch = batch(vec![(
        "A",
        Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
    )]);
    assert_eq!(selected(&plan, &batch), [vec![0], vec![0]]);
    // Nothing of the refused rule was registered: `A` has only the two `x` slots.
    assert_eq!(plan.columns.len(), 1);
    assert_eq!(plan.columns[0].1.slots(), 2);
}

#[test]
fn a_column_of_an_unreadable_type_is_an_error() {
    let mut b = PlanBuilder::new();
    b.add_rule(&rule_from(
        "d.yml",
        "title: d\nlogsource:\n    category: t\ndetection:\n    sel:\n        D: 3\n    condition: sel\n",
    ))
    .unwrap();
    let plan = b.build().unwrap();
    let batch = batch(vec![(
        "D",
        Arc::new(Date32Array::from(vec![3])) as ArrayRef,
    )]);
    let err = plan.evaluate(&batch).unwrap_err();
    assert_eq!(err.column, "D");
}

/// Every process-creation rule of the corpus in one plan, over a batch of synthetic events:
/// prints how many rules the plan takes and its throughput. Not an assertion on speed (debug
/// builds, shared machine); run with `--ignored --nocapture`.
#[test]
#[ignore = "prints a throughput figure; run on demand"]
fn corpus_throughput() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/sigma/rules/windows/process_creation");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut b = PlanBuilder::new();
    let mut refused = std::collections::BTreeMap::<&str, usize>::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let Ok(docs) = parse(f, &text) else { continue };
        for d in docs {
            if let SigmaDocument::Rule(r) = d
                && let Err(e) = b.add_rule(&r)
            {
                *refused.entry(e.source.feature).or_default() += 1;
            }
        }
    }
    let start = std::time::Instant::now();
    let plan = b.build().unwrap();
    let build = start.elapsed();
    let n = 8192;
    let col = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>()))
    };
    let batch = batch(vec![
        (
            "Image",
            col(&|i| format!(r"C:\Program Files\App{}\app{i}.exe", i % 50)),
        ),
        (
            "CommandLine",
            col(&|i| {
                format!(
                    r#""C:\Program Files\App\app.exe" --config C:\ProgramData\app\{i}.json --verbose"#
                )
            }),
        ),
        (
            "ParentImage",
            col(&|_| r"C:\Windows\explorer.exe".to_string()),
        ),
        ("OriginalFileName", col(&|i| format!("app{i}.exe"))),
        ("User", col(&|_| r"CORP\alice".to_string())),
    ]);
    let passes = 5;
    let start = std::time::Instant::now();
    let mut hits = 0;
    for _ in 0..passes {
        hits += plan
            .evaluate(&batch)
            .unwrap()
            .iter()
            .map(BooleanBuffer::count_set_bits)
            .sum::<usize>();
    }
    let secs = start.elapsed().as_secs_f64();
    for (key, m) in &plan.columns {
        let t = std::time::Instant::now();
        match batch.column_by_name(&key.name) {
            Some(a) if key.part.is_none() => drop(m.evaluate(a).unwrap()),
            _ => drop(m.evaluate_absent(n)),
        }
        println!("  {key:?}: {:?} {}", t.elapsed(), m.describe());
    }
    assert!(plan.rules() + refused.values().sum::<usize>() > 1000);
    println!(
        "{} rules planned ({refused:?} refused), {} columns, built in {build:?}; \
         {n} rows x {passes}: {:.0} rows/s, {hits} hits",
        plan.rules(),
        plan.columns.len(),
        (n * passes) as f64 / secs,
    );
}

/// Every rule of `text` (several YAML documents) in one plan, with `placeholders` configured.
fn plan_of(text: &str, placeholders: &[(&str, &[&str])]) -> SigmaPlan {
    let mut b = PlanBuilder::new().with_placeholders(placeholder_map(placeholders));
    for d in parse(Path::new("t.yml"), text).unwrap_or_else(|e| panic!("{e}")) {
        let SigmaDocument::Rule(r) = d else { panic!() };
        b.add_rule(&r)
            .unwrap_or_else(|e| panic!("{}: {e}", r.meta.title));
    }
    b.build().unwrap()
}

fn placeholder_map(entries: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

const EXPAND: &str = r"title: known cdcs (as in the corpus)
logsource:
    category: test
detection:
    selection:
        Attributes|contains: 'cdc:'
    filter_main_known_cdc:
        Attributes|contains|expand: '%known_cdcs%'
    condition: selection and not 1 of filter_main_*
---
title: two placeholders
logsource:
    category: test
detection:
    sel:
        User|expand: '%domain%/%admin%'
    condition: sel
---
title: cased
logsource:
    category: test
detection:
    sel:
        User|cased|expand: '%domain%/%admin%'
    condition: sel
---
title: windash applies to the configured value too
logsource:
    category: test
detection:
    sel:
        CommandLine|windash|contains|expand: ' %flag%'
    condition: sel
---
title: keyword
logsource:
    category: test
detection:
    keywords:
        '|expand': '%kw%'
    condition: keywords
";

#[test]
fn placeholders_expand_into_alternatives_of_the_value() {
    let plan = plan_of(
        EXPAND,
        &[
            // Configured values are Sigma patterns: `*` is a wildcard, `\*` a star.
            ("known_cdcs", &["dc01.corp", "10.0.0.*"]),
            ("domain", &["CORP", "LAB"]),
            ("admin", &["adm_*", "root"]),
            ("flag", &["-enc"]),
            ("kw", &[r"a\*b"]),
        ],
    );
    let batch = batch(vec![
        (
            "Attributes",
            strings(&[
                Some("cdc:dc01.corp;x"),
                Some("cdc:10.0.0.7"),
                Some("cdc:evil.host"),
                Some("axb"),
                None,
            ]),
        ),
        (
            "User",
            strings(&[
                Some("CORP/adm_bob"),
                Some("lab/root"),
                Some("CORP/alice"),
                Some("root"),
                Some("LAB/ROOT"),
            ]),
        ),
        (
            "CommandLine",
            strings(&[
                Some("powershell /enc AAA"),
                Some("powershell -ENC x"),
                Some("x \u{2013}enc y"),
                Some("enc"),
                Some("x a*b y"),
            ]),
        ),
    ]);
    assert_eq!(
        selected(&plan, &batch),
        [
            // Rows 0 and 1 are known CDCs (one through the wildcard value): filtered.
            vec![2],
            // 2 domains x 2 admins, case-insensitively.
            vec![0, 1, 4],
            vec![0],
            // `/enc` and `–enc` come from windash applied to the configured `-enc`.
            vec![0, 1, 2],
            vec![4],
        ]
    );
}

#[test]
fn unresolvable_placeholders_refuse_the_rule() {
    let rule = |value: &str| {
        rule_from(
            "p.yml",
            &format!(
                "title: p\nlogsource:\n    category: t\ndetection:\n    sel:\n        User|expand: '{value}'\n    condition: sel\n"
            ),
        )
    };
    let hundred: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    let mut config = placeholder_map(&[("none", &[])]);
    config.insert("a".to_string(), hundred.clone());
    config.insert("b".to_string(), hundred);
    let mut b = PlanBuilder::new().with_placeholders(config);
    let message = |b: &mut PlanBuilder, value: &str| {
        let e = b.add_rule(&rule(value)).unwrap_err();
        assert_eq!(e.source.feature, "expand");
        e.source.message
    };
    assert_eq!(
        message(&mut b, "%Servers%"),
        "placeholder `%Servers%` has no configured values: list them under \
         `[sigma.placeholders]` in the configuration, e.g. `Servers = [\"value\", \"prefix*\"]` \
         (Sigma patterns: `*` and `?` are wildcards)"
    );
    assert!(message(&mut b, "%none%").contains("`%none%` is configured with no values"));
    // 100 x 100 alternatives.
    assert_eq!(
        message(&mut b, "%a%-%b%"),
        "expanding the placeholders of `%a%-%b%` gives more than 4096 patterns: configure \
         fewer values, or use fewer placeholders in one value"
    );
    // 100 alone is fine.
    assert_eq!(b.add_rule(&rule("%a%")).unwrap(), 0);
    let plan = b.build().unwrap();
    assert_eq!(plan.columns.len(), 1);
    assert_eq!(plan.columns[0].1.slots(), 1);
}

const FIELDREF: &str = r"title: same image
logsource:
    category: test
detection:
    sel:
        TargetFilename|fieldref: Image
    condition: sel
---
title: cross user (as in the corpus)
logsource:
    category: test
detection:
    selection:
        Image|endswith: '.exe'
    filter_main_same_user:
        User|fieldref: ParentUser
    condition: selection and not 1 of filter_main_*
---
title: cased
logsource:
    category: test
detection:
    sel:
        User|fieldref|cased: ParentUser
    condition: sel
---
title: neq
logsource:
    category: test
detection:
    sel:
        User|fieldref|neq: ParentUser
    condition: sel
---
title: any of two
logsource:
    category: test
detection:
    sel:
        Port|fieldref: [SrcPort, DstPort]
    condition: sel
---
title: all of two
logsource:
    category: test
detection:
    sel:
        Port|fieldref|all: [SrcPort, DstPort]
    condition: sel
---
title: absent
logsource:
    category: test
detection:
    sel:
        User|fieldref: NotInBatch
    condition: sel
";

#[test]
fn fieldref_compares_two_fields_of_the_same_event() {
    let plan = plan_of(FIELDREF, &[]);
    // Rules comparing the same two fields the same way share one comparison.
    assert_eq!(plan.pairs.len(), 6);
    let batch = batch(vec![
        (
            "Image",
            strings(&[
                Some(r"C:\a.exe"),
                Some(r"C:\a.exe"),
                Some(r"C:\a.exe"),
                None,
            ]),
        ),
        (
            "TargetFilename",
            Arc::new(LargeStringArray::from(vec![
                Some(r"c:\A.EXE"),
                Some(r"C:\b.exe"),
                None,
                None,
            ])),
        ),
        (
            "User",
            Arc::new(StringViewArray::from(vec![
                Some("bob"),
                Some("Bob"),
                None,
                Some("alice"),
            ])),
        ),
        (
            "ParentUser",
            strings(&[Some("bob"), Some("bob"), Some("bob"), Some("system")]),
        ),
        (
            "Port",
            Arc::new(Int64Array::from(vec![Some(80), Some(443), None, Some(22)])),
        ),
        (
            "SrcPort",
            strings(&[Some("80"), Some("80"), Some("1"), Some("022")]),
        ),
        (
            "DstPort",
            Arc::new(Float64Array::from(vec![80.0, 443.0, 1.0, 21.5])),
        ),
    ]);
    assert_eq!(
        selected(&plan, &batch),
        [
            // Case-insensitive; two nulls are not equal.
            vec![0],
            // Row 2 has no user: not the parent's, so not filtered.
            vec![2],
            vec![0],
            vec![2, 3],
            // A number and a string compare as text (`22` is not `022`), two numbers by value.
            vec![0, 1],
            vec![0],
            vec![],
        ]
    );
}

#[test]
fn fieldref_on_an_unreadable_column_names_it() {
    let plan = plan_of(
        "title: d\nlogsource:\n    category: t\ndetection:\n    sel:\n        A|fieldref: D\n    condition: sel\n",
        &[],
    );
    let batch = batch(vec![
        ("A", strings(&[Some("x")])),
        ("D", Arc::new(Date32Array::from(vec![3])) as ArrayRef),
    ]);
    let err = plan.evaluate(&batch).unwrap_err();
    assert_eq!(err.column, "D");
}

const TIME: &str = r"title: hour
logsource:
    category: test
detection:
    sel:
        UtcTime|hour: 7
    condition: sel
---
title: night
logsource:
    category: test
detection:
    late:
        UtcTime|hour|gte: 22
    early:
        UtcTime|hour|lt: 5
    condition: late or early
---
title: month
logsource:
    category: test
detection:
    sel:
        UtcTime|month: [11, 12]
    condition: sel
---
title: minute neq
logsource:
    category: test
detection:
    sel:
        UtcTime|minute|neq: 40
    condition: sel
---
title: the value itself, beside its parts
logsource:
    category: test
detection:
    sel:
        UtcTime|startswith: '2025-11-27'
    condition: sel
---
title: week
logsource:
    category: test
detection:
    sel:
        Ts|week: 1
    condition: sel
---
title: year
logsource:
    category: test
detection:
    old:
        Ts|year|lt: 2000
    now:
        Ts|year: 2025
    condition: old or now
";

#[test]
fn time_modifiers_match_a_part_of_the_date_in_utc() {
    let plan = plan_of(TIME, &[]);
    let ms = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let ts = TimestampMillisecondArray::from(vec![
        // Monday of ISO week 1 of 2025.
        Some(ms("2024-12-30T00:00:00Z")),
        // Sunday of ISO week 53 of 2020.
        Some(ms("2021-01-03T12:00:00Z")),
        Some(ms("1999-12-31T23:00:00Z")),
        None,
        // Local new year's night, still 2025 in UTC; week 1 of 2026.
        Some(ms("2026-01-01T00:30:00+02:00")),
    ])
    .with_timezone("+02:00");
    let batch = batch(vec![
        (
            "UtcTime",
            strings(&[
                Some("2025-11-27 07:40:10.132"),
                Some("2025-12-31T23:05:00Z"),
                // 23:30 UTC on May 31st.
                Some("2025-06-01T01:30:00+02:00"),
                Some("not a date"),
                None,
            ]),
        ),
        ("Ts", Arc::new(ts) as ArrayRef),
    ]);
    assert_eq!(
        selected(&plan, &batch),
        [
            vec![0],
            vec![1, 2],
            vec![0, 1],
            // What is not a date has no minute, so it is not minute 40.
            vec![1, 2, 3, 4],
            vec![0],
            vec![0, 4],
            vec![2, 4],
        ]
    );
    // One matcher per column and part: `UtcTime` itself, its hours, months and minutes; the
    // weeks and years of `Ts`.
    assert_eq!(plan.columns.len(), 6);
}

#[test]
fn time_modifiers_on_a_column_without_dates_are_an_error() {
    let plan = plan_of(
        "title: n\nlogsource:\n    category: t\ndetection:\n    sel:\n        N|hour: 3\n    condition: sel\n",
        &[],
    );
    let batch = batch(vec![("N", Arc::new(Int64Array::from(vec![3])) as ArrayRef)]);
    let err = plan.evaluate(&batch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column `N`: time modifiers read dates from timestamps and date strings, not a column \
         of type Int64"
    );
}

fn collect_yml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_yml(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml") {
            out.push(path);
        }
    }
}

/// The placeholders the SigmaHQ corpus uses, with values of the kind a deployment would
/// configure.
const CORPUS_PLACEHOLDERS: &[(&str, &[&str])] =
    &[("known_cdcs", &["dc01.corp.example", "10.0.0.*"])];

/// Every detection rule of the SigmaHQ corpus that parses, in one plan: how many the plan
/// refuses, and why. The corpus's own parse failures are `the_sigmahq_corpus_parses`'s
/// business.
#[test]
fn the_sigmahq_corpus_plans() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sigma");
    let mut files = Vec::new();
    for dir in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        collect_yml(&root.join(dir), &mut files);
    }
    files.sort();
    let mut b = PlanBuilder::new().with_placeholders(placeholder_map(CORPUS_PLACEHOLDERS));
    let mut refused = std::collections::BTreeMap::<&str, Vec<String>>::new();
    let mut rules = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let Ok(docs) = parse(f, &text) else { continue };
        for d in docs {
            if let SigmaDocument::Rule(r) = d {
                rules += 1;
                if let Err(e) = b.add_rule(&r) {
                    let file = f.strip_prefix(&root).unwrap_or(f).display().to_string();
                    refused
                        .entry(e.source.feature)
                        .or_default()
                        .push(format!("{file}:{e}"));
                }
            }
        }
    }
    let plan = b.build().unwrap();
    eprintln!(
        "sigma corpus: {} of {rules} detection rules planned",
        plan.rules()
    );
    // The plan runs, field comparisons and time parts included.
    let batch = batch(vec![
        ("Image", strings(&[Some(r"C:\x\a.exe"), None])),
        ("ParentImage", strings(&[Some(r"C:\x\a.exe"), None])),
        ("User", strings(&[Some("bob"), None])),
        ("ParentUser", strings(&[Some("alice"), None])),
        ("UtcTime", strings(&[Some("2025-11-27 07:40:10.132"), None])),
    ]);
    assert_eq!(plan.evaluate(&batch).unwrap().len(), plan.rules());
    for (feature, which) in &refused {
        eprintln!("  refused for `{feature}`: {}", which.len());
        for r in which {
            eprintln!("    {r}");
        }
    }
    assert!(rules > 3000, "only {rules} rules under {}", root.display());
    assert_eq!(
        plan.rules() + refused.values().map(Vec::len).sum::<usize>(),
        rules
    );
    assert!(
        plan.rules() * 100 >= rules * 99,
        "{} of {rules} rules refused: {refused:#?}",
        rules - plan.rules()
    );
}

const GUARDED_KEYWORDS: &str = r"title: channel a
logsource:
    category: test
detection:
    sel:
        Channel: a
    condition: sel
---
title: channel b
logsource:
    category: test
detection:
    sel:
        Channel: b
    condition: sel
---
title: anywhere
logsource:
    category: test
detection:
    keywords:
        - 'mimikatz'
    condition: keywords
---
title: evil
logsource:
    category: test
detection:
    keywords:
        - 'evil'
    condition: keywords
---
title: regex keyword
logsource:
    category: test
detection:
    keywords:
        '|re': '^mimi'
    condition: keywords
";

/// A projecting decoder's `_keywords` column holds every value of the event: keyword
/// patterns search it alone (a value in another column only is not the event's), every string
/// column when there is none or a keyword is a regex. Keywords are grouped by guard.
#[test]
fn keywords_search_the_keywords_column_alone_and_are_grouped_by_guard() {
    let docs = parse(Path::new("k.yml"), GUARDED_KEYWORDS).unwrap();
    let rule = |i: usize| match &docs[i] {
        SigmaDocument::Rule(r) => r,
        other => panic!("{other:?}"),
    };
    let mut b = PlanBuilder::new();
    let on_a = b.add_guard(rule(0)).unwrap();
    let on_b = b.add_guard(rule(1)).unwrap();
    b.add_guarded_rule(rule(2), None).unwrap();
    b.add_guarded_rule(rule(3), Some(on_b)).unwrap();
    b.add_guarded_rule(rule(3), Some(on_a)).unwrap();
    let plan = b.build().unwrap();
    // Unguarded, under `b`, under `a`: a row is searched for the groups that apply to it.
    assert_eq!(
        plan.keywords.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [None, Some(on_b), Some(on_a)]
    );
    let channel = strings(&[Some("a"), Some("b"), Some("b"), Some("a")]);
    let other = strings(&[Some("mimikatz"), Some("x"), Some("evil"), Some("evil")]);
    let keywords = strings(&[
        Some("a\nx"),
        Some("b\nMIMIKATZ"),
        Some("b\nevil"),
        Some("a\nnot here"),
    ]);
    let projected = batch(vec![
        ("Channel", Arc::clone(&channel)),
        ("Other", Arc::clone(&other)),
        (KEYWORDS_COLUMN, Arc::clone(&keywords)),
    ]);
    assert_eq!(selected(&plan, &projected), [vec![1], vec![2], vec![]]);
    let plain = batch(vec![
        ("Channel", Arc::clone(&channel)),
        ("Other", Arc::clone(&other)),
    ]);
    assert_eq!(selected(&plan, &plain), [vec![0], vec![2], vec![3]]);

    // A regex keyword (`^` anchors at a value's start): every column is searched.
    let mut b = PlanBuilder::new();
    b.add_rule(rule(2)).unwrap();
    b.add_rule(rule(4)).unwrap();
    let plan = b.build().unwrap();
    assert_eq!(selected(&plan, &projected), [vec![0, 1], vec![0]]);
}

#[test]
fn a_profiled_evaluation_gives_the_same_bitmaps_and_times_every_part() {
    let docs = parse(Path::new("k.yml"), GUARDED_KEYWORDS).unwrap();
    let rule = |i: usize| match &docs[i] {
        SigmaDocument::Rule(r) => r,
        other => panic!("{other:?}"),
    };
    let mut b = PlanBuilder::new();
    let on_b = b.add_guard(rule(1)).unwrap();
    b.add_guarded_rule(rule(3), Some(on_b)).unwrap();
    b.add_rule(rule(0)).unwrap();
    let plan = b.build().unwrap();
    let batch = batch(vec![
        ("Channel", strings(&[Some("a"), Some("b"), None])),
        (
            KEYWORDS_COLUMN,
            strings(&[Some("evil"), Some("b\nevil"), Some("")]),
        ),
    ]);
    let mut profile = PlanProfile::default();
    let profiled = plan.evaluate_profiled(&batch, &mut profile).unwrap();
    assert_eq!(profiled, plan.evaluate(&batch).unwrap());
    let mut parts: Vec<&str> = profile.parts().into_iter().map(|(n, _)| n).collect();
    parts.sort_unstable();
    assert_eq!(
        parts,
        [
            "(combine per rule)",
            "(fieldref)",
            "(guards)",
            "(keywords)",
            "Channel"
        ]
    );
}
