//! Detectors: Arrow batches in, alerts out. Pure: no I/O, never blocks on anything but CPU.
//!
//! A [`DetectorSet`] is built once from the rule folders (every plan compiled at load, so a bad
//! rule fails there with its file and line) and then evaluated batch by batch. Each detector
//! reads one stream. The [`Detector`] trait takes `&mut self` so detectors can keep state
//! across batches (windows and correlations build on that).

pub mod sigma;
pub mod sql;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

use crate::alert::{Alert, Severity};
use crate::config::Config;
use crate::privacy::Pseudonymiser;

/// A rule's identity and description, from its header.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    /// Unique id, e.g. `net.port_scan`.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What it looks for.
    pub description: String,
    /// Stream name it reads.
    pub stream: String,
    /// Tags (ATT&CK...).
    pub tags: Vec<String>,
    /// The file it was loaded from.
    pub file: PathBuf,
}

/// A problem with one rule file, found at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule file.
    pub file: PathBuf,
    /// 1-based line, 0 if not tied to a line.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// One entry per problem, in file order.
    pub errors: Vec<RuleError>,
    /// Rule files found.
    pub files: usize,
}

impl LoadError {
    /// Rule files with at least one problem.
    pub fn failed_files(&self) -> usize {
        let mut files: Vec<&Path> = self.errors.iter().map(|e| e.file.as_path()).collect();
        files.sort();
        files.dedup();
        files.len()
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A detector failed on a batch (e.g. a cast that the data made fail). The batch goes on
/// through the other detectors; the failure is counted and logged by the caller.
#[derive(Debug, thiserror::Error)]
#[error("rule {rule}: {message}")]
pub struct DetectError {
    /// The rule that failed.
    pub rule: String,
    /// Why.
    pub message: String,
}

/// What every detector needs besides the batch.
#[derive(Debug, Clone)]
pub struct EvalContext {
    /// Detection time in ms (wall clock live, stream time in replay).
    pub now_ms: i64,
    /// Applied to personal fields before anything leaves the detector.
    pub pseudonymiser: Pseudonymiser,
}

/// A detector over one stream.
pub trait Detector: Send {
    /// Its rule.
    fn meta(&self) -> &RuleMeta;
    /// Evaluates one batch of its stream, appending alerts to `out`.
    fn evaluate(
        &mut self,
        batch: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError>;
}

/// Time spent and outcome of one detector on one batch, for metrics.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Index of the detector in [`DetectorSet::rules`].
    pub rule: usize,
    /// Wall time of the evaluation.
    pub elapsed: Duration,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// All detectors, grouped by the stream they read.
pub struct DetectorSet {
    /// Detectors; `by_stream[s]` indexes into it.
    detectors: Vec<Box<dyn Detector>>,
    /// For each stream (config order), the detectors that read it.
    by_stream: Vec<Vec<usize>>,
}

impl DetectorSet {
    /// Loads every `*.sql` file under `dirs` (sorted, so load order is stable).
    pub async fn load(config: &Config, dirs: &[PathBuf]) -> Result<DetectorSet, LoadError> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for dir in dirs {
            if let Err(e) = collect_files(dir, &mut files) {
                errors.push(RuleError {
                    file: dir.clone(),
                    line: 0,
                    message: e,
                });
            }
        }
        files.sort();
        let compiler = sql::Compiler::new(config);
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        for file in &files {
            match compiler.compile_file(file).await {
                Ok(det) => {
                    if let Some(prev) = detectors.iter().find(|d| d.meta().id == det.meta().id) {
                        errors.push(RuleError {
                            file: file.clone(),
                            line: 1,
                            message: format!(
                                "rule id `{}` is already used by {}; ids must be unique",
                                det.meta().id,
                                prev.meta().file.display()
                            ),
                        });
                    } else {
                        detectors.push(Box::new(det));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError {
                errors,
                files: files.len(),
            });
        }
        let mut by_stream = vec![Vec::new(); config.streams.len()];
        for (i, d) in detectors.iter().enumerate() {
            let s = config
                .stream_index(&d.meta().stream)
                .expect("compiler checked the stream");
            by_stream[s].push(i);
        }
        Ok(DetectorSet {
            detectors,
            by_stream,
        })
    }

    /// The loaded rules, in a stable order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.detectors.iter().map(|d| d.meta())
    }

    /// Number of detectors.
    pub fn len(&self) -> usize {
        self.detectors.len()
    }

    /// True when no detector is loaded.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// Runs every detector of `stream` over `batch`. A failing detector does not stop the
    /// others; its error is in `timings`.
    pub fn evaluate(
        &mut self,
        stream: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        alerts: &mut Vec<Alert>,
        timings: &mut Vec<Timing>,
    ) {
        if batch.num_rows() == 0 {
            return;
        }
        for &i in &self.by_stream[stream] {
            let start = Instant::now();
            let result = self.detectors[i].evaluate(batch, ctx, alerts);
            timings.push(Timing {
                rule: i,
                elapsed: start.elapsed(),
                error: result.err().map(|e| e.to_string()),
            });
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read rule folder: {e}"))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read rule folder: {e}"))?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}
