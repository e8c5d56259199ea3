//! Sigma rules: YAML files -> a typed, validated model -> a vectorised plan over Arrow columns.
//!
//! In: the name and text of a Sigma file (one or more YAML documents). No I/O: the caller reads
//! files.
//! Out: [`SigmaDocument`]s — detection rules, correlation rules, filters — or [`SigmaErrors`],
//! every problem located at `file:line:column` with what to change, and marked as either
//! invalid Sigma or a Sigma feature palisade does not support.
//!
//! Guarantees: a parsed rule is consistent (every condition refers to existing selections,
//! every modifier chain is valid, every value is already expanded into what a matcher compares
//! against: patterns with wildcards, regexes that compile, CIDR networks, numbers, base64 and
//! UTF-16 variants...). Nothing is evaluated here.
//!
//! Layers, each usable and tested alone:
//!
//! - [`yaml`]: YAML text -> nodes that keep their line and column and their source text.
//! - [`modifier`]: `field|modifiers: values` -> [`FieldMatcher`] with expanded values.
//! - [`value`]: what matchers compare with: [`Pattern`], [`Regex`], [`Cidr`], ... ([`Value`]).
//! - [`condition`]: the condition grammar -> [`Condition`].
//! - [`correlation`]: `correlation:` sections and [`Timespan`]s.
//! - [`rule`]: documents, metadata, log sources, detections, filters.
//! - [`matcher`]: one column, all the values every rule tests on it -> one bitmap per value,
//!   in one pass (one case-folded Aho-Corasick automaton per column).
//! - [`plan`]: a rule set's matchers by column, combined per rule by its condition -> one
//!   bitmap per rule.
//! - [`correlate`]: correlation rules over those bitmaps, in event time: sliding windows per
//!   group, bounded state -> correlation hits.
//!
//! Follows the Sigma specification 2.1 (rules, modifiers appendix, correlation rules,
//! filters). What it leaves out, as "unsupported feature" errors: the pre-2.0 condition
//! aggregations (`| count()`, `| near`), the pre-2.0 rule collections (`action: global`),
//! regex look-around and backreferences (the evaluator matches in linear time), `windash` on
//! values with more than four dashes (too many variants), and `utf16` variants that are not
//! text unless base64-encoded afterwards.

mod anchored;
pub mod condition;
pub mod correlate;
pub mod correlation;
#[cfg(test)]
mod diff_tests;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod error;
pub mod matcher;
pub mod modifier;
pub mod plan;
pub mod rule;
pub mod value;
pub mod yaml;

#[cfg(test)]
mod tests;

pub use condition::{Condition, OfTarget, Quantifier};
pub use correlation::{Correlation, CorrelationCondition, CorrelationType, RuleRef, Timespan};
pub use error::{ErrorKind, SigmaError, SigmaErrors};
pub use modifier::Modifier;
pub use rule::{
    CorrelationRule, Detection, FilterRule, Level, LogSource, Metadata, Related, RelationType,
    Selection, SelectionKind, SigmaDocument, SigmaRule, Status, parse,
};
pub use value::{
    Cidr, CmpOp, FieldMatcher, Link, MatchValue, Number, Part, Pattern, Regex, TimePart, Value,
};
