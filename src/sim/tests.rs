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

use super::benign::Background;
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
        streams: None,
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

/// The scenarios whose first occurrence falls in the 40 minutes of [`attack_run`].
fn attacks() -> impl Iterator<Item = Scenario> {
    Scenario::ALL
        .into_iter()
        .filter(|s| s.kind() == Kind::Attack)
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
    // Every stream is present.
    assert_eq!(per_topic.len(), Simulator::STREAMS.len(), "{per_topic:?}");
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
    let times: Vec<i64> = attacks()
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
    // Sensors and pump stations report on a fixed cadence, every 10 s, day and night.
    let readings: usize = city::ASSETS.iter().map(|a| a.metrics.len()).sum();
    assert_eq!(readings, 46);
    for run in [&day, &night] {
        assert_eq!(run["city.sensors"], readings * 12);
        assert_eq!(run["city.pumps"], city::PUMP_NAMES.len() * 12);
    }
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
    let expected: BTreeSet<&str> = attacks().flat_map(|s| s.rule_ids()).copied().collect();
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    for sc in attacks() {
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
    let all_attacks: Vec<Scenario> = attacks().collect();
    let mut sim = Simulator::new(opts(5, DAY, 24 * 60, &all_attacks));
    let first = sim.attacks.schedule();
    assert_eq!(first.len(), 7);
    let mut out = Vec::new();
    let mut pool = Vec::new();
    // Drive only the scheduler through a day: the background is not needed for timing.
    let mut fired: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut t = DAY;
    while t < DAY + 24 * HOUR {
        sim.attacks.fire(t, &mut sim.background, &mut pool);
        sim.attacks.emit(t, &mut out);
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

// ---- Equipment and insider scenarios ----

/// A whole run's records, and its incidents.
fn run_with_incidents(o: SimOptions) -> (Vec<SimRecord>, Vec<Incident>) {
    let mut sim = Simulator::new(o);
    let (mut out, mut all, mut incidents) = (Vec::new(), Vec::new(), Vec::new());
    while sim.next_second(&mut out) {
        all.extend(out.iter().cloned());
        sim.take_incidents(&mut incidents);
    }
    sim.take_incidents(&mut incidents);
    (all, incidents)
}

fn streams(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

/// The shipped rules' alerts on `records` (in time order) as replay would raise them: each
/// stream cut into a batch per minute of event time, the watermark ten seconds behind, every
/// window closed at the end.
fn rule_alerts_in_time(records: &[SimRecord]) -> Vec<Alert> {
    let config = config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rules = runtime
        .block_on(DetectorSet::load(config, &config.rule_dirs()))
        .unwrap();
    let mut ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"test"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let (mut alerts, mut timings) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < records.len() {
        let minute = records[i].ts_ms.div_euclid(MINUTE);
        let n = records[i..].partition_point(|r| r.ts_ms.div_euclid(MINUTE) == minute);
        let slice = &records[i..i + n];
        ctx.now_ms = slice[n - 1].ts_ms;
        ctx.watermark_ms = ctx.now_ms - 10_000;
        for (stream, batch) in decoded(slice) {
            rules.evaluate(stream, &batch, &ctx, &mut alerts, &mut timings);
        }
        i += n;
    }
    ctx.watermark_ms = i64::MAX;
    for stream in 0..config.streams.len() {
        rules.advance(stream, &ctx, &mut alerts, &mut timings);
    }
    assert!(timings.iter().all(|t| t.error.is_none()), "{timings:?}");
    alerts
}

/// Checks that every alert belongs to an incident of a scenario naming its rule (same entity,
/// from the start to ten minutes after the end), and that every scenario's rules fired on each
/// of its incidents.
fn check_alerts_belong(alerts: &[Alert], incidents: &[Incident]) {
    let p = Pseudonymiser::new(b"test");
    let entity = |i: &Incident| match i.field {
        "user" => p.pseudonym(&i.entity),
        _ => i.entity.clone(),
    };
    let mut caught = vec![BTreeSet::new(); incidents.len()];
    for a in alerts {
        let t = crate::alert::parse_time_ms(&a.event_time).unwrap();
        let owner = incidents.iter().position(|i| {
            i.scenario.rule_ids().contains(&a.rule.id.as_str())
                && entity(i) == a.entity
                && (i.start_ms..i.end_ms + 10 * MINUTE).contains(&t)
        });
        let Some(n) = owner else {
            panic!("an alert no incident explains: {a:#?}\nincidents: {incidents:#?}")
        };
        caught[n].insert(a.rule.id.as_str());
    }
    for (i, rules) in incidents.iter().zip(&caught) {
        let want: BTreeSet<&str> = i.scenario.rule_ids().iter().copied().collect();
        assert_eq!(rules, &want, "{i:?}");
    }
}

fn equipment() -> Vec<Scenario> {
    Scenario::ALL
        .into_iter()
        .filter(|s| s.kind() == Kind::Equipment)
        .collect()
}

#[test]
fn equipment_scenarios_replace_only_their_series_and_trip_exactly_their_rules() {
    let mut o = opts(42, DAY, 4 * 60 + 30, &equipment());
    o.streams = streams(&["sensors", "pumps"]);
    let (records, incidents) = run_with_incidents(o.clone());
    o.scenarios.clear();
    let (quiet, none) = run_with_incidents(o);
    assert!(none.is_empty());
    for s in equipment() {
        let mine: Vec<&Incident> = incidents.iter().filter(|i| i.scenario == s).collect();
        assert_eq!(mine.len(), 1, "{}: {incidents:?}", s.name());
        assert!(mine[0].start_ms >= DAY + s.first_slot_ms(), "{:?}", mine[0]);
        assert!(
            mine[0].end_ms > mine[0].start_ms + 5 * MINUTE,
            "{:?}",
            mine[0]
        );
    }
    // The series each scenario acts on: a metric of a sensor asset, or a whole pump poll.
    let metric = |s: Scenario| match s {
        Scenario::SensorStuck => Some("level_m"),
        Scenario::SensorSilent => Some("flow_m3h"),
        Scenario::SensorOffset => Some("pressure_bar"),
        _ => None,
    };
    let acted_on = |r: &SimRecord| {
        incidents.iter().find(|i| {
            r.key == i.entity
                && (i.start_ms..i.end_ms).contains(&r.ts_ms)
                && metric(i.scenario).is_none_or(|m| s(&json(r), "metric") == m)
        })
    };
    // Separable: the benign records are the quiet run's, less those of the series acted on.
    let benign: Vec<&SimRecord> = records.iter().filter(|r| r.label.is_none()).collect();
    let kept: Vec<&SimRecord> = quiet.iter().filter(|r| acted_on(r).is_none()).collect();
    assert_eq!(benign, kept);
    // A labelled record is one of its incident's series, within it.
    for r in records.iter().filter(|r| r.label.is_some()) {
        let i = acted_on(r).unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(r.label, Some(i.scenario.name()));
    }
    // The silent series sends nothing at all; the others are replaced reading for reading.
    let silent = incidents
        .iter()
        .find(|i| i.scenario == Scenario::SensorSilent)
        .unwrap();
    assert!(
        records
            .iter()
            .all(|r| acted_on(r).is_none_or(|i| i != silent))
    );
    assert!(quiet.iter().filter(|r| acted_on(r) == Some(silent)).count() > 50);
    check_alerts_belong(&rule_alerts_in_time(&records), &incidents);
    assert!(rule_alerts_in_time(&quiet).is_empty());
}

#[test]
fn insider_scenarios_pick_victims_as_documented_and_trip_exactly_their_rules() {
    let logins = [
        Scenario::ImpossibleTravel,
        Scenario::NewSystemLogin,
        Scenario::OffHoursLogin,
    ];
    let mut o = opts(42, DAY, 31 * 60, &logins);
    o.streams = streams(&["auth"]);
    let (records, incidents) = run_with_incidents(o.clone());
    let bg = Background::new(42, [true; 6]);
    let person = |name: &str| {
        *bg.city
            .people
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is nobody"))
    };
    let events: Vec<Value> = records.iter().map(json).collect();
    for s in logins {
        let mine: Vec<&Incident> = incidents.iter().filter(|i| i.scenario == s).collect();
        assert!(!mine.is_empty(), "{}", s.name());
        for i in mine {
            let v = person(&i.entity);
            let e: Vec<&Value> = events
                .iter()
                .filter(|e| e.get("label").is_some_and(|l| l == s.name()))
                .filter(|e| s_(e, "user") == i.entity && ts(e) == i.start_ms)
                .collect();
            assert_eq!(e.len(), 1, "{i:?}");
            let (e, hour) = (e[0], city::hour_of(i.start_ms));
            assert_eq!(s_(e, "result"), "success");
            match s {
                Scenario::ImpossibleTravel => {
                    assert!(v.desk.is_none() && v.shift.covers(hour), "{v:?} at {hour}");
                    assert!(!["Ottawa", v.home_city].contains(&e["geo"]["city"].as_str().unwrap()));
                }
                Scenario::NewSystemLogin => {
                    assert!(v.role == city::Role::Office && v.shift.covers(hour));
                    assert!(i.start_ms - v.shift.next_on(DAY) >= 6 * HOUR);
                    // Never used before by that person, in the whole run.
                    let target = s_(e, "target");
                    assert!(
                        !events.iter().any(|x| s_(x, "user") == i.entity
                            && s_(x, "target") == target
                            && ts(x) < i.start_ms),
                        "{target}"
                    );
                }
                _ => {
                    assert!(v.desk.is_some() && !v.shift.covers(hour), "{v:?} at {hour}");
                    assert!(i.start_ms - v.shift.next_on(DAY) >= 24 * HOUR);
                }
            }
        }
    }
    check_alerts_belong(&rule_alerts_in_time(&records), &incidents);
    o.scenarios.clear();
    assert!(rule_alerts_in_time(&run_with_incidents(o).0).is_empty());
}

#[test]
fn camera_grab_pulls_every_camera_within_one_window_and_trips_the_fan_out_rule() {
    // From 06:00, so the grab (from +1 h 30) finds office staff at work.
    let mut o = opts(42, DAY + 6 * HOUR, 100, &[Scenario::CameraGrab]);
    o.streams = streams(&["netflow"]);
    let (records, incidents) = run_with_incidents(o);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let flows: Vec<Value> = records
        .iter()
        .filter(|r| r.label.is_some())
        .map(json)
        .collect();
    let cameras: BTreeSet<&str> = flows.iter().map(|f| s_(f, "dst_ip")).collect();
    assert!((35..=40).contains(&cameras.len()), "{}", cameras.len());
    assert!(flows.iter().all(|f| s_(f, "dst_zone") == "cameras"
        && s_(f, "src_ip") == incidents[0].entity
        && f["dst_port"] == 554));
    let window = |f: &Value| ts(f).div_euclid(5 * MINUTE);
    assert!(flows.iter().all(|f| window(f) == window(&flows[0])));
    check_alerts_belong(&rule_alerts_in_time(&records), &incidents);
}

#[test]
fn streams_not_asked_for_are_not_generated_and_the_others_do_not_change() {
    let all = flatten(&batches(opts(4, DAY + 9 * HOUR, 3, &Scenario::ALL)));
    let mut o = opts(4, DAY + 9 * HOUR, 3, &Scenario::ALL);
    o.streams = streams(&["auth", "sensors"]);
    let some = flatten(&batches(o));
    let wanted: Vec<&SimRecord> = all
        .iter()
        .filter(|r| ["city.auth", "city.sensors"].contains(&r.topic))
        .collect();
    assert!(wanted.len() > 500);
    assert_eq!(some.iter().collect::<Vec<_>>(), wanted);
}

fn s_<'a>(v: &'a Value, k: &str) -> &'a str {
    s(v, k)
}

fn ts(v: &Value) -> i64 {
    crate::alert::parse_time_ms(s(v, "ts")).unwrap()
}

#[test]
fn a_draw_never_picks_an_empty_group() {
    use super::benign::choose;
    assert_eq!(choose(0.5, [1.0, 2.0, 3.0]), 0);
    assert_eq!(choose(1.0, [1.0, 2.0, 3.0]), 1);
    assert_eq!(choose(5.9, [1.0, 2.0, 3.0]), 2);
    // Rounding can put the draw at the sum: the last group with people in it, never an empty one.
    assert_eq!(choose(3.0, [1.0, 2.0, 0.0]), 1);
    assert_eq!(choose(0.0, [0.0, 2.0]), 1);
}
