//! `palisade eval --dataset skab`: the SKAB water-pump benchmark through the baseline
//! detector, its alerts scored against the labels, which the detector never sees.
//!
//! In: the SKAB benchmark folder (`data/{valve1,valve2,other}/*.csv` experiments and
//! `data/anomaly-free/anomaly-free.csv`). Out: one line per experiment and, last,
//! `overall F1 <f1> FAR <percent>% MAR <percent>%`, the figures SKAB publishes for outlier
//! detection (every point of every experiment scored, all experiments pooled).
//!
//! The protocol is SKAB's: the detector may learn from the anomaly-free file and from the
//! first 400 rows of each experiment, and nothing else. Here the anomaly-free file gives the
//! drift prior (how far each sensor's level wanders in the ~15 minutes after a 400-row
//! baseline is learnt), and each experiment is a fresh entity whose warm-up is its first 400
//! rows. Rows reach the detector as Arrow batches of the sensor columns only: the `anomaly`
//! and `changepoint` columns are cut off when the file is read and kept for scoring. A row is
//! predicted anomalous when the detector raised an alert on it (`realert_s: 0`: an alert per
//! row while the alarm is on).

use super::{Counts, EvalError};
use crate::detect::baseline::{BaselineDetector, StreamBinding, rule};
use crate::detect::{Detector, EvalContext};
use crate::privacy::Pseudonymiser;
use crate::telemetry::WideTable;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows a warm-up may learn from, by SKAB's protocol.
pub const SKAB_TRAIN_ROWS: usize = 400;

/// What an evaluation found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Pooled over every experiment.
    pub overall: Counts,
    /// Labelled anomalous segments (events), and how many got an alert.
    pub events: usize,
    /// Events with at least one alerted row.
    pub detected: usize,
    /// Seconds from each detected event's start to its first alert.
    pub time_to_detect_s: Vec<i64>,
}

/// One SKAB file, labels apart.
struct Table {
    features: Vec<String>,
    time_ms: Vec<i64>,
    columns: Vec<Vec<f64>>,
    labels: Vec<bool>,
}

fn read_table(path: &Path) -> Result<Table, EvalError> {
    let bad = |message: String| EvalError::Data {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(path)
        .map_err(|e| bad(e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let time_col = headers
        .iter()
        .position(|h| h == "datetime")
        .ok_or_else(|| bad("no `datetime` column".into()))?;
    let label_col = headers.iter().position(|h| h == "anomaly");
    // The labels are read here and only here; the detector gets `features`.
    let feature_cols: Vec<usize> = (0..headers.len())
        .filter(|&i| i != time_col && headers[i] != "anomaly" && headers[i] != "changepoint")
        .collect();
    let mut t = Table {
        features: feature_cols.iter().map(|&i| headers[i].clone()).collect(),
        time_ms: Vec::new(),
        columns: vec![Vec::new(); feature_cols.len()],
        labels: Vec::new(),
    };
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let at = |m: String| bad(format!("line {}: {m}", line + 2));
        let ts = chrono::NaiveDateTime::parse_from_str(&record[time_col], "%Y-%m-%d %H:%M:%S")
            .map_err(|e| at(format!("datetime `{}`: {e}", &record[time_col])))?;
        t.time_ms.push(ts.and_utc().timestamp_millis());
        for (j, &c) in feature_cols.iter().enumerate() {
            let v: f64 = record[c]
                .trim()
                .parse()
                .map_err(|_| at(format!("`{}` is not a number", &record[c])))?;
            t.columns[j].push(v);
        }
        if let Some(l) = label_col {
            t.labels
                .push(record[l].trim().parse::<f64>().unwrap_or(0.0) > 0.5);
        }
    }
    Ok(t)
}

/// Per feature: the median drift of its level in the `horizon` rows after a 400-row baseline,
/// over windows of the anomaly-free run. This is the spread the multivariate model must
/// tolerate although a 400-row covariance cannot show it (temperatures creep up as the water
/// warms).
fn drift_prior(free: &Table, horizon: usize) -> Vec<f64> {
    let n = free.time_ms.len();
    let mut drift = Vec::new();
    for col in &free.columns {
        let mean = |r: std::ops::Range<usize>| {
            let len = r.len() as f64;
            col[r].iter().sum::<f64>() / len
        };
        let mut d: Vec<f64> = (0..n.saturating_sub(SKAB_TRAIN_ROWS + horizon))
            .step_by(50)
            .map(|s| {
                let base = mean(s..s + SKAB_TRAIN_ROWS);
                (mean(s + SKAB_TRAIN_ROWS..s + SKAB_TRAIN_ROWS + horizon) - base).abs()
            })
            .collect();
        d.sort_by(f64::total_cmp);
        drift.push(d.get(d.len() / 2).copied().unwrap_or(0.0));
    }
    drift
}

/// The rule the evaluation runs, as a rule file would say it.
fn skab_rule(features: &[String], drift: &[f64]) -> String {
    let mut text = String::from(
        "id: skab.pump\ntitle: Pump test bed behaves unlike its warm-up\nstream: skab\n\
         entity: experiment\nmodel: multivariate\nwarmup: 400\nstatistic: pca\n\
         variance: 0.95\ncalibrate: 0.99\nrow_smoothing: 0.1\nsmoothing: 1\nthreshold: 10\n\
         clear: 1\nhold: 30\nrealert_s: 0\nmax_entities: 64\nfeatures:\n",
    );
    for f in features {
        let _ = writeln!(text, "  - \"{f}\"");
    }
    text.push_str("drift:\n");
    for (f, d) in features.iter().zip(drift) {
        // A quarter of the median drift: the prior widens the covariance by what the level
        // is likely to wander, not by its worst case.
        let _ = writeln!(text, "  \"{f}\": {}", 0.25 * d);
    }
    text
}

/// Experiment files in SKAB's order: valve1, valve2, other, each by number.
fn experiments(data: &Path) -> Result<Vec<(String, PathBuf)>, EvalError> {
    let mut out = Vec::new();
    for group in ["valve1", "valve2", "other"] {
        let dir = data.join(group);
        let entries = std::fs::read_dir(&dir).map_err(|e| EvalError::Data {
            path: dir.clone(),
            message: format!("{e} (expected SKAB's data folder, e.g. ../shared/data/skab)"),
        })?;
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .map(|p| {
                let n = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok());
                (n.unwrap_or(u64::MAX), p)
            })
            .collect();
        files.sort();
        for (n, p) in files {
            out.push((format!("{group}/{n}"), p));
        }
    }
    Ok(out)
}

/// Runs SKAB's outlier-detection evaluation over the benchmark in `skab` (the folder holding
/// `data/`), writing the per-experiment lines and the overall line to `out`. `only` limits it
/// to experiments whose name starts with it (e.g. `valve1/`).
pub fn skab(skab: &Path, only: Option<&str>, out: &mut dyn Write) -> Result<Report, EvalError> {
    let data = if skab.join("data").is_dir() {
        skab.join("data")
    } else {
        skab.to_path_buf()
    };
    let free = read_table(&data.join("anomaly-free").join("anomaly-free.csv"))?;
    let drift = drift_prior(&free, 800);
    let text = skab_rule(&free.features, &drift);
    let file = PathBuf::from("skab.baseline.yml");
    let rule = rule::parse(&file, &text).map_err(|e| {
        EvalError::Rule(
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let binding = StreamBinding {
        index: 0,
        name: "skab".into(),
        time: "datetime".into(),
        entity: "experiment".into(),
        personal_entity: false,
        personal_term: false,
    };
    let mut detector = BaselineDetector::new(vec![(file, rule, binding)]);
    let table = WideTable::new("datetime", "experiment", &free.features);
    let mut report = Report::default();
    for (name, path) in experiments(&data)? {
        if only.is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let t = read_table(&path)?;
        if t.features != free.features {
            return Err(EvalError::Data {
                path,
                message: format!(
                    "sensor columns {:?} differ from the anomaly-free file's",
                    t.features
                ),
            });
        }
        let rows = t.time_ms.len();
        let mut predicted = vec![false; rows];
        let mut alerts = Vec::new();
        // Streaming: a batch at a time, as the service would see the experiment arrive.
        let mut ctx = EvalContext {
            now_ms: 0,
            pseudonymiser: Pseudonymiser::new(b"eval"),
            partition: 0,
            watermark_ms: i64::MAX,
        };
        for start in (0..rows).step_by(256) {
            let end = (start + 256).min(rows);
            let batch = table.batch(&t.time_ms, &name, &t.columns, start..end);
            ctx.now_ms = t.time_ms[end - 1];
            alerts.clear();
            detector
                .evaluate(0, &batch, &ctx, &mut alerts)
                .map_err(|e| EvalError::Rule(e.to_string()))?;
            for a in &alerts {
                let ms = chrono::DateTime::parse_from_rfc3339(&a.event_time)
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| EvalError::Rule(format!("alert time `{}`: {e}", a.event_time)))?;
                if let Ok(i) = t.time_ms[start..end].binary_search(&ms) {
                    predicted[start + i] = true;
                }
            }
        }
        let mut c = Counts::default();
        for (&p, &l) in predicted.iter().zip(&t.labels) {
            match (p, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        // Events: maximal runs of anomalous labels.
        let (mut events, mut detected, mut ttd) = (0, 0, Vec::new());
        let mut i = 0;
        while i < rows {
            if !t.labels.get(i).copied().unwrap_or(false) {
                i += 1;
                continue;
            }
            let start = i;
            while i < rows && t.labels[i] {
                i += 1;
            }
            events += 1;
            if let Some(first) = (start..i).find(|&r| predicted[r]) {
                detected += 1;
                ttd.push((t.time_ms[first] - t.time_ms[start]) / 1000);
            }
        }
        writeln!(
            out,
            "{name:<10} rows {rows:>5}  anomalous {:>4}  F1 {:.3}  FAR {:>5.2}%  MAR {:>6.2}%  \
             events {detected}/{events}  time-to-detect {}",
            c.tp + c.fn_,
            c.f1(),
            100.0 * c.far(),
            100.0 * c.mar(),
            if ttd.is_empty() {
                "-".to_string()
            } else {
                ttd.iter()
                    .map(|s| format!("{s} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )?;
        report.overall.add(c);
        report.events += events;
        report.detected += detected;
        report.time_to_detect_s.extend(ttd);
    }
    let mut ttd = report.time_to_detect_s.clone();
    ttd.sort_unstable();
    writeln!(
        out,
        "events detected {}/{}  median time-to-detect {} s",
        report.detected,
        report.events,
        ttd.get(ttd.len() / 2).copied().unwrap_or(0)
    )?;
    let o = report.overall;
    writeln!(
        out,
        "overall F1 {:.3} FAR {:.2}% MAR {:.2}%",
        o.f1(),
        100.0 * o.far(),
        100.0 * o.mar()
    )?;
    Ok(report)
}
