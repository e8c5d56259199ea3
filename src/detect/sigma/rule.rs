//! The Sigma rule model: YAML documents -> [`SigmaDocument`]s (detection rules, correlation
//! rules, filters), checked against the Sigma specification 2.1.
//!
//! In: a file name (for messages) and its text; no I/O here.
//! Out: one [`SigmaDocument`] per non-empty YAML document, or every problem found, each located
//! at its key or value ([`SigmaErrors`]).
//!
//! Guarantees of a parsed [`SigmaRule`]: it has a title, a log source and a detection with at
//! least one selection and one condition; every condition refers only to selections that exist
//! (wildcards resolved to indices into [`Detection::selections`]); every matcher's modifiers
//! are valid together and its values are expanded (see [`super::modifier`]). Unknown top-level
//! keys are ignored, as the specification allows custom fields; known keys of the wrong type
//! are errors. References between documents (a correlation's `rules`, a filter's `rules`) are
//! kept as written: they are resolved once the whole rule set is loaded.

use std::path::Path;

use chrono::NaiveDate;
use indexmap::IndexMap;

use super::condition::{self, Condition};
use super::correlation::{self, Correlation, RuleRef, Timespan};
use super::error::{Cx, ErrorKind, SigmaError, SigmaErrors, keep};
use super::modifier;
use super::value::FieldMatcher;
use super::yaml::{self, Node, NodeKind, Pos, Resolved};

/// One YAML document of a Sigma file.
#[derive(Debug, Clone, PartialEq)]
pub enum SigmaDocument {
    /// A detection rule (`detection:`).
    Rule(SigmaRule),
    /// A correlation rule (`correlation:`).
    Correlation(CorrelationRule),
    /// A global filter (`filter:`).
    Filter(FilterRule),
}

/// The descriptive fields shared by rules, correlations and filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// Short title (required, at most 256 characters).
    pub title: String,
    /// Globally unique id, usually a UUID.
    pub id: Option<String>,
    /// Unique human-readable name, used by correlations to refer to the rule.
    pub name: Option<String>,
    /// Relations to other rules.
    pub related: Vec<Related>,
    /// Field-name taxonomy; `None` means the default, `sigma`.
    pub taxonomy: Option<String>,
    /// Maturity.
    pub status: Option<Status>,
    /// What it detects.
    pub description: Option<String>,
    /// SPDX licence id.
    pub license: Option<String>,
    /// Author(s), comma-separated.
    pub author: Option<String>,
    /// Sources the rule was derived from.
    pub references: Vec<String>,
    /// Creation date.
    pub date: Option<NaiveDate>,
    /// Last modification date.
    pub modified: Option<NaiveDate>,
    /// Known false positives.
    pub falsepositives: Vec<String>,
    /// Severity of a match.
    pub level: Option<Level>,
    /// Tags such as `attack.t1059`.
    pub tags: Vec<String>,
    /// Intended scopes (e.g. `server`).
    pub scope: Vec<String>,
    /// Where the document starts.
    pub pos: Pos,
}

/// `related:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// The other rule's id.
    pub id: String,
    /// How it relates.
    pub kind: RelationType,
}

/// The relation types of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationType {
    /// Derived from the other rule.
    Derived,
    /// Replaces the other rule.
    Obsolete,
    /// Merged from the other rules.
    Merged,
    /// Previously had the other id.
    Renamed,
    /// Similar to the other rule.
    Similar,
}

/// Rule maturity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// May be used in production.
    Stable,
    /// Mostly stable; may need tuning.
    Test,
    /// May be noisy.
    Experimental,
    /// Replaced by another rule.
    Deprecated,
    /// Cannot be used as is.
    Unsupported,
}

/// Severity of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Enrichment only; no alert expected.
    Informational,
    /// Notable, rarely an incident.
    Low,
    /// To review.
    Medium,
    /// Prompt review.
    High,
    /// Incident.
    Critical,
}

/// `logsource:` — which events the rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSource {
    /// e.g. `process_creation`.
    pub category: Option<String>,
    /// e.g. `windows`.
    pub product: Option<String>,
    /// e.g. `sysmon`.
    pub service: Option<String>,
    /// Free text for the reader.
    pub definition: Option<String>,
    /// Other scalar keys, which the specification allows.
    pub custom: IndexMap<String, String>,
}

/// A detection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaRule {
    /// Title, id, level, tags, ...
    pub meta: Metadata,
    /// Which events it applies to.
    pub logsource: LogSource,
    /// What it matches.
    pub detection: Detection,
    /// Fields worth showing to the analyst.
    pub fields: Vec<String>,
}

/// A correlation rule: metadata plus its `correlation` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRule {
    /// Title, id, name, level, ...
    pub meta: Metadata,
    /// What is correlated.
    pub correlation: Correlation,
}

/// A global filter: a detection that suppresses matches of the rules it names.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRule {
    /// Title, id, ...
    pub meta: Metadata,
    /// Which events it applies to.
    pub logsource: LogSource,
    /// The rules filtered, by id or name.
    pub rules: Vec<RuleRef>,
    /// The filter's selections and condition (a match suppresses the rules' alerts).
    pub detection: Detection,
}

/// `detection:` — named selections and the condition combining them.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The selections ("search identifiers"), in file order.
    pub selections: IndexMap<String, Selection>,
    /// The conditions; several (a YAML list) are alternatives, ORed. Never empty.
    pub condition: Vec<Condition>,
    /// The pre-2.0 `timeframe` (meaningful only with aggregations); kept for completeness.
    pub timeframe: Option<Timespan>,
    /// Where `detection:`'s value starts.
    pub pos: Pos,
}

impl Detection {
    /// Selection names in index order, as [`Condition`] leaves refer to them.
    pub fn names(&self) -> Vec<&str> {
        self.selections.keys().map(String::as_str).collect()
    }
}

/// One named selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Its shape and matchers.
    pub kind: SelectionKind,
    /// Where its value starts.
    pub pos: Pos,
}

/// The shapes a selection takes.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectionKind {
    /// A map: every matcher must hold (AND).
    All(Vec<FieldMatcher>),
    /// A list of maps: at least one map must hold (OR of ANDs). A plain value among the maps
    /// is a keyword matcher alone in its group.
    Any(Vec<Vec<FieldMatcher>>),
    /// A list of plain values: a keyword search (field `None`) for any of them.
    Keywords(FieldMatcher),
}

/// Parses every document of a Sigma file. `file` is only used in messages.
pub fn parse(file: &Path, text: &str) -> Result<Vec<SigmaDocument>, SigmaErrors> {
    let cx = Cx { file, source: text };
    let docs = yaml::load(text).map_err(|e| SigmaErrors {
        errors: vec![cx.error(e.pos, ErrorKind::Yaml, e.message)],
    })?;
    let mut out = Vec::with_capacity(docs.len());
    let mut errors = Vec::new();
    for doc in &docs {
        // `---` followed by nothing: an empty document (a null scalar), not a rule.
        let Some(root) = &doc.root else { continue };
        if root
            .as_scalar()
            .is_some_and(|s| s.resolve() == Resolved::Null)
        {
            continue;
        }
        if let Some(d) = document(&cx, root, &mut errors) {
            out.push(d);
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(cx.invalid(
            Pos {
                line: 1,
                column: 1,
                index: 0,
            },
            "the file holds no Sigma document",
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SigmaErrors { errors })
    }
}

fn document(cx: &Cx, root: &Node, errors: &mut Vec<SigmaError>) -> Option<SigmaDocument> {
    if !matches!(root.kind, NodeKind::Map(_)) {
        errors.push(cx.invalid(
            root.pos,
            format!(
                "a Sigma document is a map of keys (title, logsource, detection, ...), not {}",
                root.describe()
            ),
        ));
        return None;
    }
    if let Some(action) = root.get("action") {
        let what = action.as_scalar().map_or("", |s| s.text.as_str());
        errors.push(cx.unsupported(
            action.pos,
            format!("rule collection `action: {what}`"),
            "the pre-2.0 rule collections (`action: global` / `reset` / `repeat`) are not \
             supported: write each rule as a complete YAML document",
        ));
        return None;
    }
    let kinds: Vec<&str> = ["detection", "correlation", "filter"]
        .into_iter()
        .filter(|k| root.get(k).is_some())
        .collect();
    if kinds.len() > 1 {
        errors.push(cx.invalid(
            root.pos,
            format!(
                "a document is one of a rule (`detection`), a correlation (`correlation`) or a \
                 filter (`filter`), but this one has {}: split it into documents with `---`",
                kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
            ),
        ));
        return None;
    }
    let before = errors.len();
    let meta = metadata(cx, root, errors);
    let doc = match kinds.first().copied() {
        Some("detection") => {
            let logsource = logsource(cx, root, errors);
            let detection = detection(cx, root.get("detection")?, &[], errors);
            let fields = keep(errors, opt_list(cx, root, "fields"));
            SigmaDocument::Rule(SigmaRule {
                meta,
                logsource: logsource?,
                detection: detection?,
                fields: fields?,
            })
        }
        Some("correlation") => {
            let node = root.get("correlation")?;
            // The schema puts `generate` at the top level; some authors nest it in the
            // section. Both mean the same.
            let generate = root.get("generate").or_else(|| node.get("generate"));
            let correlation = correlation::parse(cx, node, generate, errors);
            SigmaDocument::Correlation(CorrelationRule {
                meta,
                correlation: correlation?,
            })
        }
        Some("filter") => {
            let logsource = logsource(cx, root, errors);
            let node = root.get("filter")?;
            let rules = keep(errors, filter_rules(cx, node));
            let detection = detection(cx, node, &["rules"], errors);
            SigmaDocument::Filter(FilterRule {
                meta,
                logsource: logsource?,
                rules: rules?,
                detection: detection?,
            })
        }
        _ => {
            errors.push(cx.invalid(
                root.pos,
                "not a Sigma document: a rule needs `detection`, a correlation `correlation`, a \
                 filter `filter`",
            ));
            return None;
        }
    };
    (errors.len() == before).then_some(doc)
}

fn metadata(cx: &Cx, root: &Node, errors: &mut Vec<SigmaError>) -> Metadata {
    let mut meta = Metadata {
        pos: root.pos,
        ..Metadata::default()
    };
    match root.get("title") {
        None => errors.push(cx.invalid(root.pos, "missing `title`: every rule needs one")),
        Some(n) => {
            if let Some(t) = keep(errors, text(cx, n, "title")) {
                if t.chars().count() > 256 {
                    errors.push(cx.invalid(n.pos, "`title` is longer than 256 characters"));
                }
                meta.title = t.to_string();
            }
        }
    }
    let opt = |errors: &mut Vec<SigmaError>, key: &str| -> Option<String> {
        keep(errors, opt_text(cx, root, key)).flatten()
    };
    meta.id = opt(errors, "id");
    meta.name = opt(errors, "name");
    meta.taxonomy = opt(errors, "taxonomy");
    meta.description = opt(errors, "description");
    meta.license = opt(errors, "license");
    meta.author = opt(errors, "author");
    meta.status = keep(errors, opt_enum(cx, root, "status", STATUSES)).flatten();
    meta.level = keep(errors, opt_enum(cx, root, "level", LEVELS)).flatten();
    meta.date = keep(errors, opt_date(cx, root, "date")).flatten();
    meta.modified = keep(errors, opt_date(cx, root, "modified")).flatten();
    for (key, list) in [
        ("references", &mut meta.references),
        ("falsepositives", &mut meta.falsepositives),
        ("tags", &mut meta.tags),
        ("scope", &mut meta.scope),
    ] {
        if let Some(l) = keep(errors, opt_list(cx, root, key)) {
            *list = l;
        }
    }
    if let Some(n) = root.get("related") {
        meta.related = keep(errors, related(cx, n)).unwrap_or_default();
    }
    meta
}

const STATUSES: &[(&str, Status)] = &[
    ("stable", Status::Stable),
    ("test", Status::Test),
    ("experimental", Status::Experimental),
    ("deprecated", Status::Deprecated),
    ("unsupported", Status::Unsupported),
];

const LEVELS: &[(&str, Level)] = &[
    ("informational", Level::Informational),
    ("low", Level::Low),
    ("medium", Level::Medium),
    ("high", Level::High),
    ("critical", Level::Critical),
];

const RELATIONS: &[(&str, RelationType)] = &[
    ("derived", RelationType::Derived),
    ("obsolete", RelationType::Obsolete),
    ("merged", RelationType::Merged),
    ("renamed", RelationType::Renamed),
    ("similar", RelationType::Similar),
];

fn related(cx: &Cx, node: &Node) -> Result<Vec<Related>, SigmaError> {
    let NodeKind::Seq(items) = &node.kind else {
        return Err(cx.invalid(node.pos, "`related` must be a list of `{id, type}` maps"));
    };
    items
        .iter()
        .map(|item| {
            let id = item.get("id").ok_or_else(|| {
                cx.invalid(item.pos, "a `related` entry needs an `id` (and a `type`)")
            })?;
            let kind = opt_enum(cx, item, "type", RELATIONS)?
                .ok_or_else(|| cx.invalid(item.pos, "a `related` entry needs a `type`"))?;
            Ok(Related {
                id: text(cx, id, "id")?.to_string(),
                kind,
            })
        })
        .collect()
}

fn logsource(cx: &Cx, root: &Node, errors: &mut Vec<SigmaError>) -> Option<LogSource> {
    let Some(node) = root.get("logsource") else {
        errors.push(cx.invalid(
            root.pos,
            "missing `logsource`: say which events the rule reads (category, product, service)",
        ));
        return None;
    };
    let NodeKind::Map(entries) = &node.kind else {
        errors.push(cx.invalid(
            node.pos,
            "`logsource` must be a map with category, product and/or service",
        ));
        return None;
    };
    let mut ls = LogSource::default();
    for (k, v) in entries {
        let Some(key) = keep(errors, text(cx, k, "logsource key")) else {
            continue;
        };
        let value = match v.as_scalar().map(|s| (s, s.resolve())) {
            Some((_, Resolved::Null)) => continue,
            Some((s, _)) => s.text.clone(),
            None => {
                // Custom keys may hold anything; the three standard ones must be strings.
                if matches!(key, "category" | "product" | "service" | "definition") {
                    errors.push(cx.invalid(v.pos, format!("`logsource.{key}` must be a string")));
                }
                continue;
            }
        };
        match key {
            "category" => ls.category = Some(value),
            "product" => ls.product = Some(value),
            "service" => ls.service = Some(value),
            "definition" => ls.definition = Some(value),
            _ => {
                ls.custom.insert(key.to_string(), value);
            }
        }
    }
    Some(ls)
}

fn filter_rules(cx: &Cx, filter: &Node) -> Result<Vec<RuleRef>, SigmaError> {
    let Some(node) = filter.get("rules") else {
        return Err(cx.invalid(
            filter.pos,
            "a filter needs `rules`: the ids or names of the rules it applies to",
        ));
    };
    let items: Vec<&Node> = match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let refs = items
        .into_iter()
        .map(|n| {
            text(cx, n, "rules").map(|t| RuleRef {
                reference: t.to_string(),
                pos: n.pos,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if refs.is_empty() {
        return Err(cx.invalid(node.pos, "`rules` must name at least one rule"));
    }
    Ok(refs)
}

/// Parses a detection map (or a filter map, skipping `skip` keys).
fn detection(
    cx: &Cx,
    node: &Node,
    skip: &[&str],
    errors: &mut Vec<SigmaError>,
) -> Option<Detection> {
    let NodeKind::Map(entries) = &node.kind else {
        errors.push(cx.invalid(
            node.pos,
            format!(
                "the detection must be a map of selections and a `condition`, not {}",
                node.describe()
            ),
        ));
        return None;
    };
    let before = errors.len();
    let mut selections = IndexMap::new();
    // Every selection key, parsed or not, so a broken selection does not also show up as
    // "undefined" in the condition.
    let mut names: Vec<&str> = Vec::new();
    let mut condition_node = None;
    let mut timeframe = None;
    for (k, v) in entries {
        let Some(name) = keep(errors, text(cx, k, "selection name")) else {
            continue;
        };
        match name {
            "condition" => condition_node = Some(v),
            "timeframe" => {
                timeframe = keep(
                    errors,
                    text(cx, v, "timeframe")
                        .and_then(|t| Timespan::parse(t).map_err(|m| cx.invalid(v.pos, m))),
                );
            }
            _ if skip.contains(&name) => {}
            _ => {
                names.push(name);
                if let Some(sel) = selection(cx, name, v, errors) {
                    selections.insert(name.to_string(), sel);
                }
            }
        }
    }
    if names.is_empty() {
        errors.push(cx.invalid(
            node.pos,
            "the detection has no selection: add at least one named map or list of values",
        ));
    }
    let Some(cond_node) = condition_node else {
        errors.push(cx.invalid(
            node.pos,
            "the detection has no `condition`: add e.g. `condition: selection`",
        ));
        return None;
    };
    let cond_items: Vec<&Node> = match &cond_node.kind {
        NodeKind::Seq(items) if !items.is_empty() => items.iter().collect(),
        _ => vec![cond_node],
    };
    let mut condition = Vec::with_capacity(cond_items.len());
    for item in cond_items {
        let Some(t) = keep(errors, text(cx, item, "condition")) else {
            continue;
        };
        match condition::parse(t, &names) {
            Ok(c) => condition.push(c),
            Err(e) => {
                let at = cx.at(item, e.column - 1);
                errors.push(match e.unsupported {
                    Some(feature) => cx.unsupported(at, feature, e.message),
                    None => cx.invalid(at, e.message),
                });
            }
        }
    }
    (errors.len() == before).then(|| Detection {
        selections,
        condition,
        timeframe,
        pos: node.pos,
    })
}

fn selection(cx: &Cx, name: &str, node: &Node, errors: &mut Vec<SigmaError>) -> Option<Selection> {
    let before = errors.len();
    let kind = match &node.kind {
        NodeKind::Map(entries) => {
            if entries.is_empty() {
                errors.push(cx.invalid(node.pos, format!("selection `{name}` is empty")));
                return None;
            }
            let matchers = entries
                .iter()
                .filter_map(|(k, v)| keep(errors, modifier::field_matcher(cx, k, v)))
                .collect();
            SelectionKind::All(matchers)
        }
        NodeKind::Seq(items) => {
            if items.is_empty() {
                errors.push(cx.invalid(node.pos, format!("selection `{name}` is an empty list")));
                return None;
            }
            if items.iter().all(|i| i.as_scalar().is_some()) {
                let items: Vec<&Node> = items.iter().collect();
                SelectionKind::Keywords(keep(errors, modifier::keywords(cx, node.pos, &items))?)
            } else {
                let mut groups = Vec::with_capacity(items.len());
                for item in items {
                    let group = match &item.kind {
                        NodeKind::Map(entries) if !entries.is_empty() => entries
                            .iter()
                            .filter_map(|(k, v)| keep(errors, modifier::field_matcher(cx, k, v)))
                            .collect(),
                        NodeKind::Scalar(_) => {
                            keep(errors, modifier::keywords(cx, item.pos, &[item]))
                                .into_iter()
                                .collect()
                        }
                        _ => {
                            errors.push(cx.invalid(
                                item.pos,
                                format!(
                                    "an item of selection `{name}` must be a map of fields or a \
                                     value, not {}",
                                    if matches!(item.kind, NodeKind::Map(_)) {
                                        "an empty map".to_string()
                                    } else {
                                        item.describe()
                                    }
                                ),
                            ));
                            continue;
                        }
                    };
                    groups.push(group);
                }
                SelectionKind::Any(groups)
            }
        }
        NodeKind::Scalar(s) => {
            let message = if s.resolve() == Resolved::Null {
                format!("selection `{name}` is empty")
            } else {
                format!(
                    "selection `{name}` must be a map of fields or a list; for a keyword search \
                     write the value as a list item: `- '{}'`",
                    s.text
                )
            };
            errors.push(cx.invalid(node.pos, message));
            return None;
        }
    };
    (errors.len() == before).then_some(Selection {
        kind,
        pos: node.pos,
    })
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

/// An optional text key; absent and null are `None`.
fn opt_text(cx: &Cx, map: &Node, key: &str) -> Result<Option<String>, SigmaError> {
    match map.get(key) {
        None => Ok(None),
        Some(n) if n.as_scalar().is_some_and(|s| s.resolve() == Resolved::Null) => Ok(None),
        Some(n) => text(cx, n, key).map(|t| Some(t.to_string())),
    }
}

/// An optional list of texts; a single value counts as a list of one.
fn opt_list(cx: &Cx, map: &Node, key: &str) -> Result<Vec<String>, SigmaError> {
    let Some(node) = map.get(key) else {
        return Ok(Vec::new());
    };
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .map(|i| text(cx, i, key).map(str::to_string))
            .collect(),
        NodeKind::Scalar(s) if s.resolve() == Resolved::Null => Ok(Vec::new()),
        NodeKind::Scalar(s) => Ok(vec![s.text.clone()]),
        NodeKind::Map(_) => Err(cx.invalid(node.pos, format!("`{key}` must be a list of values"))),
    }
}

fn opt_enum<T: Copy>(
    cx: &Cx,
    map: &Node,
    key: &str,
    values: &[(&str, T)],
) -> Result<Option<T>, SigmaError> {
    let Some(t) = opt_text(cx, map, key)? else {
        return Ok(None);
    };
    values
        .iter()
        .find(|(n, _)| *n == t)
        .map(|(_, v)| Some(*v))
        .ok_or_else(|| {
            cx.invalid(
                map.get(key).map_or(map.pos, |n| n.pos),
                format!(
                    "`{key}: {t}` is not one of {}",
                    values
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

fn opt_date(cx: &Cx, map: &Node, key: &str) -> Result<Option<NaiveDate>, SigmaError> {
    let Some(t) = opt_text(cx, map, key)? else {
        return Ok(None);
    };
    NaiveDate::parse_from_str(&t, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| {
            cx.invalid(
                map.get(key).map_or(map.pos, |n| n.pos),
                format!("`{key}: {t}` is not a date: write YYYY-MM-DD, e.g. 2024-08-08"),
            )
        })
}
