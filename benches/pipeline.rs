//! Decode + 10 SQL filter detectors over ~150-byte JSON flow events, on one thread.
//!
//! `cargo bench --bench pipeline` prints events per second and the per-batch latency
//! quantiles (decode and all detectors of one 8,192-row batch), next to decoding alone, which
//! is the ceiling. Events are generated in memory first so only the pipeline is timed.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use palisade::config::Config;
use palisade::decode::JsonDecoder;
use palisade::detect::{DetectorSet, EvalContext};
use palisade::privacy::Pseudonymiser;
use palisade::source::{Origin, RawBatch};

const CONFIG: &str = r#"
[kafka]
brokers = "unused:9092"
group_id = "bench"
alerts_topic = "a"
dead_letter_topic = "d"
[detectors]
rules = ["rules"]
[[streams]]
name = "flows"
topics = ["flows"]
format = "json"
event_time = "ts"
entity = ["src_ip"]
[streams.schema]
ts = "timestamp"
src_ip = "string"
dst_ip = "string"
dst_port = "int32"
proto = "string"
bytes_out = "int64"
action = "string"
zone = "string"
"#;

/// Ten filters of the kind a SOC writes: selective, on strings and numbers.
const FILTERS: [&str; 10] = [
    "dst_port IN (23, 2323) AND action = 'allow'",
    "bytes_out > 500000000",
    "action = 'deny' AND dst_port = 502",
    "src_ip LIKE '10.40.%' AND zone = 'ot-water'",
    "proto = 'udp' AND dst_port = 161 AND bytes_out > 100000",
    "dst_ip = '185.220.101.47'",
    "dst_port = 20000 AND zone <> 'ot-power'",
    "proto = 'icmp' AND bytes_out > 60000",
    "action = 'allow' AND dst_port = 3389 AND zone = 'internet'",
    "dst_port BETWEEN 6000 AND 6063 AND proto = 'tcp' AND action = 'allow' AND bytes_out > 1000000",
];

fn events(n: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ports = [443, 80, 53, 502, 20000, 123, 22, 3389, 8080, 161];
    let protos = ["tcp", "udp", "icmp"];
    let zones = ["it", "ot-water", "ot-power", "internet", "traffic"];
    (0..n)
        .map(|i| {
            let r = next();
            let action = if r % 97 == 0 { "deny" } else { "allow" };
            // Mostly small flows, a few large ones: filters are selective, as in production.
            let bytes_out = match r % 1000 {
                0 => (r >> 12) % 900_000_000,
                1..=20 => (r >> 12) % 2_000_000,
                _ => (r >> 12) % 20_000,
            };
            format!(
                r#"{{"ts":"2026-01-05T{:02}:{:02}:{:02}.{:03}Z","src_ip":"10.{}.{}.{}","dst_ip":"10.10.{}.{}","dst_port":{},"proto":"{}","bytes_out":{},"action":"{action}","zone":"{}"}}"#,
                (i / 3_600_000) % 24,
                (i / 60_000) % 60,
                (i / 1000) % 60,
                i % 1000,
                r % 60,
                (r >> 8) % 255,
                (r >> 16) % 255,
                (r >> 24) % 255,
                (r >> 32) % 255,
                ports[(r >> 40) as usize % ports.len()],
                protos[(r >> 44) as usize % protos.len()],
                bytes_out,
                zones[(r >> 48) as usize % zones.len()],
            )
            .into_bytes()
        })
        .collect()
}

fn batches(events: &[Vec<u8>], rows: usize) -> Vec<RawBatch> {
    events
        .chunks(rows)
        .map(|chunk| {
            let mut b = RawBatch::new(0);
            for (i, e) in chunk.iter().enumerate() {
                b.push(
                    e,
                    Origin {
                        source: 0,
                        partition: 0,
                        offset: i as i64,
                        timestamp_ms: 0,
                    },
                );
            }
            b
        })
        .collect()
}

fn report(name: &str, events: usize, elapsed: Duration, hist: &Histogram<u64>) {
    println!(
        "{name:<34} {:>10.0} events/s   batch p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        events as f64 / elapsed.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
}

fn main() {
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let rows = 8192;
    let config = Config::parse(CONFIG, "bench", Path::new(".")).expect("bench config");
    let rules = tempfile::tempdir().expect("temp dir");
    for (i, filter) in FILTERS.iter().enumerate() {
        let text = format!(
            "-- id: bench.f{i}\n-- title: filter {i}\n-- severity: low\n-- stream: flows\nSELECT ts, src_ip, dst_ip, dst_port, bytes_out FROM flows WHERE {filter}\n"
        );
        std::fs::write(rules.path().join(format!("f{i}.sql")), text).expect("write rule");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut detectors = runtime
        .block_on(DetectorSet::load(&config, &[rules.path().to_path_buf()]))
        .expect("rules load");
    assert_eq!(detectors.len(), 10);

    let events = events(total);
    let mean = events.iter().map(Vec::len).sum::<usize>() / events.len();
    let batches = batches(&events, rows);
    println!("{total} events of {mean} bytes on average, batches of {rows} rows, one thread");

    let schema = config.streams[0]
        .arrow_schema()
        .cloned()
        .expect("declared schema");
    let mut decoder = JsonDecoder::new(schema, "ts", rows).expect("decoder");
    // Decoding alone: the ceiling.
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let start = Instant::now();
    let mut rows_out = 0;
    for b in &batches {
        let t = Instant::now();
        rows_out += decoder.decode(b).batch.num_rows();
        hist.record(t.elapsed().as_micros() as u64).expect("record");
    }
    assert_eq!(rows_out, total);
    report("decode only", total, start.elapsed(), &hist);

    let ctx = EvalContext {
        now_ms: 0,
        pseudonymiser: Pseudonymiser::new(b"bench"),
        partition: 0,
        watermark_ms: i64::MIN,
    };
    let mut alerts = Vec::new();
    let mut timings = Vec::new();
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut alert_count = 0;
    let start = Instant::now();
    for b in &batches {
        let t = Instant::now();
        let decoded = decoder.decode(b);
        detectors.evaluate(0, &decoded.batch, &ctx, &mut alerts, &mut timings);
        hist.record(t.elapsed().as_micros() as u64).expect("record");
        alert_count += alerts.len();
        alerts.clear();
        timings.clear();
    }
    report(
        "decode + 10 SQL filter detectors",
        total,
        start.elapsed(),
        &hist,
    );
    println!("alerts raised: {alert_count}");
}
