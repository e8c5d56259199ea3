//! Baseline detectors on one thread, batch at a time, state warm (every entity past warm-up).
//!
//! `cargo bench --bench baseline` prints:
//! - univariate: updates per second of a rule with z-score, rate, flatline and heartbeat
//!   checks over the long layout (`asset`, `metric`, `value` rows; 2,000 assets x 8 metrics),
//!   and of the z-score check alone;
//! - multivariate: rows per second of an 8-feature Mahalanobis rule over the wide layout
//!   (2,000 assets), and of the same with PCA's T² and Q of smoothed rows and a held alarm;
//! - bytes of state per entity for both.
//!
//! Batches are built in memory first (8,192 rows), so only evaluation is timed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use palisade::detect::baseline::{BaselineDetector, StreamBinding, rule};
use palisade::detect::{Detector, EvalContext};
use palisade::privacy::Pseudonymiser;

const ASSETS: usize = 2_000;
const METRICS: usize = 8;
const BATCH: usize = 8_192;

struct Rng(u64);

impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn detector(text: &str) -> BaselineDetector {
    let file = PathBuf::from("bench.baseline.yml");
    let rule = rule::parse(&file, text).expect("bench rule parses");
    let binding = StreamBinding {
        index: 0,
        name: "bench".into(),
        time: "ts".into(),
        entity: "asset".into(),
        personal_entity: false,
        personal_term: false,
    };
    BaselineDetector::new(vec![(file, rule, binding)])
}

fn ctx(now_ms: i64) -> EvalContext {
    EvalContext {
        now_ms,
        pseudonymiser: Pseudonymiser::new(b"bench"),
        partition: 0,
        watermark_ms: i64::MAX,
    }
}

/// Long layout: each asset reports its 8 metrics every second.
fn long_batches(seconds: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("asset", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let assets: Vec<String> = (0..ASSETS).map(|i| format!("asset-{i:05}")).collect();
    let metrics: Vec<String> = (0..METRICS).map(|i| format!("metric_{i}")).collect();
    let mut rng = Rng(0x5eed);
    let (mut ts, mut a, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut out = Vec::new();
    for s in 0..seconds {
        for asset in &assets {
            for (j, metric) in metrics.iter().enumerate() {
                ts.push(1_767_580_000_000 + s as i64 * 1000);
                a.push(asset.as_str());
                m.push(metric.as_str());
                v.push(10.0 * j as f64 + rng.f64());
                if ts.len() == BATCH {
                    out.push(long_batch(&schema, &mut ts, &mut a, &mut m, &mut v));
                }
            }
        }
    }
    if !ts.is_empty() {
        out.push(long_batch(&schema, &mut ts, &mut a, &mut m, &mut v));
    }
    out
}

fn long_batch(
    schema: &Arc<Schema>,
    ts: &mut Vec<i64>,
    a: &mut Vec<&str>,
    m: &mut Vec<&str>,
    v: &mut Vec<f64>,
) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(std::mem::take(ts))),
        Arc::new(StringArray::from(std::mem::take(a))),
        Arc::new(StringArray::from(std::mem::take(m))),
        Arc::new(Float64Array::from(std::mem::take(v))),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns).expect("bench batch")
}

/// Wide layout: each asset reports one row of 8 correlated features every second.
fn wide_batches(seconds: usize) -> Vec<RecordBatch> {
    let mut fields = vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("asset", DataType::Utf8, false),
    ];
    fields.extend((0..METRICS).map(|j| Field::new(format!("f{j}"), DataType::Float64, false)));
    let schema = Arc::new(Schema::new(fields));
    let assets: Vec<String> = (0..ASSETS).map(|i| format!("asset-{i:05}")).collect();
    let mut rng = Rng(0xfeed);
    let mut out = Vec::new();
    let (mut ts, mut a) = (Vec::new(), Vec::new());
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); METRICS];
    let flush = |ts: &mut Vec<i64>, a: &mut Vec<&str>, cols: &mut Vec<Vec<f64>>| {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(std::mem::take(ts))),
            Arc::new(StringArray::from(std::mem::take(a))),
        ];
        for c in cols.iter_mut() {
            columns.push(Arc::new(Float64Array::from(std::mem::take(c))));
        }
        RecordBatch::try_new(Arc::clone(&schema), columns).expect("bench batch")
    };
    for s in 0..seconds {
        for asset in &assets {
            let load = rng.f64();
            ts.push(1_767_580_000_000 + s as i64 * 1000);
            a.push(asset.as_str());
            for (j, c) in cols.iter_mut().enumerate() {
                c.push(j as f64 * load + 0.1 * rng.f64());
            }
            if ts.len() == BATCH {
                out.push(flush(&mut ts, &mut a, &mut cols));
            }
        }
    }
    if !ts.is_empty() {
        out.push(flush(&mut ts, &mut a, &mut cols));
    }
    out
}

/// Runs `batches` through `det`; returns rows per second and alerts raised.
fn time(det: &mut BaselineDetector, batches: &[RecordBatch]) -> (f64, usize) {
    let mut alerts = Vec::new();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let start = Instant::now();
    for b in batches {
        let now = 1_767_580_000_000 + 1000;
        det.evaluate(0, b, &ctx(now), &mut alerts)
            .expect("bench evaluates");
    }
    (rows as f64 / start.elapsed().as_secs_f64(), alerts.len())
}

fn main() {
    let long_rule = "id: uni\nstream: bench\nmodel: univariate\nmetric: metric\nvalue: value\n\
                     warmup: 30\nz: 8\nmax_rate: 1000\nflatline_s: 900\nheartbeat_s: 300\n\
                     max_entities: 100000\n";
    let z_rule = "id: uni\nstream: bench\nmodel: univariate\nmetric: metric\nvalue: value\n\
                  warmup: 30\nz: 8\nmax_entities: 100000\n";
    let warm = long_batches(40);
    let timed = long_batches(250);
    for (name, text) in [("all checks", long_rule), ("z-score only", z_rule)] {
        let mut det = detector(text);
        time(&mut det, &warm);
        let (rate, alerts) = time(&mut det, &timed);
        println!(
            "univariate ({name}): {:.2} M updates/s ({} updates, {ASSETS} assets x {METRICS} metrics, {alerts} alerts)",
            rate / 1e6,
            timed.iter().map(RecordBatch::num_rows).sum::<usize>()
        );
        if name == "all checks" {
            println!(
                "univariate state: {} bytes per entity ({METRICS} metrics)",
                det.entity_bytes(0, "asset-00000").expect("entity held")
            );
        }
    }
    let features: Vec<String> = (0..METRICS).map(|j| format!("f{j}")).collect();
    // Warm-up 100 rows: 120 seconds of rows put every asset past it (and past the row
    // smoother's burn-in) before timing.
    for (name, extra) in [
        ("Mahalanobis", ""),
        (
            "PCA T²/Q, row smoothing, hold",
            "statistic: pca\nrow_smoothing: 0.1\nsmoothing: 1\nthreshold: 10\nclear: 1\nhold: 30\n",
        ),
    ] {
        let mv_rule = format!(
            "id: mv\nstream: bench\nmodel: multivariate\nfeatures: [{}]\nwarmup: 100\n\
             max_entities: 100000\nrealert_s: 600\n{extra}",
            features.join(", ")
        );
        let mut det = detector(&mv_rule);
        time(&mut det, &wide_batches(120));
        let timed = wide_batches(500);
        let (rate, alerts) = time(&mut det, &timed);
        println!(
            "multivariate {name} ({METRICS} features): {:.0} rows/s ({} rows, {ASSETS} assets, {alerts} alerts)",
            rate,
            timed.iter().map(RecordBatch::num_rows).sum::<usize>()
        );
        println!(
            "multivariate {name} state: {} bytes per entity ({METRICS} features)",
            det.entity_bytes(0, "asset-00000").expect("entity held")
        );
    }
}
