//! Rule plan tests: real SigmaHQ rules over a small process-creation batch, and the condition
//! semantics (neq, null, absent columns, keywords across columns, refused rules).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
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
    let fieldref = rule_from(
        "f.yml",
        "title: f\nlogsource:\n    category: t\ndetection:\n    sel:\n        A: x\n        B|fieldref: C\n    condition: sel\n",
    );
    let err = b.add_rule(&fieldref).unwrap_err();
    assert_eq!(err.source.feature, "fieldref");
    assert_eq!((err.pos.line, err.pos.column), (7, 21));
    let located = err.into_sigma_error(Path::new("f.yml"));
    assert!(located.is_unsupported());
    assert!(
        located
            .to_string()
            .starts_with("f.yml:7:21: unsupported feature `fieldref`"),
        "{located}"
    );
    let hour = rule_from(
        "h.yml",
        "title: h\nlogsource:\n    category: t\ndetection:\n    sel:\n        T|hour: 3\n    condition: sel\n",
    );
    assert_eq!(
        b.add_rule(&hour).unwrap_err().source.feature,
        "time modifiers"
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
    for (name, m) in &plan.columns {
        let t = std::time::Instant::now();
        match batch.column_by_name(name) {
            Some(a) => drop(m.evaluate(a).unwrap()),
            None => drop(m.evaluate_absent(n)),
        }
        println!("  {name}: {:?} {}", t.elapsed(), m.describe());
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
