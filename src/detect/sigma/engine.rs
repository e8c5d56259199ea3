//! The Sigma rule set as one detector: files in, one [`SigmaPlan`] per stream, alerts out.
//!
//! In: Sigma files (detection rules, correlation rules) and the `[sigma]` configuration: which
//! log sources feed which streams (with the extra conditions that make an event belong to a
//! log source) and how Sigma field names become the stream's columns.
//! Out: a [`SigmaEngine`] ([`Detector`]), or every problem located at file, line and column;
//! plus warnings for rules no configured stream can ever feed.
//!
//! How a batch is evaluated: the decoded batch is seen through a *view* whose columns are named
//! by Sigma field (`Image`), each resolved once per schema to the stream's column or dotted
//! path (`Event.EventData.Image`, or `geo.country` inside a struct) — zero-copy, a struct
//! parent's nulls merged into its child. The stream's plan scans each view column once for
//! every rule and returns one bitmap per rule; only rows set in some bitmap are ever rendered,
//! so a quiet batch costs the scans and nothing else.
//!
//! Alerts: `rule.id` is the Sigma `id` (else its `name`), severity its `level`, with title,
//! status, tags and false positives; the evidence is the event's fields the rule reads or lists
//! under `fields:`, personal fields pseudonymised as the stream's privacy policy says.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StructArray, make_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::value::RawValue;

use super::condition::Condition;
use super::correlate::{
    CorrelationHit, CorrelationSet, CorrelationSetError, CorrelationSpec, Limits, RestoreEntry,
    Source,
};
use super::error::SigmaError;
use super::plan::{PlanBuilder, PlanProfile, SigmaPlan};
use super::rule::{
    CorrelationRule, FilterRule, Level, LogSource, Metadata, Selection, SelectionKind,
    SigmaDocument, SigmaRule,
};
use super::value::{FieldMatcher, Link, MatchValue, Number, Part, Pattern, Value};
use super::yaml::Pos;
use crate::alert::{Alert, RuleRef, SCHEMA, Severity, format_time_ms};
use crate::config::{Config, LogsourceMapping, PrivacyAction, SigmaFieldMapping};
use crate::detect::{
    DetectError, Detector, EvalContext, LoadSummary, Projection, RuleError, RuleMeta,
    RuleStateSize, StateCounters, StateEntry, timestamp_millis,
};

/// The name of the selection that carries a log source's conditions. Not a valid Sigma
/// identifier start for rule authors to collide with (`them` patterns never see it: conditions
/// are resolved to selection indices when parsed).
const LOGSOURCE_SELECTION: &str = "$palisade_logsource";

/// The column of a projected stream that holds every value of the record, for keywords.
pub const KEYWORDS_COLUMN: &str = "_keywords";

/// What [`SigmaEngine::load`] produced.
pub struct Loaded {
    /// The engine, when at least one rule loaded.
    pub engine: Option<SigmaEngine>,
    /// Problems that make rules fail to load.
    pub errors: Vec<RuleError>,
    /// Problems that do not (a rule no stream feeds, a field no stream has).
    pub warnings: Vec<RuleError>,
    /// Rules loaded and failed.
    pub summary: LoadSummary,
}

/// Every Sigma rule, compiled per stream.
pub struct SigmaEngine {
    /// Detection rules (indices `0..n`, the base rules of correlations), then correlations.
    rules: Vec<RuleMeta>,
    refs: Vec<RuleRef>,
    /// Per stream (config order): its plan, if any rule reads it.
    streams: Vec<Option<StreamPlan>>,
    /// The correlation rules and their state.
    correlate: Option<Correlations>,
    /// Reused from batch to batch.
    hits: Vec<CorrelationHit>,
}

/// The correlation rules of the set.
struct Correlations {
    set: CorrelationSet,
    /// Engine rule index of correlation `i` (its meta).
    metas: Vec<usize>,
    /// Per correlation: group-by names whose values are personal on some source stream.
    private_groups: Vec<Vec<bool>>,
    /// Per correlation: a digest of its rule and of the rules it reads, to tell after a
    /// reload whether it changed (unchanged ones keep their state).
    fingerprints: Vec<u64>,
}

/// One stream's share of the rule set.
struct StreamPlan {
    /// The stream's name.
    name: String,
    plan: SigmaPlan,
    /// Plan rule index -> engine rule index.
    rules: Vec<usize>,
    /// View columns: Sigma field name and the stream column (or dotted path) it reads.
    fields: Vec<(String, String)>,
    /// Per plan rule: indices into `fields` shown as evidence.
    evidence: Vec<Vec<usize>>,
    /// Fields shown for an event that feeds a correlation.
    correlation_evidence: Vec<usize>,
    /// Some rule searches keywords: every string field goes into the view.
    keywords: bool,
    /// The stream's event-time column.
    time: String,
    /// The stream's entity columns.
    entity: Vec<String>,
    /// Personal columns (by path) and what to do with them.
    privacy: HashMap<String, PrivacyAction>,
    /// Column resolution for the last schema seen (schemas are stable per stream).
    resolved: Option<(SchemaRef, Resolved)>,
}

/// How to build the view from batches of one schema.
struct Resolved {
    /// Per view field: where its array is, `None` when the stream has no such column.
    fields: Vec<Option<Vec<usize>>>,
    /// Extra string columns searched by keywords: view name and location.
    keywords: Vec<(String, Vec<usize>)>,
    schema: SchemaRef,
}

/// A detection rule on its way to the plans.
struct Pending {
    rule: SigmaRule,
    file: PathBuf,
}

impl SigmaEngine {
    /// Parses and compiles `files`. Never fails as a whole: a bad rule is an error entry and
    /// the rest load; the caller decides whether errors stop the service.
    pub fn load(config: &Config, files: &[PathBuf]) -> Loaded {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut summary = LoadSummary::default();
        let mut pending = Vec::new();
        let mut correlations = Vec::new();
        let mut filters: Vec<(FilterRule, PathBuf)> = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    summary.failed += 1;
                    errors.push(RuleError::at_line(
                        file,
                        0,
                        format!("cannot read rule: {e}"),
                    ));
                    continue;
                }
            };
            match super::parse(file, &text) {
                Ok(docs) => {
                    for doc in docs {
                        match doc {
                            SigmaDocument::Rule(rule) => pending.push(Pending {
                                rule,
                                file: file.clone(),
                            }),
                            SigmaDocument::Correlation(c) => correlations.push((c, file.clone())),
                            SigmaDocument::Filter(f) => filters.push((f, file.clone())),
                        }
                    }
                }
                Err(e) => {
                    summary.failed += 1;
                    errors.extend(e.errors.into_iter().map(rule_error));
                }
            }
        }

        let mut builders: Vec<Option<StreamBuilder>> =
            (0..config.streams.len()).map(|_| None).collect();
        let mut rules: Vec<RuleMeta> = Vec::new();
        let mut refs = Vec::new();
        // Per base rule: its Sigma `name` and the streams it reads (for correlations).
        let mut names: Vec<Option<String>> = Vec::new();
        let mut digests: Vec<u64> = Vec::new();
        let mut rule_streams: Vec<Vec<usize>> = Vec::new();
        // Rules that no stream feeds are still compiled, so that `check` reports their
        // problems like any other's.
        let placeholders: HashMap<String, Vec<String>> = config
            .sigma
            .placeholders
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut scratch = PlanBuilder::new().with_placeholders(placeholders.clone());
        // Global filters: each excludes its events from the rules it names.
        let mut filter_used = vec![0usize; filters.len()];
        let pending: Vec<Pending> = pending
            .into_iter()
            .map(|Pending { mut rule, file }| {
                for (k, (f, _)) in filters.iter().enumerate() {
                    let named = f.rules.iter().any(|r| {
                        rule.meta.id.as_deref() == Some(r.reference.as_str())
                            || rule.meta.name.as_deref() == Some(r.reference.as_str())
                    });
                    let l = &f.logsource;
                    if named && covers([&l.product, &l.category, &l.service], &rule.logsource) {
                        rule = with_filter(&rule, f);
                        filter_used[k] += 1;
                    }
                }
                Pending { rule, file }
            })
            .collect();
        for ((f, file), used) in filters.iter().zip(&filter_used) {
            summary.ok += 1;
            if *used == 0 {
                warnings.push(RuleError {
                    file: file.clone(),
                    line: f.meta.pos.line,
                    column: f.meta.pos.column,
                    message: "filter applies to no loaded rule: none of the rules it names is \
                              loaded with a log source it covers"
                        .into(),
                });
            }
        }
        for Pending { rule, file } in pending {
            let targets = streams_for(config, &rule.logsource);
            let err_at = |pos: Pos, message: String| RuleError {
                file: file.clone(),
                line: pos.line,
                column: pos.column,
                message,
            };
            if targets.is_empty() {
                if let Err(e) = scratch.add_rule(&rule) {
                    summary.failed += 1;
                    errors.push(rule_error(e.into_sigma_error(&file)));
                    continue;
                }
                warnings.push(err_at(
                    rule.meta.pos,
                    format!(
                        "never matches a configured stream: no [[sigma.logsources]] entry \
                         matches its logsource ({}); add one that maps it to a stream",
                        describe(&rule.logsource)
                    ),
                ));
                summary.ok += 1;
                continue;
            }
            let index = rules.len();
            let mut added = true;
            for (stream, entries) in &targets {
                let s = &config.streams[*stream];
                let builder = builders[*stream].get_or_insert_with(|| StreamBuilder {
                    plan: PlanBuilder::new().with_placeholders(placeholders.clone()),
                    rules: Vec::new(),
                    fields: Vec::new(),
                    evidence: Vec::new(),
                    correlation_evidence: Vec::new(),
                    keywords: false,
                    mapping: config
                        .sigma
                        .streams
                        .get(s.name())
                        .cloned()
                        .unwrap_or_default(),
                    literal: HashSet::new(),
                    guards: HashMap::new(),
                });
                let (specialised, renamed) = specialise(&rule, entries);
                builder.literal.extend(renamed);
                let guard = builder.guard(entries);
                let add = builder
                    .plan
                    .add_guarded_rule(&specialised, guard.as_ref().map(|(g, _)| *g));
                if let Err(e) = add {
                    summary.failed += 1;
                    errors.push(rule_error(e.into_sigma_error(&file)));
                    added = false;
                    break;
                }
                builder.rules.push(index);
                let mut shown: Vec<usize> = guard.map(|(_, fields)| fields).unwrap_or_default();
                for field in fields_read(&specialised)
                    .into_iter()
                    .chain(rule.fields.iter().cloned())
                {
                    let i = builder.field(&field);
                    if !shown.contains(&i) {
                        shown.push(i);
                    }
                }
                builder.evidence.push(shown);
                builder.keywords |= searches_keywords(&rule);
                if let Some(schema) = s.arrow_schema() {
                    for field in fields_read(&specialised) {
                        let column = builder.path(&field);
                        if locate(schema.fields(), &column).is_none() {
                            warnings.push(err_at(
                                rule.meta.pos,
                                format!(
                                    "field `{field}` (column `{column}`) is not in the schema of \
                                     stream `{}`: it is always null there",
                                    s.name()
                                ),
                            ));
                        }
                    }
                }
            }
            if !added {
                // Already registered on earlier streams: leave those entries pointing at a
                // rule that never alerts? No: rebuild is simpler to reason about, but a rule
                // fails the same way on every stream (the conditions added per stream are
                // plain literals), so it failed on the first one and nothing was registered.
                continue;
            }
            summary.ok += 1;
            let meta = rule_meta(
                &rule.meta,
                "sigma",
                &file,
                config,
                targets.iter().map(|(s, _)| *s),
            );
            refs.push(RuleRef::of(&meta));
            rules.push(meta);
            names.push(rule.meta.name.clone());
            digests.push({
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                format!("{:?}{:?}", rule.logsource, rule.detection).hash(&mut h);
                h.finish()
            });
            rule_streams.push(targets.iter().map(|(s, _)| *s).collect());
        }

        let base_rules = rules.len();
        let correlate = link_correlations(
            config,
            &correlations,
            &names,
            &digests,
            &rule_streams,
            &mut rules,
            &mut builders,
            &mut errors,
            &mut warnings,
            &mut summary,
        );
        refs.extend(rules[base_rules..].iter().map(RuleRef::of));

        let mut streams = Vec::with_capacity(builders.len());
        for (i, b) in builders.into_iter().enumerate() {
            let Some(b) = b else {
                streams.push(None);
                continue;
            };
            let s = &config.streams[i];
            let fields: Vec<(String, String)> =
                b.fields.iter().map(|f| (f.clone(), b.path(f))).collect();
            match b.plan.build() {
                Ok(plan) => streams.push(Some(StreamPlan {
                    name: s.name().to_string(),
                    plan,
                    rules: b.rules,
                    fields,
                    evidence: b.evidence,
                    correlation_evidence: b.correlation_evidence,
                    keywords: b.keywords,
                    time: s.event_time.get_ref().clone(),
                    entity: s.entity.get_ref().clone(),
                    privacy: s
                        .privacy
                        .iter()
                        .map(|(k, v)| (k.clone(), *v.get_ref()))
                        .collect(),
                    resolved: None,
                })),
                Err(e) => {
                    errors.push(RuleError::at_line(
                        Path::new(&config.origin),
                        0,
                        format!("Sigma rules of stream `{}`: {e}", s.name()),
                    ));
                    streams.push(None);
                }
            }
        }
        let engine = (!rules.is_empty()).then_some(SigmaEngine {
            rules,
            refs,
            streams,
            correlate,
            hits: Vec::new(),
        });
        Loaded {
            engine,
            errors,
            warnings,
            summary,
        }
    }

    /// The matching part of [`Detector::evaluate`] on `batch` of stream `stream`, timed per
    /// part of the stream's plan into `profile`: no alert is rendered and no correlation
    /// state changes. Returns the rules that selected rows, by id, with how many. For
    /// benchmarks looking for what costs most.
    pub fn profile(
        &mut self,
        stream: usize,
        batch: &RecordBatch,
        profile: &mut PlanProfile,
    ) -> Result<Vec<(&str, usize)>, DetectError> {
        let Some(sp) = self.streams.get_mut(stream).and_then(Option::as_mut) else {
            return Ok(Vec::new());
        };
        let fail = |message: String| DetectError {
            detector: "sigma".into(),
            message,
        };
        let view = sp.view(batch).map_err(fail)?;
        let bits = sp
            .plan
            .evaluate_profiled(&view, profile)
            .map_err(|e| fail(e.to_string()))?;
        Ok(bits
            .iter()
            .enumerate()
            .filter_map(|(k, b)| {
                let n = b.count_set_bits();
                (n > 0).then(|| (self.rules[sp.rules[k]].id.as_str(), n))
            })
            .collect())
    }

    /// What projected stream `stream` must decode for these rules.
    pub fn projection(&self, stream: usize) -> Projection {
        match &self.streams[stream] {
            None => Projection::default(),
            Some(sp) => {
                let mut paths: Vec<String> = Vec::new();
                for (_, path) in &sp.fields {
                    if !paths.contains(path) {
                        paths.push(path.clone());
                    }
                }
                Projection {
                    paths,
                    keywords: sp.keywords,
                }
            }
        }
    }
}

/// A stream's plan under construction.
struct StreamBuilder {
    plan: PlanBuilder,
    rules: Vec<usize>,
    fields: Vec<String>,
    evidence: Vec<Vec<usize>>,
    correlation_evidence: Vec<usize>,
    keywords: bool,
    mapping: SigmaFieldMapping,
    /// View fields that are paths already (renamed by a log source's `fields`).
    literal: HashSet<String>,
    /// Guards by the log-source entries they come from: plan guard index and the fields
    /// they read (shown in evidence).
    guards: HashMap<Vec<usize>, Option<(usize, Vec<usize>)>>,
}

impl StreamBuilder {
    /// The guard of rules fed by `entries` (compiled once per set of entries), and the view
    /// fields it reads.
    fn guard(&mut self, entries: &[&LogsourceMapping]) -> Option<(usize, Vec<usize>)> {
        let key: Vec<usize> = entries
            .iter()
            .map(|e| std::ptr::from_ref(*e) as usize)
            .collect();
        if let Some(g) = self.guards.get(&key) {
            return g.clone();
        }
        let g = guard_rule(entries).map(|rule| {
            let index = self
                .plan
                .add_guard(&rule)
                .expect("log-source conditions are plain literals");
            let fields = fields_read(&rule).iter().map(|f| self.field(f)).collect();
            (index, fields)
        });
        self.guards.insert(key, g.clone());
        g
    }

    /// The column or path that view field `name` reads.
    fn path(&self, name: &str) -> String {
        if self.literal.contains(name) {
            name.to_string()
        } else {
            self.mapping.column(name)
        }
    }

    /// Index of view field `name`, added if new.
    fn field(&mut self, name: &str) -> usize {
        match self.fields.iter().position(|f| f == name) {
            Some(i) => i,
            None => {
                self.fields.push(name.to_string());
                self.fields.len() - 1
            }
        }
    }
}

impl SigmaEngine {
    /// After a reload: takes over the correlation state of every correlation of `old` that
    /// did not change (same id, same rule, same rules read). Returns how many kept state.
    pub fn adopt_state(&mut self, old: &mut SigmaEngine) -> usize {
        let (Some(new), Some(was)) = (&mut self.correlate, &mut old.correlate) else {
            return 0;
        };
        let mut kept = 0;
        for n in 0..new.metas.len() {
            let id = &self.rules[new.metas[n]].id;
            let found = (0..was.metas.len()).find(|&o| {
                old.rules[was.metas[o]].id == *id && was.fingerprints[o] == new.fingerprints[n]
            });
            if let Some(o) = found {
                new.set.adopt(n, &mut was.set, o);
                kept += 1;
            }
        }
        kept
    }
}

impl Detector for SigmaEngine {
    fn name(&self) -> &str {
        "sigma"
    }

    fn rules(&self) -> &[RuleMeta] {
        &self.rules
    }

    fn reads(&self, stream: usize) -> bool {
        self.streams.get(stream).is_some_and(Option::is_some)
    }

    fn adopt_state(&mut self, old: &mut dyn Detector) -> usize {
        match old.as_any_mut().downcast_mut::<SigmaEngine>() {
            Some(old) => SigmaEngine::adopt_state(self, old),
            None => 0,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn checkpoint(&mut self, out: &mut Vec<StateEntry>) {
        let Some(c) = &mut self.correlate else {
            return;
        };
        let mut prefix = Vec::new();
        for n in 0..c.metas.len() {
            prefix.clear();
            correlation_prefix(&self.rules[c.metas[n]].id, c.fingerprints[n], &mut prefix);
            c.set.checkpoint(n, &prefix, out);
        }
    }

    fn restore(&mut self, entries: &[StateEntry]) -> Result<(), DetectError> {
        let Some(c) = &mut self.correlate else {
            return Ok(());
        };
        let prefixes: Vec<Vec<u8>> = (0..c.metas.len())
            .map(|n| {
                let mut p = Vec::new();
                correlation_prefix(&self.rules[c.metas[n]].id, c.fingerprints[n], &mut p);
                p
            })
            .collect();
        let mut per: Vec<Vec<RestoreEntry<'_>>> = vec![Vec::new(); prefixes.len()];
        let mut unknown = 0usize;
        for e in entries {
            let Some(value) = &e.value else { continue };
            // A correlation that changed (or went) since the checkpoint starts afresh: its
            // entries carry the old digest and match no prefix.
            match prefixes.iter().position(|p| e.key.starts_with(p)) {
                Some(n) => per[n].push((e.partition, &e.key[prefixes[n].len()..], value)),
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            tracing::info!(
                entries = unknown,
                "checkpointed correlation state of changed or removed correlations ignored"
            );
        }
        for (n, entries) in per.iter().enumerate() {
            c.set.restore(n, entries).map_err(|e| DetectError {
                detector: "sigma".into(),
                message: format!("correlation `{}`: {e}", self.rules[c.metas[n]].id),
            })?;
        }
        Ok(())
    }

    fn release(&mut self, partitions: &[i32]) {
        if let Some(c) = &mut self.correlate {
            c.set.release(partitions);
        }
    }

    fn rule_state(&self, f: &mut dyn FnMut(&str, RuleStateSize)) {
        if let Some(c) = &self.correlate {
            for (i, (groups, bytes)) in c.set.sizes().enumerate() {
                f(
                    &self.rules[c.metas[i]].id,
                    RuleStateSize {
                        entries: groups as u64,
                        bytes: bytes as u64,
                    },
                );
            }
        }
    }

    fn state(&self) -> StateCounters {
        let mut total = StateCounters::default();
        if let Some(c) = &self.correlate {
            for k in c.set.stats().correlations {
                total.groups += k.groups as u64;
                total.events += k.events as u64;
                total.groups_evicted += k.groups_evicted;
                total.events_dropped += k.events_dropped;
                total.events_late += k.events_late;
                total.evidence_truncated += k.evidence_truncated;
            }
        }
        total
    }

    fn evaluate(
        &mut self,
        stream: usize,
        batch: &RecordBatch,
        ctx: &EvalContext,
        out: &mut Vec<Alert>,
    ) -> Result<(), DetectError> {
        let Some(sp) = self.streams.get_mut(stream).and_then(Option::as_mut) else {
            return Ok(());
        };
        let fail = |message: String| DetectError {
            detector: "sigma".into(),
            message,
        };
        let view = sp.view(batch).map_err(fail)?;
        let sp: &StreamPlan = sp;
        let bits = sp.plan.evaluate(&view).map_err(|e| fail(e.to_string()))?;
        let matched = bits.iter().any(|b| b.count_set_bits() > 0);
        // Rendering needs formatters over the view: only worth building when a row matched.
        let render = if matched {
            Some(Render::new(sp, batch, &view, ctx).map_err(fail)?)
        } else {
            None
        };
        if let Some(render) = &render {
            for (k, matched) in bits.iter().enumerate() {
                let r = sp.rules[k];
                if matched.count_set_bits() == 0
                    || self
                        .correlate
                        .as_ref()
                        .is_some_and(|c| c.set.suppresses_base_rule(r))
                {
                    continue;
                }
                let meta = &self.rules[r];
                for row in matched.set_indices() {
                    let evidence = vec![raw(render.object(&sp.evidence[k], row))];
                    let entity = render.entity(row);
                    let event_ms = render.time(row).unwrap_or(ctx.now_ms);
                    out.push(Alert {
                        schema: SCHEMA.to_string(),
                        id: Alert::compute_id(&meta.id, &entity, event_ms, &evidence),
                        rule: self.refs[r].clone(),
                        severity: meta.severity,
                        event_time: format_time_ms(event_ms),
                        detected_at: format_time_ms(ctx.now_ms),
                        stream: sp.name.clone(),
                        entity,
                        tags: meta.tags.clone(),
                        description: meta.description.clone(),
                        evidence,
                        evidence_truncated: 0,
                        context: Default::default(),
                    });
                }
            }
        }
        let Some(corr) = &mut self.correlate else {
            return Ok(());
        };
        let times: Vec<i64> = match &render {
            Some(r) => r.times.iter().map(|t| t.unwrap_or(ctx.now_ms)).collect(),
            None => batch
                .column_by_name(&sp.time)
                .map(|c| timestamp_millis(c.as_ref()))
                .unwrap_or_else(|| vec![None; batch.num_rows()])
                .into_iter()
                .map(|t| t.unwrap_or(ctx.now_ms))
                .collect(),
        };
        let mut evidence = |row: usize| match &render {
            Some(r) => r.object(&sp.correlation_evidence, row),
            None => "{}".to_string(),
        };
        self.hits.clear();
        corr.set.set_partition(ctx.partition);
        corr.set.observe(
            &view,
            &times,
            &sp.rules,
            &bits,
            &mut evidence,
            &mut self.hits,
        );
        for hit in self.hits.drain(..) {
            if !hit.alert {
                continue;
            }
            let r = corr.metas[hit.correlation];
            let meta = &self.rules[r];
            let private = &corr.private_groups[hit.correlation];
            let entity = if hit.group.is_empty() {
                "-".to_string()
            } else {
                hit.group
                    .iter()
                    .zip(private)
                    .map(|((_, v), &p)| {
                        if p && !v.is_empty() {
                            ctx.pseudonymiser.pseudonym(v)
                        } else if v.is_empty() {
                            "-".to_string()
                        } else {
                            v.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let mut group = serde_json::Map::new();
            for ((name, value), &p) in hit.group.iter().zip(private) {
                let value = if p {
                    ctx.pseudonymiser.pseudonym(value)
                } else {
                    value.clone()
                };
                group.insert(name.clone(), serde_json::Value::String(value));
            }
            let mut summary = serde_json::json!({
                "correlation": meta.id,
                "group": group,
                "value": hit.value,
                "first_event": format_time_ms(hit.first_ms),
                "last_event": format_time_ms(hit.last_ms),
            });
            if let Some(v) = &hit.field_value {
                summary["field_value"] = serde_json::Value::String(v.clone());
            }
            let mut evidence = Vec::with_capacity(hit.evidence.len() + 1);
            evidence.push(raw(summary.to_string()));
            evidence.extend(hit.evidence.into_iter().map(raw));
            out.push(Alert {
                schema: SCHEMA.to_string(),
                id: Alert::compute_id(&meta.id, &entity, hit.last_ms, &evidence),
                rule: self.refs[r].clone(),
                severity: meta.severity,
                event_time: format_time_ms(hit.last_ms),
                detected_at: format_time_ms(ctx.now_ms),
                stream: sp.name.clone(),
                entity,
                tags: meta.tags.clone(),
                description: meta.description.clone(),
                evidence,
                evidence_truncated: hit.evidence_truncated,
                context: Default::default(),
            });
        }
        Ok(())
    }
}

/// A JSON text as evidence (always valid: rendered by serde_json).
fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("rendered by serde_json")
}

impl StreamPlan {
    /// The batch as the plan sees it: one column per Sigma field.
    fn view(&mut self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let schema = batch.schema();
        let stale = !matches!(&self.resolved, Some((s, _)) if Arc::ptr_eq(s, &schema));
        if stale {
            let resolved = self.resolve(&schema);
            self.resolved = Some((schema, resolved));
        }
        let (_, resolved) = self.resolved.as_ref().expect("resolved above");
        let mut columns = Vec::with_capacity(resolved.schema.fields().len());
        for at in resolved.fields.iter().flatten() {
            columns.push(column_at(batch, at));
        }
        for (_, at) in &resolved.keywords {
            columns.push(column_at(batch, at));
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&resolved.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| format!("cannot build the Sigma view: {e}"))
    }

    fn resolve(&self, schema: &Schema) -> Resolved {
        let mut out_fields = Vec::new();
        let mut fields = Vec::with_capacity(self.fields.len());
        for (name, path) in &self.fields {
            let at = locate(schema.fields(), path);
            if let Some(at) = &at {
                out_fields.push(Field::new(name, type_at(schema.fields(), at), true));
            }
            fields.push(at);
        }
        let mut keywords = Vec::new();
        if self.keywords {
            let taken: HashSet<&str> = self.fields.iter().map(|(n, _)| n.as_str()).collect();
            let mut leaves = Vec::new();
            string_leaves(schema.fields(), &mut Vec::new(), "", &mut leaves);
            for (name, at) in leaves {
                if !taken.contains(name.as_str()) {
                    out_fields.push(Field::new(&name, type_at(schema.fields(), &at), true));
                    keywords.push((name, at));
                }
            }
        }
        Resolved {
            fields,
            keywords,
            schema: Arc::new(Schema::new(out_fields)),
        }
    }
}

/// Finds dotted `path` among `fields`: an exact top-level name first, then through struct
/// children. Returns the child index at each level.
fn locate(fields: &Fields, path: &str) -> Option<Vec<usize>> {
    if let Some(i) = fields.iter().position(|f| f.name() == path) {
        return Some(vec![i]);
    }
    // The longest prefix that names a struct field, then the rest inside it.
    for (i, f) in fields.iter().enumerate() {
        let Some(rest) = path
            .strip_prefix(f.name().as_str())
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        if let DataType::Struct(children) = f.data_type()
            && let Some(mut tail) = locate(children, rest)
        {
            tail.insert(0, i);
            return Some(tail);
        }
    }
    None
}

fn type_at(fields: &Fields, at: &[usize]) -> DataType {
    let f = &fields[at[0]];
    match (f.data_type(), at.len()) {
        (_, 1) => f.data_type().clone(),
        (DataType::Struct(children), _) => type_at(children, &at[1..]),
        _ => unreachable!("located paths go through structs"),
    }
}

/// Every string column, nested ones by their dotted path.
fn string_leaves(
    fields: &Fields,
    at: &mut Vec<usize>,
    prefix: &str,
    out: &mut Vec<(String, Vec<usize>)>,
) {
    for (i, f) in fields.iter().enumerate() {
        at.push(i);
        let name = format!("{prefix}{}", f.name());
        match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                out.push((name, at.clone()))
            }
            DataType::Struct(children) => string_leaves(children, at, &format!("{name}."), out),
            _ => {}
        }
        at.pop();
    }
}

/// The array at `at`, a struct parent's nulls merged into the child (zero-copy otherwise).
fn column_at(batch: &RecordBatch, at: &[usize]) -> ArrayRef {
    let mut array = Arc::clone(batch.column(at[0]));
    for &i in &at[1..] {
        let parent: &StructArray = array.as_struct();
        let child = Arc::clone(parent.column(i));
        array = match parent.nulls() {
            None => child,
            Some(nulls) => {
                let merged = NullBuffer::union(Some(nulls), child.nulls());
                make_array(
                    child
                        .to_data()
                        .into_builder()
                        .nulls(merged)
                        .build()
                        .expect("same length, more nulls"),
                )
            }
        };
    }
    array
}

/// What alerts of one batch are rendered from (built only when some rule matched).
struct Render<'a> {
    view: &'a RecordBatch,
    names: Vec<String>,
    formatters: Vec<Option<ArrayFormatter<'a>>>,
    /// Per view field: its column in `view` (meaningful where it has a formatter).
    columns: Vec<usize>,
    /// Per view field: pseudonymise (or drop) its values.
    privacy: Vec<Option<PrivacyAction>>,
    entity: Vec<(Option<ArrayFormatter<'a>>, Option<PrivacyAction>)>,
    times: Vec<Option<i64>>,
    ctx: &'a EvalContext,
}

impl<'a> Render<'a> {
    fn new(
        sp: &StreamPlan,
        batch: &'a RecordBatch,
        view: &'a RecordBatch,
        ctx: &'a EvalContext,
    ) -> Result<Render<'a>, String> {
        let options = FormatOptions::default();
        let (_, resolved) = sp.resolved.as_ref().expect("view() resolved it");
        let mut names = Vec::with_capacity(sp.fields.len());
        let mut formatters = Vec::with_capacity(sp.fields.len());
        let mut privacy = Vec::with_capacity(sp.fields.len());
        let mut col = 0;
        let mut columns = Vec::with_capacity(sp.fields.len());
        for ((name, path), at) in sp.fields.iter().zip(&resolved.fields) {
            names.push(name.clone());
            columns.push(col);
            privacy.push(sp.privacy.get(path).copied());
            if at.is_some() {
                formatters.push(Some(
                    ArrayFormatter::try_new(view.column(col).as_ref(), &options)
                        .map_err(|e| e.to_string())?,
                ));
                col += 1;
            } else {
                formatters.push(None);
            }
        }
        let entity = sp
            .entity
            .iter()
            .map(|name| {
                let f = batch
                    .column_by_name(name)
                    .and_then(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok());
                (f, sp.privacy.get(name).copied())
            })
            .collect();
        let times = batch
            .column_by_name(&sp.time)
            .map(|c| timestamp_millis(c.as_ref()))
            .unwrap_or_else(|| vec![None; batch.num_rows()]);
        Ok(Render {
            view,
            names,
            formatters,
            columns,
            privacy,
            entity,
            times,
            ctx,
        })
    }

    fn time(&self, row: usize) -> Option<i64> {
        self.times.get(row).copied().flatten()
    }

    fn entity(&self, row: usize) -> String {
        let mut parts = Vec::with_capacity(self.entity.len());
        for (f, action) in &self.entity {
            let value = f
                .as_ref()
                .map(|f| f.value(row).to_string())
                .unwrap_or_default();
            parts.push(match action {
                Some(PrivacyAction::Pseudonymise) if !value.is_empty() => {
                    self.ctx.pseudonymiser.pseudonym(&value)
                }
                Some(PrivacyAction::Drop) => "redacted".to_string(),
                _ if value.is_empty() => "-".to_string(),
                _ => value,
            });
        }
        parts.join("/")
    }

    /// The fields `shown` of `row` as one JSON object (nulls and absent fields left out).
    fn object(&self, shown: &[usize], row: usize) -> String {
        let mut object = serde_json::Map::new();
        for &i in shown {
            let Some(f) = &self.formatters[i] else {
                continue;
            };
            let col = self.view.column(self.columns[i]);
            if col.is_null(row) {
                continue;
            }
            let text = f.value(row).to_string();
            let value = match self.privacy[i] {
                Some(PrivacyAction::Drop) => continue,
                Some(PrivacyAction::Pseudonymise) => {
                    serde_json::Value::String(self.ctx.pseudonymiser.pseudonym(&text))
                }
                None => match col.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        serde_json::Value::String(text)
                    }
                    _ => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                },
            };
            object.insert(self.names[i].clone(), value);
        }
        serde_json::to_string(&object).expect("a map serializes")
    }
}

/// The key prefix of a correlation's checkpointed state: its id (length-prefixed) and the
/// digest of its rule and the rules it reads, so that state outlives restarts and reloads of
/// the same correlation and never feeds a changed one.
fn correlation_prefix(id: &str, fingerprint: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
}

/// Resolves the correlation rules against the loaded detection rules: references by id or
/// name, `group-by` and value fields through `aliases` (added to the views of the streams that
/// feed them), and builds the [`CorrelationSet`]. A correlation with a problem is an error
/// entry; the others load.
#[allow(clippy::too_many_arguments)]
fn link_correlations(
    config: &Config,
    correlations: &[(CorrelationRule, PathBuf)],
    names: &[Option<String>],
    digests: &[u64],
    rule_streams: &[Vec<usize>],
    rules: &mut Vec<RuleMeta>,
    builders: &mut [Option<StreamBuilder>],
    errors: &mut Vec<RuleError>,
    warnings: &mut Vec<RuleError>,
    summary: &mut LoadSummary,
) -> Option<Correlations> {
    if correlations.is_empty() {
        return None;
    }
    let base_rules = rules.len();
    let find_base = |reference: &str| {
        (0..base_rules)
            .find(|&i| rules[i].id == reference || names[i].as_deref() == Some(reference))
    };
    let correlation_name = |c: &CorrelationRule| c.meta.id.clone().or_else(|| c.meta.name.clone());
    let find_correlation = |reference: &str| {
        correlations.iter().position(|(c, _)| {
            c.meta.id.as_deref() == Some(reference) || c.meta.name.as_deref() == Some(reference)
        })
    };
    // Resolve each correlation's sources; a correlation whose references do not resolve is
    // left out, and so are those referring to it.
    let mut sources: Vec<Option<Vec<Source>>> = Vec::with_capacity(correlations.len());
    for (c, file) in correlations {
        let mut resolved = Vec::new();
        let mut ok = true;
        for r in &c.correlation.rules {
            if let Some(i) = find_base(&r.reference) {
                resolved.push(Source::Rule(i));
            } else if let Some(j) = find_correlation(&r.reference) {
                resolved.push(Source::Correlation(j));
            } else {
                ok = false;
                warnings.push(RuleError {
                    file: file.clone(),
                    line: r.pos.line,
                    column: r.pos.column,
                    message: format!(
                        "never fires: the correlation refers to `{}`, which is no loaded rule's \
                         id or name (add the rule, or check that a configured stream feeds it)",
                        r.reference
                    ),
                });
            }
        }
        sources.push(ok.then_some(resolved));
    }
    // Drop correlations that refer to dropped ones, until stable.
    loop {
        let mut changed = false;
        for i in 0..sources.len() {
            let broken = sources[i].as_ref().is_some_and(|srcs| {
                srcs.iter()
                    .any(|s| matches!(s, Source::Correlation(j) if sources[*j].is_none()))
            });
            if broken {
                sources[i] = None;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Renumber the kept correlations.
    let kept: Vec<usize> = (0..correlations.len())
        .filter(|&i| sources[i].is_some())
        .collect();
    let new_index = |j: usize| kept.iter().position(|&k| k == j).expect("kept");
    let mut specs = Vec::with_capacity(kept.len());
    let mut private_groups = Vec::with_capacity(kept.len());
    for &i in &kept {
        let (c, _) = &correlations[i];
        let corr = &c.correlation;
        let srcs: Vec<Source> = sources[i]
            .as_ref()
            .expect("kept")
            .iter()
            .map(|s| match *s {
                Source::Correlation(j) => Source::Correlation(new_index(j)),
                other => other,
            })
            .collect();
        // The field a source reads for `name`: its alias for that rule, else `name` itself.
        let field_for = |name: &str, source: &Source| -> String {
            let Some(by_rule) = corr.aliases.get(name) else {
                return name.to_string();
            };
            let keys: Vec<String> = match *source {
                Source::Rule(r) => [Some(rules[r].id.clone()), names[r].clone()]
                    .into_iter()
                    .flatten()
                    .collect(),
                Source::Correlation(j) => correlation_name(&correlations[kept[j]].0)
                    .into_iter()
                    .collect(),
            };
            keys.iter()
                .find_map(|k| by_rule.get(k))
                .cloned()
                .unwrap_or_else(|| name.to_string())
        };
        let value_field = corr
            .condition
            .as_ref()
            .and_then(|c| c.field.first().cloned());
        let mut group_columns = Vec::with_capacity(srcs.len());
        let mut value_columns = Vec::with_capacity(srcs.len());
        let mut private = vec![false; corr.group_by.len()];
        for source in &srcs {
            let columns: Vec<String> = corr.group_by.iter().map(|g| field_for(g, source)).collect();
            let value = value_field.as_ref().map(|f| field_for(f, source));
            if let Source::Rule(r) = source {
                for &stream in &rule_streams[*r] {
                    let s = &config.streams[stream];
                    let b = builders[stream]
                        .as_mut()
                        .expect("the rule's stream has a plan");
                    let mut shown = Vec::new();
                    for (g, column) in columns.iter().enumerate() {
                        shown.push(b.field(column));
                        if s.privacy.contains_key(&b.path(column)) {
                            private[g] = true;
                        }
                    }
                    if let Some(v) = &value {
                        shown.push(b.field(v));
                    }
                    for f in shown {
                        if !b.correlation_evidence.contains(&f) {
                            b.correlation_evidence.push(f);
                        }
                    }
                    // Show what the rule shows when its event feeds a correlation.
                    let k = b.rules.iter().position(|&x| x == *r).expect("registered");
                    for &f in &b.evidence[k].clone() {
                        if !b.correlation_evidence.contains(&f) {
                            b.correlation_evidence.push(f);
                        }
                    }
                }
            }
            group_columns.push(columns);
            value_columns.push(value);
        }
        specs.push(CorrelationSpec {
            kind: corr.kind,
            sources: srcs,
            group_by: corr.group_by.clone(),
            group_columns,
            value_columns,
            timespan_ms: i64::try_from(corr.timespan.duration.as_millis()).unwrap_or(i64::MAX),
            condition: corr.condition.clone(),
            generate: corr.generate,
        });
        private_groups.push(private);
    }
    let limits = Limits {
        max_groups_per_correlation: config.sigma.correlation.max_groups,
        max_events_per_group: config.sigma.correlation.max_events_per_group,
        max_evidence: config.sigma.correlation.max_evidence,
    };
    // Valid correlations that cannot fire here: loaded (and warned about), not failed.
    summary.ok += correlations.len() - kept.len();
    let set = match CorrelationSet::new(specs, limits) {
        Ok(set) => set,
        Err(e) => {
            let (file, pos) = match &e {
                CorrelationSetError::Invalid { correlation, .. } => {
                    let (c, f) = &correlations[kept[*correlation]];
                    (f.clone(), c.meta.pos)
                }
                CorrelationSetError::Cycle { path } => {
                    let (c, f) = &correlations[kept[path[0]]];
                    (f.clone(), c.meta.pos)
                }
                CorrelationSetError::Limits(_) => (PathBuf::from(&config.origin), Pos::default()),
            };
            summary.failed += kept.len();
            errors.push(RuleError {
                file,
                line: pos.line,
                column: pos.column,
                message: e.to_string(),
            });
            return None;
        }
    };
    let mut metas = Vec::with_capacity(kept.len());
    let fingerprints = kept
        .iter()
        .map(|&i| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            fn feed(
                h: &mut impl Hasher,
                i: usize,
                correlations: &[(CorrelationRule, PathBuf)],
                sources: &[Option<Vec<Source>>],
                digests: &[u64],
            ) {
                format!("{:?}", correlations[i].0.correlation).hash(h);
                for s in sources[i].as_deref().unwrap_or_default() {
                    match *s {
                        Source::Rule(r) => digests[r].hash(h),
                        Source::Correlation(j) => feed(h, j, correlations, sources, digests),
                    }
                }
            }
            feed(&mut h, i, correlations, &sources, digests);
            h.finish()
        })
        .collect();
    for (n, &i) in kept.iter().enumerate() {
        let (c, file) = &correlations[i];
        let mut streams: Vec<usize> = Vec::new();
        collect_streams(set_sources(&set, n), &set, rule_streams, &mut streams);
        summary.ok += 1;
        metas.push(rules.len());
        rules.push(rule_meta(
            &c.meta,
            "sigma-correlation",
            file,
            config,
            streams,
        ));
    }
    Some(Correlations {
        set,
        metas,
        private_groups,
        fingerprints,
    })
}

fn set_sources(set: &CorrelationSet, correlation: usize) -> &[Source] {
    set.sources(correlation)
}

/// The streams whose rules feed `sources`, through inner correlations too.
fn collect_streams(
    sources: &[Source],
    set: &CorrelationSet,
    rule_streams: &[Vec<usize>],
    out: &mut Vec<usize>,
) {
    for s in sources {
        match *s {
            Source::Rule(r) => {
                for &st in &rule_streams[r] {
                    if !out.contains(&st) {
                        out.push(st);
                    }
                }
            }
            Source::Correlation(j) => collect_streams(set.sources(j), set, rule_streams, out),
        }
    }
}

/// The streams a rule's log source maps to, with the matching entries of each: the most
/// specific entries only (an entry naming product and category beats one naming product).
fn streams_for<'c>(
    config: &'c Config,
    logsource: &LogSource,
) -> Vec<(usize, Vec<&'c LogsourceMapping>)> {
    let matching: Vec<&LogsourceMapping> = config
        .sigma
        .logsources
        .iter()
        .filter(|m| covers([&m.product, &m.category, &m.service], logsource))
        .collect();
    let Some(best) = matching.iter().map(|m| m.specificity()).max() else {
        return Vec::new();
    };
    let mut out: Vec<(usize, Vec<&LogsourceMapping>)> = Vec::new();
    for m in matching.into_iter().filter(|m| m.specificity() == best) {
        let s = config
            .stream_index(m.stream.get_ref())
            .expect("config validated the stream");
        match out.iter_mut().find(|(i, _)| *i == s) {
            Some((_, entries)) => entries.push(m),
            None => out.push((s, vec![m])),
        }
    }
    out
}

fn describe(logsource: &LogSource) -> String {
    let mut parts = Vec::new();
    for (key, value) in [
        ("product", &logsource.product),
        ("category", &logsource.category),
        ("service", &logsource.service),
    ] {
        if let Some(v) = value {
            parts.push(format!("{key}: {v}"));
        }
    }
    if parts.is_empty() {
        "empty".into()
    } else {
        parts.join(", ")
    }
}

/// True when a log-source selector (product, category, service; `None` is any) covers a
/// rule's log source: every key it names equals the rule's, ignoring case. Used for
/// `[[sigma.logsources]]` entries and for global filters alike.
fn covers(keys: [&Option<String>; 3], rule: &LogSource) -> bool {
    let wanted = [&rule.product, &rule.category, &rule.service];
    keys.iter().zip(wanted).all(|(key, value)| match key {
        None => true,
        Some(k) => value.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(k)),
    })
}

/// `rule` with a global filter applied: the filter's selections added (renamed apart) and
/// every condition becomes `condition and not (filter condition)`.
fn with_filter(rule: &SigmaRule, filter: &FilterRule) -> SigmaRule {
    let mut rule = rule.clone();
    let offset = rule.detection.selections.len();
    let tag = filter
        .meta
        .id
        .clone()
        .unwrap_or_else(|| filter.meta.title.clone());
    for (name, selection) in &filter.detection.selections {
        rule.detection
            .selections
            .insert(format!("$filter {tag}: {name}"), selection.clone());
    }
    let conditions: Vec<Condition> = filter
        .detection
        .condition
        .iter()
        .map(|c| shift(c, offset))
        .collect();
    let excluded = match conditions.len() {
        1 => conditions.into_iter().next().expect("one"),
        _ => Condition::Or(conditions),
    };
    for condition in &mut rule.detection.condition {
        let mut children = match std::mem::replace(condition, Condition::And(Vec::new())) {
            Condition::And(children) => children,
            other => vec![other],
        };
        children.push(Condition::Not(Box::new(excluded.clone())));
        *condition = Condition::And(children);
    }
    rule
}

/// `c` with every selection index moved by `offset`.
fn shift(c: &Condition, offset: usize) -> Condition {
    match c {
        Condition::Selection(i) => Condition::Selection(i + offset),
        Condition::Of {
            quantifier,
            target,
            selections,
        } => Condition::Of {
            quantifier: *quantifier,
            target: target.clone(),
            selections: selections.iter().map(|i| i + offset).collect(),
        },
        Condition::Not(inner) => Condition::Not(Box::new(shift(inner, offset))),
        Condition::And(cs) => Condition::And(cs.iter().map(|c| shift(c, offset)).collect()),
        Condition::Or(cs) => Condition::Or(cs.iter().map(|c| shift(c, offset)).collect()),
    }
}

/// `rule` as it runs on a stream fed by `entries`: fields the entries rename (their `fields`)
/// replaced by the path they name (returned, so the view reads them as paths). Their
/// conditions become the rule's guard (see [`StreamBuilder::guard`]).
fn specialise(rule: &SigmaRule, entries: &[&LogsourceMapping]) -> (SigmaRule, Vec<String>) {
    let mut renamed = Vec::new();
    let rename = |field: &mut String, renamed: &mut Vec<String>| {
        if let Some(path) = entries.iter().find_map(|e| e.fields.get(field.as_str())) {
            *field = path.clone();
            if !renamed.contains(path) {
                renamed.push(path.clone());
            }
        }
    };
    let mut rule = rule.clone();
    if entries.iter().all(|e| e.fields.is_empty()) {
        return (rule, renamed);
    }
    for selection in rule.detection.selections.values_mut() {
        let matchers: Vec<&mut FieldMatcher> = match &mut selection.kind {
            SelectionKind::All(ms) => ms.iter_mut().collect(),
            SelectionKind::Any(groups) => groups.iter_mut().flatten().collect(),
            SelectionKind::Keywords(m) => vec![m],
        };
        for m in matchers {
            if let Some(f) = &mut m.field {
                rename(f, &mut renamed);
            }
            for v in m.values.iter_mut().flat_map(|v| &mut v.variants) {
                if let Value::FieldRef { field, .. } = v {
                    rename(field, &mut renamed);
                }
            }
        }
    }
    for f in &mut rule.fields {
        rename(f, &mut renamed);
    }
    (rule, renamed)
}

/// The guard of a rule fed by `entries`: the OR over the entries of the AND of each entry's
/// `field: values`; `None` when an entry has no conditions (it admits every event).
fn guard_rule(entries: &[&LogsourceMapping]) -> Option<SigmaRule> {
    if entries.iter().any(|e| e.conditions.is_empty()) {
        return None;
    }
    let pos = Pos::default();
    let groups: Vec<Vec<FieldMatcher>> = entries
        .iter()
        .map(|e| {
            e.conditions
                .iter()
                .map(|(field, values)| FieldMatcher {
                    field: Some(field.clone()),
                    modifiers: Vec::new(),
                    time_part: None,
                    link: Link::Any,
                    negated: false,
                    values: values
                        .values()
                        .into_iter()
                        .map(|text| MatchValue {
                            variants: vec![literal(text)],
                            pos,
                        })
                        .collect(),
                    pos,
                })
                .collect()
        })
        .collect();
    let mut selections = indexmap::IndexMap::new();
    selections.insert(
        LOGSOURCE_SELECTION.to_string(),
        Selection {
            kind: SelectionKind::Any(groups),
            pos,
        },
    );
    Some(SigmaRule {
        meta: Default::default(),
        logsource: LogSource::default(),
        detection: super::rule::Detection {
            selections,
            condition: vec![Condition::Selection(0)],
            timeframe: None,
            pos,
        },
        fields: Vec::new(),
    })
}

/// An exact, case-insensitive match of `text` (an integer also matches numerically).
fn literal(text: String) -> Value {
    match text.parse::<i64>() {
        Ok(n) => Value::Number {
            value: Number::Int(n),
            text,
        },
        Err(_) => Value::Pattern(Pattern {
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![Part::Literal(text)]
            },
            case_sensitive: false,
        }),
    }
}

/// The fields a rule's detection reads (field references included), in first-use order.
pub fn fields_read(rule: &SigmaRule) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |f: &str| {
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    };
    for selection in rule.detection.selections.values() {
        let matchers: Vec<&FieldMatcher> = match &selection.kind {
            SelectionKind::All(ms) => ms.iter().collect(),
            SelectionKind::Any(groups) => groups.iter().flatten().collect(),
            SelectionKind::Keywords(m) => vec![m],
        };
        for m in matchers {
            if let Some(f) = &m.field {
                add(f);
            }
            for v in m.values.iter().flat_map(|v| &v.variants) {
                if let Value::FieldRef { field, .. } = v {
                    add(field);
                }
            }
        }
    }
    out
}

fn searches_keywords(rule: &SigmaRule) -> bool {
    rule.detection.selections.values().any(|s| match &s.kind {
        SelectionKind::Keywords(_) => true,
        SelectionKind::Any(groups) => groups.iter().flatten().any(|m| m.field.is_none()),
        SelectionKind::All(ms) => ms.iter().any(|m| m.field.is_none()),
    })
}

/// The description of a loaded rule or correlation, from its metadata. `streams` are the
/// streams it reads (config indices).
fn rule_meta(
    m: &Metadata,
    kind: &'static str,
    file: &Path,
    config: &Config,
    streams: impl IntoIterator<Item = usize>,
) -> RuleMeta {
    let id = m.id.clone().or_else(|| m.name.clone()).unwrap_or_else(|| {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("rule");
        format!("{stem}:{}", m.pos.line)
    });
    RuleMeta {
        id,
        title: m.title.clone(),
        kind,
        severity: severity(m.level),
        description: m.description.clone().unwrap_or_else(|| m.title.clone()),
        stream: streams
            .into_iter()
            .map(|s| config.streams[s].name())
            .collect::<Vec<_>>()
            .join(","),
        tags: m.tags.clone(),
        status: m.status.map(|s| format!("{s:?}").to_ascii_lowercase()),
        falsepositives: m.falsepositives.clone(),
        file: file.to_path_buf(),
    }
}

/// Sigma's level as an alert severity; a rule without a level alerts as `medium`.
pub fn severity(level: Option<Level>) -> Severity {
    match level {
        Some(Level::Informational) => Severity::Info,
        Some(Level::Low) => Severity::Low,
        Some(Level::Medium) | None => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

fn rule_error(e: SigmaError) -> RuleError {
    let text = e.to_string();
    let prefix = format!("{}:{}:{}: ", e.file.display(), e.line, e.column);
    RuleError {
        message: text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
        file: e.file,
        line: e.line,
        column: e.column,
    }
}
