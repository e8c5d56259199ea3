//! Expected alerts against the alerts a case raised: which expectations hold, which alerts
//! nobody expected, and the lines that show it.
//!
//! An expectation takes the alerts of its rule (about its entity, holding its evidence, when
//! it names them) that no earlier expectation took; it holds when it takes exactly `count`.
//! The more specific expectations choose first (entity and evidence, then entity, then
//! evidence, then the rule alone), so `{rule: r, entity: a}` next to `{rule: r}` means "one
//! about `a`, and one about anyone else" whatever order they are written in. An expectation
//! that does not hold takes nothing, so the alerts it saw show up as unexpected and the diff
//! shows both sides (`- r  entity=a  x1`, `+ r  entity=a  x2`).

use serde_json::{Map, Value};

/// An alert of a compared rule as the test sees it: personal values shown as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The rule's id.
    pub rule: String,
    /// How the rule is shown: its Sigma name, else its id.
    pub label: String,
    /// The alert's entity.
    pub entity: String,
    /// Its evidence rows.
    pub evidence: Vec<Map<String, Value>>,
    /// The evidence as the alert writes it (JSON, fields in the alert's order).
    pub shown: String,
}

/// An expectation with its rule resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The rule's id.
    pub rule: String,
    /// How the rule is shown.
    pub label: String,
    /// The entity, when it matters.
    pub entity: Option<String>,
    /// How many alerts.
    pub count: usize,
    /// Fields some evidence row must hold.
    pub evidence: Vec<(String, Value)>,
}

/// The outcome of a comparison, as the lines a failure report shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Comparison {
    /// Every expectation, as written.
    pub expected: Vec<String>,
    /// Every alert of the compared rules, grouped by rule and entity, in the order they were
    /// raised, each with the evidence of its first alert.
    pub actual: Vec<(String, String)>,
    /// Expectations that do not hold.
    pub missing: Vec<String>,
    /// Alerts no expectation took, grouped like `actual`.
    pub unexpected: Vec<String>,
}

impl Comparison {
    /// True when every expectation holds and every alert was expected.
    pub fn holds(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Compares what a case wanted with what it saw.
pub fn compare(wanted: &[Wanted], seen: &[Seen]) -> Comparison {
    let mut taken = vec![false; seen.len()];
    let mut holds = vec![false; wanted.len()];
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&w| {
        let w = &wanted[w];
        std::cmp::Reverse(2 * usize::from(w.entity.is_some()) + usize::from(!w.evidence.is_empty()))
    });
    for w in order {
        let want = &wanted[w];
        let hits: Vec<usize> = (0..seen.len())
            .filter(|&s| !taken[s] && takes(want, &seen[s]))
            .collect();
        if hits.len() == want.count {
            hits.iter().for_each(|&s| taken[s] = true);
            holds[w] = true;
        }
    }
    let all: Vec<usize> = (0..seen.len()).collect();
    let left: Vec<usize> = all.iter().copied().filter(|&s| !taken[s]).collect();
    Comparison {
        expected: wanted.iter().map(wanted_line).collect(),
        actual: groups(seen, &all)
            .into_iter()
            .map(|(line, first)| (line, seen[first].shown.clone()))
            .collect(),
        missing: wanted
            .iter()
            .zip(&holds)
            .filter(|(_, h)| !**h)
            .map(|(w, _)| wanted_line(w))
            .collect(),
        unexpected: groups(seen, &left).into_iter().map(|(l, _)| l).collect(),
    }
}

fn takes(want: &Wanted, seen: &Seen) -> bool {
    want.rule == seen.rule
        && want.entity.as_ref().is_none_or(|e| *e == seen.entity)
        && want.evidence.iter().all(|(field, value)| {
            seen.evidence
                .iter()
                .any(|row| row.get(field).is_some_and(|v| same(value, v)))
        })
}

/// Alerts `of` grouped by rule and entity in first-seen order: each group's line and its first
/// alert.
fn groups(seen: &[Seen], of: &[usize]) -> Vec<(String, usize)> {
    let mut groups: Vec<(usize, usize)> = Vec::new(); // first alert, count
    for &s in of {
        let a = &seen[s];
        match groups
            .iter_mut()
            .find(|(f, _)| seen[*f].rule == a.rule && seen[*f].entity == a.entity)
        {
            Some((_, n)) => *n += 1,
            None => groups.push((s, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(f, n)| {
            let a = &seen[f];
            (line(&a.label, Some(&a.entity), &[], n), f)
        })
        .collect()
}

fn wanted_line(w: &Wanted) -> String {
    line(&w.label, w.entity.as_deref(), &w.evidence, w.count)
}

/// `rule  entity=E  evidence={f: v, ...}  xN`, the parts that apply, evidence as written.
fn line(label: &str, entity: Option<&str>, evidence: &[(String, Value)], count: usize) -> String {
    let mut out = label.to_string();
    if let Some(e) = entity {
        out.push_str(&format!("  entity={e}"));
    }
    if !evidence.is_empty() {
        let fields: Vec<String> = evidence
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                v => format!("{k}: {v}"),
            })
            .collect();
        out.push_str(&format!("  evidence={{{}}}", fields.join(", ")));
    }
    out.push_str(&format!("  x{count}"));
    out
}

/// Whether an evidence value is the value a test wrote. YAML and the evidence type values
/// differently (a Sigma alert shows every field as text, SQL evidence writes times without a
/// zone), so numbers compare by value, times by instant, and text by its characters.
pub fn same(expected: &Value, actual: &Value) -> bool {
    if expected == actual {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let (Some(e), Some(a)) = (text(expected), text(actual)) else {
        return false;
    };
    if e == a {
        return true;
    }
    if let (Ok(x), Ok(y)) = (e.parse::<f64>(), a.parse::<f64>()) {
        return x == y;
    }
    matches!((instant(&e), instant(&a)), (Some(x), Some(y)) if x == y)
}

fn instant(text: &str) -> Option<i64> {
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).ok()
}
