//! Whole-document tests: rules as analysts write them, located errors, the specification's own
//! test files, and the SigmaHQ rule corpus in `shared/data/sigma`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// Parses `text` as file `t.yml`.
fn parse_doc(text: &str) -> Result<Vec<SigmaDocument>, SigmaErrors> {
    parse(Path::new("t.yml"), text)
}

/// The single rule of `text`.
fn rule(text: &str) -> SigmaRule {
    match parse_doc(text) {
        Ok(mut docs) if docs.len() == 1 => match docs.remove(0) {
            SigmaDocument::Rule(r) => r,
            other => panic!("not a rule: {other:?}"),
        },
        Ok(docs) => panic!("{} documents", docs.len()),
        Err(e) => panic!("{e}"),
    }
}

/// The errors of `text`, one `t.yml:line:column: message` string each.
fn errors(text: &str) -> Vec<String> {
    match parse_doc(text) {
        Ok(docs) => panic!("parsed: {docs:?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn first_error(text: &str) -> SigmaError {
    parse_doc(text)
        .expect_err("should not parse")
        .errors
        .remove(0)
}

const WHOAMI: &str = r"title: Whoami Execution
id: 929a690e-bef0-4204-a928-ef5e620d6fcc
status: test
description: Detects a whoami.exe execution
references:
    - https://example.org/whoami
author: Florian Roth
date: 2019-10-23
modified: 2023-04-14
tags:
    - attack.discovery
    - attack.t1033
logsource:
    category: process_creation
    product: windows
detection:
    selection_img:
        - Image|endswith: '\whoami.exe'
        - OriginalFileName: 'whoami.exe'
    selection_cli:
        CommandLine|contains|all:
            - ' /user'
            - ' /priv'
        ParentImage|startswith: 'C:\Windows\'
    keywords:
        - 'whoami'
        - 4624
    filter_main_null:
        ParentImage: null
    condition: 1 of selection_* and not 1 of filter_main_* or keywords
fields:
    - CommandLine
falsepositives:
    - Admin activity
level: high
custom_field: ignored, as the specification allows
";

#[test]
fn a_rule_becomes_the_typed_model() {
    let r = rule(WHOAMI);
    let m = &r.meta;
    assert_eq!(m.title, "Whoami Execution");
    assert_eq!(
        m.id.as_deref(),
        Some("929a690e-bef0-4204-a928-ef5e620d6fcc")
    );
    assert_eq!(m.status, Some(Status::Test));
    assert_eq!(m.level, Some(Level::High));
    assert_eq!(m.date, chrono::NaiveDate::from_ymd_opt(2019, 10, 23));
    assert_eq!(m.modified, chrono::NaiveDate::from_ymd_opt(2023, 4, 14));
    assert_eq!(m.tags, ["attack.discovery", "attack.t1033"]);
    assert_eq!(m.references, ["https://example.org/whoami"]);
    assert_eq!(m.falsepositives, ["Admin activity"]);
    assert_eq!(m.author.as_deref(), Some("Florian Roth"));
    assert_eq!(r.fields, ["CommandLine"]);
    assert_eq!(r.logsource.category.as_deref(), Some("process_creation"));
    assert_eq!(r.logsource.product.as_deref(), Some("windows"));
    assert_eq!(r.logsource.service, None);

    let d = &r.detection;
    assert_eq!(
        d.names(),
        [
            "selection_img",
            "selection_cli",
            "keywords",
            "filter_main_null"
        ]
    );
    let SelectionKind::Any(groups) = &d.selections["selection_img"].kind else {
        panic!("a list of maps is an OR of ANDs")
    };
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0][0].field.as_deref(), Some("Image"));
    assert_eq!(groups[1][0].field.as_deref(), Some("OriginalFileName"));

    let SelectionKind::All(matchers) = &d.selections["selection_cli"].kind else {
        panic!("a map is an AND")
    };
    assert_eq!(matchers.len(), 2);
    assert_eq!(matchers[0].link, Link::All);
    assert_eq!(matchers[0].values.len(), 2);
    assert_eq!(matchers[0].pos.line, 21);

    let SelectionKind::Keywords(k) = &d.selections["keywords"].kind else {
        panic!("a list of values is a keyword search")
    };
    assert_eq!(k.field, None);
    assert_eq!(k.values.len(), 2);
    // A keyword is searched as text, even when YAML reads it as a number.
    assert!(
        matches!(&k.values[1].variants[0], Value::Pattern(p) if p.as_literal() == Some("4624"))
    );

    let SelectionKind::All(null) = &d.selections["filter_main_null"].kind else {
        panic!("map")
    };
    assert_eq!(null[0].values[0].variants, vec![Value::Null]);

    assert_eq!(d.condition.len(), 1);
    assert_eq!(
        d.condition[0].render(&d.names()),
        "(or (and (1 of selection_img selection_cli) (not (1 of filter_main_null))) keywords)"
    );
}

#[test]
fn a_condition_list_is_a_set_of_alternatives() {
    let r = rule(
        "title: t\nlogsource: {product: linux}\ndetection:\n  a: {x: 1}\n  b: {y: 2}\n  condition:\n    - a\n    - b and not a\n",
    );
    let names = r.detection.names();
    let shown: Vec<String> = r
        .detection
        .condition
        .iter()
        .map(|c| c.render(&names))
        .collect();
    assert_eq!(shown, ["a", "(and b (not a))"]);
}

#[test]
fn errors_point_at_the_bad_modifier() {
    let text = "title: t\nlogsource:\n    product: windows\ndetection:\n    selection:\n        Image|endswith: x\n        CommandLine|contians: y\n    condition: selection\n";
    let e = first_error(text);
    assert_eq!((e.line, e.column), (7, 21));
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(
        e.to_string()
            .starts_with("t.yml:7:21: unknown modifier `contians`"),
        "{e}"
    );
}

#[test]
fn errors_point_at_the_undefined_selection_in_the_condition() {
    let text = "title: t\nlogsource:\n    product: windows\ndetection:\n    selection:\n        Image: x\n    condition: selection and not filter\n";
    assert_eq!(
        errors(text),
        [
            "t.yml:7:34: `filter` is not a selection of this detection; the selections are: selection"
        ]
    );
    // Quoted and multi-line conditions map the column into the file too.
    let text = "title: t\nlogsource:\n    product: windows\ndetection:\n    selection:\n        Image: x\n    condition: 'selection and\n        not filter'\n";
    let e = first_error(text);
    assert_eq!((e.line, e.column), (8, 13));
}

#[test]
fn legacy_aggregations_are_unsupported_with_their_column() {
    let text = "title: t\nlogsource:\n    product: windows\ndetection:\n    selection:\n        EventID: 4625\n    timeframe: 5m\n    condition: selection | count(TargetUserName) by IpAddress > 10\n";
    let e = first_error(text);
    assert_eq!((e.line, e.column), (8, 26));
    assert_eq!(
        e.kind,
        ErrorKind::Unsupported {
            feature: "condition aggregation `| count`".to_string()
        }
    );
    assert!(e.is_unsupported());
    assert!(
        e.to_string()
            .starts_with("t.yml:8:26: unsupported feature `condition aggregation `| count``"),
        "{e}"
    );
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let text = "title: t\nstatus: beta\nlevel: severe\ndate: 2019/10/23\nlogsource:\n    product: windows\ndetection:\n    sel1:\n        A|nope: x\n    sel2:\n        B|re: 'a(?!b)'\n    condition: sel1 and sel3\n";
    let all = errors(text);
    assert_eq!(
        all,
        [
            "t.yml:2:9: `status: beta` is not one of stable, test, experimental, deprecated, unsupported",
            "t.yml:3:8: `level: severe` is not one of informational, low, medium, high, critical",
            "t.yml:4:7: `date: 2019/10/23` is not a date: write YYYY-MM-DD, e.g. 2024-08-08",
            "t.yml:9:11: unknown modifier `nope`: the modifiers of Sigma 2 are all, startswith, endswith, contains, exists, cased, neq, windash, re, i, m, s, base64, base64offset, utf16le, utf16be, utf16, wide, lt, lte, gt, gte, minute, hour, day, week, month, year, cidr, expand, fieldref",
            "t.yml:11:17: unsupported feature `regex look-around`: look-around, including look-ahead and look-behind, is not supported (palisade matches regexes in linear time, which rules out look-around and backreferences): rewrite the expression without it",
            "t.yml:12:25: `sel3` is not a selection of this detection; the selections are: sel1, sel2",
        ]
    );
}

#[test]
fn structural_errors() {
    let check = |text: &str, expected: &str| {
        let all = errors(text);
        assert!(
            all.iter().any(|e| e.contains(expected)),
            "expected `{expected}` in {all:#?}"
        );
    };
    check(
        "logsource: {product: x}\ndetection: {s: {a: 1}, condition: s}\n",
        "t.yml:1:1: missing `title`",
    );
    check(
        "title: t\ndetection: {s: {a: 1}, condition: s}\n",
        "missing `logsource`",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: {a: 1}}\n",
        "the detection has no `condition`",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {condition: s}\n",
        "the detection has no selection",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: 'x', condition: s}\n",
        "selection `s` must be a map of fields or a list; for a keyword search write the value as a list item: `- 'x'`",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: , condition: s}\n",
        "selection `s` is empty",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: [], condition: s}\n",
        "selection `s` is an empty list",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: [[a]], condition: s}\n",
        "must be a map of fields or a value, not a list",
    );
    check(
        "- just\n- a list\n",
        "t.yml:1:1: a Sigma document is a map of keys",
    );
    check("title: t\nfoo: bar\n", "not a Sigma document");
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: {a: 1}, condition: s}\ncorrelation: {type: temporal}\n",
        "split it into documents with `---`",
    );
    check(
        "action: global\ntitle: t\n",
        "unsupported feature `rule collection `action: global``",
    );
    check(
        "title: [a]\nlogsource: {product: x}\ndetection: {s: {a: 1}, condition: s}\n",
        "t.yml:1:8: `title` must be a value, not a list",
    );
    check(
        "title: t\nlogsource: {product: x}\ndetection: {s: {a: 1}, s: {b: 2}, condition: s}\n",
        "YAML syntax error: duplicate key `s`",
    );
    check(
        "title: t\nlogsource: {product: [x]}\ndetection: {s: {a: 1}, condition: s}\n",
        "`logsource.product` must be a string",
    );
    check("", "the file holds no Sigma document");
}

#[test]
fn yaml_syntax_errors_are_located() {
    let e = first_error("title: t\ndetection:\n  sel: [a, b\n  condition: sel\n");
    assert_eq!(e.kind, ErrorKind::Yaml);
    assert!(e.line >= 3, "{e}");
    assert!(e.to_string().contains("YAML syntax error"), "{e}");
}

#[test]
fn mixed_lists_and_keyword_all() {
    let r = rule(
        "title: t\nlogsource: {product: x}\ndetection:\n  s:\n    - {A: 1, B: 2}\n    - 'free text'\n  k:\n    '|all':\n      - foo\n      - bar\n  condition: s or k\n",
    );
    let SelectionKind::Any(groups) = &r.detection.selections["s"].kind else {
        panic!("any")
    };
    assert_eq!(groups[0].len(), 2);
    assert_eq!(groups[1][0].field, None);
    let SelectionKind::All(k) = &r.detection.selections["k"].kind else {
        panic!("map")
    };
    assert_eq!((k[0].field.as_deref(), k[0].link), (None, Link::All));
}

/// The specification's example of a correlation chain in one file.
const FAILED_THEN_SUCCESS: &str =
    "title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
";

#[test]
fn a_file_holds_a_correlation_and_its_rules() {
    let docs = parse_doc(FAILED_THEN_SUCCESS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 4);
    let SigmaDocument::Correlation(outer) = &docs[0] else {
        panic!("correlation first")
    };
    let c = &outer.correlation;
    assert_eq!(c.kind, CorrelationType::TemporalOrdered);
    let refs: Vec<&str> = c.rules.iter().map(|r| r.reference.as_str()).collect();
    assert_eq!(refs, ["multiple_failed_login", "successful_login"]);
    assert_eq!(c.rules[0].pos.line, 7);
    assert_eq!(c.timespan.duration, Duration::from_secs(600));
    assert_eq!(c.condition, None);
    assert_eq!(outer.meta.level, Some(Level::High));
    let SigmaDocument::Correlation(inner) = &docs[1] else {
        panic!("correlation second")
    };
    assert_eq!(inner.meta.name.as_deref(), Some("multiple_failed_login"));
    assert_eq!(inner.meta.pos.line, 16);
    assert_eq!(
        inner.correlation.condition,
        Some(CorrelationCondition {
            field: vec![],
            predicates: vec![(CmpOp::Gte, Number::Int(10))]
        })
    );
    assert!(
        matches!(&docs[2], SigmaDocument::Rule(r) if r.meta.name.as_deref() == Some("failed_login"))
    );
    assert!(
        matches!(&docs[3], SigmaDocument::Rule(r) if r.logsource.service.as_deref() == Some("security"))
    );
}

fn spec_dir(kind: &str) -> PathBuf {
    sigma_data().join("specification/tests/schema").join(kind)
}

fn sigma_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sigma");
    assert!(
        dir.is_dir(),
        "{} is missing: the Sigma corpus lives in shared/data/sigma beside the repository",
        dir.display()
    );
    dir
}

fn parse_path(path: &Path) -> Result<Vec<SigmaDocument>, SigmaErrors> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(path, &text)
}

fn correlation_file(name: &str) -> Correlation {
    let path = spec_dir("correlation").join(name);
    match parse_path(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
    {
        SigmaDocument::Correlation(c) => c.correlation,
        other => panic!("{name}: not a correlation: {other:?}"),
    }
}

/// What one of the specification's correlation test files must parse into.
struct Expected {
    file: &'static str,
    kind: CorrelationType,
    group_by: &'static [&'static str],
    seconds: u64,
    /// Aggregated field(s) and the single threshold, if the file has a condition.
    condition: Option<(&'static [&'static str], CmpOp, i64)>,
}

#[test]
fn the_specification_correlation_examples_parse() {
    use CorrelationType as T;
    let case = |file, kind, group_by, seconds, condition| Expected {
        file,
        kind,
        group_by,
        seconds,
        condition,
    };
    let cases = [
        case(
            "event_count.yml",
            T::EventCount,
            &["ComputerName"],
            3600,
            Some((&[], CmpOp::Gte, 100)),
        ),
        case(
            "event_count_ecs.yml",
            T::EventCount,
            &["dns.question.name"],
            3600,
            Some((&[], CmpOp::Gte, 100)),
        ),
        case(
            "temporal.yml",
            T::Temporal,
            &["ComputerName", "User"],
            300,
            None,
        ),
        case(
            "temporal_ordered.yml",
            T::TemporalOrdered,
            &["ComputerName", "User"],
            300,
            None,
        ),
        case(
            "value_avg.yml",
            T::ValueAvg,
            &["SourceIP", "User"],
            86_400,
            Some((&["BytesOut"], CmpOp::Gt, 500)),
        ),
        case(
            "value_count.yml",
            T::ValueCount,
            &["ComputerName", "WorkstationName"],
            86_400,
            Some((&["User"], CmpOp::Gte, 100)),
        ),
        case(
            "value_percentile.yml",
            T::ValuePercentile,
            &["ComputerName"],
            86_400,
            Some((&["Image"], CmpOp::Lte, 1)),
        ),
        case(
            "value_sum.yml",
            T::ValueSum,
            &["SourceIP", "User"],
            3600,
            Some((&["bytes_sent"], CmpOp::Gt, 1_000_000)),
        ),
    ];
    // Every file of the folder is covered.
    let on_disk = std::fs::read_dir(spec_dir("correlation")).unwrap().count();
    assert_eq!(on_disk, cases.len());
    for e in cases {
        let file = e.file;
        let c = correlation_file(file);
        assert_eq!(c.kind, e.kind, "{file}");
        assert_eq!(c.group_by, e.group_by, "{file}");
        assert_eq!(c.timespan.duration.as_secs(), e.seconds, "{file}");
        let expected = e.condition.map(|(field, op, n)| CorrelationCondition {
            field: field.iter().map(|f| f.to_string()).collect(),
            predicates: vec![(op, Number::Int(n))],
        });
        assert_eq!(c.condition, expected, "{file}");
        assert!(!c.rules.is_empty(), "{file}");
        assert!(!c.generate, "{file}");
    }
    let temporal = correlation_file("temporal.yml");
    let refs: Vec<&str> = temporal
        .rules
        .iter()
        .map(|r| r.reference.as_str())
        .collect();
    assert_eq!(refs, ["recon_cmd_a", "recon_cmd_b", "recon_cmd_c"]);
}

#[test]
fn correlation_aliases_and_generate() {
    let text = "title: t\ncorrelation:\n    type: temporal\n    rules: [internal_error, new_network_connection]\n    group-by: [internal_ip]\n    timespan: 10s\n    aliases:\n        internal_ip:\n            internal_error: destination.ip\n            new_network_connection: source.ip\ngenerate: true\n";
    let SigmaDocument::Correlation(c) = parse_doc(text).unwrap().remove(0) else {
        panic!("correlation")
    };
    let c = c.correlation;
    assert!(c.generate);
    // Nested in the section, as some authors write it, it means the same.
    let nested = text.replace("generate: true\n", "").replace(
        "    timespan: 10s\n",
        "    timespan: 10s\n    generate: true\n",
    );
    let SigmaDocument::Correlation(n) = parse_doc(&nested).unwrap().remove(0) else {
        panic!("correlation")
    };
    assert!(n.correlation.generate);
    assert_eq!(c.aliases["internal_ip"]["internal_error"], "destination.ip");
    assert_eq!(
        c.aliases["internal_ip"]["new_network_connection"],
        "source.ip"
    );
}

#[test]
fn correlation_errors() {
    let base = |body: &str| format!("title: t\ncorrelation:\n{body}");
    let check = |body: &str, expected: &str| {
        let all = errors(&base(body));
        assert!(
            all.iter().any(|e| e.contains(expected)),
            "expected `{expected}` in {all:#?}"
        );
    };
    let ok_rest = "    rules: [a]\n    group-by: [User]\n    timespan: 5m\n";
    check(
        &format!("    type: event_count\n{ok_rest}"),
        "a `event_count` correlation needs a `condition`",
    );
    check(
        &format!("    type: value_count\n{ok_rest}    condition: {{gte: 3}}\n"),
        "t.yml:7:16: a `value_count` correlation aggregates a field: add `field: <name>` to its condition",
    );
    check(
        &format!("    type: event_count\n{ok_rest}    condition: {{field: X, gte: 3}}\n"),
        "`field` is only for the value_* correlation types",
    );
    check(
        &format!("    type: event_cnt\n{ok_rest}"),
        "t.yml:3:11: unknown correlation type `event_cnt`",
    );
    check(
        "    type: temporal\n    rules: [a]\n    group_by: [User]\n    timespan: 5m\n",
        "t.yml:5:5: unknown key `group_by` in `correlation`: expected one of type, rules, group-by, timespan, condition, aliases, generate",
    );
    check(
        "    type: temporal\n    rules: [a, b, a]\n    group-by: [User]\n    timespan: 5m\n",
        "t.yml:4:19: rule `a` is listed twice in `rules`",
    );
    check(
        "    type: temporal\n    rules: [a]\n    group-by: [User]\n    timespan: 5 minutes\n",
        "t.yml:6:15: `5 minutes` is not a time span",
    );
    check(
        "    type: temporal\n    rules: [a]\n    timespan: 5m\n",
        "the correlation has no `group-by`",
    );
    check(
        "    type: temporal\n    group-by: [u]\n    timespan: 5m\n",
        "the correlation has no `rules`",
    );
    check(
        &format!("    type: event_count\n{ok_rest}    condition: {{gte: many}}\n"),
        "`gte` compares with a number, not `many`",
    );
    check(
        &format!("    type: event_count\n{ok_rest}    condition: {{more: 3}}\n"),
        "unknown condition `more`",
    );
    check(
        &format!(
            "    type: temporal\n{ok_rest}    aliases:\n        ip:\n            other_rule: src\n"
        ),
        "alias refers to rule `other_rule`, which is not in this correlation's `rules`",
    );
}

#[test]
fn the_specification_rule_and_filter_examples_parse() {
    for kind in ["rules", "filter", "correlation"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(spec_dir(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{kind}: no test files");
        for f in files {
            let docs = parse_path(&f).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(docs.len(), 1, "{}", f.display());
        }
    }
    let path = spec_dir("filter").join("filter_1.yml");
    let SigmaDocument::Filter(f) = parse_path(&path).unwrap().remove(0) else {
        panic!("filter")
    };
    let refs: Vec<&str> = f.rules.iter().map(|r| r.reference.as_str()).collect();
    assert_eq!(
        refs,
        [
            "6f3e2987-db24-4c78-a860-b4f4095a7095",
            "df0841c0-9846-4e9f-ad8a-7df91571771b"
        ]
    );
    assert_eq!(f.detection.names(), ["selection"]);
    assert_eq!(f.logsource.category.as_deref(), Some("process_creation"));
    let SelectionKind::All(m) = &f.detection.selections["selection"].kind else {
        panic!("map")
    };
    assert!(matches!(&m[0].values[0].variants[0], Value::Pattern(p) if p.to_string() == "adm_*"));

    let path = spec_dir("rules").join("rule_1.yml");
    let SigmaDocument::Rule(r) = parse_path(&path).unwrap().remove(0) else {
        panic!("rule")
    };
    assert_eq!(
        r.meta.related,
        [Related {
            id: "6c82cf5c-090d-4d57-9188-533577631108".to_string(),
            kind: RelationType::Similar
        }]
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

#[test]
fn the_sigmahq_corpus_parses() {
    let root = sigma_data();
    let mut files = Vec::new();
    for dir in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        collect_yml(&root.join(dir), &mut files);
    }
    files.sort();
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, t)
        })
        .collect();
    let bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();

    let start = Instant::now();
    let results: Vec<Result<Vec<SigmaDocument>, SigmaErrors>> =
        texts.iter().map(|(p, t)| parse(p, t)).collect();
    let elapsed = start.elapsed();

    let mut failures = Vec::new();
    let (mut rules, mut selections, mut values) = (0, 0, 0);
    for r in &results {
        match r {
            Ok(docs) => {
                for d in docs {
                    if let SigmaDocument::Rule(r) = d {
                        rules += 1;
                        selections += r.detection.selections.len();
                        values += count_values(&r.detection);
                    }
                }
            }
            Err(e) => failures.push(e),
        }
    }
    let total = texts.len();
    let parsed = total - failures.len();
    eprintln!(
        "sigma corpus: {parsed} of {total} files parse ({rules} rules, {selections} selections, \
         {values} values); {:.1} MB parsed in {:.3} s ({} build)",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for f in &failures {
        eprintln!("  {f}");
    }
    assert!(
        total > 3000,
        "only {total} rule files found under {}",
        root.display()
    );
    assert!(
        parsed * 100 >= total * 99,
        "{} of {total} files fail to parse",
        failures.len()
    );
    // Whatever fails must fail because it uses something palisade does not support, and say so.
    for f in &failures {
        assert!(
            f.errors.iter().all(SigmaError::is_unsupported),
            "a corpus rule is rejected as invalid: {f}"
        );
    }
}

fn count_values(d: &Detection) -> usize {
    let count = |ms: &[FieldMatcher]| ms.iter().map(|m| m.values.len()).sum::<usize>();
    d.selections
        .values()
        .map(|s| match &s.kind {
            SelectionKind::All(ms) => count(ms),
            SelectionKind::Any(groups) => groups.iter().map(|g| count(g)).sum(),
            SelectionKind::Keywords(m) => m.values.len(),
        })
        .sum()
}

mod robustness {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(crate::proptest_config(512))]

        /// A rule mangled by a few edits (the characters Sigma and YAML care about) never makes
        /// the parser panic, and every error it reports points inside the file.
        #[test]
        fn mangled_rules_never_panic(
            edits in proptest::collection::vec(
                (0usize..WHOAMI.len(), 0usize..6, "[a-z0-9 \n|*?\\\\'\"%():,\\-\\[\\]{}#&!]{0,4}"),
                1..6,
            )
        ) {
            let mut text = WHOAMI.to_string();
            for (at, delete, insert) in edits {
                let mut start = at.min(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (start + delete).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(start..end, &insert);
            }
            let lines = text.lines().count() + 1;
            if let Err(e) = parse(Path::new("m.yml"), &text) {
                prop_assert!(!e.errors.is_empty());
                for err in &e.errors {
                    prop_assert!(err.line >= 1 && err.line <= lines, "{err} ({lines} lines)");
                    prop_assert!(err.column >= 1, "{err}");
                    prop_assert!(!err.message.is_empty());
                }
            }
        }

        /// Arbitrary conditions never panic, and errors carry a column within the text + 1.
        #[test]
        fn arbitrary_conditions_never_panic(text in "[a-z_*1 ()|]{0,40}") {
            let names = ["a", "a_1", "b", "_c"];
            if let Err(e) = condition::parse(&text, &names) {
                prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e:?}");
            }
        }
    }
}
