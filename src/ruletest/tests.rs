//! `palisade test` end to end but in process: rule folders and test files in a temporary
//! folder, the report compared whole. Every test goes through [`check`].

use crate::config::Config;

/// A Sigma rule on the badge stream, with a UUID id and a name.
const BADGE: &str = "title: Revoked badge
id: 0d6f6f0e-8c1b-4c55-9a4e-3f2b7d9e1a01
name: revoked_badge
logsource: {product: palisade, service: badge}
detection:
    selection: {result: denied, reason: revoked}
    condition: selection
fields: [holder, door]
level: medium
";

/// A Sigma rule on the scada stream, without a name.
const WRITE: &str = "title: Setpoint write
id: scada-write
logsource: {product: palisade, service: scada}
detection:
    selection: {action: setpoint_write}
    condition: selection
level: high
";

/// A SQL rule on the scada stream.
const ROGUE: &str = "-- id: t.rogue
-- title: Setpoint from an unknown host
-- severity: critical
-- stream: scada
SELECT ts, host, operator, value FROM scada WHERE action = 'setpoint_write' AND host NOT LIKE 'ews-%'
";

/// A SQL aggregate over the auth stream: counts within a micro-batch.
const SPRAY: &str = "-- id: t.spray
-- title: Spray
-- severity: high
-- stream: auth
-- entity: src_ip
SELECT src_ip, count(DISTINCT \"user\") AS users, max(ts) AS event_time
FROM auth WHERE result = 'failure' GROUP BY src_ip HAVING count(DISTINCT \"user\") >= 3
";

/// Writes `files` into a fresh folder, runs `palisade test` on it and compares the report
/// (the folder's path written `DIR`) and the exit code.
async fn check(config: &Config, files: &[(&str, &str)], expected: &str, code: u8) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut out = Vec::new();
    let outcome = super::run(config, &[dir.path().to_path_buf()], &mut out)
        .await
        .unwrap();
    let report = String::from_utf8(out)
        .unwrap()
        .replace(&dir.path().display().to_string(), "DIR");
    assert_eq!(
        report.trim_end(),
        expected.trim(),
        "\n--- report ---\n{report}"
    );
    assert_eq!(outcome.exit_code(), code, "{outcome:?}");
}

fn builtin() -> Config {
    Config::builtin()
}

fn badge(ts: &str, id: &str, reason: &str) -> String {
    format!(
        "{{ts: {ts}, badge_id: {id}, holder: ann, site: s, door: d1, zone: z, result: denied, reason: {reason}}}"
    )
}

fn write(ts: &str, host: &str, value: f64) -> String {
    format!(
        "{{ts: {ts}, operator: op, host: {host}, src_ip: 10.0.0.1, asset: plc-1, domain: water, action: setpoint_write, tag: t, value: {value}, previous: 1.0}}"
    )
}

#[tokio::test]
async fn passing_cases_name_rules_by_sigma_name_or_id() {
    let tests = format!(
        "tests:
  - name: by name
    stream: badge
    events:
      - {}
    expect:
      - {{rule: revoked_badge, entity: B-1}}
  - name: by id, and only other reasons
    stream: badge
    events:
      - {}
      - {}
    expect:
      - {{rule: 0d6f6f0e-8c1b-4c55-9a4e-3f2b7d9e1a01, count: 1}}
",
        badge("2026-01-05T02:30:00Z", "B-1", "revoked"),
        badge("2026-01-05T02:30:00Z", "B-2", "expired"),
        badge("2026-01-05T02:31:00Z", "B-3", "revoked"),
    );
    check(
        &builtin(),
        &[("badge.yml", BADGE), ("badge.tests.yml", &tests)],
        "
running 2 tests from DIR/badge.tests.yml
test by name ... ok
test by id, and only other reasons ... ok

test result: ok. 2 passed; 0 failed",
        0,
    )
    .await;
}

#[tokio::test]
async fn an_unexpected_alert_fails_with_a_diff() {
    let tests = format!(
        "tests:
  - name: fires
    stream: badge
    events: [{}]
    expect: [{{rule: revoked_badge}}]
  - name: an expired badge is not this rule's business
    stream: badge
    events: [{}]
    expect: []
",
        badge("2026-01-05T02:30:00Z", "B-1", "revoked"),
        badge("2026-01-05T02:30:00Z", "B-7", "revoked"),
    );
    check(
        &builtin(),
        &[("badge.yml", BADGE), ("badge.tests.yml", &tests)],
        r#"
running 2 tests from DIR/badge.tests.yml
test fires ... ok
test an expired badge is not this rule's business ... FAILED

failures:

---- an expired badge is not this rule's business ----
expected alerts:
  (none)
actual alerts:
  revoked_badge  entity=B-7  x1
      evidence {"door":"d1","holder":"ann","reason":"revoked","result":"denied"}
diff:
+ revoked_badge  entity=B-7  x1

test result: FAILED. 1 passed; 1 failed"#,
        1,
    )
    .await;
}

#[tokio::test]
async fn missing_alerts_and_wrong_counts_show_on_both_sides() {
    let tests = format!(
        "tests:
  - name: twice, not once
    stream: badge
    events: [{}, {}]
    expect: [{{rule: revoked_badge, entity: B-1}}]
  - name: never fired
    stream: badge
    events: [{}]
    expect: [{{rule: revoked_badge, entity: B-1}}]
",
        badge("2026-01-05T02:30:00Z", "B-1", "revoked"),
        badge("2026-01-05T02:31:00Z", "B-1", "revoked"),
        badge("2026-01-05T02:30:00Z", "B-1", "expired"),
    );
    check(
        &builtin(),
        &[("badge.yml", BADGE), ("badge.tests.yml", &tests)],
        r#"
running 2 tests from DIR/badge.tests.yml
test twice, not once ... FAILED
test never fired ... FAILED

failures:

---- twice, not once ----
expected alerts:
  revoked_badge  entity=B-1  x1
actual alerts:
  revoked_badge  entity=B-1  x2
      evidence {"door":"d1","holder":"ann","reason":"revoked","result":"denied"}
diff:
- revoked_badge  entity=B-1  x1
+ revoked_badge  entity=B-1  x2

---- never fired ----
expected alerts:
  revoked_badge  entity=B-1  x1
actual alerts:
  (none)
diff:
- revoked_badge  entity=B-1  x1

test result: FAILED. 0 passed; 2 failed"#,
        1,
    )
    .await;
}

#[tokio::test]
async fn specific_expectations_choose_first_whatever_their_order() {
    let tests = format!(
        "tests:
  - name: one about B-1 and one about anyone else
    stream: badge
    events: [{}, {}]
    expect:
      - {{rule: revoked_badge}}
      - {{rule: revoked_badge, entity: B-1}}
",
        badge("2026-01-05T02:30:00Z", "B-2", "revoked"),
        badge("2026-01-05T02:31:00Z", "B-1", "revoked"),
    );
    check(
        &builtin(),
        &[("badge.yml", BADGE), ("badge.tests.yml", &tests)],
        "
running 1 test from DIR/badge.tests.yml
test one about B-1 and one about anyone else ... ok

test result: ok. 1 passed; 0 failed",
        0,
    )
    .await;
}

#[tokio::test]
async fn evidence_compares_numbers_by_value_times_by_instant_and_personal_fields_as_written() {
    // `operator` is pseudonymised in alerts; the test still names the operator.
    let tests = format!(
        "rules: [t.rogue]
tests:
  - name: evidence holds
    stream: scada
    events: [{}]
    expect:
      - rule: t.rogue
        entity: laptop-7
        evidence: {{operator: op, value: 9.20, ts: '2026-01-05T02:30:00.000+00:00'}}
  - name: evidence differs
    stream: scada
    events: [{}]
    expect:
      - {{rule: t.rogue, evidence: {{value: 9.3}}}}
",
        write("2026-01-05T02:30:00Z", "laptop-7", 9.2),
        write("2026-01-05T02:30:00Z", "laptop-7", 9.2),
    );
    check(
        &builtin(),
        &[("rogue.sql", ROGUE), ("rogue.tests.yml", &tests)],
        r#"
running 2 tests from DIR/rogue.tests.yml
test evidence holds ... ok
test evidence differs ... FAILED

failures:

---- evidence differs ----
expected alerts:
  t.rogue  evidence={value: 9.3}  x1
actual alerts:
  t.rogue  entity=laptop-7  x1
      evidence {"ts":"2026-01-05T02:30:00Z","host":"laptop-7","operator":"op","value":9.2}
diff:
- t.rogue  evidence={value: 9.3}  x1
+ t.rogue  entity=laptop-7  x1

test result: FAILED. 1 passed; 1 failed"#,
        1,
    )
    .await;
}

#[tokio::test]
async fn alerts_of_rules_left_out_of_rules_are_ignored() {
    let tests = format!(
        "rules: [t.rogue]
tests:
  - name: the Sigma rule fires too, unseen
    stream: scada
    events: [{}]
    expect: [{{rule: t.rogue}}]
",
        write("2026-01-05T02:30:00Z", "laptop-7", 9.2),
    );
    check(
        &builtin(),
        &[
            ("rogue.sql", ROGUE),
            ("write.yml", WRITE),
            ("rogue.tests.yml", &tests),
        ],
        "
running 1 test from DIR/rogue.tests.yml
test the Sigma rule fires too, unseen ... ok

test result: ok. 1 passed; 0 failed",
        0,
    )
    .await;
}

#[tokio::test]
async fn streams_merge_by_event_time_then_written_order() {
    // One event per batch: alerts are raised in arrival order, which the report lists. The
    // scada stream is written first but its event is later; the two badge events keep their
    // written order although the second is older (a stream's events arrive as written).
    let tests = format!(
        "tests:
  - name: arrival order
    batch_rows: 1
    events:
      scada:
        - {}
      badge:
        - {}
        - {}
    expect: []
",
        write("2026-01-05T02:30:05Z", "laptop-7", 9.2),
        badge("2026-01-05T02:30:03Z", "B-1", "revoked"),
        badge("2026-01-05T02:30:01Z", "B-2", "revoked"),
    );
    check(
        &builtin(),
        &[
            ("badge.yml", BADGE),
            ("write.yml", WRITE),
            ("merge.tests.yml", &tests),
        ],
        r#"
running 1 test from DIR/merge.tests.yml
test arrival order ... FAILED

failures:

---- arrival order ----
expected alerts:
  (none)
actual alerts:
  revoked_badge  entity=B-1  x1
      evidence {"door":"d1","holder":"ann","reason":"revoked","result":"denied"}
  revoked_badge  entity=B-2  x1
      evidence {"door":"d1","holder":"ann","reason":"revoked","result":"denied"}
  scada-write  entity=laptop-7  x1
      evidence {"action":"setpoint_write"}
diff:
+ revoked_badge  entity=B-1  x1
+ revoked_badge  entity=B-2  x1
+ scada-write  entity=laptop-7  x1

test result: FAILED. 0 passed; 1 failed"#,
        1,
    )
    .await;
}

#[tokio::test]
async fn aggregates_count_within_a_micro_batch() {
    let failure = |i: u32, user: &str| {
        format!(
            "{{ts: 2026-01-05T03:40:0{i}Z, user: {user}, src_ip: 203.0.113.9, target: hmi, method: password, result: failure, reason: bad_password}}"
        )
    };
    let events = format!(
        "[{}, {}, {}]",
        failure(1, "a"),
        failure(2, "b"),
        failure(3, "c")
    );
    let tests = format!(
        "tests:
  - name: one batch
    stream: auth
    events: {events}
    expect: [{{rule: t.spray, entity: 203.0.113.9}}]
  - name: batches of two never see three users
    stream: auth
    batch_rows: 2
    events: {events}
    expect: []
"
    );
    check(
        &builtin(),
        &[("spray.sql", SPRAY), ("spray.tests.yml", &tests)],
        "
running 2 tests from DIR/spray.tests.yml
test one batch ... ok
test batches of two never see three users ... ok

test result: ok. 2 passed; 0 failed",
        0,
    )
    .await;
}

#[tokio::test]
async fn an_event_that_does_not_decode_fails_its_case_with_the_reason() {
    let tests = format!(
        "tests:
  - name: no time
    stream: badge
    events:
      - {}
      - {{badge_id: B-2, result: denied, reason: revoked}}
    expect: [{{rule: revoked_badge}}]
",
        badge("2026-01-05T02:30:00Z", "B-1", "revoked"),
    );
    check(
        &builtin(),
        &[("badge.yml", BADGE), ("badge.tests.yml", &tests)],
        r#"
running 1 test from DIR/badge.tests.yml
test no time ... FAILED

failures:

---- no time ----
event at DIR/badge.tests.yml:6:9 (stream `badge`) did not decode: event-time field `ts` is missing or null
expected alerts:
  revoked_badge  x1
actual alerts:
  revoked_badge  entity=B-1  x1
      evidence {"door":"d1","holder":"ann","reason":"revoked","result":"denied"}

test result: FAILED. 0 passed; 1 failed"#,
        1,
    )
    .await;
}

#[tokio::test]
async fn mistakes_in_a_test_file_are_errors_at_their_line_and_column_and_other_files_run() {
    let good = format!(
        "tests:
  - name: fine
    stream: badge
    events: [{}]
    expect: [{{rule: revoked_badge}}]
",
        badge("2026-01-05T02:30:00Z", "B-1", "revoked"),
    );
    let bad = "rules: []
tests:
  - name: typo
    stream: badge
    events: [{ts: 2026-01-05T02:30:00Z}]
    expcet: []
  - name: unknowns
    stream: bus
    events: [{ts: 2026-01-05T02:30:00Z}]
    expect: [{rule: scada-write}, {rule: revoked_badge, count: 0}]
  - name: no stream
    events: [{ts: 2026-01-05T02:30:00Z}]
    expect: []
  - name: typo
    stream: badge
    events: [{ts: 2026-01-05T02:30:00Z}]
    expect: []
";
    check(
        &builtin(),
        &[
            ("a/badge.yml", BADGE),
            ("a/bad.tests.yml", bad),
            ("b/badge.yml", BADGE),
            ("b/good.tests.yml", &good),
        ],
        "
error: DIR/a/bad.tests.yml:1:8: `rules` is empty, so nothing would be compared: list rules, or remove `rules` to compare every rule
error: DIR/a/bad.tests.yml:6:5: unknown key `expcet` in a test case; expected `name`, `stream`, `events`, `expect` or `batch_rows`
error: DIR/a/bad.tests.yml:3:5: a test case needs `expect`: the alerts it must raise (`expect: []` for none)
error: DIR/a/bad.tests.yml:10:64: `count` must be a whole number of at least 1, found `0`
error: DIR/a/bad.tests.yml:12:13: which stream are these events of? Add `stream: NAME` to the case, or write `events` as a map from stream name to its events
error: DIR/a/bad.tests.yml:14:5: two cases are named `typo`; names must be unique

running 1 test from DIR/b/good.tests.yml
test fine ... ok

test result: FAILED. 1 passed; 0 failed; 1 error",
        2,
    )
    .await;
    // Once the file parses, names are checked against the configuration and the rules.
    let bad = "rules: [revoked_badge, nope]
tests:
  - name: unknowns
    stream: bus
    events: [{ts: 2026-01-05T02:30:00Z}]
    expect: [{rule: scada-write}, {rule: nope}]
";
    check(
        &builtin(),
        &[
            ("badge.yml", BADGE),
            ("write.yml", WRITE),
            ("bad.tests.yml", bad),
        ],
        "
error: DIR/bad.tests.yml:1:24: unknown rule `nope`: the rules in DIR are `revoked_badge`, `scada-write`
error: DIR/bad.tests.yml:4:13: unknown stream `bus`; the configuration has `netflow`, `auth`, `badge`, `scada`, `sensors`, `pumps`
error: DIR/bad.tests.yml:6:21: rule `scada-write` is not compared in this file: add it to `rules:` at the top
error: DIR/bad.tests.yml:6:42: unknown rule `nope`: the rules in DIR are `revoked_badge`, `scada-write`

test result: FAILED. 0 passed; 0 failed; 1 error",
        2,
    )
    .await;
}

#[tokio::test]
async fn yaml_syntax_errors_and_rules_that_do_not_load_are_errors() {
    check(
        &builtin(),
        &[
            ("badge.yml", BADGE),
            ("badge.tests.yml", "tests:\n  - name: [unclosed\n"),
        ],
        "
error: DIR/badge.tests.yml:3:1: while parsing a flow sequence, expected ',' or ']'

test result: FAILED. 0 passed; 0 failed; 1 error",
        2,
    )
    .await;
    check(
        &builtin(),
        &[
            ("broken.sql", "-- id: t.broken\nSELECT 1"),
            (
                "broken.tests.yml",
                "tests: [{name: n, stream: badge, events: [{ts: 1}], expect: []}]",
            ),
        ],
        "
error: DIR/broken.tests.yml: the rules beside it do not load (`palisade check DIR` says more):
error: DIR/broken.sql:1: missing `-- stream: ...` in the header

test result: FAILED. 0 passed; 0 failed; 1 error",
        2,
    )
    .await;
}

#[tokio::test]
async fn paths_without_tests_are_errors_and_projected_streams_run() {
    check(
        &builtin(),
        &[("badge.yml", BADGE)],
        "
error: DIR: no rule tests here (files named `*.tests.yml`)
test result: FAILED. 0 passed; 0 failed; 1 error",
        2,
    )
    .await;
    let windows = Config::preset("sigma-windows").unwrap();
    check(
        &windows,
        &[
            (
                "proc.yml",
                "title: p\nid: p\nlogsource: {product: windows, category: process_creation}\ndetection:\n    s: {Image|endswith: '\\evil.exe'}\n    condition: s\n",
            ),
            (
                "proc.tests.yml",
                r#"tests:
  - name: evil.exe started
    stream: windows
    events:
      - {Event: {System: {EventID: 1, Channel: Microsoft-Windows-Sysmon/Operational, Computer: ws-1, TimeCreated: {'#attributes': {SystemTime: '2026-01-05T02:30:00.123456Z'}}}, EventData: {Image: 'C:\x\EVIL.exe'}}}
    expect: [{rule: p, entity: ws-1}]
  - name: not a process creation
    stream: windows
    events:
      - {Event: {System: {EventID: 11, Channel: Microsoft-Windows-Sysmon/Operational, Computer: ws-1, TimeCreated: {'#attributes': {SystemTime: '2026-01-05T02:30:00Z'}}}, EventData: {Image: 'C:\x\evil.exe'}}}
    expect: []
"#,
            ),
        ],
        "
running 2 tests from DIR/proc.tests.yml
test evil.exe started ... ok
test not a process creation ... ok

test result: ok. 2 passed; 0 failed",
        0,
    )
    .await;
}
