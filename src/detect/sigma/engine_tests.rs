//! The Sigma engine end to end: config + rule files -> alerts from decoded batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use super::engine::{Loaded, SigmaEngine};
use crate::alert::{Alert, Severity};
use crate::config::Config;
use crate::decode::JsonDecoder;
use crate::detect::{Detector, EvalContext};
use crate::privacy::Pseudonymiser;
use crate::source::{Origin, RawBatch};

const CONFIG: &str = r#"
[kafka]
brokers = "x:1"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"

[detectors]
rules = []

[[streams]]
name = "auth"
topics = ["auth"]
format = "json"
event_time = "ts"
entity = ["user"]
[streams.schema]
ts = "timestamp"
user = "string"
src_ip = "string"
result = "string"
port = "int32"
geo = "struct<country: string, city: string>"
[streams.privacy]
user = "pseudonymise"

[[streams]]
name = "proc"
topics = ["proc"]
format = "json"
event_time = "ts"
entity = ["host"]
[streams.schema]
ts = "timestamp"
host = "string"
kind = "string"
image = "string"
cmd = "string"

[[sigma.logsources]]
product = "city"
service = "auth"
stream = "auth"

[[sigma.logsources]]
product = "city"
stream = "proc"

[[sigma.logsources]]
product = "city"
category = "process_creation"
stream = "proc"
conditions = { kind = "start" }

[sigma.streams.proc.fields]
Image = "image"
CommandLine = "cmd"
"#;

fn config() -> Config {
    Config::parse(CONFIG, "test.toml", Path::new(".")).unwrap()
}

fn load(rules: &[(&str, &str)]) -> (Loaded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, text) in rules {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    (SigmaEngine::load(&config(), &files), dir)
}

fn engine(rules: &[(&str, &str)]) -> SigmaEngine {
    let (loaded, _dir) = load(rules);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.engine.expect("rules loaded")
}

fn batch(stream: &str, lines: &str) -> (usize, RecordBatch) {
    let config = config();
    let s = config.stream_index(stream).unwrap();
    let st = &config.streams[s];
    let mut raw = RawBatch::new(s);
    for (i, line) in lines.lines().enumerate() {
        raw.push(
            line.as_bytes(),
            Origin {
                source: 0,
                partition: 0,
                offset: i as i64,
                timestamp_ms: 0,
            },
        );
    }
    let mut d = JsonDecoder::new(
        Arc::clone(st.arrow_schema().unwrap()),
        st.event_time.get_ref(),
        1024,
    )
    .unwrap();
    let decoded = d.decode(&raw);
    assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
    (s, decoded.batch)
}

fn run(engine: &mut SigmaEngine, stream: &str, lines: &str) -> Vec<Alert> {
    let (s, b) = batch(stream, lines);
    let ctx = EvalContext {
        now_ms: 1_000,
        pseudonymiser: Pseudonymiser::new(b"k"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let mut out = Vec::new();
    engine.evaluate(s, &b, &ctx, &mut out).unwrap();
    out
}

const SPRAY_USER: &str = r#"
title: Login failure from a listed address
id: 11111111-1111-4111-8111-111111111111
status: test
level: high
tags: [attack.credential-access, attack.t1110]
falsepositives: [a user who forgot their password]
logsource: {product: city, service: auth}
detection:
  selection:
    result: failure
    src_ip|cidr: 10.9.0.0/16
  country:
    geo.country: [RU, KP]
  condition: selection or country
fields: [src_ip]
"#;

#[test]
fn matching_rows_alert_with_the_rules_metadata_and_pseudonymised_evidence() {
    let mut e = engine(&[("spray.yml", SPRAY_USER)]);
    let out = run(
        &mut e,
        "auth",
        r#"{"ts":"2026-01-05T02:30:00Z","user":"alice","src_ip":"10.9.1.2","result":"failure"}
{"ts":"2026-01-05T02:30:01Z","user":"bob","src_ip":"10.8.1.2","result":"failure"}
{"ts":"2026-01-05T02:30:02Z","user":"carol","src_ip":"10.9.1.3","result":"success"}
{"ts":"2026-01-05T02:30:03Z","user":"dave","src_ip":"1.2.3.4","result":"success","geo":{"country":"KP","city":"x"}}"#,
    );
    let users: Vec<&str> = out.iter().map(|a| a.entity.as_str()).collect();
    let p = Pseudonymiser::new(b"k");
    assert_eq!(users, vec![p.pseudonym("alice"), p.pseudonym("dave")]);
    let a = &out[0];
    assert_eq!(a.rule.id, "11111111-1111-4111-8111-111111111111");
    assert_eq!(a.rule.kind, "sigma");
    assert_eq!(a.rule.status.as_deref(), Some("test"));
    assert_eq!(
        a.rule.falsepositives,
        vec!["a user who forgot their password"]
    );
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.stream, "auth");
    assert_eq!(a.tags, vec!["attack.credential-access", "attack.t1110"]);
    assert_eq!(a.event_time, "2026-01-05T02:30:00.000Z");
    let evidence = a.evidence[0].get();
    assert_eq!(evidence, r#"{"result":"failure","src_ip":"10.9.1.2"}"#);
    // A nested struct field (`geo.country`) is read through the struct.
    assert!(out[1].evidence[0].get().contains(r#""geo.country":"KP""#));
}

#[test]
fn logsource_conditions_and_field_mapping_apply_per_stream() {
    let rule = r#"
title: Shell from a web server
id: 22222222-2222-4222-8222-222222222222
logsource: {product: city, category: process_creation}
detection:
  selection:
    Image|endswith: '\cmd.exe'
    CommandLine|contains: whoami
  condition: selection
level: critical
"#;
    let mut e = engine(&[("shell.yml", rule)]);
    let out = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:30:00Z","host":"w1","kind":"start","image":"C:\\Windows\\cmd.exe","cmd":"cmd /c WHOAMI"}
{"ts":"2026-01-05T02:30:01Z","host":"w2","kind":"file","image":"C:\\Windows\\cmd.exe","cmd":"cmd /c whoami"}
{"ts":"2026-01-05T02:30:02Z","host":"w3","kind":"start","image":"C:\\Windows\\pwsh.exe","cmd":"whoami"}"#,
    );
    // w2 is not a process creation (the log source's condition), w3 not cmd.exe.
    let hosts: Vec<&str> = out.iter().map(|a| a.entity.as_str()).collect();
    assert_eq!(hosts, vec!["w1"]);
    assert_eq!(out[0].severity, Severity::Critical);
    // Evidence is named by Sigma field, and includes the log source's field.
    let evidence = out[0].evidence[0].get();
    assert!(
        evidence.contains(r#""Image":"C:\\Windows\\cmd.exe""#),
        "{evidence}"
    );
    assert!(evidence.contains(r#""kind":"start""#), "{evidence}");
    // The rule does not read the auth stream.
    assert!(!e.reads(0) && e.reads(1));
}

#[test]
fn keywords_search_every_string_field() {
    let rule = r#"
title: Mimikatz anywhere
id: 33333333-3333-4333-8333-333333333333
logsource: {product: city}
detection:
  keywords: ['sekurlsa::', 'mimikatz']
  condition: keywords
"#;
    let mut e = engine(&[("kw.yml", rule)]);
    let out = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:30:00Z","host":"a","kind":"start","image":"x","cmd":"run SEKURLSA::logonpasswords"}
{"ts":"2026-01-05T02:30:01Z","host":"b","kind":"start","image":"C:\\mimikatz.exe","cmd":"x"}
{"ts":"2026-01-05T02:30:02Z","host":"c","kind":"start","image":"x","cmd":"y"}"#,
    );
    let hosts: Vec<&str> = out.iter().map(|a| a.entity.as_str()).collect();
    assert_eq!(hosts, vec!["a", "b"]);
}

#[test]
fn problems_are_located_and_unmapped_rules_are_warnings() {
    let bad = "title: Bad\nlogsource: {product: city}\ndetection:\n  sel:\n    image|nosuch: x\n  condition: sel\n";
    let unmapped = "title: Linux\nlogsource: {product: linux}\ndetection:\n  sel:\n    a: b\n  condition: sel\n";
    let missing_field = "title: Typo\nlogsource: {product: city, service: auth}\ndetection:\n  sel:\n    usr: x\n  condition: sel\n";
    let (loaded, _dir) = load(&[
        ("bad.yml", bad),
        ("linux.yml", unmapped),
        ("typo.yml", missing_field),
    ]);
    assert_eq!((loaded.summary.ok, loaded.summary.failed), (2, 1));
    let e = &loaded.errors[0];
    assert!(e.file.ends_with("bad.yml"));
    assert_eq!((e.line, e.column), (5, 11), "{e}");
    assert!(e.message.contains("nosuch"), "{e}");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("linux.yml:1:1: never matches a configured stream"));
    assert!(warnings[0].contains("product: linux"));
    assert!(
        warnings[1].contains("field `usr` (column `usr`) is not in the schema of stream `auth`")
    );
}

#[test]
fn the_most_specific_log_source_entry_wins() {
    // `product: city` alone maps to `proc` without conditions; `process_creation` is more
    // specific and adds `kind = start`: only the latter applies to a process_creation rule.
    let rule = "title: T\nid: 4\nlogsource: {product: city, category: process_creation}\ndetection:\n  sel:\n    host: h\n  condition: sel\n";
    let mut e = engine(&[("t.yml", rule)]);
    let out = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:30:00Z","host":"h","kind":"exit"}
{"ts":"2026-01-05T02:30:00Z","host":"h","kind":"start"}"#,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].evidence[0].get().contains("start"));
}

const FAILED_LOGIN: &str = r#"
title: Failed login
id: aaaaaaaa-0000-4000-8000-000000000001
name: failed_login
logsource: {product: city, service: auth}
detection:
  selection:
    result: failure
  condition: selection
level: low
---
title: Password spray
id: aaaaaaaa-0000-4000-8000-000000000002
status: experimental
correlation:
  type: value_count
  rules: [failed_login]
  group-by: [src_ip]
  timespan: 5m
  condition:
    gte: 3
    field: user
level: high
"#;

#[test]
fn a_value_count_correlation_fires_once_across_batches_and_silences_its_base_rule() {
    let mut e = engine(&[("spray.yml", FAILED_LOGIN)]);
    // A burst straddling a batch (and a minute) boundary: users a, b in the first batch,
    // c in the second; another address never reaches three users.
    let first = run(
        &mut e,
        "auth",
        r#"{"ts":"2026-01-05T02:30:58Z","user":"a","src_ip":"10.0.0.9","result":"failure"}
{"ts":"2026-01-05T02:30:59Z","user":"b","src_ip":"10.0.0.9","result":"failure"}
{"ts":"2026-01-05T02:30:59Z","user":"a","src_ip":"10.0.0.7","result":"failure"}"#,
    );
    assert!(
        first.is_empty(),
        "the base rule alone does not alert: {first:?}"
    );
    // The correlation holds a group per address; the per-rule gauges say so, and its memory
    // covers at least the groups' events.
    let sizes = |e: &SigmaEngine| {
        let mut out = Vec::new();
        e.rule_state(&mut |rule, size| out.push((rule.to_string(), size)));
        out
    };
    let held = sizes(&e);
    assert_eq!(held.len(), 1, "only the correlation holds state: {held:?}");
    assert_eq!(held[0].0, "aaaaaaaa-0000-4000-8000-000000000002");
    assert_eq!(held[0].1.entries, 2);
    assert!(held[0].1.bytes >= 3 * 24, "{held:?}");
    let second = run(
        &mut e,
        "auth",
        r#"{"ts":"2026-01-05T02:31:01Z","user":"b","src_ip":"10.0.0.9","result":"failure"}
{"ts":"2026-01-05T02:31:02Z","user":"c","src_ip":"10.0.0.9","result":"failure"}
{"ts":"2026-01-05T02:31:03Z","user":"d","src_ip":"10.0.0.9","result":"success"}"#,
    );
    assert_eq!(second.len(), 1, "{second:?}");
    let a = &second[0];
    assert_eq!(a.rule.id, "aaaaaaaa-0000-4000-8000-000000000002");
    assert_eq!(a.rule.kind, "sigma-correlation");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.entity, "10.0.0.9");
    assert_eq!(a.event_time, "2026-01-05T02:31:02.000Z");
    let summary: serde_json::Value = serde_json::from_str(a.evidence[0].get()).unwrap();
    assert_eq!(summary["value"], 3.0);
    assert_eq!(summary["first_event"], "2026-01-05T02:30:58.000Z");
    // Contributing events follow, personal fields pseudonymised.
    assert_eq!(a.evidence.len(), 1 + 4);
    let p = Pseudonymiser::new(b"k");
    assert!(
        a.evidence[1].get().contains(&p.pseudonym("a")),
        "{}",
        a.evidence[1].get()
    );
    assert!(!a.evidence.iter().any(|e| e.get().contains(r#""a""#)));
}

#[test]
fn a_temporal_correlation_joins_streams_through_aliases() {
    let rules = r#"
title: Failed login
id: bbbbbbbb-0000-4000-8000-000000000001
name: failed_login
logsource: {product: city, service: auth}
detection:
  selection: {result: failure}
  condition: selection
---
title: Shell
id: bbbbbbbb-0000-4000-8000-000000000002
name: shell
logsource: {product: city, category: process_creation}
detection:
  selection: {Image|endswith: '\cmd.exe'}
  condition: selection
---
title: Failed login then a shell on the same machine
id: bbbbbbbb-0000-4000-8000-000000000003
correlation:
  type: temporal_ordered
  rules: [failed_login, shell]
  group-by: [machine]
  timespan: 10m
  aliases:
    machine:
      failed_login: src_ip
      shell: host
generate: true
level: critical
"#;
    let mut e = engine(&[("chain.yml", rules)]);
    let logins = run(
        &mut e,
        "auth",
        r#"{"ts":"2026-01-05T02:30:00Z","user":"a","src_ip":"ws-7","result":"failure"}"#,
    );
    // `generate: true`: the base rule alerts too.
    assert_eq!(logins.len(), 1);
    let shells = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:34:00Z","host":"ws-7","kind":"start","image":"C:\\cmd.exe"}
{"ts":"2026-01-05T02:34:00Z","host":"ws-8","kind":"start","image":"C:\\cmd.exe"}"#,
    );
    let ids: Vec<(&str, &str)> = shells
        .iter()
        .map(|a| (a.rule.id.as_str(), a.entity.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("bbbbbbbb-0000-4000-8000-000000000002", "ws-7"),
            ("bbbbbbbb-0000-4000-8000-000000000002", "ws-8"),
            ("bbbbbbbb-0000-4000-8000-000000000003", "ws-7"),
        ]
    );
}

#[test]
fn a_correlation_naming_an_unknown_rule_is_a_located_warning() {
    let text = "title: C\ncorrelation:\n  type: event_count\n  rules: [nosuch]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 2}\n";
    let (loaded, _dir) = load(&[("c.yml", text)]);
    assert_eq!((loaded.summary.ok, loaded.summary.failed), (1, 0));
    assert!(loaded.errors.is_empty());
    let w = loaded.warnings[0].to_string();
    assert!(
        w.contains("c.yml:4:") && w.contains("never fires") && w.contains("`nosuch`"),
        "{w}"
    );
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_correlations_only() {
    let burst = |e: &mut SigmaEngine, users: &[&str], second: u32| {
        let lines: Vec<String> = users
            .iter()
            .map(|u| {
                format!(
                    r#"{{"ts":"2026-01-05T02:31:{second:02}Z","user":"{u}","src_ip":"10.0.0.9","result":"failure"}}"#
                )
            })
            .collect();
        run(e, "auth", &lines.join("\n"))
    };
    let mut old = engine(&[("spray.yml", FAILED_LOGIN)]);
    assert!(burst(&mut old, &["a", "b"], 0).is_empty());

    // The same rules, reloaded: the two users seen before still count.
    let mut same = engine(&[("spray.yml", FAILED_LOGIN)]);
    assert_eq!(same.adopt_state(&mut old), 1);
    assert_eq!(burst(&mut same, &["c"], 1).len(), 1);

    // A changed correlation (threshold 4) starts from nothing.
    let mut old = engine(&[("spray.yml", FAILED_LOGIN)]);
    assert!(burst(&mut old, &["a", "b", "c"], 0).len() == 1);
    assert!(burst(&mut old, &["d", "e"], 2).is_empty());
    let changed = FAILED_LOGIN.replace("gte: 3", "gte: 4");
    let mut new = engine(&[("spray.yml", changed.as_str())]);
    assert_eq!(new.adopt_state(&mut old), 0);
    assert!(burst(&mut new, &["f", "g", "h"], 3).is_empty());
    assert_eq!(burst(&mut new, &["i"], 4).len(), 1);
}

#[test]
fn a_global_filter_excludes_its_events_from_the_rules_it_names() {
    let rule = "title: Shell\nid: cccccccc-0000-4000-8000-000000000001\nlogsource: {product: city, category: process_creation}\ndetection:\n  sel: {Image|endswith: '\\cmd.exe'}\n  condition: sel\n";
    let filter = "title: Admins may\nlogsource: {product: city, category: process_creation}\nfilter:\n  rules: [cccccccc-0000-4000-8000-000000000001]\n  selection:\n    host|startswith: adm-\n  condition: selection\n";
    let other = "title: Other filter\nlogsource: {product: city, service: auth}\nfilter:\n  rules: [cccccccc-0000-4000-8000-000000000001]\n  selection: {host: w1}\n  condition: selection\n";
    let (loaded, _dir) = load(&[
        ("rule.yml", rule),
        ("mf_admins.yml", filter),
        ("mf_other.yml", other),
    ]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    // The second filter's log source does not cover the rule's: it applies to nothing.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0]
            .to_string()
            .contains("mf_other.yml:1:1: filter applies to no loaded rule")
    );
    let mut e = loaded.engine.unwrap();
    let out = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:30:00Z","host":"w1","kind":"start","image":"C:\\cmd.exe"}
{"ts":"2026-01-05T02:30:01Z","host":"adm-3","kind":"start","image":"C:\\cmd.exe"}"#,
    );
    let hosts: Vec<&str> = out.iter().map(|a| a.entity.as_str()).collect();
    assert_eq!(hosts, vec!["w1"]);
}

#[test]
fn guarded_columns_are_scanned_only_under_their_guard_and_shared_ones_everywhere() {
    // `cmd: null` holds on every row without a command line, but the process_creation rule
    // runs only on `kind: start` rows (its log source's guard); the `product: city` rule has no
    // guard and reads the same column on every row.
    let guarded = "title: G\nid: g\nlogsource: {product: city, category: process_creation}\ndetection:\n  sel: {cmd: null}\n  condition: sel\n";
    let open = "title: O\nid: o\nlogsource: {product: city}\ndetection:\n  sel: {cmd: null, host|startswith: h}\n  condition: sel\n";
    let mut e = engine(&[("g.yml", guarded), ("o.yml", open)]);
    let out = run(
        &mut e,
        "proc",
        r#"{"ts":"2026-01-05T02:30:00Z","host":"h1","kind":"start"}
{"ts":"2026-01-05T02:30:01Z","host":"h2","kind":"exit"}
{"ts":"2026-01-05T02:30:02Z","host":"h3","kind":"start","cmd":"x"}"#,
    );
    let got: Vec<(&str, &str)> = out
        .iter()
        .map(|a| (a.rule.id.as_str(), a.entity.as_str()))
        .collect();
    assert_eq!(got, vec![("g", "h1"), ("o", "h1"), ("o", "h2")]);
}
