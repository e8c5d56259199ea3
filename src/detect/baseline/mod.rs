//! Baseline (statistical) detectors: baselines learnt from the stream, per entity.
//!
//! In: the `*.baseline.yml` rules of the rule folders ([`rule`]), then Arrow batches. Out:
//! alerts whose evidence carries the score, the threshold, the expected range, the features
//! that drove the score and the baseline's age.
//!
//! All baseline rules are one [`Detector`] ([`BaselineDetector`]). Per batch a rule casts the
//! columns it reads once (entity to text, values to `f64`) and walks the rows in order,
//! updating per-entity state held in a map bounded by `max_entities` and `ttl_s`; what the
//! bounds evict is counted ([`StateCounters::groups_evicted`]). Nothing is allocated per row
//! except a new entity's state and an alert's evidence. State is checkpointed per entity
//! (key: rule id and entity; value: [`codec`]), so a restart restores the baselines rather
//! than warming up again.
//!
//! Models ([`model`]): univariate (EWMA or median/MAD z-score with warm-up, physical limits,
//! rate of change, flatline, missing heartbeat), multivariate (Mahalanobis distance, or PCA's
//! T² and Q, of raw or smoothed rows, with a drift prior, optional calibration to the
//! warm-up's own scores and a hysteresis alarm, features ranked by their share of the
//! distance),
//! new terms (first-seen values per entity, or hours of the day with `field: "@hour"`),
//! fan-out (distinct values of a column per entity and window against that entity's own
//! baseline of the count), impossible travel (consecutive located events too far apart for
//! the time between them) and physical consistency (a command whose response does not
//! follow within a deadline).

mod codec;
pub mod model;
pub mod rule;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde_json::value::RawValue;

use self::model::{Ewma, FanOut, Multivariate};
use self::rule::{
    BaselineRule, ConsistencySpec, FanOutSpec, Model, NewTermsSpec, TravelSpec, UnivariateSpec,
};
use super::{
    DetectError, Detector, EvalContext, RuleError, RuleMeta, RuleStateSize, StateCounters,
    StateEntry, timestamp_millis,
};
use crate::alert::{Alert, RuleRef, format_time_ms};
use crate::config::{Config, PrivacyAction};

/// Where a rule's stream is, as the detector needs it.
#[derive(Debug, Clone)]
pub struct StreamBinding {
    /// Index of the stream in the configuration.
    pub index: usize,
    /// Its name (alerts' `stream`).
    pub name: String,
    /// Its event-time column.
    pub time: String,
    /// The entity column.
    pub entity: String,
    /// Whether the entity is personal (pseudonymised in alerts).
    pub personal_entity: bool,
    /// Whether the term column of a new-terms rule is personal.
    pub personal_term: bool,
}

/// Bits of [`Series::alarms`]: which univariate checks are in alarm.
const Z: u8 = 1;
const LOW: u8 = 2;
const HIGH: u8 = 4;
const RATE: u8 = 8;
const FLAT: u8 = 16;
const SILENT: u8 = 32;

/// One univariate series of an entity (48 bytes of numbers plus the metric id).
#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// Interned metric name (long layout) or feature index (wide layout).
    metric: u16,
    stats: Ewma,
    /// Seasonal rules: one baseline per hour of the day or of the week (else empty).
    profile: Vec<Ewma>,
    /// Robust rules (`robust_window`): the last samples, a ring written at `recent_pos`
    /// (else empty).
    recent: Vec<f64>,
    recent_pos: u16,
    last: f64,
    last_ms: i64,
    first_ms: i64,
    /// When the value last moved by more than `flat_epsilon`.
    changed_ms: i64,
    /// Checks in alarm (bits above).
    alarms: u8,
    last_alert_ms: i64,
}

/// Everything a rule remembers about one entity.
#[derive(Debug, Clone, PartialEq, Default)]
struct Entity {
    /// The input partition whose records built it.
    partition: i32,
    /// Event time of its last record.
    last_ms: i64,
    /// Event time of its first record.
    first_ms: i64,
    /// Changed since the last checkpoint.
    dirty: bool,
    series: Vec<Series>,
    /// Boxed: most entities of most rules have none, and the entity stays small.
    mv: Option<Box<Multivariate>>,
    /// New terms: hash of each term and when it was last seen.
    terms: Vec<(u64, i64)>,
    /// Fan-out: this window's distinct values and the baseline of their count.
    fan: Option<Box<FanOut>>,
    /// Impossible travel: the place (index into the rule's `places`) and time of the last
    /// located event.
    travel: Option<(u16, i64)>,
    /// Physical consistency: command state and the pending deadline.
    cmd: Option<Command>,
}

impl Entity {
    /// Bytes it owns on the heap (its series with their profiles and windows, its models).
    fn heap_bytes(&self) -> usize {
        let f = std::mem::size_of::<f64>();
        let series: usize = self
            .series
            .iter()
            .map(|s| s.profile.capacity() * std::mem::size_of::<Ewma>() + s.recent.capacity() * f)
            .sum();
        let mv = self
            .mv
            .as_ref()
            .map_or(0, |m| std::mem::size_of::<Multivariate>() + m.heap_bytes());
        let fan = self.fan.as_ref().map_or(0, |x| {
            std::mem::size_of::<FanOut>() + x.distinct.capacity() * 8
        });
        self.series.capacity() * std::mem::size_of::<Series>()
            + series
            + mv
            + fan
            + self.terms.capacity() * std::mem::size_of::<(u64, i64)>()
    }
}

/// A consistency rule's state of one entity.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Command {
    /// The command is on (above `command_above`).
    on: bool,
    /// When the command switched on, while its response is awaited.
    pending_ms: Option<i64>,
    /// Last value of the response metric (evidence).
    last_response: f64,
}

/// The state of one rule.
#[derive(Debug, Default)]
struct RuleState {
    entities: HashMap<String, Entity>,
    metric_ids: HashMap<String, u16>,
    metric_names: Vec<String>,
    /// Entities gone since the last checkpoint (partition, entity).
    tombstones: Vec<(i32, String)>,
    last_sweep_ms: i64,
    /// Missing heartbeat: the earliest time a series not yet flagged silent goes silent
    /// (a lower bound: samples move it later, the scan that passes it finds the true one;
    /// `i64::MIN` after a restore).
    next_silence_ms: i64,
    /// Consistency: the earliest pending deadline (0 after a restore: the first row scans
    /// and finds it).
    next_deadline_ms: i64,
    /// Impossible travel: place name to its index in the rule's `places`.
    places: HashMap<String, u16>,
}

struct Compiled {
    meta: usize,
    rule: BaselineRule,
    stream: StreamBinding,
    state: RuleState,
    /// Evaluation time since [`Detector::rule_seconds`] last took it.
    spent: std::time::Duration,
}

/// Every baseline rule, as one detector.
pub struct BaselineDetector {
    metas: Vec<RuleMeta>,
    rules: Vec<Compiled>,
    /// Entities evicted by `max_entities` or expired by `ttl_s` (total).
    evicted: u64,
    /// Scratch rows for the multivariate model.
    x: Vec<f64>,
    r: Vec<f64>,
    y: Vec<f64>,
}

/// Most distinct metric names a long-layout rule tracks; rows of further metrics are
/// ignored (and counted as evictions) rather than growing the table without bound.
const MAX_METRICS: usize = 4096;

impl BaselineDetector {
    /// Builds the detector from parsed rules, checking each against its stream.
    pub fn load(
        config: &Config,
        rules: Vec<(std::path::PathBuf, BaselineRule)>,
    ) -> Result<BaselineDetector, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut bound = Vec::new();
        for (file, rule) in rules {
            let err = |key: &str, message: String| {
                let (line, column) = rule.position(key);
                RuleError {
                    file: file.clone(),
                    line,
                    column,
                    message,
                }
            };
            let Some(index) = config.streams.iter().position(|s| s.name() == rule.stream) else {
                let names: Vec<&str> = config.streams.iter().map(|s| s.name()).collect();
                errors.push(err(
                    "stream",
                    format!(
                        "no stream `{}` is configured; streams are {}",
                        rule.stream,
                        names.join(", ")
                    ),
                ));
                continue;
            };
            let s = &config.streams[index];
            let entity = rule
                .entity
                .clone()
                .unwrap_or_else(|| s.entity.get_ref().first().cloned().unwrap_or_default());
            let mut columns: Vec<(&str, String)> = vec![("entity", entity.clone())];
            columns.extend(rule.features.iter().map(|f| ("features", f.clone())));
            for (key, c) in [("metric", &rule.metric), ("value", &rule.value)] {
                if let Some(c) = c {
                    columns.push((key, c.clone()));
                }
            }
            let term = match &rule.model {
                Model::NewTerms(n) if n.field != "@hour" => {
                    columns.push(("field", n.field.clone()));
                    Some(n.field.clone())
                }
                Model::FanOut(f) => {
                    columns.push(("field", f.field.clone()));
                    Some(f.field.clone())
                }
                Model::Consistency(cs) if rule.metric.is_none() => {
                    columns.push(("command", cs.command.clone()));
                    columns.push(("response", cs.response.clone()));
                    None
                }
                Model::ImpossibleTravel(tr) => {
                    columns.push(("location", tr.location.clone()));
                    // Privacy is configured on top-level columns.
                    Some(
                        tr.location
                            .split('.')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    )
                }
                _ => None,
            };
            let Some(schema) = s.arrow_schema() else {
                // A projected stream decodes only what Sigma rules ask for, as text.
                errors.push(err(
                    "stream",
                    format!(
                        "stream `{}` has no schema; baseline rules read typed columns, so give \
                         the stream a [streams.schema]",
                        rule.stream
                    ),
                ));
                continue;
            };
            {
                for (key, c) in &columns {
                    if !has_column(schema, c) {
                        errors.push(err(
                            key,
                            format!("stream `{}` has no column `{c}`", rule.stream),
                        ));
                    }
                }
                for (c, _) in &rule.filter {
                    match column_type(schema, c) {
                        None => errors.push(err(
                            "where",
                            format!("`where`: stream `{}` has no column `{c}`", rule.stream),
                        )),
                        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {}
                        Some(t) => errors.push(err(
                            "where",
                            format!(
                                "`where` compares text, and column `{c}` of stream `{}` is \
                                 {t}",
                                rule.stream
                            ),
                        )),
                    }
                }
            }
            let personal = |c: &str| {
                s.privacy
                    .get(c)
                    .is_some_and(|a| *a.get_ref() == PrivacyAction::Pseudonymise)
            };
            let binding = StreamBinding {
                index,
                name: rule.stream.clone(),
                time: s.event_time.get_ref().clone(),
                personal_entity: personal(&entity),
                personal_term: term.as_deref().is_some_and(personal),
                entity,
            };
            bound.push((file, rule, binding));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(BaselineDetector::new(bound))
    }

    /// Builds the detector from rules already bound to their streams (the evaluation
    /// harness does this without a configuration).
    pub fn new(rules: Vec<(std::path::PathBuf, BaselineRule, StreamBinding)>) -> BaselineDetector {
        let mut metas = Vec::new();
        let mut compiled = Vec::new();
        for (file, rule, stream) in rules {
            metas.push(RuleMeta {
                id: rule.id.clone(),
                title: rule.title.clone(),
                kind: "baseline",
                severity: rule.severity,
                description: rule.description.clone(),
                stream: rule.stream.clone(),
                tags: rule.tags.clone(),
                status: None,
                falsepositives: Vec::new(),
                file,
            });
            let mut state = RuleState::default();
            if let Model::ImpossibleTravel(tr) = &rule.model {
                state.places = tr
                    .places
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _, _))| (name.clone(), i as u16))
                    .collect();
            }
            compiled.push(Compiled {
                meta: metas.len() - 1,
                rule,
                stream,
                state,
                spent: std::time::Duration::ZERO,
            });
        }
        BaselineDetector {
            metas,
            rules: compiled,
            evicted: 0,
            x: Vec::new(),
            r: Vec::new(),
            y: Vec::new(),
        }
    }

    /// Bytes of state held for `entity` by rule `rule` (index), for the benchmark's
    /// bytes-per-entity figure: the map entry, the entity and what its vectors hold.
    pub fn entity_bytes(&self, rule: usize, entity: &str) -> Option<usize> {
        let e = self.rules.get(rule)?.state.entities.get(entity)?;
        let mv = e.mv.as_ref().map_or(0, |m| {
            std::mem::size_of::<Multivariate>()
                + 8 * (m.mean.capacity()
                    + m.std.capacity()
                    + m.mat.capacity()
                    + m.filt.capacity()
                    + m.scale.capacity()
                    + m.eig.capacity()
                    + m.buf.capacity())
        });
        Some(
            std::mem::size_of::<(String, Entity)>()
                + entity.len()
                + e.series.capacity() * std::mem::size_of::<Series>()
                + e.series
                    .iter()
                    .map(|s| 8 * s.recent.capacity())
                    .sum::<usize>()
                + e.terms.capacity() * 16
                + e.fan.as_ref().map_or(0, |f| {
                    std::mem::size_of::<FanOut>() + 8 * f.distinct.capacity()
                })
                + mv,
        )
    }
}

/// Whether `schema` has column `name`, or for `a.b` a struct column `a` with a field `b`.
fn has_column(schema: &datafusion::arrow::datatypes::Schema, name: &str) -> bool {
    column_type(schema, name).is_some()
}

/// The type of column `name` of `schema` (`a.b`: field `b` of struct column `a`).
fn column_type<'a>(
    schema: &'a datafusion::arrow::datatypes::Schema,
    name: &str,
) -> Option<&'a DataType> {
    if let Ok(f) = schema.field_with_name(name) {
        return Some(f.data_type());
    }
    let (parent, child) = name.split_once('.')?;
    match schema.field_with_name(parent).ok()?.data_type() {
        DataType::Struct(fields) => fields
            .iter()
            .find(|f| f.name() == child)
            .map(|f| f.data_type()),
        _ => None,
    }
}

/// Columns of one batch as a rule reads them.
struct Columns {
    time: Vec<Option<i64>>,
    entity: ArrayRef,
    values: Vec<ArrayRef>,
    metric: Option<ArrayRef>,
    term: Option<ArrayRef>,
    /// The rows the rule's `where` selects (`None`: every row).
    keep: Option<Vec<bool>>,
    /// The stream's [`horizon`] after this batch, computed once per rule and batch.
    horizon: Option<i64>,
}

impl Columns {
    /// Whether the rule reads `row` (its `where` holds).
    #[inline]
    fn kept(&self, row: usize) -> bool {
        self.keep.as_ref().is_none_or(|k| k[row])
    }
}

fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, String> {
    let nested = || {
        // `a.b`: field `b` of struct column `a` (the auth stream's `geo.city`).
        let (parent, child) = name.split_once('.')?;
        batch
            .column_by_name(parent)?
            .as_struct_opt()?
            .column_by_name(child)
    };
    let col = batch
        .column_by_name(name)
        .or_else(nested)
        .ok_or_else(|| format!("the batch has no column `{name}`"))?;
    if col.data_type() == to {
        return Ok(Arc::clone(col));
    }
    cast(col, to).map_err(|e| format!("column `{name}`: {e}"))
}

fn read_columns(c: &Compiled, batch: &RecordBatch) -> Result<Columns, String> {
    let rule = &c.rule;
    let time = match batch.column_by_name(&c.stream.time) {
        Some(col) => timestamp_millis(col.as_ref()),
        None => vec![None; batch.num_rows()],
    };
    let entity = column(batch, &c.stream.entity, &DataType::Utf8)?;
    let mut values = Vec::new();
    for f in &rule.features {
        values.push(column(batch, f, &DataType::Float64)?);
    }
    if let Some(v) = &rule.value {
        values.push(column(batch, v, &DataType::Float64)?);
    }
    if let Model::Consistency(cs) = &rule.model
        && rule.metric.is_none()
    {
        // Wide layout: the command and the response are columns of each row.
        values.push(column(batch, &cs.command, &DataType::Float64)?);
        values.push(column(batch, &cs.response, &DataType::Float64)?);
    }
    let metric = match &rule.metric {
        Some(m) => Some(column(batch, m, &DataType::Utf8)?),
        None => None,
    };
    let term = match &rule.model {
        Model::NewTerms(n) if n.field != "@hour" => Some(column(batch, &n.field, &DataType::Utf8)?),
        Model::FanOut(f) => Some(column(batch, &f.field, &DataType::Utf8)?),
        Model::ImpossibleTravel(tr) => Some(column(batch, &tr.location, &DataType::Utf8)?),
        _ => None,
    };
    let keep = if rule.filter.is_empty() {
        None
    } else {
        // One pass per listed column; a null never matches.
        let mut keep = vec![true; batch.num_rows()];
        for (name, allowed) in &rule.filter {
            let col = column(batch, name, &DataType::Utf8)?;
            let text = col.as_string::<i32>();
            for (row, k) in keep.iter_mut().enumerate() {
                *k = *k && text.is_valid(row) && allowed.iter().any(|a| a == text.value(row));
            }
        }
        Some(keep)
    };
    Ok(Columns {
        time,
        entity,
        values,
        metric,
        term,
        keep,
        horizon: None,
    })
}

/// An alert of `c`'s rule about `entity` at `t`, with one evidence object.
fn alert(
    c: &Compiled,
    meta: &RuleMeta,
    ctx: &EvalContext,
    entity: &str,
    t: i64,
    evidence: serde_json::Value,
) -> Alert {
    let entity = if c.stream.personal_entity {
        ctx.pseudonymiser.pseudonym(entity)
    } else {
        entity.to_string()
    };
    let evidence =
        vec![RawValue::from_string(evidence.to_string()).expect("serde_json writes valid JSON")];
    Alert {
        schema: crate::alert::SCHEMA.to_string(),
        id: Alert::compute_id(&meta.id, &entity, t, &evidence),
        rule: RuleRef::of(meta),
        severity: meta.severity,
        event_time: format_time_ms(t),
        detected_at: format_time_ms(ctx.now_ms),
        stream: c.stream.name.clone(),
        entity,
        tags: meta.tags.clone(),
        description: meta.description.clone(),
        evidence,
        evidence_truncated: 0,
        context: Default::default(),
    }
}

/// Rounds for evidence: enough digits to read, stable text for deterministic ids.
fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e4).round() / 1e4
    } else {
        0.0
    }
}

/// Whether a check in condition `on` should alert now: at onset, then every `realert_ms`.
#[inline]
fn should_alert(
    alarms: &mut u8,
    bit: u8,
    on: bool,
    last_alert_ms: i64,
    t: i64,
    realert: i64,
) -> bool {
    if !on {
        *alarms &= !bit;
        return false;
    }
    let onset = *alarms & bit == 0;
    *alarms |= bit;
    onset || t.saturating_sub(last_alert_ms) >= realert
}

impl RuleState {
    /// The entity's state, created (and room made for it) if new.
    fn entity<'a>(
        &'a mut self,
        name: &str,
        t: i64,
        partition: i32,
        rule: &BaselineRule,
        evicted: &mut u64,
    ) -> &'a mut Entity {
        if !self.entities.contains_key(name) {
            if self.entities.len() >= rule.max_entities {
                self.make_room(t, rule, evicted);
            }
            self.entities.insert(
                name.to_string(),
                Entity {
                    partition,
                    first_ms: t,
                    last_ms: t,
                    ..Entity::default()
                },
            );
        }
        let e = self.entities.get_mut(name).expect("inserted above");
        e.partition = partition;
        e.dirty = true;
        e
    }

    /// Drops expired entities, then (if still full) the least recently seen sixteenth, so
    /// the cost of a full map is paid once per many inserts.
    fn make_room(&mut self, now: i64, rule: &BaselineRule, evicted: &mut u64) {
        self.expire(now, rule, evicted);
        if self.entities.len() < rule.max_entities {
            return;
        }
        let mut ages: Vec<i64> = self.entities.values().map(|e| e.last_ms).collect();
        let n = (ages.len() / 16).max(1);
        let (_, cut, _) = ages.select_nth_unstable(n - 1);
        let cut = *cut;
        let mut removed = 0;
        self.entities.retain(|k, e| {
            let keep = e.last_ms > cut || removed >= n;
            if !keep {
                removed += 1;
                self.tombstones.push((e.partition, k.clone()));
            }
            keep
        });
        *evicted += removed as u64;
    }

    fn expire(&mut self, now: i64, rule: &BaselineRule, evicted: &mut u64) {
        let before = self.entities.len();
        let tombstones = &mut self.tombstones;
        self.entities.retain(|k, e| {
            let keep = now.saturating_sub(e.last_ms) < rule.ttl_ms;
            if !keep {
                tombstones.push((e.partition, k.clone()));
            }
            keep
        });
        *evicted += (before - self.entities.len()) as u64;
        self.last_sweep_ms = now;
    }

    fn metric_id(&mut self, name: &str) -> Option<u16> {
        intern(&mut self.metric_ids, &mut self.metric_names, name)
    }
}

/// The id of metric `name`, interned if new (`None` beyond [`MAX_METRICS`]).
fn intern(ids: &mut HashMap<String, u16>, names: &mut Vec<String>, name: &str) -> Option<u16> {
    if let Some(&id) = ids.get(name) {
        return Some(id);
    }
    if names.len() >= MAX_METRICS {
        return None;
    }
    let id = names.len() as u16;
    ids.insert(name.to_string(), id);
    names.push(name.to_string());
    Some(id)
}

impl Compiled {
    fn metric_name(&self, id: u16) -> &str {
        if self.rule.metric.is_some() {
            &self.state.metric_names[usize::from(id)]
        } else {
            &self.rule.features[usize::from(id)]
        }
    }
}

/// The seasonal bucket of `t` (UTC): its hour of the day (24 buckets) or of the week, Monday
/// 00:00 first (168).
fn season_bucket(t: i64, buckets: u16) -> usize {
    let hour = t.rem_euclid(86_400_000) / 3_600_000;
    // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday.
    let weekday = (t.div_euclid(86_400_000) + 3).rem_euclid(7);
    let b = if buckets == 168 {
        weekday * 24 + hour
    } else {
        hour
    };
    b as usize
}

/// Adds a sample to a baseline. An anomalous sample moves the mean only as far as a sample at
/// the threshold would, and leaves the variance alone: a burst of wild readings neither drags
/// the baseline towards them nor widens it until it is blind, while a lasting change of level
/// is still absorbed, a fraction of the threshold per sample.
#[inline]
fn learn(stats: &mut Ewma, x: f64, spec: &UnivariateSpec, anomalous: bool) {
    if anomalous {
        let thr = spec.z.unwrap_or(0.0);
        let std = stats.var.sqrt().max(spec.min_std);
        let d = (x - stats.mean).clamp(-thr * std, thr * std);
        stats.mean += spec.alpha * d;
        stats.n = stats.n.saturating_add(1);
    } else {
        stats.update(x, spec.alpha);
    }
}

/// The median and MAD of `samples` as a baseline: `mean` is the median, `var` the square of
/// the MAD scaled by 1.4826 (the standard deviation, for normal data), `n` the sample count.
/// `scratch` is reused, so nothing is allocated per sample once it has grown.
fn median_mad(samples: &[f64], scratch: &mut Vec<f64>) -> Ewma {
    if samples.is_empty() {
        return Ewma::default();
    }
    let mid = samples.len() / 2;
    scratch.clear();
    scratch.extend_from_slice(samples);
    let median = *scratch.select_nth_unstable_by(mid, f64::total_cmp).1;
    for v in scratch.iter_mut() {
        *v = (*v - median).abs();
    }
    let mad = *scratch.select_nth_unstable_by(mid, f64::total_cmp).1;
    let scale = 1.4826 * mad;
    Ewma {
        n: samples.len() as u32,
        mean: median,
        var: scale * scale,
    }
}

#[allow(clippy::too_many_arguments)]
fn univariate(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &UnivariateSpec,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    scratch: &mut Vec<f64>,
    out: &mut Vec<Alert>,
) {
    let entities = cols.entity.as_string::<i32>();
    let metrics = cols.metric.as_ref().map(|m| m.as_string::<i32>());
    let realert = c.rule.realert_ms;
    for (v, values) in cols.values.iter().enumerate() {
        let values = values.as_primitive::<Float64Type>();
        for row in 0..values.len() {
            if values.is_null(row) || entities.is_null(row) || !cols.kept(row) {
                continue;
            }
            let x = values.value(row);
            if !x.is_finite() {
                continue;
            }
            let t = cols.time[row].unwrap_or(ctx.now_ms);
            let metric = match metrics {
                Some(m) if m.is_null(row) => continue,
                Some(m) => match c.state.metric_id(m.value(row)) {
                    Some(id) => id,
                    None => {
                        *evicted += 1;
                        continue;
                    }
                },
                None => v as u16,
            };
            let name = entities.value(row);
            let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
            e.last_ms = e.last_ms.max(t);
            let (i, fresh) = match e.series.iter().position(|s| s.metric == metric) {
                Some(i) => (i, false),
                None => {
                    e.series.push(Series {
                        metric,
                        stats: Ewma::default(),
                        profile: Vec::new(),
                        recent: Vec::new(),
                        recent_pos: 0,
                        last: x,
                        last_ms: t,
                        first_ms: t,
                        changed_ms: t,
                        alarms: 0,
                        last_alert_ms: i64::MIN,
                    });
                    (e.series.len() - 1, true)
                }
            };
            let s = &mut e.series[i];
            let mut fired: [Option<(&'static str, f64, f64)>; 5] = [None; 5];
            // A gap longer than the heartbeat that no scan saw (the watermark did not pass
            // it before this sample came) is the same missing heartbeat: whether it alerts
            // does not depend on when scans ran.
            let gap = spec.heartbeat_ms.and_then(|hb| {
                (!fresh && s.alarms & SILENT == 0 && t - s.last_ms > hb)
                    .then_some((s.last_ms, s.first_ms))
            });
            // Missing heartbeat ends when data arrives.
            s.alarms &= !SILENT;
            let bucket = spec.seasonal.map(|n| {
                if s.profile.is_empty() {
                    s.profile = vec![Ewma::default(); usize::from(n)];
                }
                season_bucket(t, n)
            });
            // The baseline this sample is scored against: its season's, or the series'.
            let base = match spec.robust_window {
                Some(_) => median_mad(&s.recent, scratch),
                None => bucket.map_or(s.stats, |b| s.profile[b]),
            };
            let warm = base.n >= spec.warmup;
            let z = base.z(x, spec.min_std);
            let anomalous_z = warm && spec.z.is_some_and(|thr| z.abs() > thr);
            if let Some(thr) = spec.z
                && should_alert(&mut s.alarms, Z, anomalous_z, s.last_alert_ms, t, realert)
            {
                fired[0] = Some(("zscore", z, thr));
            }
            if let Some(lo) = spec.min
                && should_alert(&mut s.alarms, LOW, x < lo, s.last_alert_ms, t, realert)
            {
                fired[1] = Some(("min", x, lo));
            }
            if let Some(hi) = spec.max
                && should_alert(&mut s.alarms, HIGH, x > hi, s.last_alert_ms, t, realert)
            {
                fired[2] = Some(("max", x, hi));
            }
            if let Some(max_rate) = spec.max_rate {
                let dt = (t - s.last_ms) as f64 / 1000.0;
                let rate = if dt > 0.0 { (x - s.last) / dt } else { 0.0 };
                if should_alert(
                    &mut s.alarms,
                    RATE,
                    rate.abs() > max_rate,
                    s.last_alert_ms,
                    t,
                    realert,
                ) {
                    fired[3] = Some(("rate", rate, max_rate));
                }
            }
            if (x - s.last).abs() > spec.flat_epsilon {
                s.changed_ms = t;
            }
            if let Some(flat) = spec.flatline_ms {
                let stuck = t - s.changed_ms;
                if should_alert(
                    &mut s.alarms,
                    FLAT,
                    stuck >= flat,
                    s.last_alert_ms,
                    t,
                    realert,
                ) {
                    fired[4] = Some(("flatline", stuck as f64 / 1000.0, flat as f64 / 1000.0));
                }
            }
            // A held value (equal to the previous sample, within `flat_epsilon`) says nothing
            // about the process's spread and is not learnt: a stuck sensor (or a series
            // resting on one value) would otherwise shrink its variance towards zero, and its
            // first real move afterwards, say when the sensor is fixed, would look like a spike.
            let held = !fresh && (x - s.last).abs() <= spec.flat_epsilon;
            if !held {
                learn(&mut s.stats, x, spec, anomalous_z);
                if let Some(n) = spec.robust_window {
                    // Every sample goes in, anomalies too: the median ignores them until they
                    // are half the window, i.e. until they are the new normal.
                    if s.recent.len() < usize::from(n) {
                        s.recent.push(x);
                    } else {
                        s.recent[usize::from(s.recent_pos)] = x;
                        s.recent_pos = (s.recent_pos + 1) % n;
                    }
                }
                if let Some(b) = bucket {
                    learn(&mut s.profile[b], x, spec, anomalous_z);
                }
            }
            s.last = x;
            s.last_ms = t;
            if fired.iter().any(Option::is_some) {
                s.last_alert_ms = t;
                let (mean, std, n, age) = (
                    base.mean,
                    base.var.sqrt().max(spec.min_std),
                    base.n,
                    (t - s.first_ms) / 1000,
                );
                let name = name.to_string();
                for (check, score, threshold) in fired.into_iter().flatten() {
                    let metric = c.metric_name(metric);
                    let expected = match check {
                        "min" | "max" => serde_json::json!([spec.min, spec.max]),
                        _ => serde_json::json!([
                            round(mean - spec.z.unwrap_or(3.0) * std),
                            round(mean + spec.z.unwrap_or(3.0) * std)
                        ]),
                    };
                    let evidence = serde_json::json!({
                        "check": check,
                        "metric": metric,
                        "value": round(x),
                        "score": round(score),
                        "threshold": threshold,
                        "expected": expected,
                        "attribution": [{"feature": metric, "share": 1.0}],
                        "baseline_age_s": age,
                        "baseline_samples": n,
                        "season": bucket,
                    });
                    out.push(alert(c, meta, ctx, &name, t, evidence));
                }
            }
            if let Some(hb) = spec.heartbeat_ms {
                c.state.next_silence_ms = c.state.next_silence_ms.min(t.saturating_add(hb));
                if let Some((last, first)) = gap {
                    let name = name.to_string();
                    let evidence = silence_evidence(c, metric, last, first, hb);
                    out.push(alert(c, meta, ctx, &name, last + hb, evidence));
                }
            }
        }
    }
    if let Some(hb) = spec.heartbeat_ms
        && let Some(now) = cols.horizon
    {
        heartbeat_scan(c, meta, hb, now, ctx, out);
    }
}

/// The event time up to which the stream is complete after a batch (`None` before its first
/// event): the stream's watermark, not the batch's newest time, since a live run catching up
/// reads partitions unevenly and a series whose partition is behind has not gone quiet.
/// Offline contexts that track no watermark pass `i64::MAX`: the batch's newest time
/// decides (their input is in order).
fn horizon(cols: &Columns, ctx: &EvalContext) -> Option<i64> {
    let newest = cols.time.iter().flatten().max().copied();
    let now = newest.unwrap_or(ctx.now_ms).min(ctx.watermark_ms);
    (now != i64::MIN).then_some(now)
}

/// Missing heartbeat: flags the series whose last sample is more than `hb` before `now`
/// (the stream's horizon) and alerts once for each. The scan runs only when `now` has passed
/// the earliest time a series could have gone silent. A series that resumes before any scan
/// saw its gap alerts when its next sample arrives, with the same alert: which of the two
/// finds a gap depends on how the input was cut and interleaved, the alert does not.
fn heartbeat_scan(
    c: &mut Compiled,
    meta: &RuleMeta,
    hb: i64,
    now: i64,
    ctx: &EvalContext,
    out: &mut Vec<Alert>,
) {
    if now <= c.state.next_silence_ms {
        return;
    }
    let mut next = i64::MAX;
    let mut silent = Vec::new();
    for (name, e) in &mut c.state.entities {
        for s in &mut e.series {
            if s.alarms & SILENT != 0 {
                continue;
            }
            if now - s.last_ms > hb {
                s.alarms |= SILENT;
                e.dirty = true;
                silent.push((name.clone(), s.metric, s.last_ms, s.first_ms));
            } else {
                next = next.min(s.last_ms.saturating_add(hb));
            }
        }
    }
    c.state.next_silence_ms = next;
    silent.sort();
    for (name, metric, last, first) in silent {
        let evidence = silence_evidence(c, metric, last, first, hb);
        out.push(alert(c, meta, ctx, &name, last + hb, evidence));
    }
}

/// The evidence of a missing heartbeat, as of the moment the series went silent (its last
/// sample plus the period), so the alert is the same whenever it was noticed.
fn silence_evidence(
    c: &Compiled,
    metric: u16,
    last: i64,
    first: i64,
    hb: i64,
) -> serde_json::Value {
    serde_json::json!({
        "check": "heartbeat",
        "metric": c.metric_name(metric),
        "score": hb / 1000,
        "threshold": hb / 1000,
        "expected": [0, hb / 1000],
        "last_seen": format_time_ms(last),
        "attribution": [{"feature": c.metric_name(metric), "share": 1.0}],
        "baseline_age_s": (last + hb - first) / 1000,
    })
}

#[allow(clippy::too_many_arguments)]
fn multivariate(
    c: &mut Compiled,
    meta: &RuleMeta,
    params: &model::MultivariateParams,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    scratch: (&mut Vec<f64>, &mut Vec<f64>, &mut Vec<f64>),
    out: &mut Vec<Alert>,
) {
    let (x, r, y) = scratch;
    let k = cols.values.len();
    x.resize(k, 0.0);
    r.resize(k, 0.0);
    y.resize(k, 0.0);
    let entities = cols.entity.as_string::<i32>();
    let values: Vec<&Float64Array> = cols.values.iter().map(|v| v.as_primitive()).collect();
    'rows: for row in 0..entities.len() {
        if entities.is_null(row) || !cols.kept(row) {
            continue;
        }
        for (j, v) in values.iter().enumerate() {
            if v.is_null(row) || !v.value(row).is_finite() {
                // A row with a missing feature is not scored (the model needs all of them).
                continue 'rows;
            }
            x[j] = v.value(row);
        }
        let t = cols.time[row].unwrap_or(ctx.now_ms);
        let name = entities.value(row);
        let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
        e.last_ms = e.last_ms.max(t);
        let m =
            e.mv.get_or_insert_with(|| Box::new(Multivariate::new(k, t)));
        let Some(score) = m.update(x, params, r, y) else {
            continue;
        };
        let due =
            m.alarm && (score.onset || t.saturating_sub(m.last_alert_ms) >= c.rule.realert_ms);
        if !due {
            continue;
        }
        m.last_alert_ms = t;
        // Each feature's share of the dominant distance: r_j y_j sums to it (Mahalanobis:
        // r_j (Σ⁻¹ r)_j; T²: likewise within the principal components; Q: the squared
        // residual).
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| (r[b] * y[b]).total_cmp(&(r[a] * y[a])));
        let total = score.d2.max(f64::MIN_POSITIVE);
        let attribution: Vec<serde_json::Value> = order
            .iter()
            .take(3)
            .map(|&j| {
                serde_json::json!({
                    "feature": c.rule.features[j],
                    "share": round(r[j] * y[j] / total),
                    "value": round(x[j]),
                    // With row smoothing, the smoothed value is what was scored, and what
                    // `expected` (mean ± 3 standard deviations over warm-up) is about.
                    "smoothed": m.filt.get(j).copied().map(round),
                    "expected": [round(m.mean[j] - 3.0 * m.std[j]), round(m.mean[j] + 3.0 * m.std[j])],
                })
            })
            .collect();
        let mut evidence = serde_json::json!({
            "check": "multivariate",
            "statistic": score.part.name(),
            "score": round(score.smooth),
            "distance": round(score.d2),
            "threshold": params.threshold,
            "onset": score.onset,
            "attribution": attribution,
            "baseline_age_s": (t - m.first_ms) / 1000,
        });
        if m.norm_t2 > 0.0 {
            // What a score of 1 is: the warm-up's own quantile of the distance.
            evidence["calibration"] = serde_json::json!({
                "quantile": params.calibrate,
                "t2": round(m.norm_t2),
                "q": if m.comps > 0 { serde_json::json!(round(m.norm_q)) } else { serde_json::Value::Null },
                "components": m.comps,
            });
        }
        let name = name.to_string();
        out.push(alert(c, meta, ctx, &name, t, evidence));
    }
}

fn term_hash(s: &str) -> u64 {
    // SipHash with fixed keys: the same term hashes alike across restarts (checkpoints).
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn new_terms(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &NewTermsSpec,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    out: &mut Vec<Alert>,
) {
    let entities = cols.entity.as_string::<i32>();
    let terms = cols.term.as_ref().map(|t| t.as_string::<i32>());
    let mut hour = String::new();
    for row in 0..entities.len() {
        if entities.is_null(row) || !cols.kept(row) {
            continue;
        }
        let t = cols.time[row].unwrap_or(ctx.now_ms);
        let term: &str = match terms {
            Some(terms) if terms.is_null(row) => continue,
            Some(terms) => terms.value(row),
            None => {
                use std::fmt::Write as _;
                hour.clear();
                let _ = write!(hour, "{:02}", t.rem_euclid(86_400_000) / 3_600_000);
                &hour
            }
        };
        let h = term_hash(term);
        let name = entities.value(row);
        let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
        e.last_ms = e.last_ms.max(t);
        let known = e.terms.len();
        let seen = e.terms.iter().position(|&(th, _)| th == h);
        let is_new = match seen {
            Some(i) => t - e.terms[i].1 > spec.history_ms,
            None => true,
        };
        match seen {
            Some(i) => e.terms[i].1 = t,
            None => {
                if e.terms.len() >= spec.max_terms {
                    let oldest = (0..e.terms.len())
                        .min_by_key(|&i| e.terms[i].1)
                        .expect("max_terms >= 1");
                    e.terms.swap_remove(oldest);
                    *evicted += 1;
                }
                e.terms.push((h, t));
            }
        }
        if is_new && t - e.first_ms >= spec.warmup_ms {
            let shown = if c.stream.personal_term {
                ctx.pseudonymiser.pseudonym(term)
            } else {
                term.to_string()
            };
            let evidence = serde_json::json!({
                "check": "new_terms",
                "field": spec.field,
                "value": shown,
                "score": 1,
                "threshold": 1,
                "expected": format!("one of {known} terms seen in the last {} s", spec.history_ms / 1000),
                "attribution": [{"feature": spec.field, "share": 1.0}],
                "baseline_age_s": (t - e.first_ms) / 1000,
            });
            let name = name.to_string();
            out.push(alert(c, meta, ctx, &name, t, evidence));
        }
    }
}

fn fan_out(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &FanOutSpec,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    out: &mut Vec<Alert>,
) {
    let entities = cols.entity.as_string::<i32>();
    let Some(terms) = cols.term.as_ref().map(|t| t.as_string::<i32>()) else {
        return;
    };
    for row in 0..entities.len() {
        if entities.is_null(row) || terms.is_null(row) || !cols.kept(row) {
            continue;
        }
        let t = cols.time[row].unwrap_or(ctx.now_ms);
        let start = t - t.rem_euclid(spec.window_ms);
        let name = entities.value(row);
        let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
        e.last_ms = e.last_ms.max(t);
        let f = e.fan.get_or_insert_with(|| {
            Box::new(FanOut {
                window_ms: start,
                first_ms: start,
                ..FanOut::default()
            })
        });
        // A later window closes the current one. A late row (an earlier window) is counted in
        // the current window: reopening closed windows would need their sets kept.
        if start > f.window_ms {
            f.roll(start, spec.alpha, spec.z, spec.min_std);
        }
        if !f.insert(term_hash(terms.value(row)), spec.max_distinct) || f.alerted {
            continue;
        }
        // Scored as the count grows, so a scan alerts while it runs, not when its window ends.
        let count = f.distinct.len() as f64;
        let base = f.stats;
        if base.n < spec.warmup || count < f64::from(spec.min_count) {
            continue;
        }
        let z = base.z(count, spec.min_std);
        if z <= spec.z || count < spec.ratio * base.mean {
            continue;
        }
        f.alerted = true;
        let std = base.var.sqrt().max(spec.min_std);
        let evidence = serde_json::json!({
            "check": "fan_out",
            "field": spec.field,
            "value": count,
            "saturated": f.distinct.len() >= spec.max_distinct,
            "score": round(z),
            "threshold": spec.z,
            "expected": [round((base.mean - spec.z * std).max(0.0)), round(base.mean + spec.z * std)],
            "baseline_mean": round(base.mean),
            "window_start": format_time_ms(f.window_ms),
            "window_s": spec.window_ms / 1000,
            "attribution": [{"feature": spec.field, "share": 1.0}],
            "baseline_age_s": (t - f.first_ms) / 1000,
            "baseline_windows": base.n,
        });
        let name = name.to_string();
        out.push(alert(c, meta, ctx, &name, t, evidence));
    }
}

/// Great-circle distance (km) between two points given in degrees (haversine, mean Earth
/// radius): accurate to well under 1 % at the distances that matter here.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

fn travel(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &TravelSpec,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    out: &mut Vec<Alert>,
) {
    let entities = cols.entity.as_string::<i32>();
    let Some(places) = cols.term.as_ref().map(|t| t.as_string::<i32>()) else {
        return;
    };
    for row in 0..entities.len() {
        if entities.is_null(row) || places.is_null(row) || !cols.kept(row) {
            continue;
        }
        // Unknown places are skipped: a guess would make up distances.
        let Some(&here) = c.state.places.get(places.value(row)) else {
            continue;
        };
        let t = cols.time[row].unwrap_or(ctx.now_ms);
        let name = entities.value(row);
        let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
        e.last_ms = e.last_ms.max(t);
        let Some((there, then)) = e.travel.replace((here, t)) else {
            continue;
        };
        if there == here {
            continue;
        }
        let (from, to) = (
            &spec.places[usize::from(there)],
            &spec.places[usize::from(here)],
        );
        let km = haversine_km(from.1, from.2, to.1, to.2);
        if km < spec.min_km {
            continue;
        }
        // Events out of order count as simultaneous: the order they arrive in is the only
        // order a stream detector knows, and either way the pair is implausible.
        let hours = (t - then).max(0) as f64 / 3_600_000.0;
        let kmh = if hours > 0.0 {
            km / hours
        } else {
            f64::INFINITY
        };
        if kmh <= spec.max_kmh {
            continue;
        }
        let evidence = serde_json::json!({
            "check": "impossible_travel",
            "from": from.0,
            "to": to.0,
            "previous_time": format_time_ms(then),
            "distance_km": round(km),
            "hours": round(hours),
            // Simultaneous events in two places have no finite speed: null.
            "score": if kmh.is_finite() { serde_json::json!(round(kmh)) } else { serde_json::Value::Null },
            "threshold": spec.max_kmh,
            "expected": [0.0, spec.max_kmh],
            "attribution": [{"feature": spec.location, "share": 1.0}],
            "baseline_age_s": (t - e.first_ms) / 1000,
        });
        let name = name.to_string();
        out.push(alert(c, meta, ctx, &name, t, evidence));
    }
}

fn consistency(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &ConsistencySpec,
    cols: &Columns,
    ctx: &EvalContext,
    evicted: &mut u64,
    out: &mut Vec<Alert>,
) {
    let entities = cols.entity.as_string::<i32>();
    let metrics = cols.metric.as_ref().map(|m| m.as_string::<i32>());
    let values: Vec<&Float64Array> = cols.values.iter().map(|v| v.as_primitive()).collect();
    for row in 0..entities.len() {
        if entities.is_null(row) || !cols.kept(row) {
            continue;
        }
        let t = cols.time[row].unwrap_or(ctx.now_ms);
        let value = |v: &Float64Array| (!v.is_null(row)).then(|| v.value(row));
        // Long layout: the row is the command or the response, by its metric. Wide: the row
        // holds both, the command read first (a row that starts the pump and already shows
        // its flow meets its own deadline).
        let (command, response) = match (metrics, values.as_slice()) {
            (Some(m), [v]) => {
                if m.is_null(row) {
                    continue;
                }
                match m.value(row) {
                    name if name == spec.command => (value(v), None),
                    name if name == spec.response => (None, value(v)),
                    _ => continue,
                }
            }
            (None, [command, response]) => (value(command), value(response)),
            _ => return,
        };
        if command.is_none() && response.is_none() {
            continue;
        }
        let name = entities.value(row);
        let e = c.state.entity(name, t, ctx.partition, &c.rule, evicted);
        e.last_ms = e.last_ms.max(t);
        let first_ms = e.first_ms;
        let s = e.cmd.get_or_insert(Command {
            on: false,
            pending_ms: None,
            last_response: f64::NAN,
        });
        // A row of the asset past its deadline settles the deadline before the row counts
        // (the asset's rows arrive in order). Other assets' deadlines wait for the stream's
        // horizon, below: in a live run their partitions may be behind this row's.
        let missed = s
            .pending_ms
            .filter(|since| t - since > spec.within_ms)
            .map(|since| (since, s.last_response));
        if missed.is_some() {
            s.pending_ms = None;
        }
        if let Some(x) = command {
            let on = x > spec.command_above;
            // The rising edge starts the deadline; switching off withdraws it.
            if on && !s.on {
                s.pending_ms = Some(t);
            } else if !on {
                s.pending_ms = None;
            }
            s.on = on;
        }
        if let Some(x) = response {
            s.last_response = x;
            if x > spec.response_above {
                s.pending_ms = None;
            }
        }
        if let Some(since) = s.pending_ms {
            let next = &mut c.state.next_deadline_ms;
            *next = (*next).min(since + spec.within_ms);
        }
        if let Some((since, last)) = missed {
            out.push(no_response(c, meta, spec, ctx, name, since, last, first_ms));
        }
    }
    // Assets that went quiet after their command: settled once the stream's horizon has
    // passed their deadline, when no row of theirs can still come before it.
    if let Some(now) = cols.horizon {
        overdue(c, meta, spec, ctx, now, out);
    }
}

/// Raises the commands whose deadline `now` has passed (once it passed the earliest) and
/// finds the next deadline.
fn overdue(
    c: &mut Compiled,
    meta: &RuleMeta,
    spec: &ConsistencySpec,
    ctx: &EvalContext,
    now: i64,
    out: &mut Vec<Alert>,
) {
    if now <= c.state.next_deadline_ms {
        return;
    }
    let mut late = Vec::new();
    let mut next = i64::MAX;
    for (name, e) in &mut c.state.entities {
        let Some(s) = &mut e.cmd else { continue };
        let Some(since) = s.pending_ms else { continue };
        if now - since > spec.within_ms {
            s.pending_ms = None;
            e.dirty = true;
            late.push((since, name.clone(), s.last_response, e.first_ms));
        } else {
            next = next.min(since + spec.within_ms);
        }
    }
    c.state.next_deadline_ms = next;
    late.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (since, name, last, first_ms) in late {
        out.push(no_response(
            c, meta, spec, ctx, &name, since, last, first_ms,
        ));
    }
}

/// The alert for a command at `since` whose response did not come within the rule's time.
/// Its evidence is as of the deadline, so it is the same whichever row or scan noticed it.
#[allow(clippy::too_many_arguments)]
fn no_response(
    c: &Compiled,
    meta: &RuleMeta,
    spec: &ConsistencySpec,
    ctx: &EvalContext,
    name: &str,
    since: i64,
    last: f64,
    first_ms: i64,
) -> Alert {
    let evidence = serde_json::json!({
        "check": "consistency",
        "command": spec.command,
        "command_time": format_time_ms(since),
        "response": spec.response,
        "last_response": if last.is_finite() { serde_json::json!(round(last)) } else { serde_json::Value::Null },
        "score": spec.within_ms / 1000,
        "threshold": spec.within_ms / 1000,
        "expected": format!("{} above {} within {} s", spec.response, spec.response_above, spec.within_ms / 1000),
        "attribution": [{"feature": spec.response, "share": 1.0}],
        "baseline_age_s": (since - first_ms) / 1000,
    });
    alert(c, meta, ctx, name, since + spec.within_ms, evidence)
}

impl Detector for BaselineDetector {
    fn name(&self) -> &str {
        "baseline"
    }

    fn rules(&self) -> &[RuleMeta] {
        &self.metas
    }

    fn reads(&self, stream: usize) -> bool {
        self.rules.iter().any(|c| c.stream.index == stream)
    }

    fn evaluate(
        &mut self,
        stream: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        let mut failure = None;
        for c in self.rules.iter_mut().filter(|c| c.stream.index == stream) {
            let start = std::time::Instant::now();
            let meta = &self.metas[c.meta];
            let mut cols = match read_columns(c, batch) {
                Ok(cols) => cols,
                Err(message) => {
                    failure.get_or_insert(DetectError {
                        detector: meta.id.clone(),
                        message,
                    });
                    continue;
                }
            };
            cols.horizon = horizon(&cols, ctx);
            let evicted = &mut self.evicted;
            match c.rule.model.clone() {
                Model::Univariate(spec) => {
                    univariate(c, meta, &spec, &cols, ctx, evicted, &mut self.x, out);
                }
                Model::Multivariate(spec) => multivariate(
                    c,
                    meta,
                    &spec.params,
                    &cols,
                    ctx,
                    evicted,
                    (&mut self.x, &mut self.r, &mut self.y),
                    out,
                ),
                Model::NewTerms(spec) => new_terms(c, meta, &spec, &cols, ctx, evicted, out),
                Model::FanOut(spec) => fan_out(c, meta, &spec, &cols, ctx, evicted, out),
                Model::ImpossibleTravel(spec) => {
                    travel(c, meta, &spec, &cols, ctx, evicted, out);
                }
                Model::Consistency(spec) => consistency(c, meta, &spec, &cols, ctx, evicted, out),
            }
            // Expiry by the horizon too: a partition ahead of the others must not expire
            // the entities of one that is behind.
            if let Some(now) = cols.horizon
                && now - c.state.last_sweep_ms >= (c.rule.ttl_ms / 8).min(60_000)
            {
                c.state.expire(now, &c.rule, evicted);
            }
            c.spent += start.elapsed();
        }
        failure.map_or(Ok(()), Err)
    }

    /// The stream's watermark moved without a batch (its partitions went idle): deadlines
    /// and heartbeats it passed are settled, as a batch would settle them. The end of a
    /// replay (`i64::MAX`) settles nothing: the input ended, not the assets' telemetry.
    fn advance(
        &mut self,
        stream: usize,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        let now = ctx.watermark_ms;
        if now == i64::MIN || now == i64::MAX {
            return Ok(());
        }
        for c in self.rules.iter_mut().filter(|c| c.stream.index == stream) {
            let start = std::time::Instant::now();
            let meta = &self.metas[c.meta];
            match c.rule.model.clone() {
                Model::Univariate(spec) => {
                    if let Some(hb) = spec.heartbeat_ms {
                        heartbeat_scan(c, meta, hb, now, ctx, out);
                    }
                }
                Model::Consistency(spec) => overdue(c, meta, &spec, ctx, now, out),
                _ => {}
            }
            c.spent += start.elapsed();
        }
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn state(&self) -> StateCounters {
        StateCounters {
            groups: self
                .rules
                .iter()
                .map(|c| c.state.entities.len() as u64)
                .sum(),
            groups_evicted: self.evicted,
            ..StateCounters::default()
        }
    }

    fn rule_seconds(&mut self, f: &mut dyn FnMut(&str, std::time::Duration)) {
        for c in &mut self.rules {
            if !c.spent.is_zero() {
                f(&c.rule.id, std::mem::take(&mut c.spent));
            }
        }
    }

    fn rule_state(&self, f: &mut dyn FnMut(&str, RuleStateSize)) {
        let slot = std::mem::size_of::<(String, Entity)>() + 1;
        for c in &self.rules {
            let entities = &c.state.entities;
            let held: usize = entities
                .iter()
                .map(|(name, e)| name.len() + e.heap_bytes())
                .sum();
            f(
                &c.rule.id,
                RuleStateSize {
                    entries: entities.len() as u64,
                    bytes: (entities.capacity() * slot + held) as u64,
                },
            );
        }
    }

    fn checkpoint(&mut self, out: &mut Vec<StateEntry>) {
        for c in &mut self.rules {
            let key = |entity: &str| {
                let mut k = c.rule.id.as_bytes().to_vec();
                k.push(0);
                k.extend_from_slice(entity.as_bytes());
                k
            };
            for (partition, entity) in c.state.tombstones.drain(..) {
                out.push(StateEntry {
                    partition,
                    key: key(&entity),
                    value: None,
                });
            }
            let mut changed: Vec<(&String, &mut Entity)> = c
                .state
                .entities
                .iter_mut()
                .filter(|(_, e)| e.dirty)
                .collect();
            changed.sort_by(|a, b| a.0.cmp(b.0));
            for (name, e) in changed {
                e.dirty = false;
                let names = |id: u16| -> &str {
                    if c.rule.metric.is_some() {
                        &c.state.metric_names[usize::from(id)]
                    } else {
                        &c.rule.features[usize::from(id)]
                    }
                };
                out.push(StateEntry {
                    partition: e.partition,
                    key: key(name),
                    value: Some(codec::encode(e, names, |i| match &c.rule.model {
                        Model::ImpossibleTravel(tr) => &tr.places[usize::from(i)].0,
                        _ => "",
                    })),
                });
            }
        }
    }

    fn restore(&mut self, entries: &[StateEntry]) -> Result<(), DetectError> {
        for entry in entries {
            let Some(split) = entry.key.iter().position(|&b| b == 0) else {
                continue;
            };
            let (id, entity) = (&entry.key[..split], &entry.key[split + 1..]);
            let Some(c) = self.rules.iter_mut().find(|c| c.rule.id.as_bytes() == id) else {
                // A rule that no longer exists: its state is of no use.
                continue;
            };
            let entity = String::from_utf8_lossy(entity).into_owned();
            let Some(value) = &entry.value else {
                c.state.entities.remove(&entity);
                continue;
            };
            let state = &mut c.state;
            let features = &c.rule.features;
            let long = c.rule.metric.is_some();
            let places = &state.places;
            let mut metric_ids = std::mem::take(&mut state.metric_ids);
            let mut metric_names = std::mem::take(&mut state.metric_names);
            let decoded = codec::decode(
                value,
                |name| {
                    if long {
                        intern(&mut metric_ids, &mut metric_names, name)
                    } else {
                        features.iter().position(|f| f == name).map(|i| i as u16)
                    }
                },
                // A place the rule no longer lists: the last position is forgotten.
                |place| places.get(place).copied(),
            );
            state.metric_ids = metric_ids;
            state.metric_names = metric_names;
            let mut e = decoded.map_err(|message| DetectError {
                detector: c.rule.id.clone(),
                message: format!("cannot restore the state of `{entity}`: {message}"),
            })?;
            e.partition = entry.partition;
            e.dirty = false;
            // A restored pending command: the next row looks for its deadline.
            c.state.next_deadline_ms = i64::MIN;
            c.state.next_silence_ms = i64::MIN;
            c.state.entities.insert(entity, e);
        }
        Ok(())
    }

    fn release(&mut self, partitions: &[i32]) {
        for c in &mut self.rules {
            c.state
                .entities
                .retain(|_, e| !partitions.contains(&e.partition));
            c.state.tombstones.retain(|(p, _)| !partitions.contains(p));
        }
    }
}

#[cfg(test)]
mod tests;
