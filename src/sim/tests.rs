//! Feature tests of the simulator: determinism, schema conformance, timing, labels, rates,
//! and that benign traffic never (and each scenario always) satisfies the shipped rules.
//!
//! Records are checked with the real configuration (`deploy/palisade.toml`), decoder and the
//! shipped SQL rules (`rules/`), so drift between them and the simulator fails here. Rules run
//! over each stream of a whole run as one batch: for the aggregate rules (count-distinct at
//! least N) that is the worst case of any batch cut from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::RecordBatch;
use serde_json::Value;

use super::*;
use crate::alert::Alert;
use crate::config::{Config, StreamConfig};
use crate::decode::JsonDecoder;
use crate::detect::{DetectorSet, EvalContext};
use crate::privacy::Pseudonymiser;
use crate::source::{Origin, RawBatch};

/// 2026-01-05T00:00:00Z, a Monday.
const DAY: i64 = 1_767_571_200_000;
const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

fn opts(seed: u64, start_ms: i64, minutes: i64, scenarios: &[Scenario]) -> SimOptions {
    SimOptions {
        seed,
        start_ms,
        duration_ms: Some(minutes * MINUTE),
        scenarios: scenarios.to_vec(),
    }
}

/// Every batch of a run, with the `now_ms` it was generated at.
fn batches(o: SimOptions) -> Vec<(i64, Vec<SimRecord>)> {
    let mut sim = Simulator::new(o);
    let mut out = Vec::new();
    let mut all = Vec::new();
    loop {
        let at = sim.now_ms();
        if !sim.next_second(&mut out) {
            assert!(out.is_empty(), "a finished simulator must generate nothing");
            break;
        }
        all.push((at, out.clone()));
    }
    all
}

fn flatten(b: &[(i64, Vec<SimRecord>)]) -> Vec<SimRecord> {
    b.iter().flat_map(|(_, r)| r.iter().cloned()).collect()
}

/// Night start keeps the background light, so the 40 minutes stay quick to check.
const ATTACK_START: i64 = DAY + HOUR;
const ATTACK_MINUTES: i64 = 40;

/// 40 minutes with every scenario: all first occurrences fall in it.
fn attack_run() -> &'static [(i64, Vec<SimRecord>)] {
    static RUN: OnceLock<Vec<(i64, Vec<SimRecord>)>> = OnceLock::new();
    RUN.get_or_init(|| batches(opts(42, ATTACK_START, ATTACK_MINUTES, &Scenario::ALL)))
}

/// The same 40 minutes without scenarios.
fn quiet_run() -> &'static [(i64, Vec<SimRecord>)] {
    static RUN: OnceLock<Vec<(i64, Vec<SimRecord>)>> = OnceLock::new();
    RUN.get_or_init(|| batches(opts(42, ATTACK_START, ATTACK_MINUTES, &[])))
}

fn json(r: &SimRecord) -> Value {
    serde_json::from_slice(&r.value)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.value)))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

// ---- The real configuration, decoder and rules ----

/// The built-in configuration: the streams the simulator must fit.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::builtin)
}

/// The stream a topic belongs to.
fn stream_of(topic: &str) -> &'static StreamConfig {
    let config = config();
    let i = config
        .stream_of_topic(topic)
        .unwrap_or_else(|| panic!("topic {topic} belongs to no stream"));
    &config.streams[i]
}

/// Each stream's records of `records` as one batch, decoded by the real decoder, which must
/// accept every record.
fn decoded(records: &[SimRecord]) -> Vec<(usize, RecordBatch)> {
    let config = config();
    let mut out = Vec::new();
    for (i, stream) in config.streams.iter().enumerate() {
        let mut raw = RawBatch::new(i);
        for (n, r) in records
            .iter()
            .filter(|r| stream.topics.iter().any(|t| t == r.topic))
            .enumerate()
        {
            raw.push(
                &r.value,
                Origin {
                    source: 0,
                    partition: 0,
                    offset: n as i64,
                    timestamp_ms: 0,
                },
            );
        }
        if raw.is_empty() {
            continue;
        }
        let mut decoder = JsonDecoder::new(
            Arc::clone(stream.arrow_schema().unwrap()),
            stream.event_time.get_ref(),
            raw.len(),
        )
        .unwrap();
        let d = decoder.decode(&raw);
        assert!(
            d.dead.is_empty(),
            "{}: {:?}",
            stream.name.get_ref(),
            d.dead.first()
        );
        out.push((i, d.batch));
    }
    out
}

/// The alerts the shipped rules raise on `records` (each stream as one batch), by rule id.
fn rule_alerts(records: &[SimRecord]) -> BTreeMap<String, Vec<Alert>> {
    let config = config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rules = runtime
        .block_on(DetectorSet::load(config, &config.rule_dirs()))
        .unwrap();
    let ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"test"),
        partition: 0,
        // Each stream is one batch holding all its input: every window is complete.
        watermark_ms: i64::MAX,
    };
    let (mut alerts, mut timings) = (Vec::new(), Vec::new());
    for (stream, batch) in decoded(records) {
        rules.evaluate(stream, &batch, &ctx, &mut alerts, &mut timings);
    }
    assert!(timings.iter().all(|t| t.error.is_none()), "{timings:?}");
    let mut by_rule: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
    for a in alerts {
        by_rule.entry(a.rule.id.clone()).or_default().push(a);
    }
    by_rule
}

// ---- Tests ----

#[test]
fn same_options_give_identical_bytes_and_another_seed_differs() {
    let a = batches(opts(7, DAY + 14 * HOUR, 4, &Scenario::ALL));
    let b = batches(opts(7, DAY + 14 * HOUR, 4, &Scenario::ALL));
    assert_eq!(a.len(), 240);
    assert_eq!(a, b);
    let c = batches(opts(8, DAY + 14 * HOUR, 4, &Scenario::ALL));
    assert_eq!(c.len(), 240);
    assert_ne!(flatten(&a), flatten(&c));
    // Recycling buffers between calls must not leak one second into the next.
    let mut sim = Simulator::new(opts(7, DAY + 14 * HOUR, 4, &Scenario::ALL));
    let mut out = Vec::new();
    for (_, want) in &a {
        assert!(sim.next_second(&mut out));
        assert_eq!(&out, want);
    }
    assert!(!sim.next_second(&mut out));
}

#[test]
fn every_record_fits_its_stream_schema() {
    let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
    // The attack run holds the quiet run's records too (see scenarios_only_add_labelled_records).
    let records = flatten(attack_run());
    for r in &records {
        let st = stream_of(r.topic);
        let schema = st.arrow_schema().unwrap();
        let v = json(r);
        let obj = v.as_object().expect("one JSON object");
        *per_topic.entry(r.topic).or_default() += 1;
        // Exactly the schema's fields (all present), plus the label on attack events.
        for field in schema.fields() {
            assert!(
                obj.contains_key(field.name()),
                "{} lacks {}: {v}",
                st.name.get_ref(),
                field.name()
            );
        }
        let extra: Vec<&String> = obj
            .keys()
            .filter(|k| schema.field_with_name(k).is_err() && *k != "label")
            .collect();
        assert!(
            extra.is_empty(),
            "{}: fields {extra:?} not in the schema",
            st.name.get_ref()
        );
        assert_eq!(obj.get("label").and_then(Value::as_str), r.label, "{v}");
        assert_eq!(
            s(&v, &st.entity.get_ref()[0]),
            r.key,
            "key must be the entity"
        );
        assert!(!r.value.ends_with(b"\n"));
    }
    // The real decoder takes every record, with no type mismatch (asserted inside).
    let batches = decoded(&records);
    assert_eq!(
        batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(),
        records.len()
    );
    // All five streams are present.
    assert_eq!(per_topic.len(), 5, "{per_topic:?}");
}

#[test]
fn batches_are_ordered_and_ts_equals_ts_ms() {
    for (at, batch) in attack_run() {
        assert!(batch.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        for r in batch {
            assert!(
                (*at..at + 1000).contains(&r.ts_ms),
                "record outside its second"
            );
            let v = json(r);
            let ts = s(&v, "ts");
            assert_eq!(ts.len(), 24, "{ts}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
            let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
            assert_eq!(parsed.timestamp_millis(), r.ts_ms);
        }
    }
}

#[test]
fn first_occurrences_come_in_order_within_40_minutes() {
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for r in attack_run().iter().flat_map(|(_, b)| b) {
        if let Some(l) = r.label {
            first.entry(l).or_insert(r.ts_ms);
        }
    }
    let times: Vec<i64> = Scenario::ALL
        .iter()
        .map(|sc| {
            *first
                .get(sc.name())
                .unwrap_or_else(|| panic!("{} missing", sc.name()))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "not in order: {times:?}"
    );
    assert!(times[0] >= ATTACK_START + 3 * MINUTE);
    assert!(*times.last().unwrap() < ATTACK_START + 40 * MINUTE);
    // About five minutes apart.
    for w in times.windows(2) {
        assert!(
            (4 * MINUTE..6 * MINUTE).contains(&(w[1] - w[0])),
            "{times:?}"
        );
    }
}

#[test]
fn benign_run_has_no_labels() {
    let records = quiet_run().iter().flat_map(|(_, b)| b);
    let mut n = 0;
    for r in records {
        assert_eq!(r.label, None);
        assert!(!r.value.windows(8).any(|w| w == b"\"label\":"));
        n += 1;
    }
    assert!(n > 50_000, "{n}");
}

#[test]
fn scenarios_only_add_labelled_records() {
    for ((at_a, a), (at_q, q)) in attack_run().iter().zip(quiet_run()) {
        assert_eq!(at_a, at_q);
        let benign: Vec<&SimRecord> = a.iter().filter(|r| r.label.is_none()).collect();
        assert_eq!(benign, q.iter().collect::<Vec<_>>());
    }
}

#[test]
fn rates_follow_the_day() {
    let count = |hour: i64| -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for r in flatten(&batches(opts(3, DAY + hour * HOUR, 2, &[]))) {
            *m.entry(r.topic).or_default() += 1;
        }
        m
    };
    let (day, night) = (count(14), count(3));
    let total = |m: &BTreeMap<&str, usize>| m.values().sum::<usize>();
    assert!(total(&day) > 2 * total(&night), "{day:?} vs {night:?}");
    for topic in ["city.netflow", "city.auth", "city.badge", "city.scada"] {
        assert!(
            day[topic] > night.get(topic).copied().unwrap_or(0),
            "{topic}"
        );
    }
    // Peak rates per second, as documented (two minutes, so with some slack).
    let per_s = |t: &str| day[t] as f64 / 120.0;
    assert!(
        (70.0..130.0).contains(&per_s("city.netflow")),
        "{}",
        per_s("city.netflow")
    );
    assert!((2.0..4.5).contains(&per_s("city.auth")));
    assert!((0.6..1.5).contains(&per_s("city.badge")));
    assert!((1.0..2.2).contains(&per_s("city.scada")));
    // Sensors report on a fixed cadence: 58 readings every 10 s, day and night.
    assert_eq!(day["city.sensors"], 58 * 12);
    assert_eq!(night["city.sensors"], 58 * 12);
}

#[test]
fn benign_traffic_never_trips_a_rule() {
    // Office hours (the busiest) as one batch, and the night run as another.
    let peak = flatten(&batches(opts(11, DAY + 13 * HOUR, 15, &[])));
    assert!(peak.len() > 80_000);
    for records in [peak, flatten(quiet_run())] {
        let alerts = rule_alerts(&records);
        assert!(alerts.is_empty(), "benign alerts: {alerts:#?}");
    }
    // And by construction: no benign source can reach the port-scan threshold at all.
    assert!(city::BENIGN_PORTS.len() < 30);
}

#[test]
fn each_scenario_trips_exactly_its_rules() {
    let records = flatten(attack_run());
    let alerts = rule_alerts(&records);
    let expected: BTreeSet<&str> = Scenario::ALL
        .iter()
        .flat_map(|s| s.rule_ids())
        .copied()
        .collect();
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    for sc in Scenario::ALL {
        let labelled: Vec<&SimRecord> = records
            .iter()
            .filter(|r| r.label == Some(sc.name()))
            .collect();
        assert!(!labelled.is_empty(), "{} produced nothing", sc.name());
        for r in &labelled {
            assert_eq!(stream_of(r.topic).name.get_ref(), sc.stream());
        }
        for id in sc.rule_ids() {
            let fired = &alerts[*id];
            match *id {
                // Aggregates: one alert for the burst, about its source.
                "net.port_scan" | "auth.password_spray" => {
                    assert_eq!(fired.len(), 1, "{id}: {fired:#?}");
                    let source = s(&json(labelled[0]), "src_ip").to_string();
                    assert_eq!(fired[0].entity, source, "{id}");
                }
                // Row rules: one alert per attack event, and none for anything else.
                _ => {
                    assert_eq!(fired.len(), labelled.len(), "{id} vs {}", sc.name());
                    let mut times: Vec<&str> =
                        fired.iter().map(|a| a.event_time.as_str()).collect();
                    let mut want: Vec<String> = labelled
                        .iter()
                        .map(|r| s(&json(r), "ts").to_string())
                        .collect();
                    times.sort();
                    want.sort();
                    assert_eq!(times, want, "{id}");
                }
            }
        }
    }
    // The aggregate rules also fire within single one-second batches.
    for id in ["net.port_scan", "auth.password_spray"] {
        let fired = attack_run()
            .iter()
            .filter(|(_, b)| b.iter().any(|r| r.label.is_some()))
            .any(|(_, b)| rule_alerts(b).contains_key(id));
        assert!(fired, "{id} needs more than one second of data");
    }
}

#[test]
fn scenario_details_match_the_brief() {
    let mut by: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in attack_run().iter().flat_map(|(_, b)| b) {
        if let Some(l) = r.label {
            by.entry(l).or_default().push(json(r));
        }
    }
    let scan = &by["port_scan"];
    assert!(scan.len() >= 600);
    assert!(
        scan.iter()
            .all(|v| s(v, "src_zone") == "bikeshare" && s(v, "dst_zone") == "ot-water")
    );
    let ports: BTreeSet<i64> = scan
        .iter()
        .map(|v| v["dst_port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports.len(), scan.len());
    let denied = scan.iter().filter(|v| s(v, "action") == "deny").count();
    assert!(denied * 10 > scan.len() * 9);
    let span = |vs: &[Value]| {
        let t = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(s(v, "ts"))
                .unwrap()
                .timestamp_millis()
        };
        t(vs.last().unwrap()) - t(&vs[0])
    };
    assert!(span(scan) < 4000);

    let spray = &by["password_spray"];
    assert!((40..=60).contains(&spray.len()));
    assert!(span(spray) < 5000);
    assert!(
        spray
            .iter()
            .all(|v| s(v, "target") == "hmi-water-01" && s(v, "result") == "failure")
    );
    let reasons: BTreeSet<&str> = spray.iter().map(|v| s(v, "reason")).collect();
    assert_eq!(reasons, BTreeSet::from(["bad_password", "unknown_user"]));

    for v in &by["rogue_setpoint"] {
        assert_eq!(
            (s(v, "host"), s(v, "src_ip"), s(v, "asset")),
            ("laptop-vendor-7", "10.99.0.23", "wtp-plc-03")
        );
        assert!((8.0..=10.0).contains(&f(v, "value")));
        assert!((1.5..=2.5).contains(&f(v, "previous")) || f(v, "previous") >= 8.0);
    }
    let vpn = &by["vpn_foreign_login"];
    assert!(vpn.iter().all(|v| s(v, "user").starts_with("vendor.")));
    let badge = &by["revoked_badge"];
    assert!((3..=5).contains(&badge.len()));
    assert!(
        badge
            .iter()
            .all(|v| s(v, "site").starts_with("pump-station-"))
    );
    let tamper = &by["sensor_tamper"];
    assert!(
        tamper
            .iter()
            .all(|v| s(v, "metric") == "chlorine_mg_l" && s(v, "domain") == "water")
    );
    let exfil = &by["lpr_exfiltration"];
    let total: i64 = exfil.iter().map(|v| v["bytes_out"].as_i64().unwrap()).sum();
    assert!(total > 500_000_000);
    assert!(
        exfil
            .iter()
            .all(|v| ["10.50.0.11", "10.50.0.12"].contains(&s(v, "src_ip")))
    );
}

#[test]
fn scenarios_repeat_about_every_six_hours() {
    let mut sim = Simulator::new(opts(5, DAY, 24 * 60, &Scenario::ALL));
    let first = sim.attacks.schedule();
    assert_eq!(first.len(), 7);
    let mut out = Vec::new();
    let mut pool = Vec::new();
    // Drive only the scheduler through a day: the background is not needed for timing.
    let mut fired: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut t = DAY;
    while t < DAY + 24 * HOUR {
        sim.attacks.second(t, &sim.background, &mut out, &mut pool);
        for r in out.drain(..) {
            let times = fired.entry(r.label.unwrap()).or_default();
            if times
                .last()
                .is_none_or(|&last| r.ts_ms - last > 10 * MINUTE)
            {
                times.push(r.ts_ms);
            }
        }
        t += 1000;
    }
    for (sc, _) in first {
        let times = &fired[sc.name()];
        assert!((4..=5).contains(&times.len()), "{}: {times:?}", sc.name());
        for w in times.windows(2) {
            assert!((5 * HOUR + 40 * MINUTE..=6 * HOUR + 20 * MINUTE).contains(&(w[1] - w[0])));
        }
    }
}

#[test]
fn only_enabled_scenarios_are_injected() {
    let run = flatten(&batches(opts(9, DAY, 10, &[Scenario::PasswordSpray])));
    let labels: BTreeSet<&str> = run.iter().filter_map(|r| r.label).collect();
    assert_eq!(labels, BTreeSet::from(["password_spray"]));
}

#[test]
fn scenario_names_round_trip() {
    for sc in Scenario::ALL {
        assert_eq!(Scenario::from_name(sc.name()), Some(sc));
        assert!(!sc.rule_ids().is_empty());
    }
    assert_eq!(Scenario::from_name("Port_Scan"), None);
    assert_eq!(Scenario::from_name(""), None);
}

#[test]
fn duration_ends_mid_second() {
    let mut o = opts(1, DAY + 12 * HOUR, 0, &[]);
    o.duration_ms = Some(2500);
    let b = batches(o);
    assert_eq!(b.len(), 3);
    assert!(b[2].1.iter().all(|r| r.ts_ms < DAY + 12 * HOUR + 2500));
}

/// The rule files the scenarios name exist, and their headers hold what the loader needs.
#[test]
fn shipped_rules_name_the_ids_scenarios_promise() {
    let config = config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rules = runtime
        .block_on(DetectorSet::load(config, &config.rule_dirs()))
        .unwrap();
    let ids: BTreeSet<&str> = rules.rules().map(|r| r.id.as_str()).collect();
    for sc in Scenario::ALL {
        for id in sc.rule_ids() {
            assert!(ids.contains(id), "no shipped rule has the id {id}");
            let rule = rules.rules().find(|r| r.id == *id).unwrap();
            assert_eq!(rule.stream, sc.stream(), "{id}");
        }
    }
}
