//! Detectors: Arrow batches in, alerts out. Pure: no I/O, never blocks on anything but CPU.
//!
//! A [`DetectorSet`] is built once from the rule folders (every plan compiled at load, so a bad
//! rule fails there with its file, line and column) and then evaluated batch by batch. Three
//! kinds of detector: each SQL rule is one detector over one stream ([`sql`]); all Sigma
//! rules together are one detector ([`sigma::engine`]) whose plan per stream shares the
//! column scans of every rule, and whose correlations span streams; all baseline rules
//! (`*.baseline.yml`) together are one detector of per-entity statistics ([`baseline`]). The [`Detector`] trait
//! takes `&mut self` so detectors can keep state across batches (correlations build on that).

pub mod baseline;
pub mod codec;
pub mod sigma;
pub mod sql;
pub mod tables;
pub mod window;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::alert::{Alert, Severity};
use crate::config::{Config, PrivacyAction};
use crate::privacy::Pseudonymiser;
use crate::repartition::Route;

/// A rule's identity and description, from its header.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    /// Unique id, e.g. `net.port_scan`, or a Sigma rule's `id`.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Detector kind: `sql`, `sigma` or `sigma-correlation`.
    pub kind: &'static str,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What it looks for.
    pub description: String,
    /// Stream name(s) it reads, comma-separated when several.
    pub stream: String,
    /// Tags (ATT&CK...).
    pub tags: Vec<String>,
    /// Maturity (Sigma `status`), when the rule states it.
    pub status: Option<String>,
    /// Known false positives, for the analyst triaging the alert.
    pub falsepositives: Vec<String>,
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
    /// 1-based column, 0 if not known.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl RuleError {
    /// An error at `line` (no column).
    pub fn at_line(file: &Path, line: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            file: file.to_path_buf(),
            line,
            column: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// One entry per problem, in file order.
    pub errors: Vec<RuleError>,
    /// Problems that alone would not stop the load.
    pub warnings: Vec<RuleError>,
    /// What was checked: rules that loaded and rules (or files) that did not.
    pub summary: LoadSummary,
}

/// Counts of a load, for `palisade check`'s last line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Rules that compiled.
    pub ok: usize,
    /// Rules that did not (a file that does not parse counts as one).
    pub failed: usize,
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
#[error("{detector}: {message}")]
pub struct DetectError {
    /// The detector that failed.
    pub detector: String,
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
    /// The partition number of the batch's records (every batch holds one; 0 in replay).
    /// State a detector builds from them belongs to this partition: see [`StateEntry`].
    pub partition: i32,
    /// The stream's watermark, ms since the epoch (see [`crate::watermark`]): windows ending
    /// at or before it are complete. `i64::MIN` before any event, `i64::MAX` once the input
    /// is finished (replay, rule tests).
    pub watermark_ms: i64,
}

/// One entry of a detector's durable state, as written to (and read back from) its
/// changelog.
///
/// State is partitioned like the input: an entry belongs to the partition of the records that
/// built it. When records are keyed (or repartitioned) by the detector's group key, every
/// record of a key comes from one partition, so the instance that owns a partition after a
/// rebalance restores exactly the state it needs, before it processes that partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The input partition the state belongs to.
    pub partition: i32,
    /// The entry's key within the detector (e.g. rule and group), stable across restarts.
    pub key: Vec<u8>,
    /// The serialised state; `None` when the key no longer holds any (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// A detector: one or more rules over one or more streams, evaluated a batch at a time.
pub trait Detector: Send {
    /// Its name, the `detector` label of its metrics (a SQL rule's id; `sigma`).
    fn name(&self) -> &str;
    /// The rules it evaluates.
    fn rules(&self) -> &[RuleMeta];
    /// True when it reads stream `stream` (index in the config).
    fn reads(&self, stream: usize) -> bool;
    /// For a detector of one stream whose state is grouped (a windowed SQL rule): its group
    /// columns, in order, to decide whether its input must be re-keyed (see
    /// [`crate::repartition`]). Empty for the others. (Sigma correlations and baselines keep
    /// their state per input partition: see the README, "Repartitioning".)
    fn group_columns(&self) -> Vec<String> {
        Vec::new()
    }
    /// Evaluates one batch of `stream`, appending alerts to `out`.
    fn evaluate(
        &mut self,
        stream: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError>;
    /// The watermark of `stream` advanced (`ctx.watermark_ms`) without a batch of it: an idle
    /// tick, or the end of the input. Appends what that completes (windows) to `out`.
    fn advance(
        &mut self,
        _stream: usize,
        _ctx: &EvalContext,
        _out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        Ok(())
    }
    /// After a reload, `self` replacing `old`: takes over the state of what did not change.
    /// Returns how many stateful rules kept their state.
    fn adopt_state(&mut self, _old: &mut dyn Detector) -> usize {
        0
    }
    /// For [`Detector::adopt_state`]: the concrete detector.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// The state it holds across batches and what its bounds made it give up (totals since
    /// load). Stateless detectors hold nothing.
    fn state(&self) -> StateCounters {
        StateCounters::default()
    }
    /// Detectors of several rules (baselines) that time each rule: calls `f` with each rule's
    /// evaluation time since the last call, and resets it. A detector of one rule needs
    /// not: its time is the rule's ([`DetectorSet::rule_seconds`]). The Sigma set shares its
    /// column scans across rules, so its cost is the set's (`detector="sigma"`).
    fn rule_seconds(&mut self, _f: &mut dyn FnMut(&str, Duration)) {}
    /// Calls `f` with the state each of its stateful rules holds now (rule id, size), for the
    /// per-rule gauges that tell which rules are expensive. Walks the state: call it seldom.
    /// Stateless detectors report nothing.
    fn rule_state(&self, _f: &mut dyn FnMut(&str, RuleStateSize)) {}
    /// Appends the state that changed since the last call, for a checkpoint: an entry per
    /// changed key, a tombstone (`value: None`) per key that is gone. Stateless detectors
    /// append nothing.
    fn checkpoint(&mut self, _out: &mut Vec<StateEntry>) {}
    /// Restores entries read back from the changelog (the latest per key), before any batch
    /// of their partitions is evaluated.
    fn restore(&mut self, _entries: &[StateEntry]) -> Result<(), DetectError> {
        Ok(())
    }
    /// Forgets the state of `partitions`, which this instance no longer owns.
    fn release(&mut self, _partitions: &[i32]) {}
}

/// State one rule holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStateSize {
    /// Keys held: correlation groups, window keys, baseline entities.
    pub entries: u64,
    /// Approximate bytes of memory they take (inline sizes plus heap allocations).
    pub bytes: u64,
}

/// State held by detectors, and what bounds evicted: for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounters {
    /// Correlation groups held now.
    pub groups: u64,
    /// Events held in them now.
    pub events: u64,
    /// Groups evicted to make room (total).
    pub groups_evicted: u64,
    /// Events dropped from full groups (total).
    pub events_dropped: u64,
    /// Events too late for their group's window (total).
    pub events_late: u64,
    /// Evidence rows left out of alerts (total).
    pub evidence_truncated: u64,
    /// Group keys held by windowed SQL detectors now.
    pub window_keys: u64,
    /// Bytes of window state held now.
    pub window_bytes: u64,
    /// Window keys evicted to stay within bounds (total).
    pub window_keys_evicted: u64,
}

impl std::ops::AddAssign for StateCounters {
    fn add_assign(&mut self, o: StateCounters) {
        self.groups += o.groups;
        self.events += o.events;
        self.groups_evicted += o.groups_evicted;
        self.events_dropped += o.events_dropped;
        self.events_late += o.events_late;
        self.evidence_truncated += o.evidence_truncated;
        self.window_keys += o.window_keys;
        self.window_bytes += o.window_bytes;
        self.window_keys_evicted += o.window_keys_evicted;
    }
}

/// Time spent and outcome of one detector on one batch, for metrics.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Index of the detector in [`DetectorSet::detector_names`].
    pub detector: usize,
    /// Wall time of the evaluation.
    pub elapsed: Duration,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// All detectors, grouped by the stream they read.
pub struct DetectorSet {
    detectors: Vec<Box<dyn Detector>>,
    /// For each stream (config order), the detectors that read it.
    by_stream: Vec<Vec<usize>>,
    /// Per stream: the columns Sigma rules read on a projected stream, and whether they
    /// search keywords (see [`sigma::engine::SigmaEngine::projection`]).
    projections: Vec<Projection>,
    /// Problems that do not stop the load (e.g. a rule no configured stream can feed).
    warnings: Vec<RuleError>,
    summary: LoadSummary,
    /// The streams re-keyed by a column that some rule groups by (see
    /// [`crate::repartition`]), in a stable order.
    routes: Vec<Route>,
    /// For each route, the detectors bound to it (they are also in `by_stream`, for runs
    /// that do not repartition).
    by_route: Vec<Vec<usize>>,
    /// Whether routes are fed through internal topics (live): then [`DetectorSet::evaluate`]
    /// leaves the detectors bound to a route to [`DetectorSet::evaluate_route`].
    repartitioned: bool,
    /// Per detector, whether it is bound to a route.
    routed: Vec<bool>,
}

/// What a projected stream must decode for its detectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Dotted paths (columns) read, besides event time, entity and personal fields.
    pub paths: Vec<String>,
    /// Some rule searches keywords across every field.
    pub keywords: bool,
}

impl DetectorSet {
    /// Loads every rule under `paths` (folders, searched recursively, or files): `*.sql`
    /// detectors, baseline rules (`*.baseline.yml`) and Sigma `*.yml` / `*.yaml` files (not
    /// `*.tests.yml`, which hold rule test cases). Files are taken in sorted order, so load order is stable.
    pub async fn load(config: &Config, paths: &[PathBuf]) -> Result<DetectorSet, LoadError> {
        let (set, errors) = DetectorSet::load_partial(config, paths).await;
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(LoadError {
                errors,
                warnings: set.warnings,
                summary: set.summary,
            })
        }
    }

    /// Like [`DetectorSet::load`], but keeps every rule that loads: the set of those, and the
    /// problems of the others (for backtests over third-party rule folders; the service
    /// refuses to start on any problem).
    pub async fn load_partial(config: &Config, paths: &[PathBuf]) -> (DetectorSet, Vec<RuleError>) {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            if let Err(e) = collect_files(path, &mut files) {
                errors.push(RuleError::at_line(path, 0, e));
            }
        }
        files.sort();
        files.dedup();
        let mut summary = LoadSummary::default();
        let mut compiler = sql::Compiler::new(config);
        errors.extend(compiler.take_table_errors());
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        let mut sigma_files = Vec::new();
        let mut baseline_rules = Vec::new();
        for file in &files {
            if baseline::rule::is_baseline_file(file) {
                let parsed = std::fs::read_to_string(file)
                    .map_err(|e| vec![RuleError::at_line(file, 0, format!("cannot read: {e}"))])
                    .and_then(|text| baseline::rule::parse(file, &text));
                match parsed {
                    Ok(rule) => baseline_rules.push((file.clone(), rule)),
                    Err(e) => {
                        summary.failed += 1;
                        errors.extend(e);
                    }
                }
                continue;
            }
            if !is_sql(file) {
                sigma_files.push(file.clone());
                continue;
            }
            match compiler.compile_file(file).await {
                Ok(det) => {
                    summary.ok += 1;
                    detectors.push(Box::new(det));
                }
                Err(e) => {
                    summary.failed += 1;
                    errors.push(e);
                }
            }
        }
        if !baseline_rules.is_empty() {
            let n = baseline_rules.len();
            match baseline::BaselineDetector::load(config, baseline_rules) {
                Ok(det) => {
                    summary.ok += n;
                    detectors.push(Box::new(det));
                }
                Err(e) => {
                    summary.failed += n;
                    errors.extend(e);
                }
            }
        }
        let mut warnings = Vec::new();
        let mut projections = vec![Projection::default(); config.streams.len()];
        if !sigma_files.is_empty() {
            let loaded = sigma::engine::SigmaEngine::load(config, &sigma_files);
            summary.ok += loaded.summary.ok;
            summary.failed += loaded.summary.failed;
            errors.extend(loaded.errors);
            warnings.extend(loaded.warnings);
            if let Some(engine) = loaded.engine {
                for (s, p) in projections.iter_mut().enumerate() {
                    *p = engine.projection(s);
                }
                detectors.push(Box::new(engine));
            }
        }
        check_unique_ids(&detectors, &mut errors);
        let by_stream = (0..config.streams.len())
            .map(|s| {
                (0..detectors.len())
                    .filter(|&d| detectors[d].reads(s))
                    .collect()
            })
            .collect();
        let (routes, by_route, routed) = bind_routes(config, &detectors);
        let set = DetectorSet {
            detectors,
            by_stream,
            projections,
            warnings,
            summary,
            routes,
            by_route,
            repartitioned: false,
            routed,
        };
        (set, errors)
    }

    /// The loaded rules, in a stable order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.detectors.iter().flat_map(|d| d.rules())
    }

    /// Detector names, indexed by [`Timing::detector`].
    pub fn detector_names(&self) -> Vec<String> {
        self.detectors
            .iter()
            .map(|d| d.name().to_string())
            .collect()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.detectors.iter().map(|d| d.rules().len()).sum()
    }

    /// True when no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What projected stream `stream` must decode.
    pub fn projection(&self, stream: usize) -> &Projection {
        &self.projections[stream]
    }

    /// The decoder of every stream of `config`, reading what these detectors need.
    pub fn decoders(&self, config: &Config) -> Vec<crate::decode::StreamDecoder> {
        config
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = &self.projections[i];
                crate::decode::StreamDecoder::for_stream(
                    s,
                    &p.paths,
                    p.keywords,
                    *config.pipeline.batch_rows.get_ref(),
                )
                .expect("validated configuration and rule paths")
            })
            .collect()
    }

    /// After a reload, `self` replacing `old`: detectors of the same name take over the state
    /// of what did not change in them (correlations keep their windows). Returns how many
    /// stateful rules kept their state.
    pub fn adopt_state(&mut self, old: &mut DetectorSet) -> usize {
        let mut kept = 0;
        for d in &mut self.detectors {
            if let Some(o) = old.detectors.iter_mut().find(|o| o.name() == d.name()) {
                kept += d.adopt_state(o.as_mut());
            }
        }
        kept
    }

    /// Whether `other` decodes the same paths on every projected stream.
    pub fn same_projections(&self, other: &DetectorSet) -> bool {
        self.projections == other.projections
    }

    /// State held and evicted, over every detector.
    pub fn state(&self) -> StateCounters {
        let mut total = StateCounters::default();
        for d in &self.detectors {
            total += d.state();
        }
        total
    }

    /// The evaluation time of each rule since the last call, for the per-rule cost counter:
    /// `timings` (this batch's) for detectors of one rule, [`Detector::rule_seconds`] for
    /// those that time their rules themselves.
    pub fn rule_seconds(&mut self, timings: &[Timing], f: &mut dyn FnMut(&str, Duration)) {
        for t in timings {
            if let [rule] = self.detectors[t.detector].rules() {
                f(&rule.id, t.elapsed);
            }
        }
        for d in &mut self.detectors {
            if d.rules().len() > 1 {
                d.rule_seconds(f);
            }
        }
    }

    /// The state held by each stateful rule (see [`Detector::rule_state`]).
    pub fn rule_state(&self, f: &mut dyn FnMut(&str, RuleStateSize)) {
        for d in &self.detectors {
            d.rule_state(f);
        }
    }

    /// Appends the state of every detector changed since the last call (see
    /// [`Detector::checkpoint`]), each key prefixed by its detector's name (length first), a
    /// name that is stable across restarts and reloads (a SQL rule's id; `sigma`).
    pub fn checkpoint(&mut self, out: &mut Vec<StateEntry>) {
        let mut own = Vec::new();
        for d in &mut self.detectors {
            d.checkpoint(&mut own);
            let name = d.name().as_bytes();
            out.extend(own.drain(..).map(|e| StateEntry {
                key: prefixed(name, &e.key),
                ..e
            }));
        }
    }

    /// Hands each detector its entries (those under its name, prefix removed). Entries of
    /// detectors no longer loaded are ignored; returns how many.
    pub fn restore(&mut self, entries: &[StateEntry]) -> Result<usize, DetectError> {
        let mut mine: Vec<Vec<StateEntry>> = vec![Vec::new(); self.detectors.len()];
        let mut ignored = 0;
        for e in entries {
            let found = self.detectors.iter().position(|d| {
                let name = d.name().as_bytes();
                e.key.len() >= 4 + name.len()
                    && e.key[..4] == (name.len() as u32).to_le_bytes()
                    && &e.key[4..4 + name.len()] == name
            });
            match found {
                Some(i) => {
                    let skip = 4 + self.detectors[i].name().len();
                    mine[i].push(StateEntry {
                        partition: e.partition,
                        key: e.key[skip..].to_vec(),
                        value: e.value.clone(),
                    });
                }
                None => ignored += 1,
            }
        }
        for (d, entries) in self.detectors.iter_mut().zip(&mine) {
            if !entries.is_empty() {
                d.restore(entries)?;
            }
        }
        Ok(ignored)
    }

    /// Forgets the state of `partitions` in every detector (see [`Detector::release`]).
    pub fn release(&mut self, partitions: &[i32]) {
        for d in &mut self.detectors {
            d.release(partitions);
        }
    }

    /// Problems that did not stop the load.
    pub fn warnings(&self) -> &[RuleError] {
        &self.warnings
    }

    /// Rules loaded (and none failed, or the load would have been an error).
    pub fn summary(&self) -> LoadSummary {
        self.summary
    }

    /// The watermark of `stream` advanced without a batch (`ctx.watermark_ms`): every
    /// detector of the stream emits what that completes.
    pub fn advance(
        &mut self,
        stream: usize,
        ctx: &EvalContext,
        alerts: &mut Vec<Alert>,
        timings: &mut Vec<Timing>,
    ) {
        for &i in &self.by_stream[stream] {
            if self.repartitioned && self.routed[i] {
                continue;
            }
            let start = Instant::now();
            let result = self.detectors[i].advance(stream, ctx, alerts);
            timings.push(Timing {
                detector: i,
                elapsed: start.elapsed(),
                error: result.err().map(|e| e.to_string()),
            });
        }
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
            // Nothing to evaluate, but the watermark may have moved (late rows removed).
            return self.advance(stream, ctx, alerts, timings);
        }
        for &i in &self.by_stream[stream] {
            if self.repartitioned && self.routed[i] {
                continue;
            }
            let start = Instant::now();
            let result = self.detectors[i].evaluate(stream, batch, ctx, alerts);
            timings.push(Timing {
                detector: i,
                elapsed: start.elapsed(),
                error: result.err().map(|e| e.to_string()),
            });
        }
    }
}

impl DetectorSet {
    /// The streams re-keyed by a group column (see [`crate::repartition`]).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Live runs feed routes through internal topics: from now on the detectors bound to a
    /// route see only [`DetectorSet::evaluate_route`]'s batches. (Replays and rule tests do
    /// not call this: every detector of a stream sees its batches.)
    pub fn set_repartitioned(&mut self, on: bool) {
        self.repartitioned = on;
    }

    /// Runs the detectors bound to route `route` over `batch` (records of the route's
    /// stream, read back from its internal topic).
    pub fn evaluate_route(
        &mut self,
        route: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        alerts: &mut Vec<Alert>,
        timings: &mut Vec<Timing>,
    ) {
        let stream = self.routes[route].stream;
        for &i in &self.by_route[route] {
            let start = Instant::now();
            let result = if batch.num_rows() == 0 {
                self.detectors[i].advance(stream, ctx, alerts)
            } else {
                self.detectors[i].evaluate(stream, batch, ctx, alerts)
            };
            timings.push(Timing {
                detector: i,
                elapsed: start.elapsed(),
                error: result.err().map(|e| e.to_string()),
            });
        }
    }

    /// The watermark of route `route` advanced without a batch.
    pub fn advance_route(
        &mut self,
        route: usize,
        ctx: &EvalContext,
        alerts: &mut Vec<Alert>,
        timings: &mut Vec<Timing>,
    ) {
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        self.evaluate_route(route, &empty, ctx, alerts, timings);
    }
}

/// Binds each detector whose state is grouped off its stream's key to a route (see
/// [`crate::repartition::rekey_column`]); only group columns that are fields of the stream
/// can key records. Returns the routes, the detectors of each, and per detector whether it
/// is bound.
fn bind_routes(
    config: &Config,
    detectors: &[Box<dyn Detector>],
) -> (Vec<Route>, Vec<Vec<usize>>, Vec<bool>) {
    let mut routes: Vec<Route> = Vec::new();
    let mut by_route: Vec<Vec<usize>> = Vec::new();
    let mut routed = vec![false; detectors.len()];
    for (i, d) in detectors.iter().enumerate() {
        let groups = d.group_columns();
        if groups.is_empty() {
            continue;
        }
        let Some(stream) = (0..config.streams.len()).find(|&s| d.reads(s)) else {
            continue;
        };
        let s = &config.streams[stream];
        let fields: Vec<String> = groups
            .into_iter()
            .filter(|c| {
                s.arrow_schema
                    .as_ref()
                    .is_some_and(|schema| schema.field_with_name(c).is_ok())
            })
            .collect();
        let Some(column) =
            crate::repartition::rekey_column(s.key.as_ref().map(|k| k.get_ref().as_str()), &fields)
        else {
            continue;
        };
        let route = Route { stream, column };
        let r = match routes.iter().position(|r| *r == route) {
            Some(r) => r,
            None => {
                routes.push(route);
                by_route.push(Vec::new());
                routes.len() - 1
            }
        };
        by_route[r].push(i);
        routed[i] = true;
    }
    (routes, by_route, routed)
}

/// `name` (its length first, so no name is a prefix of another) then `key`.
/// The detector name a checkpointed key starts with (see [`DetectorSet::checkpoint`]).
pub fn detector_of(key: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(key.get(..4)?.try_into().ok()?) as usize;
    key.get(4..4usize.checked_add(len)?)
}

fn prefixed(name: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + name.len() + key.len());
    k.extend_from_slice(&(name.len() as u32).to_le_bytes());
    k.extend_from_slice(name);
    k.extend_from_slice(key);
    k
}

/// Rule ids must be unique across every detector: alerts, metrics and suppression key on them.
fn check_unique_ids(detectors: &[Box<dyn Detector>], errors: &mut Vec<RuleError>) {
    let mut seen: std::collections::HashMap<&str, &RuleMeta> = std::collections::HashMap::new();
    for rule in detectors.iter().flat_map(|d| d.rules()) {
        if let Some(prev) = seen.insert(&rule.id, rule) {
            errors.push(RuleError::at_line(
                &rule.file,
                1,
                format!(
                    "rule id `{}` is already used by {}; ids must be unique",
                    rule.id,
                    prev.file.display()
                ),
            ));
        }
    }
}

fn is_sql(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sql")
}

/// True for a file the loader reads as rules.
pub fn is_rule_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tests.yml") || name.ends_with(".tests.yaml") {
        return false;
    }
    is_sql(path) || name.ends_with(".yml") || name.ends_with(".yaml")
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_file() {
        if !is_rule_file(path) {
            return Err(
                "not a rule file: rules are `*.sql` or Sigma `*.yml` / `*.yaml` files".into(),
            );
        }
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| format!("cannot read rule folder: {e}"))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read rule folder: {e}"))?
            .path();
        // Hidden entries are not rules: `.git`, editors' files, and the `..data` link and
        // timestamped folder of a Kubernetes ConfigMap mount (which would load every rule twice).
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if is_rule_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Applies a privacy policy to the columns of `batch` it names (by index): pseudonymised
/// columns become strings of pseudonyms, dropped columns disappear.
pub(crate) fn protect_columns(
    batch: &RecordBatch,
    privacy: &[(usize, PrivacyAction)],
    ctx: &EvalContext,
) -> Result<RecordBatch, ArrowError> {
    if privacy.is_empty() {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        match privacy.iter().find(|(c, _)| *c == i).map(|(_, a)| *a) {
            Some(PrivacyAction::Drop) => continue,
            Some(PrivacyAction::Pseudonymise) => {
                let col = batch.column(i);
                let formatter = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
                let values: StringArray = (0..batch.num_rows())
                    .map(|r| {
                        (!col.is_null(r))
                            .then(|| ctx.pseudonymiser.pseudonym(&formatter.value(r).to_string()))
                    })
                    .collect();
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(Arc::new(values));
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(batch.column(i)));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Milliseconds since the epoch of each value of a timestamp column (`None` for nulls, and
/// for every row of a column that is not a timestamp).
pub(crate) fn timestamp_millis(col: &dyn Array) -> Vec<Option<i64>> {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let DataType::Timestamp(unit, _) = col.data_type() else {
        return vec![None; col.len()];
    };
    match unit {
        TimeUnit::Second => col
            .as_primitive::<TimestampSecondType>()
            .iter()
            .map(|v| v.map(|v| v * 1000))
            .collect(),
        TimeUnit::Millisecond => col
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect(),
        TimeUnit::Microsecond => col
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| v.map(|v| v / 1000))
            .collect(),
        TimeUnit::Nanosecond => col
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .map(|v| v.map(|v| v / 1_000_000))
            .collect(),
    }
}
