//! Sigma correlation rules (`correlation:`), and the time spans they and detections use.
//!
//! In: the `correlation` map of a YAML document (the metadata around it is parsed by the rule
//! layer).
//! Out: a typed [`Correlation`]: its type, the rules it refers to (by id or name, resolved
//! later against the loaded rule set), `group-by`, `timespan`, the threshold condition and the
//! field aliases, checked against the Sigma correlation rules specification 2.1 (which keys
//! each type requires; aliases only for referenced rules).

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;

use super::error::{Cx, SigmaError, keep};
use super::value::{CmpOp, Number};
use super::yaml::{Node, NodeKind, Pos, Resolved};

/// The kinds of correlation of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorrelationType {
    /// Count of events per group.
    EventCount,
    /// Count of distinct values of a field per group.
    ValueCount,
    /// All referenced rules match within the time span, in any order.
    Temporal,
    /// All referenced rules match within the time span, in the order listed.
    TemporalOrdered,
    /// Sum of a numeric field per group.
    ValueSum,
    /// Average of a numeric field per group.
    ValueAvg,
    /// Percentile of a numeric field per group.
    ValuePercentile,
}

const TYPES: &[(&str, CorrelationType)] = &[
    ("event_count", CorrelationType::EventCount),
    ("value_count", CorrelationType::ValueCount),
    ("temporal", CorrelationType::Temporal),
    ("temporal_ordered", CorrelationType::TemporalOrdered),
    ("value_sum", CorrelationType::ValueSum),
    ("value_avg", CorrelationType::ValueAvg),
    ("value_percentile", CorrelationType::ValuePercentile),
];

impl CorrelationType {
    /// Its name in a rule.
    pub fn name(self) -> &'static str {
        TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .expect("every type is in TYPES")
    }

    /// Types that aggregate a field named in `condition.field`.
    fn needs_field(self) -> bool {
        matches!(
            self,
            CorrelationType::ValueCount
                | CorrelationType::ValueSum
                | CorrelationType::ValueAvg
                | CorrelationType::ValuePercentile
        )
    }

    /// The temporal types count matched rules, and default to "all of them".
    fn is_temporal(self) -> bool {
        matches!(
            self,
            CorrelationType::Temporal | CorrelationType::TemporalOrdered
        )
    }
}

impl fmt::Display for CorrelationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A time span: `30s`, `5m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timespan {
    /// Its length; always positive.
    pub duration: Duration,
}

impl Timespan {
    /// Parses a number followed by `s`, `m`, `h` or `d` (the specification's units).
    pub fn parse(text: &str) -> Result<Timespan, String> {
        let bad = || {
            format!(
                "`{text}` is not a time span: write a positive whole number followed by s, m, h \
                 or d (e.g. `30s`, `5m`, `1h`, `1d`)"
            )
        };
        let t = text.trim();
        let unit = t.chars().last().ok_or_else(bad)?;
        let seconds_per_unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let digits = &t[..t.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let secs = n.checked_mul(seconds_per_unit).ok_or_else(bad)?;
        if secs == 0 {
            return Err(bad());
        }
        Ok(Timespan {
            duration: Duration::from_secs(secs),
        })
    }
}

/// A rule referred to by a correlation or a filter: its `id` or its `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// The id or name as written.
    pub reference: String,
    /// Where it was written.
    pub pos: Pos,
}

/// When a correlation matches: every predicate holds (e.g. `gt: 100, lte: 200`).
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationCondition {
    /// The field(s) aggregated by the `value_*` types; empty for the others.
    pub field: Vec<String>,
    /// Thresholds on the aggregate, ANDed; at least one.
    pub predicates: Vec<(CmpOp, Number)>,
}

/// The `correlation` section of a correlation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlation {
    /// What is aggregated.
    pub kind: CorrelationType,
    /// The correlated rules, by id or name, in order (the order matters for
    /// `temporal_ordered`).
    pub rules: Vec<RuleRef>,
    /// Fields (or aliases) whose values define a group; events of different groups never
    /// correlate.
    pub group_by: Vec<String>,
    /// The window in which the events must fall.
    pub timespan: Timespan,
    /// The threshold; `None` only for the temporal types, meaning every rule must match.
    pub condition: Option<CorrelationCondition>,
    /// Alias name -> (rule name -> field name in that rule's events).
    pub aliases: IndexMap<String, IndexMap<String, String>>,
    /// Whether the referenced rules also alert on their own (default false).
    pub generate: bool,
}

/// The keys of a `correlation` section.
const SECTION_KEYS: [&str; 7] = [
    "type",
    "rules",
    "group-by",
    "timespan",
    "condition",
    "aliases",
    "generate",
];

/// Parses the `correlation` map; `generate` is a sibling at the top level of the document.
pub(super) fn parse(
    cx: &Cx,
    node: &Node,
    generate: Option<&Node>,
    errors: &mut Vec<SigmaError>,
) -> Option<Correlation> {
    let NodeKind::Map(entries) = &node.kind else {
        errors.push(cx.invalid(node.pos, "`correlation` must be a map (type, rules, ...)"));
        return None;
    };
    let before = errors.len();
    // Unlike the top level, the section has a closed set of keys: a misspelt optional key
    // (`aliasses`) would otherwise be silently ignored.
    for (k, _) in entries {
        let key = k.as_scalar().map_or("", |s| s.text.as_str());
        if !SECTION_KEYS.contains(&key) {
            errors.push(cx.invalid(
                k.pos,
                format!(
                    "unknown key `{key}` in `correlation`: expected one of {}",
                    SECTION_KEYS.join(", ")
                ),
            ));
        }
    }

    let kind = keep(
        errors,
        required(cx, node, "type").and_then(|n| {
            let text = text(cx, n, "type")?;
            TYPES
                .iter()
                .find(|(name, _)| *name == text)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    cx.invalid(
                        n.pos,
                        format!(
                            "unknown correlation type `{text}`: expected one of {}",
                            TYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })
        }),
    );
    let rules = keep(
        errors,
        required(cx, node, "rules").and_then(|n| {
            let refs = text_list(cx, n, "rules")?;
            if refs.is_empty() {
                return Err(cx.invalid(n.pos, "`rules` must name at least one rule (id or name)"));
            }
            for (i, (r, pos)) in refs.iter().enumerate() {
                if refs[..i].iter().any(|(earlier, _)| earlier == r) {
                    return Err(cx.invalid(*pos, format!("rule `{r}` is listed twice in `rules`")));
                }
            }
            Ok(refs
                .into_iter()
                .map(|(reference, pos)| RuleRef { reference, pos })
                .collect::<Vec<_>>())
        }),
    );
    let group_by = keep(
        errors,
        required(cx, node, "group-by").and_then(|n| {
            let fields = text_list(cx, n, "group-by")?;
            if fields.is_empty() {
                return Err(cx.invalid(n.pos, "`group-by` must list at least one field"));
            }
            Ok(fields.into_iter().map(|(f, _)| f).collect::<Vec<_>>())
        }),
    );
    let timespan = keep(
        errors,
        required(cx, node, "timespan").and_then(|n| {
            Timespan::parse(text(cx, n, "timespan")?).map_err(|m| cx.invalid(n.pos, m))
        }),
    );
    let condition = match node.get("condition") {
        Some(n) => keep(errors, condition(cx, n)).map(Some),
        None => Some(None),
    };
    let aliases = match node.get("aliases") {
        Some(n) => keep(errors, aliases(cx, n)),
        None => Some(IndexMap::new()),
    };
    let generate = match generate {
        Some(n) => keep(
            errors,
            match n.as_scalar().map(|s| s.resolve()) {
                Some(Resolved::Bool(b)) => Ok(b),
                _ => Err(cx.invalid(n.pos, "`generate` must be `true` or `false`")),
            },
        ),
        None => Some(false),
    };

    // Checks across keys, once each key is known to be well-formed.
    if let (Some(kind), Some(Some(cond))) = (kind, &condition) {
        let cond_node = node.get("condition").expect("condition was parsed from it");
        if kind.needs_field() && cond.field.is_empty() {
            errors.push(cx.invalid(
                cond_node.pos,
                format!("a `{kind}` correlation aggregates a field: add `field: <name>` to its condition"),
            ));
        }
        if !kind.needs_field() && !cond.field.is_empty() {
            errors.push(cx.invalid(
                cond_node.pos,
                format!(
                    "`field` is only for the value_* correlation types, not `{kind}`: remove it"
                ),
            ));
        }
    }
    if let (Some(kind), Some(None)) = (kind, &condition)
        && !kind.is_temporal()
    {
        errors.push(cx.invalid(
            node.pos,
            format!("a `{kind}` correlation needs a `condition`, e.g. `condition: {{gte: 10}}`"),
        ));
    }
    if let (Some(rules), Some(aliases), Some(n)) = (&rules, &aliases, node.get("aliases")) {
        for per_rule in aliases.values() {
            for rule in per_rule.keys() {
                if !rules.iter().any(|r| &r.reference == rule) {
                    errors.push(cx.invalid(
                        n.pos,
                        format!(
                            "alias refers to rule `{rule}`, which is not in this correlation's `rules`"
                        ),
                    ));
                }
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(Correlation {
        kind: kind?,
        rules: rules?,
        group_by: group_by?,
        timespan: timespan?,
        condition: condition?,
        aliases: aliases?,
        generate: generate?,
    })
}

fn condition(cx: &Cx, node: &Node) -> Result<CorrelationCondition, SigmaError> {
    let NodeKind::Map(entries) = &node.kind else {
        return Err(cx.invalid(
            node.pos,
            "a correlation `condition` is a map such as `{gte: 10}` or `{field: User, gt: 100}`",
        ));
    };
    let mut cond = CorrelationCondition {
        field: Vec::new(),
        predicates: Vec::new(),
    };
    for (k, v) in entries {
        let key = text(cx, k, "condition key")?;
        if key == "field" {
            cond.field = text_list(cx, v, "field")?
                .into_iter()
                .map(|(f, _)| f)
                .collect();
            continue;
        }
        let Some(op) = CmpOp::from_name(key) else {
            return Err(cx.invalid(
                k.pos,
                format!("unknown condition `{key}`: expected gt, gte, lt, lte, eq, neq or field"),
            ));
        };
        let number = match v.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Int(i)) => Number::Int(i),
            Some(Resolved::Float(f)) => Number::Float(f),
            _ => {
                return Err(cx.invalid(
                    v.pos,
                    format!("`{key}` compares with a number, not {}", v.describe()),
                ));
            }
        };
        cond.predicates.push((op, number));
    }
    if cond.predicates.is_empty() {
        return Err(cx.invalid(
            node.pos,
            "the condition needs a threshold: one of gt, gte, lt, lte, eq, neq",
        ));
    }
    Ok(cond)
}

fn aliases(cx: &Cx, node: &Node) -> Result<IndexMap<String, IndexMap<String, String>>, SigmaError> {
    let NodeKind::Map(entries) = &node.kind else {
        return Err(cx.invalid(
            node.pos,
            "`aliases` maps each alias to a map of rule name -> field name",
        ));
    };
    let mut out = IndexMap::new();
    for (alias, per_rule) in entries {
        let alias = text(cx, alias, "alias")?.to_string();
        let NodeKind::Map(pairs) = &per_rule.kind else {
            return Err(cx.invalid(
                per_rule.pos,
                format!("alias `{alias}` must map rule names to field names"),
            ));
        };
        let mut fields = IndexMap::new();
        for (rule, field) in pairs {
            fields.insert(
                text(cx, rule, "rule name")?.to_string(),
                text(cx, field, "field name")?.to_string(),
            );
        }
        out.insert(alias, fields);
    }
    Ok(out)
}

fn required<'n>(cx: &Cx, map: &'n Node, key: &str) -> Result<&'n Node, SigmaError> {
    map.get(key)
        .ok_or_else(|| cx.invalid(map.pos, format!("the correlation has no `{key}`")))
}

/// A non-null scalar's text.
fn text<'n>(cx: &Cx, node: &'n Node, what: &str) -> Result<&'n str, SigmaError> {
    match node.as_scalar() {
        Some(s) if s.resolve() != Resolved::Null => Ok(&s.text),
        _ => Err(cx.invalid(
            node.pos,
            format!("`{what}` must be a value, not {}", node.describe()),
        )),
    }
}

/// A list of scalars (a single scalar counts as a list of one), with positions.
fn text_list(cx: &Cx, node: &Node, what: &str) -> Result<Vec<(String, Pos)>, SigmaError> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .map(|i| text(cx, i, what).map(|t| (t.to_string(), i.pos)))
            .collect(),
        _ => Ok(vec![(text(cx, node, what)?.to_string(), node.pos)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        let secs = |t: &str| Timespan::parse(t).map(|t| t.duration.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("1d"), Ok(86_400));
        assert_eq!(secs("90m"), Ok(5400));
        for bad in ["", "m", "5", "5M", "1w", "-5m", "1.5h", "0s", "5 m", "h5"] {
            let err = secs(bad).unwrap_err();
            assert!(err.contains("is not a time span"), "{bad}: {err}");
        }
    }
}
