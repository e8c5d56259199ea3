//! The test-file format: YAML text -> a [`TestFile`] of cases, or every problem at its line
//! and column.
//!
//! In: the text of a `*.tests.yml` file. Out: its cases with their events already as JSON
//! values (what the stream's decoder will read) and their expectations, each remembering where
//! it was written so a failure or a dead letter can point back at it. Nothing is checked
//! against the configuration or the rules here: stream and rule names are resolved by the
//! runner, which knows them. The format is documented in `rules/README.md`.

use std::collections::HashSet;

use serde_json::Value;

use crate::detect::sigma::yaml::{self, Node, NodeKind, Pos, Resolved};

/// A parsed test file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFile {
    /// The rules whose alerts are compared (ids or Sigma names); `None`: every rule.
    pub rules: Option<Vec<Named>>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The text.
    pub name: String,
    /// Its position.
    pub pos: Pos,
}

/// One test case: events in, the alerts they must raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Unique within the file; printed in results.
    pub name: String,
    /// Where the case starts.
    pub pos: Pos,
    /// Events per stream, each stream's in the order written (its arrival order).
    pub streams: Vec<StreamEvents>,
    /// The alerts the compared rules must raise, and nothing else.
    pub expect: Vec<Expectation>,
    /// Micro-batch size for this case (default: the configuration's `batch_rows`).
    pub batch_rows: Option<usize>,
}

/// The events of one stream in a case.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvents {
    /// The configured stream's name.
    pub stream: Named,
    /// Its events.
    pub events: Vec<Event>,
}

/// One event, as the JSON object its record will carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event.
    pub value: Value,
    /// Where it was written.
    pub pos: Pos,
}

/// Alerts that must be raised: `count` alerts of `rule` (about `entity`, showing `evidence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Rule id or Sigma name.
    pub rule: Named,
    /// The alert's entity, when it matters.
    pub entity: Option<String>,
    /// How many alerts; at least 1.
    pub count: usize,
    /// Fields some evidence row of each alert must hold, with these values.
    pub evidence: Vec<(String, Value)>,
    /// Where it was written.
    pub pos: Pos,
}

/// A problem with a test file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Where.
    pub pos: Pos,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Parses a test file; every problem found is reported, not just the first.
pub fn parse(text: &str) -> Result<TestFile, Vec<SpecError>> {
    let docs = yaml::load(text).map_err(|e| {
        vec![SpecError {
            pos: e.pos,
            message: e.message,
        }]
    })?;
    let mut roots = docs
        .iter()
        .filter_map(|d| d.root.as_ref())
        .filter(|r| !r.as_scalar().is_some_and(|s| s.resolve() == Resolved::Null));
    let Some(root) = roots.next() else {
        return Err(vec![err(
            Pos {
                line: 1,
                column: 1,
                index: 0,
            },
            "empty test file: write `tests:` with a list of cases (see rules/README.md)",
        )]);
    };
    let mut p = Parser { errors: Vec::new() };
    if let Some(extra) = roots.next() {
        p.error(
            extra.pos,
            "one YAML document per test file: remove the `---`",
        );
    }
    let file = p.file(root);
    match file {
        Some(f) if p.errors.is_empty() => Ok(f),
        _ => Err(p.errors),
    }
}

fn err(pos: Pos, message: impl Into<String>) -> SpecError {
    SpecError {
        pos,
        message: message.into(),
    }
}

struct Parser {
    errors: Vec<SpecError>,
}

impl Parser {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(err(pos, message));
    }

    /// The entries of a map, after checking every key is one of `known`.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        known: &[&str],
    ) -> Option<&'n [(Node, Node)]> {
        let NodeKind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!("{what} must be a map, found {}", node.describe()),
            );
            return None;
        };
        for (k, _) in entries {
            let text = k.as_scalar().map(|s| s.text.as_str());
            if !text.is_some_and(|t| known.contains(&t)) {
                self.error(
                    k.pos,
                    format!(
                        "unknown key {} in {what}; expected {}",
                        k.describe(),
                        list(known)
                    ),
                );
            }
        }
        Some(entries)
    }

    fn file(&mut self, root: &Node) -> Option<TestFile> {
        self.map(root, "a test file", &["rules", "tests"])?;
        let rules = root.get("rules").map(|n| match &n.kind {
            NodeKind::Seq(items) if items.is_empty() => {
                self.error(
                    n.pos,
                    "`rules` is empty, so nothing would be compared: list rules, or remove \
                     `rules` to compare every rule",
                );
                Vec::new()
            }
            NodeKind::Seq(items) => items
                .iter()
                .filter_map(|i| self.name(i, "a rule"))
                .collect(),
            _ => self.name(n, "`rules`").into_iter().collect(),
        });
        let Some(tests) = root.get("tests") else {
            self.error(root.pos, "missing `tests:`, the list of test cases");
            return None;
        };
        let NodeKind::Seq(items) = &tests.kind else {
            self.error(
                tests.pos,
                format!(
                    "`tests` must be a list of cases, found {}",
                    tests.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.error(tests.pos, "`tests` is empty: write at least one case");
        }
        let cases = items.iter().filter_map(|item| self.case(item)).collect();
        // Names are checked apart, so a duplicate shows even when a case has other problems.
        let mut names = HashSet::new();
        for item in items {
            if let Some(name) = item.get("name").and_then(|n| n.as_scalar())
                && !names.insert(name.text.as_str())
            {
                self.error(
                    item.pos,
                    format!("two cases are named `{}`; names must be unique", name.text),
                );
            }
        }
        Some(TestFile { rules, cases })
    }

    /// A non-empty scalar, as text.
    fn name(&mut self, node: &Node, what: &str) -> Option<Named> {
        match node.as_scalar() {
            Some(s) if !s.text.trim().is_empty() => Some(Named {
                name: s.text.clone(),
                pos: node.pos,
            }),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a name, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn positive(&mut self, node: &Node, what: &str) -> Option<usize> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Int(n)) if n > 0 => Some(n as usize),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be a whole number of at least 1, found {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn case(&mut self, node: &Node) -> Option<Case> {
        let known = ["name", "stream", "events", "expect", "batch_rows"];
        self.map(node, "a test case", &known)?;
        let name = match node.get("name") {
            Some(n) => self.name(n, "`name`"),
            None => {
                self.error(node.pos, "a test case needs a `name`");
                None
            }
        };
        let stream = node.get("stream").and_then(|n| self.name(n, "`stream`"));
        let batch_rows = node
            .get("batch_rows")
            .and_then(|n| self.positive(n, "`batch_rows`"));
        let streams = match node.get("events") {
            None => {
                self.error(node.pos, "a test case needs `events`");
                None
            }
            Some(events) => self.events(events, stream),
        };
        let expect = match node.get("expect") {
            None => {
                self.error(
                    node.pos,
                    "a test case needs `expect`: the alerts it must raise (`expect: []` for none)",
                );
                None
            }
            Some(n) => match &n.kind {
                NodeKind::Seq(items) => items.iter().map(|i| self.expectation(i)).collect(),
                _ => {
                    self.error(
                        n.pos,
                        format!(
                            "`expect` must be a list of alerts (`[]` for none), found {}",
                            n.describe()
                        ),
                    );
                    None
                }
            },
        };
        Some(Case {
            name: name?.name,
            pos: node.pos,
            streams: streams?,
            expect: expect?,
            batch_rows,
        })
    }

    /// `events`: a list (of the case's `stream`), or a map from stream name to a list.
    fn events(&mut self, node: &Node, stream: Option<Named>) -> Option<Vec<StreamEvents>> {
        let out = match (&node.kind, stream) {
            (NodeKind::Seq(_), Some(stream)) => vec![StreamEvents {
                stream,
                events: self.event_list(node)?,
            }],
            (NodeKind::Seq(_), None) => {
                self.error(
                    node.pos,
                    "which stream are these events of? Add `stream: NAME` to the case, or \
                     write `events` as a map from stream name to its events",
                );
                return None;
            }
            (NodeKind::Map(entries), None) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    let stream = self.name(k, "a stream")?;
                    out.push(StreamEvents {
                        stream,
                        events: self.event_list(v)?,
                    });
                }
                out
            }
            (NodeKind::Map(_), Some(stream)) => {
                self.error(
                    stream.pos,
                    "`stream` and `events` by stream do not go together: remove `stream`, \
                     or write `events` as a list",
                );
                return None;
            }
            (NodeKind::Scalar(_), _) => {
                self.error(
                    node.pos,
                    format!(
                        "`events` must be a list of events, found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        };
        if out.iter().all(|s| s.events.is_empty()) {
            self.error(
                node.pos,
                "`events` is empty: a case needs at least one event",
            );
        }
        Some(out)
    }

    fn event_list(&mut self, node: &Node) -> Option<Vec<Event>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "a stream's events must be a list of maps, found {}",
                    node.describe()
                ),
            );
            return None;
        };
        let mut events = Vec::new();
        for item in items {
            if !matches!(item.kind, NodeKind::Map(_)) {
                self.error(
                    item.pos,
                    format!(
                        "an event must be a map of field: value, found {}",
                        item.describe()
                    ),
                );
                continue;
            }
            match to_json(item) {
                Ok(value) => events.push(Event {
                    value,
                    pos: item.pos,
                }),
                Err(e) => self.errors.push(e),
            }
        }
        Some(events)
    }

    fn expectation(&mut self, node: &Node) -> Option<Expectation> {
        self.map(
            node,
            "an expected alert",
            &["rule", "entity", "count", "evidence"],
        )?;
        let rule = match node.get("rule") {
            Some(n) => self.name(n, "`rule`"),
            None => {
                self.error(
                    node.pos,
                    "an expected alert needs `rule`: the rule's id or Sigma name",
                );
                None
            }
        };
        let entity = node
            .get("entity")
            .and_then(|n| self.name(n, "`entity`"))
            .map(|n| n.name);
        let count = match node.get("count") {
            Some(n) => self.positive(n, "`count`")?,
            None => 1,
        };
        let mut evidence = Vec::new();
        if let Some(n) = node.get("evidence") {
            let NodeKind::Map(fields) = &n.kind else {
                self.error(
                    n.pos,
                    format!(
                        "`evidence` must be a map of field: value, found {}",
                        n.describe()
                    ),
                );
                return None;
            };
            for (k, v) in fields {
                let field = self.name(k, "a field")?;
                match to_json(v) {
                    Ok(value) => evidence.push((field.name, value)),
                    Err(e) => self.errors.push(e),
                }
            }
        }
        Some(Expectation {
            rule: rule?,
            entity,
            count,
            evidence,
            pos: node.pos,
        })
    }
}

/// A YAML node as JSON: plain scalars typed by the YAML 1.2 core schema (`42` a number,
/// `true` a boolean, `2026-01-05T02:30:00Z` a string), quoted scalars always strings.
pub fn to_json(node: &Node) -> Result<Value, SpecError> {
    Ok(match &node.kind {
        NodeKind::Scalar(s) => match s.resolve() {
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(b),
            Resolved::Int(n) => Value::from(n),
            Resolved::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(err(
                        node.pos,
                        format!("`{}` has no JSON form; quote it to send a string", s.text),
                    ));
                }
            },
            Resolved::Str(t) => Value::String(t.to_string()),
        },
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        NodeKind::Map(entries) => {
            let mut object = serde_json::Map::new();
            for (k, v) in entries {
                let Some(key) = k.as_scalar() else {
                    return Err(err(k.pos, "a field name must be text, not a list or a map"));
                };
                object.insert(key.text.clone(), to_json(v)?);
            }
            Value::Object(object)
        }
    })
}

fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}
