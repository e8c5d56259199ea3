//! Feature tests of the simulator: determinism, schema conformance, timing, labels, rates,
//! and that benign traffic never (and each scenario always) satisfies the shipped rules.
//!
//! The schemas are read from the real `deploy/palisade.toml` and the rule headers from the real
//! `rules/` files, so drift between them and the simulator fails here. Rule conditions are
//! re-stated in Rust (`rule_hits`), evaluated over whole runs: for the aggregate rules
//! (count-distinct at least N) a whole run is the worst case of any batch cut from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde_json::Value;

use super::*;

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

// ---- The deployment's stream definitions, read from deploy/palisade.toml ----

struct Stream {
    name: String,
    topics: Vec<String>,
    entity: String,
    fields: Vec<(String, String)>,
}

/// A reader for the handful of TOML forms the `[[streams]]` tables use (the simulator may not
/// depend on a TOML crate).
fn streams() -> Vec<Stream> {
    fn unquote(s: &str) -> String {
        s.trim().trim_matches('"').to_string()
    }
    fn list(s: &str) -> Vec<String> {
        s.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(unquote)
            .filter(|x| !x.is_empty())
            .collect()
    }
    let text = include_str!("../../deploy/palisade.toml");
    let mut out: Vec<Stream> = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            if line == "[[streams]]" {
                out.push(Stream {
                    name: String::new(),
                    topics: Vec::new(),
                    entity: String::new(),
                    fields: Vec::new(),
                });
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (unquote(k), v.trim());
        match section.as_str() {
            "[[streams]]" => {
                let st = out.last_mut().unwrap();
                match k.as_str() {
                    "name" => st.name = unquote(v),
                    "topics" => st.topics = list(v),
                    "entity" => st.entity = list(v).remove(0),
                    _ => {}
                }
            }
            "[streams.schema]" => out.last_mut().unwrap().fields.push((k, unquote(v))),
            _ => {}
        }
    }
    assert_eq!(out.len(), 5, "palisade.toml should define five streams");
    out
}

fn stream_of_topic<'a>(streams: &'a [Stream], topic: &str) -> &'a Stream {
    streams
        .iter()
        .find(|s| s.topics.iter().any(|t| t == topic))
        .unwrap_or_else(|| panic!("topic {topic} belongs to no stream"))
}

/// Checks one JSON value against a schema type of palisade.toml.
fn check_type(ty: &str, v: &Value) -> Result<(), String> {
    let ok = match ty {
        "timestamp" => v
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "string" => v.is_string(),
        "int32" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        "int64" => v.is_i64(),
        "float64" => v.is_f64(),
        t if t.starts_with("struct<") => {
            let inner = &t["struct<".len()..t.len() - 1];
            let obj = v.as_object().ok_or("not an object")?;
            let fields: Vec<(&str, &str)> = inner
                .split(',')
                .map(|f| {
                    let (n, t) = f.split_once(':').unwrap();
                    (n.trim(), t.trim())
                })
                .collect();
            if obj.len() != fields.len() {
                return Err(format!("{v} does not have exactly the fields of {ty}"));
            }
            for (n, t) in fields {
                check_type(t, obj.get(n).ok_or(format!("{v} lacks {n}"))?)?;
            }
            true
        }
        other => return Err(format!("unknown schema type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{v} is not a {ty}"))
    }
}

// ---- The shipped rules, restated ----

/// For each rule id, the indices of the records that make up its alerts when all of
/// `records` form one batch (for aggregates: every row of a group that passes HAVING).
fn rule_hits(records: &[SimRecord]) -> BTreeMap<&'static str, BTreeSet<usize>> {
    /// The fields the rules read, of any stream (a typed, borrowing parse: much cheaper than
    /// `Value` over hundreds of thousands of records).
    #[derive(serde::Deserialize)]
    struct Row<'a> {
        #[serde(borrow)]
        src_ip: Option<&'a str>,
        dst_ip: Option<&'a str>,
        dst_port: Option<i64>,
        bytes_out: Option<i64>,
        src_zone: Option<&'a str>,
        dst_zone: Option<&'a str>,
        user: Option<&'a str>,
        target: Option<&'a str>,
        method: Option<&'a str>,
        result: Option<&'a str>,
        reason: Option<&'a str>,
        geo: Option<Geo<'a>>,
        host: Option<&'a str>,
        action: Option<&'a str>,
        tag: Option<&'a str>,
        metric: Option<&'a str>,
        value: Option<f64>,
    }
    #[derive(serde::Deserialize)]
    struct Geo<'a> {
        country: &'a str,
    }

    let mut hits: BTreeMap<&'static str, BTreeSet<usize>> = BTreeMap::new();
    /// Rows grouped by a pair of columns: the distinct values counted, and the rows.
    type Groups<'a, T> = HashMap<(&'a str, &'a str), (BTreeSet<T>, Vec<usize>)>;
    let mut scan: Groups<'_, i64> = HashMap::new();
    let mut spray: Groups<'_, &str> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let v: Row<'_> = serde_json::from_slice(&r.value).unwrap();
        let mut hit = |id| {
            hits.entry(id).or_default().insert(i);
        };
        match r.topic {
            "city.netflow" => {
                let g = scan
                    .entry((v.src_ip.unwrap(), v.dst_ip.unwrap()))
                    .or_default();
                g.0.insert(v.dst_port.unwrap());
                g.1.push(i);
                if v.src_zone == Some("cameras")
                    && v.dst_zone == Some("internet")
                    && v.bytes_out.unwrap() > 100_000_000
                {
                    hit("net.bulk_exfiltration");
                }
            }
            "city.auth" => {
                if v.result == Some("failure") {
                    let g = spray
                        .entry((v.src_ip.unwrap(), v.target.unwrap()))
                        .or_default();
                    g.0.insert(v.user.unwrap());
                    g.1.push(i);
                }
                let country = v.geo.unwrap().country;
                if v.method == Some("vpn")
                    && v.result == Some("success")
                    && !["CA", "US"].contains(&country)
                {
                    hit("auth.vpn_unusual_country");
                }
            }
            "city.scada" => {
                if v.action == Some("setpoint_write") {
                    if !["ews-01", "ews-02"].contains(&v.host.unwrap()) {
                        hit("scada.setpoint_unknown_host");
                    }
                    let x = v.value.unwrap();
                    if v.tag == Some("cl2_dose_setpoint") && !(0.5..=4.0).contains(&x) {
                        hit("scada.unsafe_setpoint");
                    }
                }
            }
            "city.badge" => {
                if v.result == Some("denied") && v.reason == Some("revoked") {
                    hit("badge.revoked_attempt");
                }
            }
            "city.sensors" => {
                let x = v.value.unwrap();
                let (lo, hi) = match v.metric.unwrap() {
                    "chlorine_mg_l" => (0.0, 10.0),
                    "pressure_bar" => (0.0, 16.0),
                    "flow_m3h" => (0.0, 5000.0),
                    "level_m" => (0.0, 20.0),
                    "voltage_kv" => (0.0, 20.0),
                    "load_mw" => (0.0, 50.0),
                    "frequency_hz" => (55.0, 65.0),
                    "queue_len" => (0.0, 500.0),
                    m => panic!("unexpected metric {m}"),
                };
                if !(lo..=hi).contains(&x) {
                    hit("sensor.physical_limits");
                }
            }
            t => panic!("unexpected topic {t}"),
        }
    }
    for (ports, rows) in scan.into_values() {
        if ports.len() >= 30 {
            hits.entry("net.port_scan").or_default().extend(rows);
        }
    }
    for (users, rows) in spray.into_values() {
        if users.len() >= 8 {
            hits.entry("auth.password_spray").or_default().extend(rows);
        }
    }
    hits
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
    let streams = streams();
    let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
    // The attack run holds the quiet run's records too (see scenarios_only_add_labelled_records).
    for r in attack_run().iter().flat_map(|(_, r)| r) {
        let st = stream_of_topic(&streams, r.topic);
        let v = json(r);
        let obj = v.as_object().expect("one JSON object");
        *per_topic.entry(r.topic).or_default() += 1;
        for (name, ty) in &st.fields {
            let field = obj
                .get(name)
                .unwrap_or_else(|| panic!("{} lacks {name}: {v}", st.name));
            if let Err(e) = check_type(ty, field) {
                panic!("{}.{name}: {e}", st.name);
            }
        }
        let extra: Vec<&String> = obj
            .keys()
            .filter(|k| !st.fields.iter().any(|(n, _)| n == *k) && *k != "label")
            .collect();
        assert!(
            extra.is_empty(),
            "{}: fields {extra:?} not in the schema",
            st.name
        );
        assert_eq!(obj.get("label").and_then(Value::as_str), r.label, "{v}");
        assert_eq!(s(&v, &st.entity), r.key, "key must be the entity");
        assert!(!r.value.ends_with(b"\n"));
    }
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
        let hits = rule_hits(&records);
        assert!(
            hits.is_empty(),
            "benign hits: {:?}",
            hits.keys().collect::<Vec<_>>()
        );
    }
    // And by construction: no benign source can reach the port-scan threshold at all.
    assert!(city::BENIGN_PORTS.len() < 30);
}

#[test]
fn each_scenario_trips_exactly_its_rules() {
    let records = flatten(attack_run());
    let hits = rule_hits(&records);
    for sc in Scenario::ALL {
        let labelled: BTreeSet<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.label == Some(sc.name()))
            .map(|(i, _)| i)
            .collect();
        assert!(!labelled.is_empty(), "{} produced nothing", sc.name());
        for r in labelled.iter().map(|&i| &records[i]) {
            assert_eq!(stream_of_topic(&streams(), r.topic).name, sc.stream());
        }
        for id in sc.rule_ids() {
            let h = hits.get(id).unwrap_or_else(|| panic!("{id} never fired"));
            // Every labelled event is evidence for the rule, and nothing else is.
            assert_eq!(h, &labelled, "{id} vs {}", sc.name());
        }
    }
    let expected: BTreeSet<&str> = Scenario::ALL
        .iter()
        .flat_map(|s| s.rule_ids())
        .copied()
        .collect();
    assert_eq!(hits.keys().copied().collect::<BTreeSet<_>>(), expected);
    // The aggregate rules also fire within single one-second batches.
    for id in ["net.port_scan", "auth.password_spray"] {
        let fired = attack_run()
            .iter()
            .filter(|(_, b)| b.iter().any(|r| r.label.is_some()))
            .any(|(_, b)| rule_hits(b).contains_key(id));
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
fn rule_files_declare_the_ids_scenarios_name() {
    const RULES: [&str; 8] = [
        include_str!("../../rules/network/port_scan.sql"),
        include_str!("../../rules/network/bulk_exfiltration.sql"),
        include_str!("../../rules/auth/password_spray.sql"),
        include_str!("../../rules/auth/vpn_unusual_country.sql"),
        include_str!("../../rules/scada/setpoint_unknown_host.sql"),
        include_str!("../../rules/scada/unsafe_setpoint.sql"),
        include_str!("../../rules/physical/badge_revoked.sql"),
        include_str!("../../rules/physical/sensor_limits.sql"),
    ];
    let streams = streams();
    let mut ids = BTreeSet::new();
    for text in RULES {
        let header: BTreeMap<&str, &str> = text
            .lines()
            .map_while(|l| l.strip_prefix("-- "))
            .filter_map(|l| l.split_once(": "))
            .collect();
        for key in ["id", "title", "severity", "stream", "tags", "description"] {
            assert!(header.contains_key(key), "{key} missing in {text}");
        }
        assert!(["info", "low", "medium", "high", "critical"].contains(&header["severity"]));
        let st = streams
            .iter()
            .find(|s| s.name == header["stream"])
            .expect("known stream");
        let body = text
            .lines()
            .skip(header.len())
            .collect::<Vec<_>>()
            .join("\n")
            .to_lowercase();
        assert!(
            body.contains(&format!("from {}", st.name)),
            "{}",
            header["id"]
        );
        ids.insert(header["id"]);
    }
    for sc in Scenario::ALL {
        for id in sc.rule_ids() {
            assert!(ids.contains(id), "no rule file declares {id}");
        }
    }
}
