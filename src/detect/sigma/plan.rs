//! A set of Sigma rules compiled into one plan over Arrow columns: each column scanned once for
//! every rule, the per-value bitmaps combined per rule with Arrow's bitwise kernels.
//!
//! In: [`SigmaRule`]s, added one by one to a [`PlanBuilder`] (a rule with a value the
//! evaluator does not support is refused whole, with where the value was written), and the
//! values of the `%placeholders%` that `expand` refers to
//! ([`PlanBuilder::with_placeholders`]). Per batch, a [`RecordBatch`].
//! Out: one [`BooleanBuffer`] per rule, in the order added, bit `i` set when row `i` satisfies
//! the rule's condition.
//!
//! How: every `field: values` entry of every rule gets one slot per written value in the
//! [`ColumnMatcher`] of its field (the value's variants share the slot, ORed), so a column is
//! read once whatever the number of rules testing it. Then, per rule: a matcher is the AND
//! (`all`) or OR of its values' slots, negated under `neq`; a selection map is the AND of its
//! matchers, a list of maps the OR of the maps; the condition tree combines selections with
//! `&`, `|`, `!`; several conditions are ORed.
//!
//! Three kinds of values need more than one column's matcher, and are prepared once, when
//! rules are added:
//!
//! - `expand`: each `%name%` is replaced by each value configured for `name` (values are
//!   Sigma patterns: `*` and `?` are wildcards), under the value's own modifiers (`windash`,
//!   the UTF-16 encodings); several placeholders give the cross product, at most
//!   [`MAX_PLACEHOLDER_VARIANTS`] patterns per written value. The patterns share the value's
//!   slot. A placeholder without configured values refuses the rule, as the specification
//!   asks of a tool that cannot resolve it.
//! - `fieldref`: a slot of its own per pair of fields (shared by every rule comparing the
//!   same two), evaluated per batch by [`compare_columns`]: equal values, case-insensitively
//!   unless `cased`; a null or absent field on either side is not equal.
//! - Time modifiers (`minute`, `hour`, `day`, `week`, `month`, `year`): a column matcher on
//!   the time part of the field's dates, in UTC, fed per batch by [`time_parts`]; `week` is
//!   the ISO 8601 week (1-53). A value that is not a date is null there.
//!
//! Nulls: a null or absent field matches only `null` and `exists: false`, so a negation (`neq`,
//! `not`) holds on it: `User|neq: admin` selects an event without a user.
//!
//! Fields are looked up by exact top-level column name; a field missing from the batch is an
//! absent field (it matches only `null` and `exists: false`). Keywords (selections without a
//! field) search every string column of the batch (`Utf8`, `LargeUtf8`, `Utf8View`): a keyword
//! matches a row when any of those columns contains it. A batch with a `_keywords` column (the
//! projecting decoder's: every string and number of the event, one per line) is searched in
//! that column alone, which holds every other column's value, unless a keyword is a regex
//! (whose `^` and `$` anchor at a value's ends). Keywords are grouped by the guard of the rules
//! searching them, and a row is searched only for the groups whose guard selects it.
//!
//! Combining: a rule whose guard selects no row of the batch is not combined at all; an AND
//! stops at its first operand without rows (the filters of a rule whose selection matched
//! nothing are never computed), and the many slots without rows are skipped without being
//! read. [`SigmaPlan::evaluate_profiled`] times every column and step ([`PlanProfile`]).
//!
//! Guarantees: everything is compiled by [`PlanBuilder::build`]; evaluating a batch reads each
//! column, compares each pair of fields and extracts each time part once, then only combines
//! bitmaps, without allocating per row.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer};
use datafusion::arrow::datatypes::DataType;

use super::condition::{Condition, Quantifier};
use super::error::{ErrorKind, SigmaError};
use super::matcher::{
    ColumnMatcher, ColumnMatcherBuilder, EvalError, SlotBits, Unsupported, compare_columns,
    time_parts,
};
use super::modifier::{Modifier, placeholder_value};
use super::rule::{SelectionKind, SigmaRule};
use super::value::{FieldMatcher, Link, Part, Pattern, TimePart, Value};
use super::yaml::Pos;
use crate::decode::project::KEYWORDS_COLUMN;

/// The most patterns one written value may become once its placeholders are expanded: beyond,
/// the rule is refused rather than the column's automaton flooded.
pub const MAX_PLACEHOLDER_VARIANTS: usize = 4096;

/// A rule refused by [`PlanBuilder::add_rule`]: which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {source}", pos.line, pos.column)]
pub struct PlanError {
    /// Where the unsupported value (or key) was written.
    pub pos: Pos,
    /// What is not supported.
    #[source]
    pub source: Unsupported,
}

impl PlanError {
    /// The error as the rule parser reports them, located in `file`.
    pub fn into_sigma_error(self, file: &Path) -> SigmaError {
        SigmaError {
            file: file.to_path_buf(),
            line: self.pos.line,
            column: self.pos.column,
            kind: ErrorKind::Unsupported {
                feature: self.source.feature.to_string(),
            },
            message: self.source.message,
        }
    }
}

/// The rule set as a whole exceeds what one column matcher holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {source}", column.as_deref().unwrap_or("keywords"))]
pub struct BuildError {
    /// The column, or `None` for the keywords.
    pub column: Option<String>,
    /// What overflowed.
    #[source]
    pub source: Unsupported,
}

/// Where a matcher's slots live.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The column matcher at this index.
    Column(usize),
    /// The keyword matcher of this group (see [`SigmaPlan::keywords`]).
    Keywords(usize),
    /// The field comparisons: a slot is an index into the plan's [`FieldPair`]s.
    FieldRefs,
}

/// What a column matcher reads: a column's values, or one time part of its dates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ColumnKey {
    /// The column, by exact name.
    name: String,
    /// For time modifiers: the part of the column's dates matched instead of its values.
    part: Option<TimePart>,
}

/// `field|fieldref: other`: two columns compared row by row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FieldPair {
    field: String,
    other: String,
    /// `fieldref|cased`.
    case_sensitive: bool,
}

/// One `field|modifiers: values` entry, compiled.
#[derive(Debug)]
struct MatcherPlan {
    source: Source,
    /// One slot per written value.
    slots: Vec<usize>,
    link: Link,
    negated: bool,
}

/// A rule: its selections as OR-of-AND groups of matchers, and its conditions.
#[derive(Debug)]
struct RulePlan {
    selections: Vec<Vec<Vec<MatcherPlan>>>,
    conditions: Vec<Condition>,
}

/// One entry of a rule, checked and ready to register: [`PlanBuilder::add_rule`] prepares the
/// whole rule before it registers anything.
struct Lowered<'r> {
    matcher: &'r FieldMatcher,
    values: LoweredValues<'r>,
}

enum LoweredValues<'r> {
    /// Per written value, what its slot matches: its variants, placeholders expanded.
    Values(Vec<Vec<Cow<'r, Value>>>),
    /// `fieldref`: per written value, the two fields it compares.
    FieldRefs(Vec<FieldPair>),
}

/// Collects rules; [`PlanBuilder::build`] compiles them.
#[derive(Debug, Default)]
pub struct PlanBuilder {
    /// Column (and time part) -> index into `columns`.
    column_ids: HashMap<ColumnKey, usize>,
    /// Per column matcher: what it reads, its builder, its next free slot.
    columns: Vec<(ColumnKey, ColumnMatcherBuilder, usize)>,
    /// Keyword matchers, one per guard of the rules that search keywords (`None`: rules
    /// without a guard, and guards): its builder and its next free slot.
    keywords: Vec<(Option<usize>, ColumnMatcherBuilder, usize)>,
    /// Guard -> its index in `keywords`.
    keyword_ids: HashMap<Option<usize>, usize>,
    /// Whether every keyword is a pattern (a substring search), which the `_keywords` column
    /// alone answers; a regex keyword (`^` anchors at a value's start) needs every column.
    keywords_are_patterns: bool,
    /// Every pair of fields some `fieldref` compares, once; the slot of such a value.
    pairs: Vec<FieldPair>,
    /// Pair -> its index in `pairs`.
    pair_ids: HashMap<FieldPair, usize>,
    /// Placeholder name (without the `%`) -> its configured values, for `expand`.
    placeholders: HashMap<String, Vec<String>>,
    rules: Vec<RulePlan>,
    /// Per rule: the guard it runs under, if any.
    rule_guards: Vec<Option<usize>>,
    /// Guards: conditions (a log source's) that whole rules are ANDed with.
    guards: Vec<RulePlan>,
    /// Per column: the guards of the rules reading it (`None`: some reader is unguarded, or
    /// a guard reads it, so every row is scanned).
    column_guards: Vec<Option<BTreeSet<usize>>>,
    /// What is being registered: a guard, or a rule under this guard.
    registering: Option<Option<usize>>,
}

impl PlanBuilder {
    /// An empty plan.
    pub fn new() -> PlanBuilder {
        PlanBuilder {
            keywords_are_patterns: true,
            ..PlanBuilder::default()
        }
    }

    /// Sets the values of the `%placeholders%` that `expand` refers to: name (without the
    /// `%`, case-sensitive) -> its values, each a Sigma pattern (`srv-*`; `\*` for a star).
    /// Applies to the rules added afterwards.
    pub fn with_placeholders(mut self, placeholders: HashMap<String, Vec<String>>) -> PlanBuilder {
        self.placeholders = placeholders;
        self
    }

    /// Adds `rule`; returns its index in [`SigmaPlan::evaluate`]'s result. A rule that cannot
    /// be evaluated is refused whole and leaves the plan unchanged.
    pub fn add_rule(&mut self, rule: &SigmaRule) -> Result<usize, PlanError> {
        self.add_guarded_rule(rule, None)
    }

    /// Adds a guard: a condition (typically a log source's: event id, channel) that rules
    /// added with it are ANDed with. Its columns are scanned on every row; the columns that
    /// only guarded rules read are scanned only on the rows some of their guards select, so
    /// a rule never costs anything on the events outside its log source.
    pub fn add_guard(&mut self, guard: &SigmaRule) -> Result<usize, PlanError> {
        self.registering = Some(None);
        let plan = self.prepare(guard);
        self.registering = None;
        self.guards.push(plan?);
        Ok(self.guards.len() - 1)
    }

    /// Adds `rule` under guard `guard` (from [`PlanBuilder::add_guard`]): its bitmap is its
    /// condition AND the guard's.
    pub fn add_guarded_rule(
        &mut self,
        rule: &SigmaRule,
        guard: Option<usize>,
    ) -> Result<usize, PlanError> {
        assert!(guard.is_none_or(|g| g < self.guards.len()), "unknown guard");
        self.registering = Some(guard);
        let plan = self.prepare(rule);
        self.registering = None;
        self.rules.push(plan?);
        self.rule_guards.push(guard);
        Ok(self.rules.len() - 1)
    }

    /// Lowers and registers every matcher of `rule` (nothing registered if it is refused).
    fn prepare(&mut self, rule: &SigmaRule) -> Result<RulePlan, PlanError> {
        // Prepare everything first, so that a refused rule registers nothing.
        let mut lowered = Vec::with_capacity(rule.detection.selections.len());
        for selection in rule.detection.selections.values() {
            let groups: Vec<&[FieldMatcher]> = match &selection.kind {
                SelectionKind::All(ms) => vec![ms],
                SelectionKind::Any(groups) => groups.iter().map(Vec::as_slice).collect(),
                SelectionKind::Keywords(m) => vec![std::slice::from_ref(m)],
            };
            let groups = groups
                .into_iter()
                .map(|ms| ms.iter().map(|m| self.lower(m)).collect())
                .collect::<Result<Vec<Vec<Lowered>>, PlanError>>()?;
            lowered.push(groups);
        }
        let selections = lowered
            .into_iter()
            .map(|groups| {
                groups
                    .into_iter()
                    .map(|ms| ms.into_iter().map(|m| self.register(m)).collect())
                    .collect()
            })
            .collect();
        Ok(RulePlan {
            selections,
            conditions: rule.detection.condition.clone(),
        })
    }

    /// Records that the matcher being registered reads `guards` (a column's or the
    /// keywords' guard set).
    fn note_reader(registering: Option<Option<usize>>, guards: &mut Option<BTreeSet<usize>>) {
        match registering {
            // A guard or an unguarded rule: every row.
            Some(None) | None => *guards = None,
            Some(Some(g)) => {
                if let Some(set) = guards {
                    set.insert(g);
                }
            }
        }
    }

    /// Checks `m` and prepares its values: placeholders expanded, field references paired.
    fn lower<'r>(&self, m: &'r FieldMatcher) -> Result<Lowered<'r>, PlanError> {
        let is_ref = |v: &Value| matches!(v, Value::FieldRef { .. });
        if m.values.iter().any(|v| v.variants.iter().any(is_ref)) {
            let mut pairs = Vec::with_capacity(m.values.len());
            for v in &m.values {
                // The parser makes `fieldref` the kind of the whole key, one variant per value,
                // without time modifiers; anything else is a model this plan does not know.
                match (&m.field, m.time_part, v.variants.as_slice()) {
                    (
                        Some(field),
                        None,
                        [
                            Value::FieldRef {
                                field: other,
                                case_sensitive,
                            },
                        ],
                    ) => pairs.push(FieldPair {
                        field: field.clone(),
                        other: other.clone(),
                        case_sensitive: *case_sensitive,
                    }),
                    _ => {
                        return Err(PlanError {
                            pos: v.pos,
                            source: Unsupported {
                                feature: "fieldref",
                                message: "a field reference compares one field with another, \
                                          alone in its value and without a time modifier"
                                    .to_string(),
                            },
                        });
                    }
                }
            }
            return Ok(Lowered {
                matcher: m,
                values: LoweredValues::FieldRefs(pairs),
            });
        }
        let mut values = Vec::with_capacity(m.values.len());
        for v in &m.values {
            let at = |source| PlanError { pos: v.pos, source };
            let mut variants = Vec::with_capacity(v.variants.len());
            let mut expanded = HashSet::new();
            for variant in &v.variants {
                match variant {
                    Value::Pattern(p) if p.has_placeholders() => {
                        for e in self.expand(p, &m.modifiers).map_err(at)? {
                            if expanded.insert(e.clone()) {
                                variants.push(Cow::Owned(Value::Pattern(e)));
                            }
                        }
                        if expanded.len() > MAX_PLACEHOLDER_VARIANTS {
                            return Err(at(too_many_variants(p)));
                        }
                    }
                    other => {
                        ColumnMatcherBuilder::check(other).map_err(at)?;
                        variants.push(Cow::Borrowed(other));
                    }
                }
            }
            values.push(variants);
        }
        Ok(Lowered {
            matcher: m,
            values: LoweredValues::Values(values),
        })
    }

    /// `p` with each `%placeholder%` replaced by each of its configured values (the cross
    /// product when there are several), as written under the value's `modifiers`.
    fn expand(&self, p: &Pattern, modifiers: &[Modifier]) -> Result<Vec<Pattern>, Unsupported> {
        let mut partial: Vec<Vec<Part>> = vec![Vec::new()];
        for part in &p.parts {
            let Part::Placeholder(name) = part else {
                for w in &mut partial {
                    w.push(part.clone());
                }
                continue;
            };
            let configured = match self.placeholders.get(name) {
                Some(values) if !values.is_empty() => values,
                Some(_) => {
                    return Err(Unsupported {
                        feature: "expand",
                        message: format!(
                            "placeholder `%{name}%` is configured with no values, and a value \
                             must match something: give it at least one under \
                             `[sigma.placeholders]`"
                        ),
                    });
                }
                None => {
                    return Err(Unsupported {
                        feature: "expand",
                        message: format!(
                            "placeholder `%{name}%` has no configured values: list them under \
                             `[sigma.placeholders]` in the configuration, e.g. \
                             `{name} = [\"value\", \"prefix*\"]` (Sigma patterns: `*` and `?` \
                             are wildcards)"
                        ),
                    });
                }
            };
            let mut choices: Vec<Vec<Part>> = Vec::with_capacity(configured.len());
            for text in configured {
                let variants = placeholder_value(text, modifiers).map_err(|e| Unsupported {
                    feature: "expand",
                    message: format!("value `{text}` of placeholder `%{name}%`: {e}"),
                })?;
                for v in variants {
                    if !choices.contains(&v) {
                        choices.push(v);
                    }
                }
            }
            if partial.len().saturating_mul(choices.len()) > MAX_PLACEHOLDER_VARIANTS {
                return Err(too_many_variants(p));
            }
            partial = partial
                .iter()
                .flat_map(|w| {
                    choices.iter().map(move |c| {
                        let mut next = w.clone();
                        next.extend(c.iter().cloned());
                        next
                    })
                })
                .collect();
        }
        Ok(partial
            .into_iter()
            .map(|parts| Pattern::normalised(parts, p.case_sensitive))
            .collect())
    }

    /// Registers a prepared entry. Cannot fail: [`PlanBuilder::lower`] checked every value.
    fn register(&mut self, l: Lowered) -> MatcherPlan {
        let m = l.matcher;
        let values = match l.values {
            LoweredValues::FieldRefs(pairs) => {
                let slots = pairs
                    .into_iter()
                    .map(|pair| {
                        *self.pair_ids.entry(pair.clone()).or_insert_with(|| {
                            self.pairs.push(pair);
                            self.pairs.len() - 1
                        })
                    })
                    .collect();
                return MatcherPlan {
                    source: Source::FieldRefs,
                    slots,
                    link: m.link,
                    negated: m.negated,
                };
            }
            LoweredValues::Values(values) => values,
        };
        let mut slots = Vec::with_capacity(values.len());
        let source = match &m.field {
            Some(field) => {
                let key = ColumnKey {
                    name: field.clone(),
                    part: m.time_part,
                };
                let id = match self.column_ids.get(&key) {
                    Some(&id) => id,
                    None => {
                        self.columns
                            .push((key.clone(), ColumnMatcherBuilder::new(), 0));
                        self.column_guards.push(Some(BTreeSet::new()));
                        self.column_ids.insert(key, self.columns.len() - 1);
                        self.columns.len() - 1
                    }
                };
                PlanBuilder::note_reader(self.registering, &mut self.column_guards[id]);
                let (_, builder, next) = &mut self.columns[id];
                for variants in &values {
                    let slot = *next;
                    *next += 1;
                    for variant in variants {
                        builder.add(slot, variant).expect("checked by lower");
                    }
                    slots.push(slot);
                }
                Source::Column(id)
            }
            None => {
                // Keywords are searched per guard: a row is searched for the keywords of the
                // rules whose guard selects it (and of unguarded rules), not for every rule's.
                let guard = self.registering.flatten();
                let id = *self.keyword_ids.entry(guard).or_insert_with(|| {
                    self.keywords.push((guard, ColumnMatcherBuilder::new(), 0));
                    self.keywords.len() - 1
                });
                let (_, builder, next) = &mut self.keywords[id];
                for variants in &values {
                    let slot = *next;
                    *next += 1;
                    for variant in variants {
                        self.keywords_are_patterns &= matches!(variant.as_ref(), Value::Pattern(_));
                        builder
                            .add_keyword(slot, variant)
                            .expect("checked by lower");
                    }
                    slots.push(slot);
                }
                Source::Keywords(id)
            }
        };
        MatcherPlan {
            source,
            slots,
            link: m.link,
            negated: m.negated,
        }
    }

    /// Compiles every column's matcher.
    pub fn build(self) -> Result<SigmaPlan, BuildError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (key, b, _) in self.columns {
            let matcher = b.build().map_err(|source| BuildError {
                column: Some(key.name.clone()),
                source,
            })?;
            columns.push((key, matcher));
        }
        let mut keywords = Vec::with_capacity(self.keywords.len());
        for (guard, b, _) in self.keywords {
            let matcher = b.build().map_err(|source| BuildError {
                column: None,
                source,
            })?;
            keywords.push((guard, matcher));
        }
        Ok(SigmaPlan {
            columns,
            keywords,
            keywords_are_patterns: self.keywords_are_patterns,
            pairs: self.pairs,
            rules: self.rules,
            rule_guards: self.rule_guards,
            guards: self.guards,
            column_guards: self
                .column_guards
                .into_iter()
                .map(|g| g.map(|s| s.into_iter().collect()))
                .collect(),
        })
    }
}

fn too_many_variants(p: &Pattern) -> Unsupported {
    Unsupported {
        feature: "expand",
        message: format!(
            "expanding the placeholders of `{p}` gives more than {MAX_PLACEHOLDER_VARIANTS} \
             patterns: configure fewer values, or use fewer placeholders in one value"
        ),
    }
}

/// Compiled rules over shared column matchers. Immutable: one plan serves every batch.
#[derive(Debug)]
pub struct SigmaPlan {
    columns: Vec<(ColumnKey, ColumnMatcher)>,
    /// Keyword matchers: each searches the rows its guard selects (`None`: every row).
    keywords: Vec<(Option<usize>, ColumnMatcher)>,
    /// Every keyword is a pattern: a batch's `_keywords` column, when it has one, answers them.
    keywords_are_patterns: bool,
    /// The `fieldref` comparisons; the slots of [`Source::FieldRefs`].
    pairs: Vec<FieldPair>,
    rules: Vec<RulePlan>,
    rule_guards: Vec<Option<usize>>,
    guards: Vec<RulePlan>,
    /// Per column: scan only the rows these guards select (`None`: every row).
    column_guards: Vec<Option<Vec<usize>>>,
}

/// Where [`SigmaPlan::evaluate_profiled`] spent its time, summed over the batches profiled:
/// per column matcher (by column name), and the parts that are not one column's — guards
/// `(guards)`, field comparisons `(fieldref)`, keyword search `(keywords)`, combining the
/// bitmaps per rule `(combine per rule)`. For finding what to optimise (`benches/sigma.rs`,
/// `BENCH_PROFILE`), not for production metrics.
#[derive(Debug, Default, Clone)]
pub struct PlanProfile {
    /// Part -> its index in `parts`.
    index: HashMap<String, usize>,
    /// Each part's name and total time, in the order first seen.
    parts: Vec<(String, Duration)>,
}

impl PlanProfile {
    /// Adds the time since `start` to the part `name` names (when profiling at all).
    fn add(profile: &mut Option<&mut PlanProfile>, name: impl FnOnce() -> String, start: Instant) {
        let Some(p) = profile else { return };
        let elapsed = start.elapsed();
        let name = name();
        let i = *p.index.entry(name.clone()).or_insert_with(|| {
            p.parts.push((name, Duration::ZERO));
            p.parts.len() - 1
        });
        p.parts[i].1 += elapsed;
    }

    /// Every part and its total time, the costliest first.
    pub fn parts(&self) -> Vec<(&str, Duration)> {
        let mut out: Vec<(&str, Duration)> =
            self.parts.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.1));
        out
    }
}

/// Where a column the plan reads has a type it cannot read for the values tested on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {source}")]
pub struct PlanEvalError {
    /// The column.
    pub column: String,
    /// Its type.
    #[source]
    pub source: EvalError,
}

impl SigmaPlan {
    /// How many rules the plan evaluates.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// One bitmap per rule: which rows of `batch` each rule's condition (and guard) selects.
    ///
    /// Columns read by guards or unguarded rules are scanned first, on every row; then the
    /// guards are combined; then every other column only on the rows its readers' guards
    /// select (nothing at all when they select none).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<BooleanBuffer>, PlanEvalError> {
        self.evaluate_inner(batch, &mut None)
    }

    /// [`SigmaPlan::evaluate`], adding to `profile` the time each part took: every column's
    /// scan, the keywords, the guards, the field comparisons and the combination per rule.
    /// The result is the same; the cost of the timing itself is two clock reads per part.
    pub fn evaluate_profiled(
        &self,
        batch: &RecordBatch,
        profile: &mut PlanProfile,
    ) -> Result<Vec<BooleanBuffer>, PlanEvalError> {
        self.evaluate_inner(batch, &mut Some(profile))
    }

    fn evaluate_inner(
        &self,
        batch: &RecordBatch,
        profile: &mut Option<&mut PlanProfile>,
    ) -> Result<Vec<BooleanBuffer>, PlanEvalError> {
        let len = batch.num_rows();
        let zero = BooleanBuffer::new_unset(len);
        let mut slots: Vec<SlotBits> = vec![SlotBits::default(); self.columns.len()];
        for (i, guards) in self.column_guards.iter().enumerate() {
            if guards.is_none() {
                let t = Instant::now();
                slots[i] = self.scan(i, batch, None)?;
                PlanProfile::add(profile, || self.part_name(i), t);
            }
        }
        let t = Instant::now();
        let guard_bits: Vec<BooleanBuffer> = {
            let cx = Bits {
                len,
                zero: &zero,
                columns: &slots,
                keywords: &[],
                pairs: &SlotBits::default(),
            };
            self.guards.iter().map(|g| cx.rule(g)).collect()
        };
        let mask_of = |guards: &[usize]| -> BooleanBuffer {
            let mut mask = BooleanBuffer::new_unset(len);
            for &g in guards {
                mask = &mask | &guard_bits[g];
            }
            mask
        };
        PlanProfile::add(profile, || "(guards)".to_string(), t);
        for (i, guards) in self.column_guards.iter().enumerate() {
            if let Some(guards) = guards {
                let t = Instant::now();
                let mask = mask_of(guards);
                slots[i] = if mask.count_set_bits() == 0 {
                    SlotBits::none(len, self.columns[i].1.slots())
                } else {
                    self.scan(i, batch, Some(&mask))?
                };
                PlanProfile::add(profile, || self.part_name(i), t);
            }
        }
        let t = Instant::now();
        let mut pairs = Vec::with_capacity(self.pairs.len());
        for pair in &self.pairs {
            let bits = match (
                batch.column_by_name(&pair.field),
                batch.column_by_name(&pair.other),
            ) {
                (Some(a), Some(b)) => {
                    compare_columns(a, b, pair.case_sensitive).map_err(|source| {
                        let unread = if ColumnMatcher::supports(a.data_type()) {
                            &pair.other
                        } else {
                            &pair.field
                        };
                        PlanEvalError {
                            column: unread.clone(),
                            source,
                        }
                    })?
                }
                // An absent field equals nothing.
                _ => BooleanBuffer::new_unset(len),
            };
            pairs.push(bits);
        }
        let pairs = SlotBits::counted(pairs);
        PlanProfile::add(profile, || "(fieldref)".to_string(), t);
        let t = Instant::now();
        let keyword_columns = self.keyword_columns(batch);
        let mut keywords = Vec::with_capacity(self.keywords.len());
        for (guard, matcher) in &self.keywords {
            let mask = guard.map(|g| &guard_bits[g]);
            let mut bits = SlotBits::none(len, matcher.slots());
            if mask.is_none_or(|m| m.count_set_bits() > 0) {
                for (i, array) in keyword_columns.iter().enumerate() {
                    let found = matcher
                        .evaluate_masked(array.as_ref(), mask)
                        .expect("string columns are supported");
                    if i == 0 {
                        bits = found;
                    } else {
                        for k in 0..bits.bits.len() {
                            if found.set[k] {
                                bits.bits[k] = &bits.bits[k] | &found.bits[k];
                                bits.set[k] = true;
                            }
                        }
                    }
                }
            }
            keywords.push(bits);
        }
        PlanProfile::add(profile, || "(keywords)".to_string(), t);
        let t = Instant::now();
        let cx = Bits {
            len,
            zero: &zero,
            columns: &slots,
            keywords: &keywords,
            pairs: &pairs,
        };
        // A rule whose guard selects no row of the batch (its log source is not in it) selects
        // none either: its condition is not computed. Its bitmap shares one empty buffer.
        let guard_selects: Vec<bool> = guard_bits.iter().map(|b| b.count_set_bits() > 0).collect();
        let rules = self
            .rules
            .iter()
            .zip(&self.rule_guards)
            .map(|(r, g)| match g {
                None => cx.rule(r),
                Some(g) if !guard_selects[*g] => zero.clone(),
                Some(g) => &cx.rule(r) & &guard_bits[*g],
            })
            .collect();
        PlanProfile::add(profile, || "(combine per rule)".to_string(), t);
        Ok(rules)
    }

    /// The columns keywords search in `batch`: its `_keywords` column alone when it has one
    /// (a projecting decoder's: every string and number of the event, so any other column's
    /// value is in it too) and every keyword is a pattern; else every string column.
    fn keyword_columns<'b>(&self, batch: &'b RecordBatch) -> Vec<&'b ArrayRef> {
        if self.keywords_are_patterns
            && let Some(all) = batch.column_by_name(KEYWORDS_COLUMN)
            && matches!(
                all.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        {
            return vec![all];
        }
        batch
            .schema_ref()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, _)| {
                matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
            .map(|(_, array)| array)
            .collect()
    }

    /// How [`PlanProfile`] names column matcher `i`.
    fn part_name(&self, i: usize) -> String {
        let key = &self.columns[i].0;
        match key.part {
            None => key.name.clone(),
            Some(part) => format!("{}|{part:?}", key.name),
        }
    }

    /// Column matcher `i` over `batch`, on the rows of `mask` only (others: all false).
    fn scan(
        &self,
        i: usize,
        batch: &RecordBatch,
        mask: Option<&BooleanBuffer>,
    ) -> Result<SlotBits, PlanEvalError> {
        let (key, matcher) = &self.columns[i];
        let error = |source| PlanEvalError {
            column: key.name.clone(),
            source,
        };
        Ok(match (batch.column_by_name(&key.name), key.part) {
            (Some(array), None) => matcher.evaluate_masked(array, mask).map_err(error)?,
            (Some(array), Some(part)) => {
                let parts = time_parts(array, part).map_err(error)?;
                matcher.evaluate_masked(&parts, mask).map_err(error)?
            }
            (None, _) => matcher.evaluate_absent(batch.num_rows()),
        })
    }
}

/// The slot bitmaps of one batch, and how to combine them.
struct Bits<'a> {
    len: usize,
    /// No row set: shared by every empty result.
    zero: &'a BooleanBuffer,
    columns: &'a [SlotBits],
    keywords: &'a [SlotBits],
    pairs: &'a SlotBits,
}

impl Bits<'_> {
    /// The rule's bitmap. Its selections are computed only when a condition first needs
    /// them, and an AND stops at its first operand that selects no row: the filters of a rule
    /// whose main selection matched nothing in the batch (most rules, most batches) are
    /// never combined.
    fn rule(&self, r: &RulePlan) -> BooleanBuffer {
        let memo: Vec<OnceCell<BooleanBuffer>> =
            r.selections.iter().map(|_| OnceCell::new()).collect();
        let selection = |i: usize| {
            memo[i]
                .get_or_init(|| self.selection(&r.selections[i]))
                .clone()
        };
        self.any(r.conditions.iter().map(|c| self.condition(c, &selection)))
    }

    fn condition(
        &self,
        c: &Condition,
        selection: &dyn Fn(usize) -> BooleanBuffer,
    ) -> BooleanBuffer {
        match c {
            Condition::Selection(i) => selection(*i),
            Condition::Of {
                quantifier,
                selections: which,
                ..
            } => {
                let bits = which.iter().map(|&i| selection(i));
                if *quantifier == Quantifier::All {
                    self.all(bits)
                } else {
                    self.any(bits)
                }
            }
            Condition::Not(inner) => !&self.condition(inner, selection),
            Condition::And(cs) => self.all(cs.iter().map(|c| self.condition(c, selection))),
            Condition::Or(cs) => self.any(cs.iter().map(|c| self.condition(c, selection))),
        }
    }

    fn selection(&self, groups: &[Vec<MatcherPlan>]) -> BooleanBuffer {
        self.any(
            groups
                .iter()
                .map(|ms| self.all(ms.iter().map(|m| self.matcher(m)))),
        )
    }

    fn matcher(&self, m: &MatcherPlan) -> BooleanBuffer {
        let slots = match m.source {
            Source::Column(c) => &self.columns[c],
            Source::Keywords(k) => &self.keywords[k],
            Source::FieldRefs => self.pairs,
        };
        // Most slots hold no row of the batch: an OR skips them, an AND with one is empty.
        let combined = match m.link {
            Link::Any => self.any(
                m.slots
                    .iter()
                    .filter(|&&s| slots.set[s])
                    .map(|&s| slots.bits[s].clone()),
            ),
            Link::All if m.slots.iter().all(|&s| slots.set[s]) => {
                self.all(m.slots.iter().map(|&s| slots.bits[s].clone()))
            }
            Link::All => self.zero.clone(),
        };
        if m.negated { !&combined } else { combined }
    }

    /// The OR of `bits`, accumulated in one buffer (a single operand is returned as is).
    fn any(&self, bits: impl Iterator<Item = BooleanBuffer>) -> BooleanBuffer {
        let mut bits = bits;
        let Some(first) = bits.next() else {
            return self.zero.clone();
        };
        let Some(second) = bits.next() else {
            return first;
        };
        let mut words = words_of(&first);
        for b in std::iter::once(second).chain(bits) {
            for (w, c) in words.iter_mut().zip(b.bit_chunks().iter_padded()) {
                *w |= c;
            }
        }
        BooleanBuffer::new(Buffer::from_vec(words), 0, self.len)
    }

    /// The AND of `bits`, accumulated in one buffer; stops (the rest of `bits` never
    /// computed) once no row is left.
    fn all(&self, bits: impl Iterator<Item = BooleanBuffer>) -> BooleanBuffer {
        let mut bits = bits;
        let Some(first) = bits.next() else {
            return BooleanBuffer::new_set(self.len);
        };
        if first.count_set_bits() == 0 {
            return first;
        }
        let mut words: Option<Vec<u64>> = None;
        for b in bits {
            let acc = words.get_or_insert_with(|| words_of(&first));
            let mut any = 0;
            for (w, c) in acc.iter_mut().zip(b.bit_chunks().iter_padded()) {
                *w &= c;
                any |= *w;
            }
            if any == 0 {
                break;
            }
        }
        match words {
            None => first,
            Some(words) => BooleanBuffer::new(Buffer::from_vec(words), 0, self.len),
        }
    }
}

/// The 64-bit words of `b`, bits past its length zero.
fn words_of(b: &BooleanBuffer) -> Vec<u64> {
    b.bit_chunks().iter_padded().collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
