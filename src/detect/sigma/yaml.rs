//! YAML text -> trees of [`Node`]s that remember where every node was written.
//!
//! In: the text of a YAML file, possibly holding several documents separated by `---` (Sigma
//! puts a correlation rule and its base rules in one file that way).
//! Out: one [`Document`] per YAML document, each a tree of nodes carrying the line and column of
//! their first character, or a [`YamlError`] at the first syntax error.
//!
//! Guarantees: scalars keep their source text and quoting style untouched. Sigma gives meaning to
//! the exact text of a value (`0x17`, `010`, wildcards, backslashes), so typing a plain scalar as
//! null, bool or number is left to [`Scalar::resolve`], which follows the YAML 1.2 core schema.
//! That is also why this builds its own tree from the `saphyr-parser` events instead of using a
//! ready-made document type: those convert plain scalars at load and lose the text. Mapping keys
//! must be unique (YAML says so; a duplicated selection would otherwise silently replace the
//! first), and aliases are expanded within a node budget so a small file cannot blow up memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

/// Where a node starts (or ends) in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// 0-based offset from the start of the file, in characters.
    pub index: usize,
}

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its root node; `None` for an empty document (e.g. a trailing `---`).
    pub root: Option<Node>,
    /// Where the document starts.
    pub pos: Pos,
}

/// A YAML node and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's first character (the opening quote of a quoted scalar).
    pub pos: Pos,
    /// Just past the node's last character.
    pub end: Pos,
    /// Scalar, sequence or mapping.
    pub kind: NodeKind,
}

/// The three kinds of YAML nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its source text.
    Scalar(Scalar),
    /// A sequence, in order.
    Seq(Vec<Node>),
    /// A mapping, in source order; keys are unique.
    Map(Vec<(Node, Node)>),
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: its type is resolved from its text.
    Plain,
    /// `'...'`
    SingleQuoted,
    /// `"..."`
    DoubleQuoted,
    /// `|` block.
    Literal,
    /// `>` block.
    Folded,
}

/// A scalar's text (after YAML unquoting and escapes) and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The value as YAML reads it, before any typing.
    pub text: String,
    /// Its quoting style.
    pub style: Style,
    /// True when tagged `!!str`: a string whatever its text.
    pub explicit_str: bool,
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Decimal, `0x` or `0o` integer that fits an `i64`.
    Int(i64),
    /// Floating point, including `.inf` and `.nan`.
    Float(f64),
    /// Anything else, and every quoted or block scalar.
    Str(&'a str),
}

impl Scalar {
    /// The scalar's type and value under the YAML 1.2 core schema (quoted scalars are strings).
    pub fn resolve(&self) -> Resolved<'_> {
        let t = self.text.as_str();
        if self.style != Style::Plain || self.explicit_str {
            return Resolved::Str(t);
        }
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Resolved::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        if let Some(n) = resolve_int(t) {
            return Resolved::Int(n);
        }
        if is_core_float(t)
            && let Ok(f) = t.parse::<f64>()
        {
            return Resolved::Float(f);
        }
        Resolved::Str(t)
    }
}

fn resolve_int(t: &str) -> Option<i64> {
    if let Some(hex) = t.strip_prefix("0x") {
        return (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| i64::from_str_radix(hex, 16).ok())
            .flatten();
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return (!oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .then(|| i64::from_str_radix(oct, 8).ok())
            .flatten();
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too large for an i64: keep it as text rather than lose digits.
    t.parse().ok()
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(t: &str) -> bool {
    let b = t.strip_prefix(['-', '+']).unwrap_or(t).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

impl Node {
    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the node's kind, for messages ("a list", "a map", "`foo`").
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Scalar(s) => match s.resolve() {
                Resolved::Null => "an empty value".to_string(),
                _ => format!("`{}`", s.text),
            },
            NodeKind::Seq(_) => "a list".to_string(),
            NodeKind::Map(_) => "a map".to_string(),
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's message.
    pub message: String,
}

/// The most nodes alias expansion may add to a file. Sigma rules have no use for deep aliasing;
/// the bound stops a "billion laughs" file from exhausting memory.
const ALIAS_NODE_BUDGET: usize = 10_000;

/// Parses every YAML document in `text`.
pub fn load(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        doc_pos: Pos::default(),
        root: None,
        alias_budget: ALIAS_NODE_BUDGET,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(scan_error)?;
        builder.on_event(event, span)?;
    }
    Ok(builder.docs)
}

fn pos(m: saphyr_parser::Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
        index: m.index(),
    }
}

fn scan_error(e: ScanError) -> YamlError {
    YamlError {
        pos: pos(*e.marker()),
        message: e.info().to_string(),
    }
}

/// A collection being built.
enum Frame {
    Seq {
        start: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id, for aliases.
    anchors: HashMap<usize, Node>,
    docs: Vec<Document>,
    doc_pos: Pos,
    root: Option<Node>,
    /// Nodes aliases may still add.
    alias_budget: usize,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let start = pos(span.start);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_) => {
                self.doc_pos = start;
                self.root = None;
            }
            Event::DocumentEnd => self.docs.push(Document {
                root: self.root.take(),
                pos: self.doc_pos,
            }),
            Event::SequenceStart(anchor, tag) => {
                check_tag(tag.as_deref(), start)?;
                self.stack.push(Frame::Seq {
                    start,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(tag.as_deref(), start)?;
                self.stack.push(Frame::Map {
                    start,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let end = pos(span.end);
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        start,
                        anchor,
                        items,
                    }) => (
                        Node {
                            pos: start,
                            end,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos: start,
                            end,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => unreachable!("the parser balances collection events"),
                };
                self.add(node, anchor)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let explicit_str = check_tag(tag.as_deref(), start)?;
                let node = Node {
                    pos: start,
                    end: pos(span.end),
                    kind: NodeKind::Scalar(Scalar {
                        text: text.into_owned(),
                        style: match style {
                            ScalarStyle::Plain => Style::Plain,
                            ScalarStyle::SingleQuoted => Style::SingleQuoted,
                            ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                            ScalarStyle::Literal => Style::Literal,
                            ScalarStyle::Folded => Style::Folded,
                        },
                        explicit_str,
                    }),
                };
                self.add(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(YamlError {
                        pos: start,
                        message: "alias to an unknown anchor".to_string(),
                    });
                };
                let size = count_nodes(target);
                if size > self.alias_budget {
                    return Err(YamlError {
                        pos: start,
                        message: format!(
                            "aliases expand to more than {ALIAS_NODE_BUDGET} nodes; \
                             write the values out instead"
                        ),
                    });
                }
                self.alias_budget -= size;
                let mut node = target.clone();
                // Errors about the alias's content point at the alias, where it is used.
                node.pos = start;
                node.end = pos(span.end);
                self.add(node, 0)?;
            }
        }
        Ok(())
    }

    /// Attaches a finished node to its parent (or makes it the document's root).
    fn add(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        // Anchor ids start at 1; 0 means none.
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if let Some(text) = node.as_scalar().map(|s| &s.text)
                        && let Some((first, _)) = entries
                            .iter()
                            .find(|(k, _)| k.as_scalar().is_some_and(|s| &s.text == text))
                    {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{text}` (first at line {}); \
                                 a key may appear once per map",
                                first.pos.line
                            ),
                        });
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

/// Accepts no tag or a core-schema tag; returns true for `!!str`. Custom tags (`!foo`) mean
/// nothing to Sigma.
fn check_tag(tag: Option<&saphyr_parser::Tag>, at: Pos) -> Result<bool, YamlError> {
    match tag {
        None => Ok(false),
        Some(t) if t.is_yaml_core_schema() => Ok(t.suffix == "str"),
        Some(t) => Err(YamlError {
            pos: at,
            message: format!(
                "custom YAML tag `{}{}` is not supported in Sigma rules; remove it",
                t.handle, t.suffix
            ),
        }),
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Scalar(_) => 0,
        NodeKind::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeKind::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

/// Where the character `offset` (in characters) of a scalar's value was written in the file.
///
/// A scalar's value differs from its source: quotes, escapes (`''`, `\"`) and line folding
/// (a line break plus indentation reads as one space). This walks the source alongside the
/// value, skipping source characters that the value does not have, so an error inside a
/// condition or a modifier chain points at the right line and column even in a multi-line
/// condition. If the walk gets lost (exotic escapes), it falls back to the scalar's start.
pub fn locate(source: &str, node: &Node, offset: usize) -> Pos {
    let NodeKind::Scalar(scalar) = &node.kind else {
        return node.pos;
    };
    let Some((start_byte, _)) = source.char_indices().nth(node.pos.index) else {
        return node.pos;
    };
    let mut src = source[start_byte..].chars().peekable();
    let mut at = node.pos;
    let advance = |at: &mut Pos, c: char| {
        at.index += 1;
        if c == '\n' {
            at.line += 1;
            at.column = 1;
        } else {
            at.column += 1;
        }
    };
    if matches!(scalar.style, Style::SingleQuoted | Style::DoubleQuoted)
        && let Some(q) = src.next()
    {
        advance(&mut at, q);
    }
    let mut value = scalar.text.chars();
    for want in 0..=offset {
        let Some(v) = value.next() else {
            // Past the end of the value: point just after its last character.
            return if want == offset { at } else { node.pos };
        };
        loop {
            if at.index >= node.end.index {
                return node.pos;
            }
            let Some(c) = src.next() else {
                return node.pos;
            };
            if c == v {
                if want == offset {
                    return at;
                }
                advance(&mut at, c);
                break;
            }
            advance(&mut at, c);
        }
    }
    node.pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        load(text).unwrap().remove(0).root.unwrap()
    }

    #[test]
    fn nodes_carry_line_and_column() {
        let doc = root("title: x\ndetection:\n    sel:\n        Image|endswith: '\\a.exe'\n");
        let det = doc.get("detection").unwrap();
        assert_eq!((det.pos.line, det.pos.column), (3, 5));
        let NodeKind::Map(entries) = &det.get("sel").unwrap().kind else {
            panic!("not a map")
        };
        let (k, v) = &entries[0];
        assert_eq!((k.pos.line, k.pos.column), (4, 9));
        assert_eq!((v.pos.line, v.pos.column), (4, 25));
        let v = v.as_scalar().unwrap();
        assert_eq!(v.text, "\\a.exe");
        assert_eq!(v.style, Style::SingleQuoted);
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = load("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[0].root.as_ref().unwrap().get("a").is_some());
        assert_eq!(docs[1].pos.line, 2);
        assert!(docs[1].root.as_ref().unwrap().get("b").is_some());
        // An explicit document with no content holds a null scalar.
        let last = docs[2].root.as_ref().and_then(Node::as_scalar);
        assert_eq!(last.map(Scalar::resolve), Some(Resolved::Null));
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema_and_keep_their_text() {
        let doc = root(
            "a: 4624\nb: 0x17\nc: '4624'\nd: null\ne:\nf: true\ng: 1.5\nh: 2019-10-23\ni: !!str 12\nj: 010\n",
        );
        let r = |k: &str| doc.get(k).unwrap().as_scalar().unwrap().clone();
        assert_eq!(r("a").resolve(), Resolved::Int(4624));
        assert_eq!(r("b").resolve(), Resolved::Int(23));
        assert_eq!(r("b").text, "0x17");
        assert_eq!(r("c").resolve(), Resolved::Str("4624"));
        assert_eq!(r("d").resolve(), Resolved::Null);
        assert_eq!(r("e").resolve(), Resolved::Null);
        assert_eq!(r("f").resolve(), Resolved::Bool(true));
        assert_eq!(r("g").resolve(), Resolved::Float(1.5));
        assert_eq!(r("h").resolve(), Resolved::Str("2019-10-23"));
        assert_eq!(r("i").resolve(), Resolved::Str("12"));
        assert_eq!(r("j").resolve(), Resolved::Int(10));
        assert_eq!(r("j").text, "010");
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_key() {
        let e = load("detection:\n  sel: 1\n  sel: 2\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (3, 3));
        assert!(
            e.message.contains("duplicate key `sel` (first at line 2)"),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn aliases_are_expanded_within_a_budget() {
        let doc = root("a: &x [1, 2]\nb: *x\n");
        assert_eq!(doc.get("b").unwrap().kind, doc.get("a").unwrap().kind);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..6 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = load(&bomb).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{e:?}");
    }

    #[test]
    fn custom_tags_are_rejected() {
        let e = load("a: !foo bar\n").unwrap_err();
        assert!(e.message.contains("custom YAML tag `!foo`"), "{e:?}");
    }

    #[test]
    fn locate_maps_value_offsets_to_source_positions() {
        let text = "c1: sel and x\nc2: 'it''s x'\nc3: \"a\\\"b x\"\nc4: sel and\n    (x)\n";
        let doc = root(text);
        let at = |k: &str, off: usize| {
            let p = locate(text, doc.get(k).unwrap(), off);
            (p.line, p.column)
        };
        // Plain: value offset 8 is `x`, column 5 + 8.
        assert_eq!(at("c1", 8), (1, 13));
        // Single-quoted with a doubled quote: `x` is at value offset 5.
        assert_eq!(at("c2", 5), (2, 12));
        // Double-quoted with an escape: `x` is at value offset 4.
        assert_eq!(at("c3", 4), (3, 11));
        // Folded plain scalar: value is "sel and (x)"; `x` is offset 9, on the next line.
        assert_eq!(at("c4", 9), (5, 6));
        // One past the end is the end.
        assert_eq!(at("c1", 9), (1, 14));
    }
}
