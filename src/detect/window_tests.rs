//! Windowed SQL detectors: results against an independent DataFusion batch query, order and
//! batching independence, lateness, checkpoints, bounds, load errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use serde_json::Value;

use crate::alert::Alert;
use crate::config::Config;
use crate::decode::StreamDecoder;
use crate::detect::sql::{Compiler, SqlDetector};
use crate::detect::{Detector, EvalContext, StateEntry};
use crate::privacy::Pseudonymiser;
use crate::source::{Origin, RawBatch};
use crate::watermark::Watermarks;

fn config(lateness_ms: u64, policy: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[kafka]
brokers = "b:9092"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"
[detectors]
rules = ["rules"]
{extra}
[[streams]]
name = "s"
topics = ["t"]
format = "json"
event_time = "ts"
entity = ["k"]
[streams.schema]
ts = "timestamp"
k = "string"
v = "int64"
x = "float64"
name = "string"
[streams.watermark]
allowed_lateness_ms = {lateness_ms}
late_events = "{policy}"
"#
    );
    Config::parse(&text, "t.toml", Path::new(".")).unwrap()
}

async fn compile(config: &Config, header: &str, sql: &str) -> Result<SqlDetector, String> {
    let text = format!("-- id: w\n-- title: W\n-- severity: high\n-- stream: s\n{header}{sql}");
    Compiler::new(config)
        .compile(Path::new("w.sql"), &text)
        .await
        .map_err(|e| format!("{}: {}", e.line, e.message))
}

/// One test event.
#[derive(Debug, Clone)]
struct Ev {
    ts: i64,
    k: String,
    v: Option<i64>,
    x: f64,
    name: String,
}

impl Ev {
    fn json(&self) -> String {
        serde_json::json!({
            "ts": crate::alert::format_time_ms(self.ts),
            "k": self.k,
            "v": self.v,
            "x": self.x,
            "name": self.name,
        })
        .to_string()
    }
}

/// Feeds `events` in `chunks` (batch sizes, cycled) through the watermark and the detector as
/// the pipeline does (partition `partition`), then ends the input. Returns the alerts and the
/// late rows.
fn run(
    config: &Config,
    det: &mut dyn Detector,
    events: &[Ev],
    chunks: &[usize],
    finish: bool,
) -> (Vec<Alert>, usize) {
    run_on(config, det, events, chunks, finish, 0, false)
}

/// [`run`], the events being of `partition`; with `hold`, the watermark is not passed on (as
/// in the first `idle_timeout_ms` of a live run, which waits to hear from every partition).
fn run_on(
    config: &Config,
    det: &mut dyn Detector,
    events: &[Ev],
    chunks: &[usize],
    finish: bool,
    partition: i32,
    hold: bool,
) -> (Vec<Alert>, usize) {
    let mut w = Watermarks::new(config);
    let mut decoder = StreamDecoder::for_stream(&config.streams[0], &[], false, 64).unwrap();
    let mut ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"k"),
        partition,
        watermark_ms: i64::MIN,
    };
    let mut out = Vec::new();
    let mut late = 0;
    let mut at = 0;
    let mut c = 0;
    while at < events.len() {
        let n = chunks[c % chunks.len()].max(1).min(events.len() - at);
        c += 1;
        let mut raw = RawBatch::of_partition(0, partition);
        for (i, e) in events[at..at + n].iter().enumerate() {
            raw.push(
                e.json().as_bytes(),
                Origin {
                    source: 0,
                    partition,
                    offset: (at + i) as i64,
                    timestamp_ms: 0,
                },
            );
        }
        at += n;
        let mut decoded = decoder.decode(&raw);
        late += w.split_late(0, &raw, &mut decoded, decoder.time_col()).late;
        let max = crate::detect::timestamp_millis(decoded.batch.column(0).as_ref())
            .into_iter()
            .flatten()
            .max();
        w.observe(0, partition, max, 0);
        if !hold {
            ctx.watermark_ms = w.watermark(0);
        }
        if decoded.batch.num_rows() > 0 {
            det.evaluate(0, &decoded.batch, &ctx, &mut out).unwrap();
        } else {
            det.advance(0, &ctx, &mut out).unwrap();
        }
    }
    if finish {
        ctx.watermark_ms = i64::MAX;
        det.advance(0, &ctx, &mut out).unwrap();
    }
    (out, late)
}

fn evidence(a: &Alert) -> serde_json::Map<String, Value> {
    serde_json::from_str(a.evidence[0].get()).unwrap()
}

/// Random events: `keys` keys, times over `span_ms` from a fixed origin, small value domains
/// (so distinct counts and min/max are exercised).
fn events(seed: u64, n: usize, keys: u64, span_ms: i64) -> Vec<Ev> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let origin = 1_767_600_000_000; // 2026-01-05T08:00:00Z
    let mut out: Vec<Ev> = (0..n)
        .map(|_| Ev {
            ts: origin + (next() as i64 % span_ms),
            k: format!("k{}", next() % keys),
            v: (next() % 10 != 0).then(|| (next() % 7) as i64),
            x: (next() % 100) as f64 / 4.0,
            name: format!("n{}", next() % 5),
        })
        .collect();
    out.sort_by_key(|e| e.ts);
    out
}

const HOP_SQL: &str = "SELECT k, count(DISTINCT v) AS nv, count(*) AS c, count(v) AS cv, \
     sum(x) AS sx, min(x) AS mnx, max(v) AS mxv, min(name) AS mnn, max(ts) AS event_time \
     FROM s WHERE name <> 'n4' GROUP BY k HAVING count(*) >= 2";

/// The same aggregation as one DataFusion batch query over every event, each event copied
/// into the `size / hop` windows holding it.
async fn reference(events: &[Ev], size_ms: i64, hop_ms: i64) -> BTreeSet<String> {
    reference_having(events, size_ms, hop_ms, "count(*) >= 2").await
}

/// [`reference`] with another `HAVING`.
async fn reference_having(
    events: &[Ev],
    size_ms: i64,
    hop_ms: i64,
    having: &str,
) -> BTreeSet<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, true),
        Field::new("x", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.ts))),
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| &e.k))),
            Arc::new(Int64Array::from_iter(events.iter().map(|e| e.v))),
            Arc::new(datafusion::arrow::array::Float64Array::from_iter_values(
                events.iter().map(|e| e.x),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.name),
            )),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "e",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let offsets: Vec<String> = (0..size_ms / hop_ms).map(|o| o.to_string()).collect();
    let sql = format!(
        "WITH o(o) AS (VALUES ({})), \
         w AS (SELECT e.*, (CAST(floor(CAST(ts AS DOUBLE) / {hop_ms}) AS BIGINT) - o) * {hop_ms} AS ws \
               FROM e CROSS JOIN o) \
         SELECT k, ws, count(DISTINCT v) AS nv, count(*) AS c, count(v) AS cv, sum(x) AS sx, \
                min(x) AS mnx, max(v) AS mxv, min(name) AS mnn, max(ts) AS mt \
         FROM w WHERE name <> 'n4' GROUP BY k, ws HAVING {having}",
        offsets.join("), (")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut out = BTreeSet::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let i = |c: usize| b.column(c).as_primitive::<Int64Type>().value(r);
            let mxv = {
                let c = b.column(7).as_primitive::<Int64Type>();
                if c.is_null(r) {
                    "null".to_string()
                } else {
                    c.value(r).to_string()
                }
            };
            out.insert(format!(
                "{} {} nv={} c={} cv={} sx={} mnx={} mxv={} mnn={} t={}",
                b.column(0).as_string::<i32>().value(r),
                crate::alert::format_time_ms(i(1)),
                i(2),
                i(3),
                i(4),
                b.column(5)
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .value(r),
                b.column(6)
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .value(r),
                mxv,
                b.column(8).as_string::<i32>().value(r),
                crate::alert::format_time_ms(i(9)),
            ));
        }
    }
    out
}

/// The detector's alerts in the reference's format.
fn rows(alerts: &[Alert]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|a| {
            let e = evidence(a);
            let num = |k: &str| match &e[k] {
                Value::Null => "null".to_string(),
                v => v.to_string(),
            };
            let ws = e["window_start"].as_str().unwrap();
            format!(
                "{} {} nv={} c={} cv={} sx={} mnx={} mxv={} mnn={} t={}",
                e["k"].as_str().unwrap(),
                crate::alert::format_time_ms(
                    chrono::DateTime::parse_from_rfc3339(&format!("{ws}Z").replace("ZZ", "Z"))
                        .map(|d| d.timestamp_millis())
                        .unwrap_or_else(|_| panic!("window_start {ws}")),
                ),
                num("nv"),
                num("c"),
                num("cv"),
                e["sx"].as_f64().unwrap(),
                e["mnx"].as_f64().unwrap(),
                num("mxv"),
                e["mnn"].as_str().unwrap(),
                a.event_time,
            )
        })
        .collect()
}

#[tokio::test]
async fn hopping_windows_equal_a_batch_query_over_the_whole_input() {
    let config = config(0, "dead_letter", "");
    let mut det = compile(&config, "-- window: hop 5m every 1m\n", HOP_SQL)
        .await
        .unwrap();
    let input = events(1, 3000, 40, 20 * 60_000);
    let (alerts, late) = run(&config, &mut det, &input, &[97, 13, 250], true);
    assert_eq!(late, 0, "ordered input has no late events");
    let want = reference(&input, 300_000, 60_000).await;
    assert!(
        want.len() > 100,
        "the case exercises many windows: {}",
        want.len()
    );
    let got = rows(&alerts);
    assert_eq!(got.len(), alerts.len(), "each window and key emitted once");
    let missing: Vec<_> = want.difference(&got).take(3).collect();
    let extra: Vec<_> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
}

#[tokio::test]
async fn a_having_that_reads_group_keys_equals_a_batch_query() {
    // `HAVING` on aggregates alone runs before the keys are turned into columns (the case
    // above); one that reads a key runs after. Both must give the batch query's rows.
    let config = config(0, "dead_letter", "");
    let having = "count(*) >= 2 AND (k < 'k2' OR count(DISTINCT v) > 3)";
    let sql = HOP_SQL.replace("HAVING count(*) >= 2", &format!("HAVING {having}"));
    let mut det = compile(&config, "-- window: hop 5m every 1m\n", &sql)
        .await
        .unwrap();
    let input = events(3, 3000, 40, 20 * 60_000);
    let (alerts, _) = run(&config, &mut det, &input, &[97, 13, 250], true);
    let want = reference_having(&input, 300_000, 60_000, having).await;
    assert!(
        want.len() > 50,
        "the case exercises many windows: {}",
        want.len()
    );
    assert!(
        want.iter().any(|r| !r.starts_with("k1")),
        "rows of other keys pass too"
    );
    assert_eq!(rows(&alerts), want);
}

#[tokio::test]
async fn tumbling_windows_equal_a_batch_query_and_checkpoints_resume_exactly() {
    let config = config(0, "dead_letter", "");
    let header = "-- window: tumble 2m\n";
    let input = events(2, 2000, 25, 15 * 60_000);
    let mut whole = compile(&config, header, HOP_SQL).await.unwrap();
    let (alerts, _) = run(&config, &mut whole, &input, &[64], true);
    assert_eq!(rows(&alerts), reference(&input, 120_000, 120_000).await);

    // Interrupted: the first part, checkpoints along the way into a changelog (latest value
    // per key, tombstones delete), then a fresh detector restored from it takes the rest.
    let mut first = compile(&config, header, HOP_SQL).await.unwrap();
    let mut changelog: BTreeMap<(i32, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut before = Vec::new();
    let cut = 1234;
    for part in input[..cut].chunks(300) {
        // One run per part, not ending the input: the watermark follows the events seen.
        let (a, _) = run(&config, &mut first, part, &[64], false);
        before.extend(a);
        let mut entries: Vec<StateEntry> = Vec::new();
        first.checkpoint(&mut entries);
        for e in entries {
            match e.value {
                Some(v) => changelog.insert((e.partition, e.key), v),
                None => changelog.remove(&(e.partition, e.key)),
            };
        }
    }
    let restored_entries: Vec<StateEntry> = changelog
        .into_iter()
        .map(|((partition, key), v)| StateEntry {
            partition,
            key,
            value: Some(v),
        })
        .collect();
    let mut second = compile(&config, header, HOP_SQL).await.unwrap();
    second.restore(&restored_entries).unwrap();
    let (after, _) = run(&config, &mut second, &input[cut..], &[64], true);
    let all: Vec<Alert> = before.iter().chain(after.iter()).cloned().collect();
    let (g, w) = (rows(&all), rows(&alerts));
    let missing: Vec<_> = w.difference(&g).take(3).collect();
    let extra: Vec<_> = g.difference(&w).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    let ids = |a: &[Alert]| a.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    let mut resumed = ids(&before);
    resumed.extend(ids(&after));
    assert_eq!(resumed, ids(&alerts), "no window lost, none emitted twice");
}

#[tokio::test]
async fn a_partition_taken_over_before_any_of_its_windows_fired_fires_them() {
    // Instance A read partition 1 far enough to fire windows and checkpointed; instance B
    // read partition 0 while its watermark was still held, checkpointed, and died. C takes
    // both over from the changelog: partition 1's fired windows must not count as
    // partition 0's.
    let config = config(0, "dead_letter", "");
    let header = "-- window: tumble 2m\n";
    let p1 = events(7, 600, 10, 10 * 60_000);
    let p0 = events(8, 200, 10, 110_000);
    let mut a = compile(&config, header, HOP_SQL).await.unwrap();
    let (fired, _) = run_on(&config, &mut a, &p1, &[64], false, 1, false);
    assert!(!fired.is_empty(), "partition 1 fired windows");
    let mut b = compile(&config, header, HOP_SQL).await.unwrap();
    let (none, _) = run_on(&config, &mut b, &p0, &[64], false, 0, true);
    assert!(none.is_empty(), "no window of partition 0 closed");
    let mut entries = Vec::new();
    a.checkpoint(&mut entries);
    b.checkpoint(&mut entries);
    let mut c = compile(&config, header, HOP_SQL).await.unwrap();
    c.restore(&entries).unwrap();
    // Partition 0's next records move its watermark past its first window.
    let more: Vec<Ev> = events(9, 50, 10, 60_000)
        .into_iter()
        .map(|mut e| {
            e.ts += 150_000;
            e
        })
        .collect();
    let (after, _) = run_on(&config, &mut c, &more, &[64], false, 0, false);
    let want = reference(&p0, 120_000, 120_000).await;
    assert!(!want.is_empty());
    let got = rows(&after);
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
}

proptest! {
    #![proptest_config(crate::proptest_config(12))]

    /// Events shuffled within the allowed lateness, cut into arbitrary batches, give the same
    /// alerts (same ids) as the ordered input.
    #[test]
    fn disorder_within_lateness_changes_nothing(
        seed in 0u64..1000,
        delays in proptest::collection::vec(0i64..10_000, 600),
        chunks in proptest::collection::vec(1usize..120, 1..5),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let lateness = 20_000;
        let config = config(lateness as u64, "dead_letter", "");
        let input = events(seed, 600, 8, 10 * 60_000);
        // Each event arrives up to half the allowed lateness after its event time: one that
        // arrives after another is at most that much older, so none is late. (Swapping pairs
        // of close events does not bound it: chained swaps carry an event arbitrarily far.)
        let mut shuffled: Vec<(i64, Ev)> = input
            .iter()
            .zip(&delays)
            .map(|(e, d)| (e.ts + d, e.clone()))
            .collect();
        shuffled.sort_by_key(|(arrival, _)| *arrival);
        let shuffled: Vec<Ev> = shuffled.into_iter().map(|(_, e)| e).collect();
        let (mut ordered, mut disordered) = runtime.block_on(async {
            (
                compile(&config, "-- window: hop 2m every 30s\n", HOP_SQL).await.unwrap(),
                compile(&config, "-- window: hop 2m every 30s\n", HOP_SQL).await.unwrap(),
            )
        });
        let (want, _) = run(&config, &mut ordered, &input, &[50], true);
        let (got, late) = run(&config, &mut disordered, &shuffled, &chunks, true);
        prop_assert_eq!(late, 0);
        let ids = |a: &[Alert]| a.iter().map(|a| a.id.clone()).collect::<BTreeSet<_>>();
        prop_assert!(!want.is_empty());
        prop_assert_eq!(ids(&got), ids(&want));
        prop_assert_eq!(got.len(), want.len());
    }
}

#[tokio::test]
async fn late_events_are_dead_lettered_or_counted_by_the_window() {
    let t0 = 1_767_600_000_000;
    let ev = |s: i64, k: &str| Ev {
        ts: t0 + s * 1000,
        k: k.into(),
        v: Some(s),
        x: 1.0,
        name: "a".into(),
    };
    // Window [0, 60 s): k1 at 10 s and 20 s. At 95 s the watermark (lateness 30 s) is at 65 s
    // and the window has been emitted; an event at 30 s is then late.
    let input = vec![
        ev(10, "k1"),
        ev(20, "k1"),
        ev(95, "k2"),
        ev(30, "k1"),
        ev(96, "k2"),
    ];
    let sql = "SELECT k, count(*) AS c FROM s GROUP BY k";
    for (policy, want_late_in_window) in [("dead_letter", 0), ("process", 1)] {
        let config = config(30_000, policy, "");
        let mut det = compile(&config, "-- window: tumble 1m\n", sql)
            .await
            .unwrap();
        let (alerts, late) = run(&config, &mut det, &input, &[1], true);
        assert_eq!(late, 1, "{policy}");
        let counts: Vec<(String, i64)> = alerts
            .iter()
            .map(|a| (a.entity.clone(), evidence(a)["c"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            counts,
            [("k1".to_string(), 2), ("k2".to_string(), 2)],
            "{policy}: the emitted window is not changed by the late event"
        );
        assert_eq!(det.state().events_late, want_late_in_window, "{policy}");
    }
}

#[tokio::test]
async fn session_windows_close_after_the_gap_and_merge_bridged_sessions() {
    // Lateness 200 s: the event at 50 s, after the one at 100 s, is not late.
    let config = config(200_000, "dead_letter", "");
    let sql =
        "SELECT k, count(*) AS c, count(DISTINCT v) AS nv, min(name) AS first FROM s GROUP BY k";
    let mut det = compile(&config, "-- window: session 1m\n", sql)
        .await
        .unwrap();
    let t0 = 1_767_600_000_000;
    let ev = |s: i64, v: i64, name: &str| Ev {
        ts: t0 + s * 1000,
        k: "k".into(),
        v: Some(v),
        x: 0.0,
        name: name.into(),
    };
    // Two sessions at first (0-10 s, 100 s), bridged by 50 s into one; then 300 s alone.
    let mut out = Vec::new();
    let (a, _) = run(
        &config,
        &mut det,
        &[
            ev(0, 1, "c"),
            ev(10, 2, "b"),
            ev(100, 2, "d"),
            ev(50, 3, "a"),
            ev(300, 1, "e"),
        ],
        &[1],
        true,
    );
    out.extend(a);
    let got: Vec<(String, String, i64, i64, String)> = out
        .iter()
        .map(|a| {
            let e = evidence(a);
            (
                e["window_start"].as_str().unwrap().to_string(),
                e["window_end"].as_str().unwrap().to_string(),
                e["c"].as_i64().unwrap(),
                e["nv"].as_i64().unwrap(),
                e["first"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-01-05T08:00:00".to_string(),
                "2026-01-05T08:02:40".to_string(),
                4,
                3,
                "a".to_string()
            ),
            (
                "2026-01-05T08:05:00".to_string(),
                "2026-01-05T08:06:00".to_string(),
                1,
                1,
                "e".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn state_is_bounded_evictions_counted_and_released_by_partition() {
    let config = config(
        0,
        "dead_letter",
        "[detectors.windows]\nmax_keys = 100\nmax_bytes = 1000000\n",
    );
    let sql = "SELECT k, count(DISTINCT v) AS nv FROM s GROUP BY k";
    let mut det = compile(&config, "-- window: hop 10m every 1m\n", sql)
        .await
        .unwrap();
    let input = events(3, 2000, 500, 60_000);
    let _ = run(&config, &mut det, &input, &[100], false);
    let s = det.state();
    assert!(s.window_keys <= 100, "{s:?}");
    assert!(s.window_keys_evicted >= 400 - 100, "{s:?}");
    assert!(s.window_bytes > 0);
    // The per-rule gauges report the same keys and bytes under the rule's id.
    let mut per_rule = Vec::new();
    det.rule_state(&mut |rule, size| per_rule.push((rule.to_string(), size)));
    assert_eq!(per_rule.len(), 1, "{per_rule:?}");
    assert_eq!(per_rule[0].0, det.rules()[0].id);
    assert_eq!(per_rule[0].1.entries, s.window_keys);
    assert_eq!(per_rule[0].1.bytes, s.window_bytes);
    det.release(&[0]);
    assert_eq!(det.state().window_keys, 0, "partition 0 released");
    det.rule_state(&mut |_, size| assert_eq!(size.entries, 0));
}

#[tokio::test]
async fn window_rules_fail_at_load_with_line_and_reason() {
    let config = config(0, "dead_letter", "");
    let cases = [
        (
            "-- window: hop 5m every 2m\n",
            "SELECT k, count(*) AS c FROM s GROUP BY k",
            "5: window size 300000 ms is not a multiple of the hop 120000 ms",
        ),
        (
            "-- window: slide 5m\n",
            "SELECT k, count(*) AS c FROM s GROUP BY k",
            "5: bad window `slide 5m`; write `tumble 5m`, `hop 5m every 1m` or `session 10m`",
        ),
        (
            "-- window: tumble 5x\n",
            "SELECT k, count(*) AS c FROM s GROUP BY k",
            "5: bad duration `5x`; units are ms, s, m, h, d",
        ),
    ];
    for (header, sql, want) in cases {
        assert_eq!(compile(&config, header, sql).await.unwrap_err(), want);
    }
    let e = compile(
        &config,
        "-- window: tumble 5m\n",
        "SELECT k, median(v) AS m FROM s GROUP BY k",
    )
    .await
    .unwrap_err();
    assert!(
        e.starts_with("5: ") && e.contains("windows support count"),
        "{e}"
    );
    let e = compile(
        &config,
        "-- window: tumble 5m\n",
        "SELECT k, count(*) AS c FROM s GROUP BY k ORDER BY c LIMIT 3",
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("5: ") && e.contains("not supported"), "{e}");
}

#[tokio::test]
async fn rules_join_a_reference_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("assets.csv"),
        "key,owner,criticality\nk1,water,3\nk2,grid,1\n",
    )
    .unwrap();
    let extra = format!(
        "[[detectors.tables]]\nname = \"assets\"\npath = \"{}\"\n[detectors.tables.schema]\ncriticality = \"int64\"\n",
        dir.path().join("assets.csv").display()
    );
    let config = config(0, "dead_letter", &extra);
    let sql = "SELECT s.k, a.owner, count(*) AS c FROM s JOIN assets a ON a.key = s.k \
               WHERE a.criticality >= 2 GROUP BY s.k, a.owner";
    let mut det = compile(&config, "-- window: tumble 1m\n", sql)
        .await
        .unwrap();
    let input = events(4, 200, 3, 60_000);
    let (alerts, _) = run(&config, &mut det, &input, &[50], true);
    let owners: BTreeSet<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a.entity.clone(),
                evidence(a)["owner"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from([("k1".to_string(), "water".to_string())])
    );
    let want = input.iter().filter(|e| e.k == "k1").count() as i64;
    assert_eq!(evidence(&alerts[0])["c"].as_i64().unwrap(), want);
}

/// Feeds `events` and returns the alerts as (entity, window start, nv) rows.
fn distinct_rows(alerts: &[Alert]) -> Vec<(String, String, i64)> {
    alerts
        .iter()
        .map(|a| {
            let e = evidence(a);
            (
                a.entity.clone(),
                e["window_start"].as_str().unwrap().to_string(),
                e["nv"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn version_1_checkpoints_restore_into_the_current_layout() {
    // Version 1 sorted count-distinct entries by pane tag first (tag, aggregate, hash);
    // version 2 by value (aggregate, hash, tag). A changelog written by version 1 must
    // restore to the same results.
    let config = config(0, "dead_letter", "");
    let header = "-- window: hop 4m every 1m\n";
    let sql = "SELECT k, count(DISTINCT v) AS nv FROM s GROUP BY k";
    let input = events(5, 1500, 12, 12 * 60_000);
    let mut whole = compile(&config, header, sql).await.unwrap();
    let (want, _) = run(&config, &mut whole, &input, &[64], true);

    let cut = 700;
    let mut first = compile(&config, header, sql).await.unwrap();
    let (before, _) = run(&config, &mut first, &input[..cut], &[64], false);
    let mut entries: Vec<StateEntry> = Vec::new();
    first.checkpoint(&mut entries);
    let mut converted = 0;
    for e in &mut entries {
        let Some(v) = e.value.as_mut().filter(|_| e.key[0] == 1) else {
            continue;
        };
        assert_eq!(v[0], 2, "written as version 2");
        // One word per pane record (no sum, min or max): panes, then entries.
        let panes = u32::from_le_bytes(v[1..5].try_into().unwrap()) as usize;
        let words = u32::from_le_bytes(v[5..9].try_into().unwrap()) as usize;
        let mut old: Vec<u64> = (panes..words)
            .map(|i| u64::from_le_bytes(v[9 + i * 8..17 + i * 8].try_into().unwrap()))
            .map(|e| ((e & 0xFFFF) << 48) | ((e >> 60) << 44) | ((e >> 16) & super::HASH_BITS))
            .collect();
        old.sort_unstable();
        converted += usize::from(old.len() > 1);
        v[0] = 1;
        for (i, w) in old.iter().enumerate() {
            let at = 9 + (panes + i) * 8;
            v[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
    }
    assert!(converted > 5, "entries whose order differs: {converted}");
    let mut second = compile(&config, header, sql).await.unwrap();
    second.restore(&entries).unwrap();
    let (after, _) = run(&config, &mut second, &input[cut..], &[64], true);
    let mut got = distinct_rows(&before);
    got.extend(distinct_rows(&after));
    assert_eq!(got, distinct_rows(&want));
}

#[tokio::test]
async fn closed_windows_give_their_memory_back() {
    // Keys whose windows all closed leave the table and their records' pages; what is held
    // afterwards is what the few keys still open need.
    let config = config(0, "dead_letter", "");
    let sql = "SELECT k, count(DISTINCT v) AS nv, count(*) AS c FROM s GROUP BY k";
    let mut det = compile(&config, "-- window: hop 2m every 1m\n", sql)
        .await
        .unwrap();
    let mut input = events(6, 40_000, 20_000, 60_000);
    let t0 = input[0].ts;
    // Few batches: each runs a plan inside this test's tokio task, whose budget runs out.
    let (_, _) = run(&config, &mut det, &input, &[8192], false);
    let full = det.state();
    assert!(full.window_keys > 15_000, "{full:?}");
    // Ten minutes later, three keys: every earlier window closes.
    input = (0..3)
        .map(|i| Ev {
            ts: t0 + 10 * 60_000 + i,
            k: format!("late{i}"),
            v: Some(1),
            x: 0.0,
            name: "a".into(),
        })
        .collect();
    let (alerts, _) = run(&config, &mut det, &input, &[3], false);
    assert!(alerts.len() > 15_000, "the earlier windows closed");
    let after = det.state();
    assert_eq!(after.window_keys, 3);
    assert!(
        after.window_bytes * 20 < full.window_bytes,
        "{} bytes held for 3 keys, {} for {}",
        after.window_bytes,
        full.window_bytes,
        full.window_keys
    );
}

#[tokio::test]
async fn a_key_too_long_for_window_state_is_an_error_not_a_panic() {
    let config = config(0, "dead_letter", "");
    let mut det = compile(
        &config,
        "-- window: tumble 1m\n",
        "SELECT k, count(*) AS c FROM s GROUP BY k",
    )
    .await
    .unwrap();
    let long = Ev {
        ts: 1_767_600_000_000,
        k: "k".repeat(70_000),
        v: Some(1),
        x: 0.0,
        name: "a".into(),
    };
    let mut decoder = StreamDecoder::for_stream(&config.streams[0], &[], false, 64).unwrap();
    let mut raw = RawBatch::new(0);
    raw.push(
        long.json().as_bytes(),
        Origin {
            source: 0,
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
        },
    );
    let decoded = decoder.decode(&raw);
    let ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"k"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let err = det
        .evaluate(0, &decoded.batch, &ctx, &mut Vec::new())
        .unwrap_err();
    assert!(
        err.message.contains("65535 bytes of key"),
        "{}",
        err.message
    );
    assert_eq!(det.state().window_keys, 0);
}

proptest! {
    #![proptest_config(crate::proptest_config(10))]

    /// Session windows equal sessions computed directly from each key's sorted event times
    /// (a gap over `gap` starts a new one; a session ends `gap` after its last event), and
    /// every session the watermark has passed is emitted without the input ending: keys are
    /// visited through the due index, so one missing from it would be caught here. Half way,
    /// the state is checkpointed and restored into a fresh detector (which files its keys
    /// anew).
    #[test]
    fn sessions_equal_a_direct_computation_and_close_as_the_watermark_passes(
        seed in 0u64..1000,
        gap_s in 5i64..120,
        chunks in proptest::collection::vec(1usize..200, 1..4),
        cut in 100usize..700,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let config = config(0, "dead_letter", "");
        let sql = "SELECT k, count(*) AS c, count(DISTINCT v) AS nv FROM s GROUP BY k";
        let header = format!("-- window: session {gap_s}s\n");
        let mut first = runtime.block_on(compile(&config, &header, sql)).unwrap();
        let input = events(seed, 800, 30, 40 * 60_000);
        let (mut alerts, late) = run(&config, &mut first, &input[..cut], &chunks, false);
        prop_assert_eq!(late, 0);
        let mut entries = Vec::new();
        first.checkpoint(&mut entries);
        let mut second = runtime.block_on(compile(&config, &header, sql)).unwrap();
        second.restore(&entries).unwrap();
        let (after, late) = run(&config, &mut second, &input[cut..], &chunks, false);
        prop_assert_eq!(late, 0);
        alerts.extend(after);
        let watermark = input.last().unwrap().ts;
        let gap = gap_s * 1000;
        let mut by_key: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
        for e in &input {
            by_key.entry(&e.k).or_default().push(e);
        }
        let mut want = BTreeSet::new();
        for (k, evs) in by_key {
            let mut i = 0;
            while i < evs.len() {
                let mut j = i + 1;
                while j < evs.len() && evs[j].ts - evs[j - 1].ts <= gap {
                    j += 1;
                }
                let end = evs[j - 1].ts + gap;
                if end <= watermark {
                    let values: BTreeSet<i64> = evs[i..j].iter().filter_map(|e| e.v).collect();
                    want.insert((k.to_string(), evs[i].ts, end, (j - i) as i64, values.len() as i64));
                }
                i = j;
            }
        }
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(&format!("{s}Z"))
                .unwrap_or_else(|_| panic!("time {s}"))
                .timestamp_millis()
        };
        let got: BTreeSet<(String, i64, i64, i64, i64)> = alerts
            .iter()
            .map(|a| {
                let e = evidence(a);
                (
                    a.entity.clone(),
                    ms(e["window_start"].as_str().unwrap()),
                    ms(e["window_end"].as_str().unwrap()),
                    e["c"].as_i64().unwrap(),
                    e["nv"].as_i64().unwrap(),
                )
            })
            .collect();
        prop_assert!(want.len() > 20, "sessions closed: {}", want.len());
        prop_assert_eq!(got.len(), alerts.len(), "each session emitted once");
        prop_assert_eq!(got, want);
    }
}

#[tokio::test]
async fn a_key_with_too_many_open_panes_is_an_error_not_a_corruption() {
    // Tumbling 1 s windows with a day of lateness: one key can hold more panes than its
    // record counts (65,535). The event that would add one more is refused with the reason;
    // the state held so far stays readable.
    let config = config(86_400_000, "dead_letter", "");
    let mut det = compile(
        &config,
        "-- window: tumble 1s\n",
        "SELECT k, count(*) AS c FROM s GROUP BY k",
    )
    .await
    .unwrap();
    let t0 = 1_767_600_000_000;
    let input: Vec<Ev> = (0..65_536)
        .map(|i| Ev {
            ts: t0 + i * 1000,
            k: "k".into(),
            v: None,
            x: 0.0,
            name: "a".into(),
        })
        .collect();
    let mut decoder = StreamDecoder::for_stream(&config.streams[0], &[], false, 64).unwrap();
    let mut raw = RawBatch::new(0);
    for (i, e) in input.iter().enumerate() {
        raw.push(
            e.json().as_bytes(),
            Origin {
                source: 0,
                partition: 0,
                offset: i as i64,
                timestamp_ms: 0,
            },
        );
    }
    let decoded = decoder.decode(&raw);
    let mut ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"k"),
        partition: 0,
        watermark_ms: t0,
    };
    let err = det
        .evaluate(0, &decoded.batch, &ctx, &mut Vec::new())
        .unwrap_err();
    assert!(
        err.message.contains("at most 65535 panes"),
        "{}",
        err.message
    );
    // What it holds is whole: the key's 65,535 panes checkpoint and restore.
    let mut entries = Vec::new();
    det.checkpoint(&mut entries);
    let value = entries
        .iter()
        .find_map(|e| e.value.as_ref().filter(|_| e.key[0] == 1));
    let panes = u32::from_le_bytes(value.unwrap()[1..5].try_into().unwrap());
    assert_eq!(panes, 65_535);
    let mut fresh = compile(
        &config,
        "-- window: tumble 1s\n",
        "SELECT k, count(*) AS c FROM s GROUP BY k",
    )
    .await
    .unwrap();
    fresh.restore(&entries).unwrap();
    assert_eq!(fresh.state().window_keys, 1);
    ctx.watermark_ms = t0 + 3_000;
    let mut alerts = Vec::new();
    fresh.advance(0, &ctx, &mut alerts).unwrap();
    assert_eq!(alerts.len(), 3, "the first three seconds close");
}
