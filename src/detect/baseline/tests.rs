//! Baseline detector tests: rules as text, events as Arrow batches, alerts checked by rule,
//! entity, time and evidence.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::model::tests::Rng;
use super::*;
use crate::privacy::Pseudonymiser;

const T0: i64 = 1_767_580_000_000;

fn ctx(now_ms: i64) -> EvalContext {
    EvalContext {
        now_ms,
        pseudonymiser: Pseudonymiser::new(b"k"),
        partition: 0,
        watermark_ms: i64::MAX,
    }
}

fn detector(rules: &[&str]) -> BaselineDetector {
    let config = Config::builtin();
    let parsed = rules
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let file = PathBuf::from(format!("r{i}.baseline.yml"));
            let rule = rule::parse(&file, text).unwrap();
            (file, rule)
        })
        .collect();
    BaselineDetector::load(&config, parsed).unwrap()
}

/// Rows of the built-in `sensors` stream: (seconds from T0, asset, metric, value).
fn sensors(rows: &[(i64, &str, &str, f64)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("asset", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ],
    )
    .unwrap()
}

const SENSORS: usize = 4;

/// Feeds `rows` in batches of `batch` rows; returns the alerts.
fn run(det: &mut BaselineDetector, rows: &[(i64, &str, &str, f64)], batch: usize) -> Vec<Alert> {
    let mut out = Vec::new();
    for chunk in rows.chunks(batch) {
        let b = sensors(chunk);
        det.evaluate(
            SENSORS,
            &b,
            &ctx(T0 + chunk.last().unwrap().0 * 1000),
            &mut out,
        )
        .unwrap();
    }
    out
}

fn summary(alerts: &[Alert]) -> Vec<(String, String, String)> {
    alerts
        .iter()
        .map(|a| {
            let ev: serde_json::Value = serde_json::from_str(a.evidence[0].get()).unwrap();
            (
                a.entity.clone(),
                a.event_time.clone(),
                ev["check"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const ZSCORE: &str = "id: eq.z\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                      warmup: 50\nz: 6\nrealert_s: 600\n";

/// Two pumps, two metrics each, Gaussian-ish noise; pump-2's pressure jumps at 300 s.
fn pump_rows(jump_at: i64) -> Vec<(i64, &'static str, &'static str, f64)> {
    let mut rng = Rng::new(11);
    let mut rows = Vec::new();
    for s in 0..400 {
        for asset in ["pump-1", "pump-2"] {
            let noise: f64 = (0..4).map(|_| rng.f64()).sum::<f64>() - 2.0;
            let jump = if asset == "pump-2" && s >= jump_at {
                8.0
            } else {
                0.0
            };
            rows.push((s, asset, "pressure", 5.0 + noise + jump));
            rows.push((s, asset, "flow", 30.0 + 2.0 * noise));
        }
    }
    rows
}

#[test]
fn zscore_alerts_once_on_a_level_jump_with_evidence() {
    let mut det = detector(&[ZSCORE]);
    let alerts = run(&mut det, &pump_rows(300), 64);
    assert_eq!(
        summary(&alerts),
        vec![(
            "pump-2".to_string(),
            format_time_ms(T0 + 300_000),
            "zscore".to_string()
        )]
    );
    let ev: serde_json::Value = serde_json::from_str(alerts[0].evidence[0].get()).unwrap();
    assert_eq!(ev["metric"], "pressure");
    assert_eq!(ev["threshold"], 6.0);
    assert!(ev["score"].as_f64().unwrap() > 6.0);
    let expected = ev["expected"].as_array().unwrap();
    assert!(expected[0].as_f64().unwrap() < 5.0 && expected[1].as_f64().unwrap() > 5.0);
    assert!(ev["value"].as_f64().unwrap() > expected[1].as_f64().unwrap());
    assert_eq!(ev["baseline_age_s"], 300);
    assert_eq!(ev["attribution"][0]["feature"], "pressure");
    // Without the jump: silence.
    let mut det = detector(&[ZSCORE]);
    assert!(run(&mut det, &pump_rows(10_000), 64).is_empty());
}

#[test]
fn limits_rate_flatline_and_heartbeat() {
    let rule = "id: eq.checks\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                max: 100\nmax_rate: 5\nflatline_s: 30\nheartbeat_s: 60\nttl_s: 3600\n";
    let mut rows = Vec::new();
    for s in 0..200 {
        // tank: a slow ramp, over its limit at 150 s; valve: moving, then stuck from 50 s;
        // meter: a 40-unit step at 20 s, silent after 100 s.
        rows.push((s, "tank", "level", 25.0 + s as f64 / 2.0));
        let position = if s < 50 { (s % 7) as f64 * 0.5 } else { 3.0 };
        rows.push((s, "valve", "position", position));
        if s < 100 {
            let kwh = if s < 20 { 10.0 } else { 50.0 } + s as f64 * 0.01;
            rows.push((s, "meter", "kwh", kwh));
        }
    }
    let mut det = detector(&[rule]);
    let got = summary(&run(&mut det, &rows, 50));
    let at = |s: i64| format_time_ms(T0 + s * 1000);
    let expected = vec![
        ("meter".to_string(), at(20), "rate".to_string()),
        ("valve".to_string(), at(80), "flatline".to_string()),
        ("tank".to_string(), at(151), "max".to_string()),
        // Dated when the meter became overdue: 60 s after its last reading.
        ("meter".to_string(), at(159), "heartbeat".to_string()),
    ];
    assert_eq!(got, expected);
}

#[test]
fn checkpoint_restore_gives_the_same_alerts_as_an_uninterrupted_run() {
    let rules = [
        ZSCORE,
        "id: eq.flat\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
         flatline_s: 30\n",
    ];
    let rows = pump_rows(300);
    let (first, second) = rows.split_at(rows.len() / 2);
    let mut whole = detector(&rules);
    let mut expected = run(&mut whole, first, 64);
    let cut = expected.len();
    expected.extend(run(&mut whole, second, 64));
    assert!(
        expected.len() > cut,
        "the second half must alert for the test to mean much"
    );

    let mut before = detector(&rules);
    assert_eq!(run(&mut before, first, 64).len(), cut);
    let mut entries = Vec::new();
    before.checkpoint(&mut entries);
    assert_eq!(entries.len(), 4, "two rules x two pumps");
    // Nothing changed since: the next checkpoint is empty.
    let mut again = Vec::new();
    before.checkpoint(&mut again);
    assert!(again.is_empty());

    let mut after = detector(&rules);
    after.restore(&entries).unwrap();
    let resumed = run(&mut after, second, 64);
    assert_eq!(
        resumed.iter().map(|a| &a.id).collect::<Vec<_>>(),
        expected[cut..].iter().map(|a| &a.id).collect::<Vec<_>>()
    );
    // A fresh detector without the state learns anew: its alerts (their baseline age, in
    // the evidence and so in the id) are not the resumed ones.
    let mut cold = detector(&rules);
    let cold: Vec<String> = run(&mut cold, second, 64)
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_ne!(
        cold,
        resumed.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    );

    after.release(&[0]);
    assert_eq!(after.state().groups, 0);
}

#[test]
fn multivariate_state_round_trips_through_the_codec() {
    let rule = "id: mv\nstream: sensors\nmodel: multivariate\nfeatures: [value, value2]\n\
                warmup: 5\n";
    let parsed = rule::parse(Path::new("mv.baseline.yml"), rule).unwrap();
    let mut m = Multivariate::new(2, 5);
    let Model::Multivariate(spec) = &parsed.model else {
        panic!()
    };
    let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
    for i in 0..9 {
        m.update(
            &[f64::from(i), f64::from(i * i % 5)],
            &spec.params,
            &mut r,
            &mut y,
        );
    }
    let e = Entity {
        partition: 3,
        last_ms: 9,
        first_ms: 5,
        dirty: false,
        series: Vec::new(),
        mv: Some(Box::new(m)),
        terms: vec![(42, 7)],
        fan: None,
        travel: None,
        cmd: None,
    };
    let bytes = codec::encode(&e, |_| "", |_| "");
    let mut back = codec::decode(&bytes, |_| None, |_| None).unwrap();
    back.partition = 3;
    assert_eq!(back, e);
    assert!(codec::decode(&bytes[..bytes.len() - 1], |_| None, |_| None).is_err());
}

/// A PCA model with row smoothing and calibration survives a checkpoint at any point: in
/// warm-up (its kept rows with it) and trained; resumed, it scores exactly as the model that
/// never stopped.
#[test]
fn pca_state_round_trips_through_the_codec_and_resumes_identically() {
    let rule = "id: mv\nstream: sensors\nmodel: multivariate\nfeatures: [a, b, c]\n\
                warmup: 120\nstatistic: pca\nvariance: 0.8\nrow_smoothing: 0.2\nhold: 3\n";
    let parsed = rule::parse(Path::new("mv.baseline.yml"), rule).unwrap();
    let Model::Multivariate(spec) = &parsed.model else {
        panic!()
    };
    let p = &spec.params;
    let mut rng = Rng::new(21);
    let rows: Vec<[f64; 3]> = (0..300)
        .map(|i| {
            let a = rng.f64();
            let shift = if i > 250 { 2.0 } else { 0.0 };
            [a, 2.0 * a + 0.1 * rng.f64() + shift, rng.f64()]
        })
        .collect();
    let entity = |m: &Multivariate| Entity {
        partition: 0,
        last_ms: 9,
        first_ms: 5,
        dirty: false,
        series: Vec::new(),
        mv: Some(Box::new(m.clone())),
        terms: Vec::new(),
        fan: None,
        travel: None,
        cmd: None,
    };
    let mut straight = Multivariate::new(3, 5);
    let (mut r, mut y) = ([0.0; 3], [0.0; 3]);
    let mut scores = Vec::new();
    for x in &rows {
        scores.push(straight.update(x, p, &mut r, &mut y));
    }
    assert!(scores.iter().flatten().any(|s| s.onset), "the shift alarms");
    for cut in [60, 200] {
        let mut m = Multivariate::new(3, 5);
        for x in &rows[..cut] {
            m.update(x, p, &mut r, &mut y);
        }
        assert_eq!(m.trained, cut > 120);
        assert_eq!(m.buf.is_empty(), cut > 120);
        let bytes = codec::encode(&entity(&m), |_| "", |_| "");
        let back = codec::decode(&bytes, |_| None, |_| None).unwrap();
        assert_eq!(back, entity(&m));
        let mut m = *back.mv.unwrap();
        for (i, x) in rows[cut..].iter().enumerate() {
            assert_eq!(m.update(x, p, &mut r, &mut y), scores[cut + i]);
        }
        assert!(codec::decode(&bytes[..bytes.len() - 1], |_| None, |_| None).is_err());
    }
}

/// A version 2 state (before PCA) still decodes, as a Mahalanobis model; an unknown version
/// is refused by name.
#[test]
fn version_2_multivariate_state_decodes() {
    let mut b = vec![2u8];
    b.extend_from_slice(&5i64.to_le_bytes());
    b.extend_from_slice(&9i64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // no series
    b.push(1); // a multivariate model
    b.extend_from_slice(&2u32.to_le_bytes()); // k
    b.extend_from_slice(&7u32.to_le_bytes()); // n
    b.push(1); // trained
    let floats: [f64; 8] = [5.0, 5.0, 1.0, 2.0, 0.25, 0.0, 0.0, 1.0];
    b.extend_from_slice(&0.5f64.to_le_bytes()); // smooth
    b.extend_from_slice(&5i64.to_le_bytes()); // first_ms
    b.extend_from_slice(&i64::MIN.to_le_bytes()); // last_alert_ms
    for v in floats {
        b.extend_from_slice(&v.to_le_bytes()); // mean, std, inverse covariance
    }
    b.extend_from_slice(&0u32.to_le_bytes()); // no terms
    b.extend_from_slice(&[0, 0, 0]); // no fan-out, travel, command
    let e = codec::decode(&b, |_| None, |_| None).unwrap();
    let m = e.mv.unwrap();
    assert!(m.trained && m.comps == 0 && m.norm_t2 == 0.0 && m.filt.is_empty());
    assert_eq!(m.mean, vec![5.0, 5.0]);
    assert_eq!(m.mat, vec![0.25, 0.0, 0.0, 1.0]);
    b[0] = 9;
    assert_eq!(
        codec::decode(&b, |_| None, |_| None).unwrap_err(),
        "unknown state version 9"
    );
}

#[test]
fn entities_are_bounded_and_evictions_counted() {
    let rule = "id: eq.b\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                z: 6\nmax_entities: 32\n";
    let mut det = detector(&[rule]);
    let names: Vec<String> = (0..100).map(|i| format!("asset-{i}")).collect();
    let rows: Vec<(i64, &str, &str, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64, n.as_str(), "m", 1.0))
        .collect();
    run(&mut det, &rows, 10);
    // Its evaluation time, once: taking it resets it.
    let mut spent = Vec::new();
    det.rule_seconds(&mut |rule, t| spent.push((rule.to_string(), t)));
    assert_eq!(spent.len(), 1, "{spent:?}");
    assert_eq!(spent[0].0, "eq.b");
    assert!(!spent[0].1.is_zero());
    det.rule_seconds(&mut |rule, t| panic!("{rule} timed twice: {t:?}"));
    let state = det.state();
    assert!(state.groups <= 32, "{state:?}");
    assert_eq!(state.groups + state.groups_evicted, 100);
    // Per rule: the entities held, and memory that grows with them.
    let mut sizes = Vec::new();
    det.rule_state(&mut |rule, size| sizes.push((rule.to_string(), size)));
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].0, "eq.b");
    assert_eq!(sizes[0].1.entries, state.groups);
    let per_entity = std::mem::size_of::<Entity>() + "asset-00".len();
    assert!(
        sizes[0].1.bytes >= state.groups * per_entity as u64,
        "{:?} for {} entities",
        sizes[0].1,
        state.groups
    );
    let mut entries = Vec::new();
    det.checkpoint(&mut entries);
    assert_eq!(
        entries.iter().filter(|e| e.value.is_none()).count() as u64,
        state.groups_evicted,
        "one tombstone per evicted entity"
    );
}

fn auth(rows: &[(i64, &str, &str)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("user", DataType::Utf8, true),
        Field::new("target", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

#[test]
fn new_terms_and_unusual_hours_per_entity() {
    let config = Config::builtin();
    let auth_stream = config.stream_index("auth").unwrap();
    let hosts = "id: ueba.new_host\nstream: auth\nmodel: new_terms\nfield: target\n\
                 warmup_s: 3600\nhistory_s: 86400\n";
    let hours = "id: ueba.new_hour\nstream: auth\nmodel: new_terms\nfield: \"@hour\"\n\
                 warmup_s: 7200\nhistory_s: 86400\n";
    let mut det = detector(&[hosts, hours]);
    let h = 3600;
    // alice logs in to hmi-1 and hmi-2 through the first two hours, then hmi-3 (new host) in
    // the same hour as ever, then hmi-1 at a new hour.
    let mut rows = Vec::new();
    for m in 0..24 {
        rows.push((m * 300, "alice", if m % 2 == 0 { "hmi-1" } else { "hmi-2" }));
    }
    rows.push((2 * h - 60, "alice", "hmi-3"));
    rows.push((5 * h, "alice", "hmi-1"));
    let mut out = Vec::new();
    det.evaluate(auth_stream, &auth(&rows), &ctx(T0 + 5 * h * 1000), &mut out)
        .unwrap();
    let got: Vec<(String, String, String)> = out
        .iter()
        .map(|a| {
            let ev: serde_json::Value = serde_json::from_str(a.evidence[0].get()).unwrap();
            (
                a.rule.id.clone(),
                a.event_time.clone(),
                ev["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // `user` is personal in the built-in configuration: the entity is a pseudonym.
    assert!(
        out.iter()
            .all(|a| a.entity == Pseudonymiser::new(b"k").pseudonym("alice"))
    );
    let hour_of = |s: i64| format!("{:02}", ((T0 + s * 1000) % 86_400_000) / 3_600_000);
    assert_eq!(
        got,
        vec![
            (
                "ueba.new_host".to_string(),
                format_time_ms(T0 + (2 * h - 60) * 1000),
                "hmi-3".to_string()
            ),
            (
                "ueba.new_hour".to_string(),
                format_time_ms(T0 + 5 * h * 1000),
                hour_of(5 * h)
            ),
        ]
    );
}

#[tokio::test]
async fn load_reports_bad_columns_and_streams_with_their_position() {
    let dir = std::env::temp_dir().join(format!("palisade-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.baseline.yml"),
        "id: a\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: reading\nz: 5\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.baseline.yml"),
        "id: b\nmodel: univariate\nstream: turbines\nfeatures: [x]\nz: 5\n",
    )
    .unwrap();
    let config = Config::builtin();
    let err = match crate::detect::DetectorSet::load(&config, std::slice::from_ref(&dir)).await {
        Err(e) => e,
        Ok(_) => panic!("bad rules loaded"),
    };
    let messages: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    let a = dir.join("a.baseline.yml");
    let b = dir.join("b.baseline.yml");
    assert_eq!(
        messages,
        vec![
            format!(
                "{}:5:1: stream `sensors` has no column `reading`",
                a.display()
            ),
            format!(
                "{}:3:1: no stream `turbines` is configured; streams are netflow, auth, badge, \
                 scada, sensors, pumps",
                b.display()
            ),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A load that steps with the hour of the day: one baseline flags every step, the hourly
/// profile learns the rhythm on day one and flags only the reading that breaks it.
#[test]
fn seasonal_profile_learns_a_daily_rhythm() {
    let plain = "id: eq.plain\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                 warmup: 30\nalpha: 0.05\nz: 8\nrealert_s: 0\n";
    let seasonal = format!("{plain}seasonal: hour\n").replace("eq.plain", "eq.seasonal");
    let mut rng = Rng::new(2);
    let midnight = 1_767_571_200; // 2026-01-05T00:00:00Z, in seconds
    let start = midnight - T0 / 1000;
    let anomaly = start + 2 * 86_400 + 12 * 3600 + 1800;
    let rows: Vec<(i64, &str, &str, f64)> = (0..3 * 1440)
        .map(|m| {
            let s = start + m * 60;
            let hour = (m / 60) % 24;
            let bump = if s == anomaly { 5.0 } else { 0.0 };
            (
                s,
                "substation-1",
                "load_mw",
                10.0 * hour as f64 + rng.f64() + bump,
            )
        })
        .collect();
    let mut det = detector(&[plain, &seasonal]);
    let alerts = run(&mut det, &rows, 500);
    let plain_alerts = alerts.iter().filter(|a| a.rule.id == "eq.plain").count();
    assert!(
        plain_alerts > 40,
        "one baseline flags the hour steps: {plain_alerts}"
    );
    let seasonal: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule.id == "eq.seasonal")
        .collect();
    assert_eq!(seasonal.len(), 1, "{seasonal:#?}");
    assert_eq!(seasonal[0].event_time, format_time_ms(T0 + anomaly * 1000));
    let ev: serde_json::Value = serde_json::from_str(seasonal[0].evidence[0].get()).unwrap();
    assert_eq!(ev["season"], 12);
}

const NETFLOW: usize = 0;

/// Rows of the built-in `netflow` stream: (seconds from T0, src_ip, dst_ip).
fn netflow(rows: &[(i64, String, String)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("src_ip", DataType::Utf8, true),
        Field::new("dst_ip", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.2))),
        ],
    )
    .unwrap()
}

fn run_flows(det: &mut BaselineDetector, rows: &[(i64, String, String)]) -> Vec<Alert> {
    let mut out = Vec::new();
    for chunk in rows.chunks(50) {
        det.evaluate(
            NETFLOW,
            &netflow(chunk),
            &ctx(T0 + chunk.last().unwrap().0 * 1000),
            &mut out,
        )
        .unwrap();
    }
    out
}

const FAN_OUT: &str = "id: net.fan\nstream: netflow\nmodel: fan_out\nfield: dst_ip\n\
                       window_s: 60\nwarmup: 10\nz: 5\nmin_count: 15\n";

/// Two hosts, 40 one-minute windows: each window a host talks to a few of its usual ten
/// servers. Host `10.0.0.1` reaches `scans[w]` fresh addresses in window `w`.
fn flow_rows(scans: &[(usize, usize)]) -> Vec<(i64, String, String)> {
    // Seconds from T0 to the first minute boundary: windows are aligned to the epoch.
    let base = (60 - T0.rem_euclid(60_000) / 1000) % 60;
    let mut rng = Rng::new(5);
    let mut rows = Vec::new();
    for w in 0..40i64 {
        for host in ["10.0.0.1", "10.0.0.2"] {
            for k in 0..20 {
                let server = (rng.f64() * 10.0) as usize;
                rows.push((
                    base + w * 60 + k * 2,
                    host.to_string(),
                    format!("10.1.0.{server}"),
                ));
            }
            if host == "10.0.0.1"
                && let Some(&(_, n)) = scans.iter().find(|s| s.0 == w as usize)
            {
                for i in 0..n {
                    rows.push((
                        base + w * 60 + 39,
                        host.to_string(),
                        format!("10.9.{}.{}", i / 200, i % 200),
                    ));
                }
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

/// Start of the `w`th window of [`flow_rows`].
fn window_start(w: i64) -> String {
    format_time_ms(T0 - T0.rem_euclid(60_000) + (w + 1) * 60_000)
}

fn evidence(a: &Alert) -> serde_json::Value {
    serde_json::from_str(a.evidence[0].get()).unwrap()
}

#[test]
fn fan_out_alerts_once_per_scanning_window_after_warm_up() {
    // A scan in warm-up (window 3) is learnt, not raised.
    let mut det = detector(&[FAN_OUT]);
    assert!(run_flows(&mut det, &flow_rows(&[(3, 60)])).is_empty());
    // A scan after it (window 20) is raised once, while it runs; the benign host never
    // alerts.
    let mut det = detector(&[FAN_OUT]);
    let alerts = run_flows(&mut det, &flow_rows(&[(20, 60)]));
    assert_eq!(alerts.len(), 1, "{:?}", summary(&alerts));
    let a = &alerts[0];
    assert_eq!(a.entity, "10.0.0.1");
    let ev = evidence(a);
    assert_eq!(ev["check"], "fan_out");
    assert_eq!(ev["window_start"], window_start(20));
    let count = ev["value"].as_f64().unwrap();
    let hi = ev["expected"][1].as_f64().unwrap();
    assert!(count > hi && count >= 15.0, "{ev}");
    assert!(ev["score"].as_f64().unwrap() > 5.0);
    assert!(ev["baseline_windows"].as_u64().unwrap() >= 10);
    assert!(ev["baseline_age_s"].as_i64().unwrap() >= 20 * 60 - 60);
}

#[test]
fn fan_out_baseline_is_not_poisoned_by_a_scan() {
    // Two scans, the second smaller: if the first widened the baseline (plain EWMA), the
    // second would pass as normal.
    let mut det = detector(&[FAN_OUT]);
    let alerts = run_flows(&mut det, &flow_rows(&[(15, 200), (17, 30)]));
    let windows: Vec<String> = alerts
        .iter()
        .map(|a| evidence(a)["window_start"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(windows, vec![window_start(15), window_start(17)]);
}

#[test]
fn fan_out_state_survives_a_restart() {
    let rows = flow_rows(&[(20, 60), (30, 40)]);
    // Cut in the middle of window 20, before the scan.
    let cut = rows.iter().position(|r| r.0 >= 20 * 60 + 50).unwrap();
    let mut whole = detector(&[FAN_OUT]);
    let expected = run_flows(&mut whole, &rows);
    assert_eq!(expected.len(), 2);

    let mut before = detector(&[FAN_OUT]);
    assert!(run_flows(&mut before, &rows[..cut]).is_empty());
    let mut entries = Vec::new();
    before.checkpoint(&mut entries);
    assert_eq!(entries.len(), 2);
    let mut after = detector(&[FAN_OUT]);
    after.restore(&entries).unwrap();
    let resumed = run_flows(&mut after, &rows[cut..]);
    assert_eq!(
        resumed.iter().map(|a| &a.id).collect::<Vec<_>>(),
        expected.iter().map(|a| &a.id).collect::<Vec<_>>()
    );
    // Without the state, the detector is back in warm-up and misses the scans.
    let mut cold = detector(&[FAN_OUT]);
    assert!(run_flows(&mut cold, &rows[cut..]).len() < 2);
}

#[test]
fn fan_out_state_round_trips_through_the_codec() {
    let mut f = FanOut {
        window_ms: 120_000,
        first_ms: 60_000,
        alerted: true,
        ..FanOut::default()
    };
    for h in [9u64, 3, 7, 3] {
        f.insert(h, 3);
    }
    assert_eq!(f.distinct, vec![3, 7, 9]);
    f.stats.update(4.0, 0.1);
    let e = Entity {
        first_ms: 1,
        last_ms: 2,
        fan: Some(Box::new(f)),
        travel: Some((1, 77)),
        ..Entity::default()
    };
    let places = ["Ottawa", "Moscow"];
    let bytes = codec::encode(&e, |_| "", |i| places[usize::from(i)]);
    let back = codec::decode(
        &bytes,
        |_| None,
        |p| places.iter().position(|q| *q == p).map(|i| i as u16),
    );
    assert_eq!(back.unwrap(), e);
    assert!(codec::decode(&bytes[..bytes.len() - 1], |_| None, |_| None).is_err());
    // The distinct set is bounded: a fourth value is not held.
    let mut g = e.fan.clone().unwrap();
    assert!(!g.insert(1, 3));
    assert_eq!(g.distinct.len(), 3);
}

/// Rows of the built-in `auth` stream with its `geo` struct: (seconds from T0, user, city).
fn logins(rows: &[(i64, &str, &str)]) -> RecordBatch {
    use datafusion::arrow::array::StructArray;
    let city = Arc::new(Field::new("city", DataType::Utf8, true));
    let country = Arc::new(Field::new("country", DataType::Utf8, true));
    let geo = StructArray::from(vec![
        (
            country,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "XX"))) as ArrayRef,
        ),
        (
            city,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
        ),
    ]);
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("user", DataType::Utf8, true),
        Field::new("geo", geo.data_type().clone(), true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(geo),
        ],
    )
    .unwrap()
}

const TRAVEL: &str = "id: ueba.travel\nstream: auth\nmodel: impossible_travel\n\
                      location: geo.city\nmax_kmh: 900\nmin_km: 100\nplaces:\n\
                      \x20 Ottawa: [45.42, -75.70]\n  Toronto: [43.65, -79.38]\n\
                      \x20 Moscow: [55.76, 37.62]\n";

fn run_logins(det: &mut BaselineDetector, rows: &[(i64, &str, &str)]) -> Vec<Alert> {
    let auth = Config::builtin().stream_index("auth").unwrap();
    let mut out = Vec::new();
    for chunk in rows.chunks(2) {
        det.evaluate(
            auth,
            &logins(chunk),
            &ctx(T0 + chunk.last().unwrap().0 * 1000),
            &mut out,
        )
        .unwrap();
    }
    out
}

const H: i64 = 3600;

fn trips() -> Vec<(i64, &'static str, &'static str)> {
    vec![
        (0, "alice", "Ottawa"),
        (0, "bob", "Ottawa"),
        // 350 km in 4 h: a drive.
        (4 * H, "alice", "Toronto"),
        (4 * H + 60, "alice", "Atlantis"),
        // ~7,500 km in an hour: the account is used from two places.
        (5 * H, "alice", "Moscow"),
        // ~7,500 km in 20 h: a flight.
        (20 * H, "bob", "Moscow"),
    ]
}

#[test]
fn haversine_is_a_great_circle_distance() {
    // A quarter of the equator, and a quarter meridian: π/2 Earth radii.
    let quarter = std::f64::consts::FRAC_PI_2 * 6371.0;
    assert!((haversine_km(0.0, 0.0, 0.0, 90.0) - quarter).abs() < 1e-6);
    assert!((haversine_km(0.0, 10.0, 90.0, 10.0) - quarter).abs() < 1e-6);
    assert_eq!(haversine_km(45.0, -75.0, 45.0, -75.0), 0.0);
}

#[test]
fn impossible_travel_between_located_logins() {
    let mut det = detector(&[TRAVEL]);
    let alerts = run_logins(&mut det, &trips());
    assert_eq!(alerts.len(), 1, "{:?}", summary(&alerts));
    let ev = evidence(&alerts[0]);
    assert_eq!(ev["check"], "impossible_travel");
    assert_eq!(
        (ev["from"].as_str(), ev["to"].as_str()),
        (Some("Toronto"), Some("Moscow"))
    );
    let km = ev["distance_km"].as_f64().unwrap();
    let speed = ev["score"].as_f64().unwrap();
    assert!((7000.0..8000.0).contains(&km), "{ev}");
    assert!((speed - km).abs() < 1.0, "one hour apart: {ev}");
    assert_eq!(ev["threshold"], 900.0);
    // The user is personal on `auth`: pseudonymised.
    assert_ne!(alerts[0].entity, "alice");

    // Two places at the same moment: no finite speed.
    let mut det = detector(&[TRAVEL]);
    let alerts = run_logins(&mut det, &[(0, "carol", "Ottawa"), (0, "carol", "Toronto")]);
    assert_eq!(alerts.len(), 1);
    assert!(evidence(&alerts[0])["score"].is_null());
    // Below `min_km`, no alert however fast.
    let near = TRAVEL.replace("min_km: 100", "min_km: 400");
    let mut det = detector(&[&near]);
    assert!(run_logins(&mut det, &[(0, "carol", "Ottawa"), (0, "carol", "Toronto")]).is_empty());
}

#[test]
fn impossible_travel_state_survives_a_restart() {
    let rows = trips();
    let (first, second) = rows.split_at(4);
    let mut before = detector(&[TRAVEL]);
    assert!(run_logins(&mut before, first).is_empty());
    let mut entries = Vec::new();
    before.checkpoint(&mut entries);
    let mut after = detector(&[TRAVEL]);
    after.restore(&entries).unwrap();
    assert_eq!(run_logins(&mut after, second).len(), 1);
    // Without the state the last place is unknown and nothing is raised.
    let mut cold = detector(&[TRAVEL]);
    assert!(run_logins(&mut cold, second).is_empty());
    // A restored place the rule no longer lists is forgotten, not misread.
    let moved = TRAVEL.replace("Toronto", "Kingston");
    let mut edited = detector(&[&moved]);
    edited.restore(&entries).unwrap();
    assert!(run_logins(&mut edited, second).is_empty());
}

const PUMP_FLOW: &str = "id: eq.pump_flow\nstream: sensors\nmodel: consistency\n\
                         metric: metric\nvalue: value\ncommand: pump_cmd\nresponse: flow_m3h\n\
                         response_above: 10\nwithin_s: 30\n";

/// Three pumps every 5 s for 400 s, each with its command and flow. Pump-1 answers its
/// command within 10 s; pump-2 does not answer its first command (at 100 s), and answers the
/// second (at 300 s); pump-3's command is withdrawn after 10 s.
fn pump_cmd_rows() -> Vec<(i64, &'static str, &'static str, f64)> {
    let mut rows = Vec::new();
    for s in (0..400).step_by(5) {
        let on1 = s >= 100;
        let on2 = (100..200).contains(&s) || s >= 300;
        let on3 = (100..110).contains(&s);
        let flow1 = if s >= 110 { 40.0 } else { 0.5 };
        let flow2 = if s >= 305 { 40.0 } else { 0.5 };
        for (asset, on, flow) in [
            ("pump-1", on1, flow1),
            ("pump-2", on2, flow2),
            ("pump-3", on3, 0.5),
        ] {
            rows.push((s, asset, "pump_cmd", f64::from(u8::from(on))));
            rows.push((s, asset, "flow_m3h", flow));
        }
    }
    rows
}

#[test]
fn consistency_alerts_when_the_response_does_not_follow_the_command() {
    let mut ids = Vec::new();
    for batch in [7, 64, 10_000] {
        let mut det = detector(&[PUMP_FLOW]);
        let alerts = run(&mut det, &pump_cmd_rows(), batch);
        ids.push(alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
        assert_eq!(
            summary(&alerts),
            vec![(
                "pump-2".to_string(),
                format_time_ms(T0 + 130_000),
                "consistency".to_string()
            )],
            "batches of {batch}"
        );
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["command_time"], format_time_ms(T0 + 100_000));
        assert_eq!(ev["last_response"], 0.5);
        assert_eq!(ev["threshold"], 30);
        // As of the deadline, so the alert is the same whichever row or scan noticed it.
        assert_eq!(ev["score"], 30);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

/// Evaluates `rows` of the `sensors` stream as one batch of `partition`, the stream's
/// watermark at `watermark` seconds from T0 (as a live run with partitions behind has it).
fn live_batch(
    det: &mut BaselineDetector,
    partition: i32,
    rows: &[(i64, &str, &str, f64)],
    watermark: i64,
    out: &mut Vec<Alert>,
) {
    let mut ctx = ctx(T0 + rows.last().unwrap().0 * 1000);
    ctx.partition = partition;
    ctx.watermark_ms = T0 + watermark * 1000;
    det.evaluate(SENSORS, &sensors(rows), &ctx, out).unwrap();
}

/// The watermark of the `sensors` stream moves to `watermark` s with no batch (idle tick).
fn live_tick(det: &mut BaselineDetector, watermark: i64, out: &mut Vec<Alert>) {
    let mut ctx = ctx(T0 + watermark * 1000);
    ctx.watermark_ms = T0 + watermark * 1000;
    det.advance(SENSORS, &ctx, out).unwrap();
}

fn ids(alerts: &[Alert]) -> std::collections::BTreeSet<String> {
    alerts.iter().map(|a| a.id.clone()).collect()
}

#[test]
fn a_partition_ahead_does_not_settle_the_deadlines_of_one_behind() {
    // pump-1 (partition 0) answers its command at 100 s with flow at 110 s; pump-1 again at
    // 200 s, and then its partition goes quiet. pump-9 (partition 1) reports, switched off.
    let mut p0 = Vec::new();
    for s in (0..=205).step_by(5) {
        let on = (100..150).contains(&s) || s >= 200;
        let flow = if (110..150).contains(&s) { 40.0 } else { 0.5 };
        p0.push((s, "pump-1", "pump_cmd", f64::from(u8::from(on))));
        p0.push((s, "pump-1", "flow_m3h", flow));
    }
    let p1: Vec<_> = (0..400)
        .step_by(5)
        .flat_map(|s| {
            [
                (s, "pump-9", "pump_cmd", 0.0),
                (s, "pump-9", "flow_m3h", 0.5),
            ]
        })
        .collect();
    // In event-time order, as a replay reads them.
    let mut ordered: Vec<_> = p0.iter().chain(&p1).copied().collect();
    ordered.sort_by_key(|r| r.0);
    let replayed = run(&mut detector(&[PUMP_FLOW]), &ordered, 64);
    assert_eq!(
        summary(&replayed),
        vec![(
            "pump-1".to_string(),
            format_time_ms(T0 + 230_000),
            "consistency".to_string()
        )]
    );

    // Live: partition 1 read to its end while partition 0 has delivered up to 105 s; the
    // watermark (lateness 10 s) stays at 95 s. pump-9's rows at 131 s and later must not
    // settle pump-1's deadline: its flow at 110 s is still to come.
    let mut det = detector(&[PUMP_FLOW]);
    let mut live = Vec::new();
    let cut = p0.iter().position(|r| r.0 == 110).unwrap();
    live_batch(&mut det, 0, &p0[..cut], 95, &mut live);
    live_batch(&mut det, 1, &p1, 95, &mut live);
    assert_eq!(summary(&live), vec![], "pump-1 answered at 110 s");
    live_batch(&mut det, 0, &p0[cut..], 195, &mut live);
    assert!(live.is_empty());
    // Partition 0 goes idle: the watermark moves on without a batch, past pump-1's second
    // deadline (230 s).
    live_tick(&mut det, 229, &mut live);
    assert!(live.is_empty(), "the deadline has not passed");
    live_tick(&mut det, 380, &mut live);
    assert_eq!(ids(&live), ids(&replayed));
    // The end of a replay settles nothing: the input ended, not the pump's telemetry.
    let mut det = detector(&[PUMP_FLOW]);
    live_batch(&mut det, 0, &p0, 195, &mut live);
    let before = live.len();
    let mut end = ctx(T0);
    end.watermark_ms = i64::MAX;
    det.advance(SENSORS, &end, &mut live).unwrap();
    assert_eq!(live.len(), before);
}

#[test]
fn a_missing_heartbeat_is_one_alert_whether_a_scan_or_the_next_sample_finds_it() {
    let rule = "id: eq.hb\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                heartbeat_s: 60\n";
    // meter: every 10 s, silent from 90 s to 200 s; tank: every 10 s throughout.
    let mut rows = Vec::new();
    for s in (0..300).step_by(10) {
        rows.push((s, "tank", "level", 5.0));
        if !(91..200).contains(&s) {
            rows.push((s, "meter", "kwh", 1.0));
        }
    }
    let expected = vec![(
        "meter".to_string(),
        format_time_ms(T0 + 150_000),
        "heartbeat".to_string(),
    )];
    // Row by row, the tank's rows move the horizon past 150 s while the meter is silent: a
    // scan finds the gap. In one batch, no scan runs inside the gap: the meter's sample at
    // 200 s finds it.
    let mut found = Vec::new();
    for batch in [1, 7, rows.len()] {
        let alerts = run(&mut detector(&[rule]), &rows, batch);
        assert_eq!(summary(&alerts), expected, "batches of {batch}");
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["last_seen"], format_time_ms(T0 + 90_000));
        assert_eq!(ev["score"], 60);
        found.push(ids(&alerts));
    }
    assert!(found.windows(2).all(|w| w[0] == w[1]), "{found:?}");
    // Live, the meter's partition behind: the tank's partition ahead does not make it silent.
    let mut det = detector(&[rule]);
    let mut live = Vec::new();
    let (meter, tank): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.1 == "meter");
    live_batch(&mut det, 1, &tank, 0, &mut live);
    assert!(live.is_empty(), "{:?}", summary(&live));
    live_batch(&mut det, 0, &meter, 280, &mut live);
    assert_eq!(summary(&live), expected);
    assert_eq!(ids(&live), found[0]);
}

#[test]
fn consistency_state_survives_a_restart() {
    let rows = pump_cmd_rows();
    // Cut while pump-2's first command awaits its response.
    let cut = rows.iter().position(|r| r.0 == 110).unwrap();
    let mut whole = detector(&[PUMP_FLOW]);
    let expected = run(&mut whole, &rows, 64);
    let mut before = detector(&[PUMP_FLOW]);
    assert!(run(&mut before, &rows[..cut], 64).is_empty());
    let mut entries = Vec::new();
    before.checkpoint(&mut entries);
    let mut after = detector(&[PUMP_FLOW]);
    after.restore(&entries).unwrap();
    let resumed = run(&mut after, &rows[cut..], 64);
    assert_eq!(
        resumed.iter().map(|a| &a.id).collect::<Vec<_>>(),
        expected.iter().map(|a| &a.id).collect::<Vec<_>>()
    );
    // Restored, pump-1's command is known to be on already: it is not a new command.
    let e = Entity {
        cmd: Some(Command {
            on: true,
            pending_ms: Some(5),
            last_response: 0.5,
        }),
        ..Entity::default()
    };
    let bytes = codec::encode(&e, |_| "", |_| "");
    assert_eq!(codec::decode(&bytes, |_| None, |_| None).unwrap(), e);
}

/// The same pumps as [`pump_cmd_rows`], one wide row per pump and poll (the built-in `pumps`
/// stream: command and flow side by side).
fn pumps_wide(rows: &[(i64, &str, &str, f64)]) -> RecordBatch {
    use datafusion::arrow::array::Int32Array;
    let wide: Vec<(i64, &str, i32, f64)> = rows
        .chunks(2)
        .map(|pair| {
            assert_eq!((pair[0].2, pair[1].2), ("pump_cmd", "flow_m3h"));
            (pair[0].0, pair[0].1, pair[0].3 as i32, pair[1].3)
        })
        .collect();
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("asset", DataType::Utf8, true),
        Field::new("pump_cmd", DataType::Int32, true),
        Field::new("flow_m3h", DataType::Float64, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                wide.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(wide.iter().map(|r| r.1))),
            Arc::new(Int32Array::from_iter_values(wide.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(wide.iter().map(|r| r.3))),
        ],
    )
    .unwrap()
}

/// Wide rows (a pump station's poll holds its command and its flow) raise what the long
/// layout raises, whatever the batching.
#[test]
fn consistency_reads_command_and_response_columns_of_wide_rows() {
    let wide = "id: eq.pump_flow\nstream: pumps\nmodel: consistency\ncommand: pump_cmd\n\
                response: flow_m3h\nresponse_above: 10\nwithin_s: 30\n";
    let pumps = Config::builtin().stream_index("pumps").unwrap();
    let rows = pump_cmd_rows();
    let long = run(&mut detector(&[PUMP_FLOW]), &rows, 64);
    for batch in [2, 14, 10_000] {
        let mut det = detector(&[wide]);
        let mut alerts = Vec::new();
        for chunk in rows.chunks(batch) {
            let b = pumps_wide(chunk);
            det.evaluate(
                pumps,
                &b,
                &ctx(T0 + chunk.last().unwrap().0 * 1000),
                &mut alerts,
            )
            .unwrap();
        }
        assert_eq!(summary(&alerts), summary(&long), "batches of {batch}");
        assert_eq!(
            evidence(&alerts[0])["command_time"],
            evidence(&long[0])["command_time"]
        );
    }
}

/// Logins with a result: (seconds from T0, user, target, result).
fn results(rows: &[(i64, &str, &str, &str)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("user", DataType::Utf8, true),
        Field::new("target", DataType::Utf8, true),
        Field::new("result", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| T0 + r.0 * 1000),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| (!r.3.is_empty()).then_some(r.3)),
            )),
        ],
    )
    .unwrap()
}

/// `where` hides the rows it does not select from the model: a failed login (someone
/// guessing the user's password) is no sign-in to a new system, and teaches nothing either.
#[test]
fn where_selects_the_rows_a_rule_learns_from_and_scores() {
    let rule = |filter: &str| {
        format!(
            "id: ueba.new_target\nstream: auth\nmodel: new_terms\nfield: target\n\
             warmup_s: 60\n{filter}"
        )
    };
    let rows = [
        (0, "alice", "mail", "success"),
        (120, "alice", "hmi-1", "failure"),
        // A null result is no success either.
        (130, "alice", "hmi-2", ""),
        (180, "alice", "hmi-1", "success"),
        (240, "alice", "files", "success"),
    ];
    let auth = Config::builtin().stream_index("auth").unwrap();
    let alerted = |filter: &str| -> Vec<String> {
        let mut det = detector(&[&rule(filter)]);
        let mut out = Vec::new();
        det.evaluate(auth, &results(&rows), &ctx(T0 + 240_000), &mut out)
            .unwrap();
        out.iter()
            .map(|a| evidence(a)["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(alerted(""), vec!["hmi-1", "hmi-2", "files"]);
    assert_eq!(
        alerted("where: {result: success}\n"),
        vec!["hmi-1", "files"]
    );
    assert_eq!(
        alerted("where:\n  result: [success, failure]\n  target: [mail, hmi-1]\n"),
        vec!["hmi-1"],
        "values of one column are alternatives; columns must all match"
    );
    assert_eq!(alerted("where: {target: mail}\n"), Vec::<String>::new());
}

#[tokio::test]
async fn where_names_text_columns_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.baseline.yml"),
        "id: a\nstream: auth\nmodel: new_terms\nfield: target\nwhere:\n  outcome: success\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.baseline.yml"),
        "id: b\nstream: netflow\nmodel: fan_out\nfield: dst_ip\nwhere: {dst_port: 443}\n",
    )
    .unwrap();
    let config = Config::builtin();
    let err = match crate::detect::DetectorSet::load(&config, &[dir.path().to_path_buf()]).await {
        Err(e) => e,
        Ok(_) => panic!("bad rules loaded"),
    };
    let mut messages: Vec<String> = err
        .errors
        .iter()
        .map(|e| e.to_string().replace(&dir.path().display().to_string(), ""))
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        vec![
            "/a.baseline.yml:5:1: `where`: stream `auth` has no column `outcome`".to_string(),
            "/b.baseline.yml:5:1: `where` compares text, and column `dst_port` of stream \
             `netflow` is Int32"
                .to_string(),
        ]
    );
    // A struct field is a column too.
    let ok = tempfile::tempdir().unwrap();
    std::fs::write(
        ok.path().join("c.baseline.yml"),
        "id: c\nstream: auth\nmodel: new_terms\nfield: target\nwhere: {geo.country: [CA, US]}\n",
    )
    .unwrap();
    assert!(
        crate::detect::DetectorSet::load(&config, &[ok.path().to_path_buf()])
            .await
            .is_ok()
    );
    let bad = rule::parse(
        Path::new("d.baseline.yml"),
        "id: d\nstream: auth\nmodel: new_terms\nfield: target\nwhere: {result: []}\n",
    )
    .unwrap_err();
    assert_eq!(
        bad[0].to_string(),
        "d.baseline.yml:5:17: `where` `result`: give at least one value"
    );
}

/// A stuck sensor repeats one value for 50 minutes, then is fixed: the repeats teach the
/// baseline nothing, so its first real reading, 2.5 of its usual deviations away, is no spike
/// (learnt, the repeats would have shrunk the deviation tenfold).
#[test]
fn held_values_are_not_learnt() {
    let rule = "id: eq.z\nstream: sensors\nmodel: univariate\nmetric: metric\nvalue: value\n\
                warmup: 50\nalpha: 0.02\nz: 8\nrealert_s: 0\n";
    let mut rng = Rng::new(3);
    let mut rows = Vec::new();
    let mut level = 0.0;
    for s in 0..650 {
        level = match s {
            ..200 => 10.0 + (0..4).map(|_| rng.f64()).sum::<f64>() * 1.7 - 3.4,
            200..500 => level,
            500 => level + 2.5,
            _ => 10.0 + (0..4).map(|_| rng.f64()).sum::<f64>() * 1.7 - 3.4,
        };
        rows.push((s * 10, "reservoir-1", "level_m", level));
    }
    let alerts = run(&mut detector(&[rule]), &rows, 64);
    assert_eq!(summary(&alerts), Vec::new());
    // The same readings with the stuck stretch moving by a hair: learnt, they collapse the
    // deviation, and the release and the healthy readings after it alert for minutes.
    for (i, r) in rows[200..500].iter_mut().enumerate() {
        r.3 += if i % 2 == 0 { 1e-6 } else { 0.0 };
    }
    let alerts = run(&mut detector(&[rule]), &rows, 64);
    assert_eq!(
        summary(&alerts)[0],
        (
            "reservoir-1".to_string(),
            format_time_ms(T0 + 5_000_000),
            "zscore".to_string()
        )
    );
    assert!(alerts.len() > 5, "{}", alerts.len());
}

const ROBUST: &str = "id: eq.robust\nstream: sensors\nmodel: univariate\nmetric: metric\n\
                      value: value\nwarmup: 20\nrobust_window: 32\nz: 6\nrealert_s: 0\n";

#[test]
fn robust_baseline_is_the_median_and_mad_of_the_recent_window() {
    // Noise around 5 with a spike of +40 every tenth sample: each spike alerts, and none
    // moves the baseline (the median ignores them), so the samples around them do not.
    let mut rng = Rng::new(3);
    let rows: Vec<(i64, &str, &str, f64)> = (0..300)
        .map(|s| {
            let spike = if s % 10 == 9 { 40.0 } else { 0.0 };
            (s, "pump-1", "pressure", 5.0 + rng.f64() - 0.5 + spike)
        })
        .collect();
    let mut det = detector(&[ROBUST]);
    let alerts = run(&mut det, &rows, 50);
    let spikes: Vec<&(i64, &str, &str, f64)> =
        rows.iter().filter(|r| r.0 >= 20 && r.0 % 10 == 9).collect();
    assert_eq!(alerts.len(), spikes.len(), "{:?}", summary(&alerts));
    for (a, spike) in alerts.iter().zip(&spikes) {
        assert_eq!(a.event_time, format_time_ms(T0 + spike.0 * 1000));
        // The expected range, recomputed here from the (up to) 32 samples before the spike.
        let i = spike.0 as usize;
        let mut w: Vec<f64> = rows[i.saturating_sub(32)..i].iter().map(|r| r.3).collect();
        w.sort_by(f64::total_cmp);
        let mid = w.len() / 2;
        let median = w[mid];
        let mut dev: Vec<f64> = w.iter().map(|v| (v - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let scale = 1.4826 * dev[mid];
        let ev = evidence(a);
        let lo = ev["expected"][0].as_f64().unwrap();
        let hi = ev["expected"][1].as_f64().unwrap();
        assert!(
            (lo - (median - 6.0 * scale)).abs() < 1e-3,
            "{ev} vs {median} {scale}"
        );
        assert!(
            (hi - (median + 6.0 * scale)).abs() < 1e-3,
            "{ev} vs {median} {scale}"
        );
        assert_eq!(ev["baseline_samples"].as_u64(), Some(w.len() as u64));
    }
}

#[test]
fn robust_window_round_trips_and_is_validated() {
    let e = Entity {
        series: vec![Series {
            metric: 0,
            stats: Ewma::default(),
            profile: Vec::new(),
            recent: vec![1.0, 2.0, 3.0],
            recent_pos: 1,
            last: 3.0,
            last_ms: 4,
            first_ms: 1,
            changed_ms: 2,
            alarms: 0,
            last_alert_ms: i64::MIN,
        }],
        ..Entity::default()
    };
    let bytes = codec::encode(&e, |_| "pressure", |_| "");
    let back = codec::decode(&bytes, |_| Some(0), |_| None).unwrap();
    assert_eq!(back, e);
    let errors: Vec<String> = rule::parse(
        Path::new("r.baseline.yml"),
        "id: a\nstream: s\nmodel: univariate\nfeatures: [v]\nz: 5\nwarmup: 50\n\
         robust_window: 16\n",
    )
    .unwrap_err()
    .iter()
    .map(|e| e.to_string())
    .collect();
    assert_eq!(
        errors,
        vec![
            "r.baseline.yml:7:16: robust_window (16) must hold at least `warmup` (50) samples, \
             or the baseline never warms up"
                .to_string()
        ]
    );
}

#[test]
fn struct_paths_are_checked_at_load() {
    let text = TRAVEL.replace("geo.city", "geo.town");
    let file = PathBuf::from("t.baseline.yml");
    let rule = rule::parse(&file, &text).unwrap();
    let errors: Vec<String> = match BaselineDetector::load(&Config::builtin(), vec![(file, rule)]) {
        Ok(_) => panic!("geo has no field `town`"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    };
    assert_eq!(
        errors,
        vec!["t.baseline.yml:4:1: stream `auth` has no column `geo.town`".to_string()]
    );
}
