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
//! matches a row when any of those columns contains it.
//!
//! Guarantees: everything is compiled by [`PlanBuilder::build`]; evaluating a batch reads each
//! column, compares each pair of fields and extracts each time part once, then only combines
//! bitmaps, without allocating per row.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::DataType;

use super::condition::{Condition, Quantifier};
use super::error::{ErrorKind, SigmaError};
use super::matcher::{
    ColumnMatcher, ColumnMatcherBuilder, EvalError, Unsupported, compare_columns, time_parts,
};
use super::modifier::{Modifier, placeholder_value};
use super::rule::{SelectionKind, SigmaRule};
use super::value::{FieldMatcher, Link, Part, Pattern, TimePart, Value};
use super::yaml::Pos;

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
    /// The keyword matcher, over every string column.
    Keywords,
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
    keywords: ColumnMatcherBuilder,
    keyword_slots: usize,
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
    /// The same for the keyword matcher.
    keyword_guards: Option<BTreeSet<usize>>,
    /// What is being registered: a guard, or a rule under this guard.
    registering: Option<Option<usize>>,
}

impl PlanBuilder {
    /// An empty plan.
    pub fn new() -> PlanBuilder {
        PlanBuilder {
            keyword_guards: Some(BTreeSet::new()),
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
                PlanBuilder::note_reader(self.registering, &mut self.keyword_guards);
                for variants in &values {
                    let slot = self.keyword_slots;
                    self.keyword_slots += 1;
                    for variant in variants {
                        self.keywords
                            .add_keyword(slot, variant)
                            .expect("checked by lower");
                    }
                    slots.push(slot);
                }
                Source::Keywords
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
        Ok(SigmaPlan {
            columns,
            keywords: self.keywords.build().map_err(|source| BuildError {
                column: None,
                source,
            })?,
            pairs: self.pairs,
            rules: self.rules,
            rule_guards: self.rule_guards,
            guards: self.guards,
            column_guards: self
                .column_guards
                .into_iter()
                .map(|g| g.map(|s| s.into_iter().collect()))
                .collect(),
            keyword_guards: self.keyword_guards.map(|s| s.into_iter().collect()),
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
    keywords: ColumnMatcher,
    /// The `fieldref` comparisons; the slots of [`Source::FieldRefs`].
    pairs: Vec<FieldPair>,
    rules: Vec<RulePlan>,
    rule_guards: Vec<Option<usize>>,
    guards: Vec<RulePlan>,
    /// Per column: scan only the rows these guards select (`None`: every row).
    column_guards: Vec<Option<Vec<usize>>>,
    keyword_guards: Option<Vec<usize>>,
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
        let len = batch.num_rows();
        let mut slots: Vec<Vec<BooleanBuffer>> = vec![Vec::new(); self.columns.len()];
        for (i, guards) in self.column_guards.iter().enumerate() {
            if guards.is_none() {
                slots[i] = self.scan(i, batch, None)?;
            }
        }
        let guard_bits: Vec<BooleanBuffer> = {
            let cx = Bits {
                len,
                columns: &slots,
                keywords: &[],
                pairs: &[],
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
        for (i, guards) in self.column_guards.iter().enumerate() {
            if let Some(guards) = guards {
                let mask = mask_of(guards);
                slots[i] = if mask.count_set_bits() == 0 {
                    vec![BooleanBuffer::new_unset(len); self.columns[i].1.slots()]
                } else {
                    self.scan(i, batch, Some(&mask))?
                };
            }
        }
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
        let mut keywords = vec![BooleanBuffer::new_unset(len); self.keywords.slots()];
        let keyword_mask = self.keyword_guards.as_deref().map(mask_of);
        if !keywords.is_empty() && keyword_mask.as_ref().is_none_or(|m| m.count_set_bits() > 0) {
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                if matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    let bits = self
                        .keywords
                        .evaluate_masked(array, keyword_mask.as_ref())
                        .expect("string columns are supported");
                    for (k, b) in keywords.iter_mut().zip(&bits) {
                        *k = &*k | b;
                    }
                }
            }
        }
        let cx = Bits {
            len,
            columns: &slots,
            keywords: &keywords,
            pairs: &pairs,
        };
        Ok(self
            .rules
            .iter()
            .zip(&self.rule_guards)
            .map(|(r, g)| match g {
                None => cx.rule(r),
                Some(g) => &cx.rule(r) & &guard_bits[*g],
            })
            .collect())
    }

    /// Column matcher `i` over `batch`, on the rows of `mask` only (others: all false).
    fn scan(
        &self,
        i: usize,
        batch: &RecordBatch,
        mask: Option<&BooleanBuffer>,
    ) -> Result<Vec<BooleanBuffer>, PlanEvalError> {
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
    columns: &'a [Vec<BooleanBuffer>],
    keywords: &'a [BooleanBuffer],
    pairs: &'a [BooleanBuffer],
}

impl Bits<'_> {
    fn rule(&self, r: &RulePlan) -> BooleanBuffer {
        let selections: Vec<BooleanBuffer> =
            r.selections.iter().map(|s| self.selection(s)).collect();
        self.any(r.conditions.iter().map(|c| condition(c, &selections)))
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
            Source::Keywords => self.keywords,
            Source::FieldRefs => self.pairs,
        };
        let values = m.slots.iter().map(|&s| slots[s].clone());
        let combined = match m.link {
            Link::Any => self.any(values),
            Link::All => self.all(values),
        };
        if m.negated { !&combined } else { combined }
    }

    fn any(&self, bits: impl Iterator<Item = BooleanBuffer>) -> BooleanBuffer {
        bits.reduce(|a, b| &a | &b)
            .unwrap_or_else(|| BooleanBuffer::new_unset(self.len))
    }

    fn all(&self, bits: impl Iterator<Item = BooleanBuffer>) -> BooleanBuffer {
        bits.reduce(|a, b| &a & &b)
            .unwrap_or_else(|| BooleanBuffer::new_set(self.len))
    }
}

/// The condition's bitmap from its selections' bitmaps.
fn condition(c: &Condition, selections: &[BooleanBuffer]) -> BooleanBuffer {
    let fold = |items: &mut dyn Iterator<Item = BooleanBuffer>, and: bool| {
        let first = items.next().expect("conditions combine at least one term");
        items.fold(first, |a, b| if and { &a & &b } else { &a | &b })
    };
    match c {
        Condition::Selection(i) => selections[*i].clone(),
        Condition::Of {
            quantifier,
            selections: which,
            ..
        } => fold(
            &mut which.iter().map(|&i| selections[i].clone()),
            *quantifier == Quantifier::All,
        ),
        Condition::Not(inner) => !&condition(inner, selections),
        Condition::And(cs) => fold(&mut cs.iter().map(|c| condition(c, selections)), true),
        Condition::Or(cs) => fold(&mut cs.iter().map(|c| condition(c, selections)), false),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
