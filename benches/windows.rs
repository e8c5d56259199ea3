//! A 5-minute hopping window (1-minute hop) counting distinct values per key, over 1 M
//! distinct keys, on one thread.
//!
//! `cargo bench --bench windows` prints: events per second through the windowed detector
//! (Arrow batches in, window results out: the per-batch plan, pane updates, and every window
//! the watermark closes); window state per key, as the detector accounts it and as the
//! process's resident memory grew; the time of a full checkpoint of that state (every key
//! changed) and what it costs at one checkpoint every 10 s; and the time to restore it into a
//! fresh detector. Events are generated in memory first, as Arrow batches, so JSON decoding
//! (measured by `benches/pipeline.rs`) is not part of the figure.
//!
//! Shape of the input: `EVENTS` events in event-time order over 10 minutes, keys drawn
//! uniformly from 1 M (each key is seen about 10 times, so about 5 times per window), values
//! from 50 per key. `PALISADE_BENCH_EVENTS` overrides the event count,
//! `PALISADE_BENCH_WINDOW` the window (`hop 5m every 1m`; e.g. `tumble 1m`, `session 1m`).

#[path = "support/cpu.rs"]
mod cpu;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use palisade::config::Config;
use palisade::detect::sql::Compiler;
use palisade::detect::{Detector, EvalContext, StateEntry};
use palisade::privacy::Pseudonymiser;

const CONFIG: &str = r#"
[kafka]
brokers = "unused:9092"
group_id = "bench"
alerts_topic = "a"
dead_letter_topic = "d"
[detectors]
rules = ["rules"]
[detectors.windows]
max_keys = 4000000
max_bytes = 4000000000
[[streams]]
name = "events"
topics = ["events"]
format = "json"
event_time = "ts"
entity = ["key"]
[streams.schema]
ts = "timestamp"
key = "int64"
v = "int64"
"#;

/// The rule, with its `-- window:` header value.
fn rule(window: &str) -> String {
    format!(
        "-- id: bench.distinct
-- title: Many distinct values per key
-- severity: low
-- stream: events
-- window: {window}
SELECT key, count(DISTINCT v) AS values FROM events GROUP BY key HAVING count(DISTINCT v) >= 20
"
    )
}

const KEYS: u64 = 1_000_000;
const BATCH: usize = 8192;
const SPAN_MS: i64 = 10 * 60_000;
const LATENESS_MS: i64 = 5_000;
const HOP_MS: i64 = 60_000;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn batches(events: usize) -> Vec<RecordBatch> {
    let schema = Arc::clone(
        Config::parse(CONFIG, "bench", Path::new("."))
            .unwrap()
            .streams[0]
            .arrow_schema()
            .unwrap(),
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let origin = 1_767_600_000_000i64;
    let mut out = Vec::new();
    let mut i = 0;
    while i < events {
        let n = BATCH.min(events - i);
        let ts: Vec<i64> = (i..i + n)
            .map(|j| origin + (j as i64 * SPAN_MS) / events as i64)
            .collect();
        let keys: Vec<i64> = (0..n).map(|_| (next() % KEYS) as i64).collect();
        let values: Vec<i64> = (0..n).map(|_| (next() % 50) as i64).collect();
        out.push(
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Int64Array::from(values)),
                ],
            )
            .unwrap(),
        );
        i += n;
    }
    out
}

fn main() {
    let events: usize = std::env::var("PALISADE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let window =
        std::env::var("PALISADE_BENCH_WINDOW").unwrap_or_else(|_| "hop 5m every 1m".to_string());
    let rule = rule(&window);
    let config = Config::parse(CONFIG, "bench", Path::new(".")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let compile = || {
        runtime
            .block_on(Compiler::new(&config).compile(Path::new("bench.sql"), &rule))
            .unwrap()
    };
    let input = batches(events);
    let mut det = compile();
    let mut ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"bench"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let mut alerts = Vec::new();
    let rss_before = resident_bytes();
    // The state is largest just before a window closes: sample keys and bytes there.
    let (mut peak_keys, mut peak_bytes, mut peak_rss) = (0u64, 0u64, 0usize);
    // Batches whose watermark crosses a hop close windows: their time, apart.
    let mut closing = std::time::Duration::ZERO;
    let start = Instant::now();
    let cpu_start = cpu::cpu_time();
    for b in &input {
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let max = ts.values().iter().copied().max().unwrap();
        let was = ctx.watermark_ms;
        ctx.watermark_ms = ctx.watermark_ms.max(max - LATENESS_MS);
        let closes =
            was != i64::MIN && ctx.watermark_ms.div_euclid(HOP_MS) != was.div_euclid(HOP_MS);
        let before = det.state();
        let t = Instant::now();
        det.evaluate(0, b, &ctx, &mut alerts).unwrap();
        if closes {
            closing += t.elapsed();
        }
        if before.window_keys > peak_keys {
            peak_keys = before.window_keys;
            peak_bytes = before.window_bytes;
            peak_rss = resident_bytes();
        }
    }
    let ingest = start.elapsed();
    let ingest_cpu = cpu::cpu_time() - cpu_start;
    let state = det.state();
    println!(
        "{window}, count(DISTINCT) by key, {} keys: {events} events in {:.2} s: {:.2} M events/s on one core ({:.2} M per CPU-second); {} windows alerted",
        KEYS,
        ingest.as_secs_f64(),
        events as f64 / ingest.as_secs_f64() / 1e6,
        events as f64 / ingest_cpu.as_secs_f64().max(1e-9) / 1e6,
        alerts.len()
    );
    println!(
        "of which batches whose watermark crossed a minute (hop windows: those that closed windows, a pass over every key each): {:.2} s",
        closing.as_secs_f64()
    );
    println!(
        "state at its largest: {peak_keys} keys, {:.0} bytes per key (detector's accounting); resident memory grew {:.0} bytes per key",
        peak_bytes as f64 / peak_keys.max(1) as f64,
        peak_rss.saturating_sub(rss_before) as f64 / peak_keys.max(1) as f64,
    );

    // Checkpoint: every key of the current state changed since the last one.
    let t = Instant::now();
    let cp_cpu = cpu::cpu_time();
    let mut entries: Vec<StateEntry> = Vec::new();
    det.checkpoint(&mut entries);
    let cp = t.elapsed();
    let cp_cpu = cpu::cpu_time() - cp_cpu;
    let cp_bytes: usize = entries
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();
    println!(
        "full checkpoint of {} keys: {:.0} ms ({:.0} ms of CPU), {:.1} MB of entries; at one checkpoint every 10 s: {:.2} % of one core",
        state.window_keys,
        cp.as_secs_f64() * 1e3,
        cp_cpu.as_secs_f64() * 1e3,
        cp_bytes as f64 / 1e6,
        cp.as_secs_f64() / 10.0 * 100.0
    );
    let mut fresh = compile();
    let t = Instant::now();
    fresh.restore(&entries).unwrap();
    println!(
        "restore of {} keys into a fresh detector: {:.0} ms",
        fresh.state().window_keys,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(fresh.state().window_keys, state.window_keys);
}
