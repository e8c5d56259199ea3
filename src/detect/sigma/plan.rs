//! A set of Sigma rules compiled into one plan over Arrow columns: each column scanned once for
//! every rule, the per-value bitmaps combined per rule with Arrow's bitwise kernels.
//!
//! In: [`SigmaRule`]s, added one by one to a [`PlanBuilder`] (a rule with a value the
//! evaluator does not support is refused whole, with where the value was written). Per batch,
//! a [`RecordBatch`].
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
//! Nulls: a null or absent field matches only `null` and `exists: false`, so a negation (`neq`,
//! `not`) holds on it: `User|neq: admin` selects an event without a user.
//!
//! Fields are looked up by exact top-level column name; a field missing from the batch is an
//! absent field (it matches only `null` and `exists: false`). Keywords (selections without a
//! field) search every string column of the batch (`Utf8`, `LargeUtf8`, `Utf8View`): a keyword
//! matches a row when any of those columns contains it.

use std::collections::HashMap;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::DataType;

use super::condition::{Condition, Quantifier};
use super::error::{ErrorKind, SigmaError};
use super::matcher::{ColumnMatcher, ColumnMatcherBuilder, EvalError, Unsupported};
use super::rule::{SelectionKind, SigmaRule};
use super::value::{FieldMatcher, Link};
use super::yaml::Pos;

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

/// Collects rules; [`PlanBuilder::build`] compiles them.
#[derive(Debug, Default)]
pub struct PlanBuilder {
    /// Column name -> index into `columns`.
    column_ids: HashMap<String, usize>,
    columns: Vec<(String, ColumnMatcherBuilder, usize)>,
    keywords: ColumnMatcherBuilder,
    keyword_slots: usize,
    rules: Vec<RulePlan>,
}

impl PlanBuilder {
    /// An empty plan.
    pub fn new() -> PlanBuilder {
        PlanBuilder::default()
    }

    /// Adds `rule`; returns its index in [`SigmaPlan::evaluate`]'s result. A rule that cannot
    /// be evaluated is refused whole and leaves the plan unchanged.
    pub fn add_rule(&mut self, rule: &SigmaRule) -> Result<usize, PlanError> {
        let matchers = || {
            rule.detection
                .selections
                .values()
                .flat_map(|s| match &s.kind {
                    SelectionKind::All(ms) => ms.iter().collect::<Vec<_>>(),
                    SelectionKind::Any(groups) => groups.iter().flatten().collect(),
                    SelectionKind::Keywords(m) => vec![m],
                })
        };
        // Check everything first, so that a refused rule registers nothing.
        for m in matchers() {
            check(m)?;
        }
        let mut selections = Vec::with_capacity(rule.detection.selections.len());
        for selection in rule.detection.selections.values() {
            let groups = match &selection.kind {
                SelectionKind::All(ms) => vec![self.register_all(ms)?],
                SelectionKind::Any(groups) => groups
                    .iter()
                    .map(|ms| self.register_all(ms))
                    .collect::<Result<_, _>>()?,
                SelectionKind::Keywords(m) => vec![vec![self.register(m)?]],
            };
            selections.push(groups);
        }
        self.rules.push(RulePlan {
            selections,
            conditions: rule.detection.condition.clone(),
        });
        Ok(self.rules.len() - 1)
    }

    fn register_all(&mut self, ms: &[FieldMatcher]) -> Result<Vec<MatcherPlan>, PlanError> {
        ms.iter().map(|m| self.register(m)).collect()
    }

    fn register(&mut self, m: &FieldMatcher) -> Result<MatcherPlan, PlanError> {
        let mut slots = Vec::with_capacity(m.values.len());
        let source = match &m.field {
            Some(field) => {
                let id = match self.column_ids.get(field) {
                    Some(&id) => id,
                    None => {
                        self.columns
                            .push((field.clone(), ColumnMatcherBuilder::new(), 0));
                        self.column_ids
                            .insert(field.clone(), self.columns.len() - 1);
                        self.columns.len() - 1
                    }
                };
                let (_, builder, next) = &mut self.columns[id];
                for v in &m.values {
                    let slot = *next;
                    *next += 1;
                    for variant in &v.variants {
                        builder
                            .add(slot, variant)
                            .map_err(|source| PlanError { pos: v.pos, source })?;
                    }
                    slots.push(slot);
                }
                Source::Column(id)
            }
            None => {
                for v in &m.values {
                    let slot = self.keyword_slots;
                    self.keyword_slots += 1;
                    for variant in &v.variants {
                        self.keywords
                            .add_keyword(slot, variant)
                            .map_err(|source| PlanError { pos: v.pos, source })?;
                    }
                    slots.push(slot);
                }
                Source::Keywords
            }
        };
        Ok(MatcherPlan {
            source,
            slots,
            link: m.link,
            negated: m.negated,
        })
    }

    /// Compiles every column's matcher.
    pub fn build(self) -> Result<SigmaPlan, BuildError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (name, b, _) in self.columns {
            let matcher = b.build().map_err(|source| BuildError {
                column: Some(name.clone()),
                source,
            })?;
            columns.push((name, matcher));
        }
        Ok(SigmaPlan {
            columns,
            keywords: self.keywords.build().map_err(|source| BuildError {
                column: None,
                source,
            })?,
            rules: self.rules,
        })
    }
}

/// Refuses what no column matcher evaluates: time parts of dates, and the values
/// [`ColumnMatcherBuilder::check`] rejects.
fn check(m: &FieldMatcher) -> Result<(), PlanError> {
    if let Some(part) = m.time_part {
        return Err(PlanError {
            pos: m.pos,
            source: Unsupported {
                feature: "time modifiers",
                message: format!(
                    "comparing the {part:?} of a date field is not implemented yet: the \
                     evaluator compares the field's value itself"
                ),
            },
        });
    }
    for v in &m.values {
        for variant in &v.variants {
            ColumnMatcherBuilder::check(variant)
                .map_err(|source| PlanError { pos: v.pos, source })?;
        }
    }
    Ok(())
}

/// Compiled rules over shared column matchers. Immutable: one plan serves every batch.
#[derive(Debug)]
pub struct SigmaPlan {
    columns: Vec<(String, ColumnMatcher)>,
    keywords: ColumnMatcher,
    rules: Vec<RulePlan>,
}

/// Where the column a plan reads has a type no matcher reads.
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

    /// One bitmap per rule: which rows of `batch` each rule's condition selects.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<BooleanBuffer>, PlanEvalError> {
        let len = batch.num_rows();
        let mut slots = Vec::with_capacity(self.columns.len());
        for (name, matcher) in &self.columns {
            let bits = match batch.column_by_name(name) {
                Some(array) => matcher.evaluate(array).map_err(|source| PlanEvalError {
                    column: name.clone(),
                    source,
                })?,
                None => matcher.evaluate_absent(len),
            };
            slots.push(bits);
        }
        let mut keywords = vec![BooleanBuffer::new_unset(len); self.keywords.slots()];
        if !keywords.is_empty() {
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                if matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    let bits = self
                        .keywords
                        .evaluate(array)
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
        };
        Ok(self.rules.iter().map(|r| cx.rule(r)).collect())
    }
}

/// The slot bitmaps of one batch, and how to combine them.
struct Bits<'a> {
    len: usize,
    columns: &'a [Vec<BooleanBuffer>],
    keywords: &'a [BooleanBuffer],
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
