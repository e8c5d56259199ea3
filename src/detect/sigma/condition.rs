//! The condition of a Sigma detection: `selection and not 1 of filter_*` -> a [`Condition`].
//!
//! In: the condition text and the names of the detection's selections, in order.
//! Out: a tree whose leaves are selection indices (wildcard names and `them` already resolved
//! to the selections they cover), or a [`ConditionError`] with the 1-based column inside the
//! condition text; the rule layer maps that column to the file.
//!
//! Grammar, from least to most binding (Sigma rules specification, "Condition"):
//!
//! ```text
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | primary
//! primary := "(" or ")" | ("1" | "all") "of" ("them" | name-pattern) | name
//! ```
//!
//! Keywords are matched case-insensitively. `them` covers every selection whose name does not
//! start with `_` (by the specification's convention); a pattern covers the names it matches,
//! with `_` names only when the pattern itself starts with `_`. The pre-2.0 aggregations
//! (`| count() by x > 5`, `| near`) are reported as an unsupported feature: correlation rules
//! replace them.

use std::fmt::Write as _;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// One selection, by its index in the detection.
    Selection(usize),
    /// `1 of X` / `all of X`.
    Of {
        /// `1` or `all`.
        quantifier: Quantifier,
        /// What was written after `of`.
        target: OfTarget,
        /// The selections it covers, in detection order; never empty.
        selections: Vec<usize>,
    },
    /// `not X`
    Not(Box<Condition>),
    /// `X and Y and ...` (flattened: no child is itself an `And`).
    And(Vec<Condition>),
    /// `X or Y or ...` (flattened: no child is itself an `Or`).
    Or(Vec<Condition>),
}

/// `1 of` or `all of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantifier {
    /// At least one of the selections matches.
    One,
    /// Every one of the selections matches.
    All,
}

/// What follows `of`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OfTarget {
    /// `them`: every selection not starting with `_`.
    Them,
    /// A name pattern with `*` wildcards, e.g. `selection_*`.
    Pattern(String),
}

/// Why a condition does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// 1-based column in the condition text, in characters.
    pub column: usize,
    /// The unsupported feature, or `None` when the condition is invalid.
    pub unsupported: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

impl Condition {
    /// A fully parenthesised rendering with selection names, e.g.
    /// `(and sel (not (1 of filter_a filter_b)))`; handy in tests and messages.
    pub fn render(&self, names: &[&str]) -> String {
        let mut out = String::new();
        self.render_into(names, &mut out);
        out
    }

    fn render_into(&self, names: &[&str], out: &mut String) {
        let list = |out: &mut String, head: &str, items: &[Condition]| {
            out.push('(');
            out.push_str(head);
            for c in items {
                out.push(' ');
                c.render_into(names, out);
            }
            out.push(')');
        };
        match self {
            Condition::Selection(i) => out.push_str(names.get(*i).copied().unwrap_or("?")),
            Condition::Of {
                quantifier,
                selections,
                ..
            } => {
                let q = match quantifier {
                    Quantifier::One => "1",
                    Quantifier::All => "all",
                };
                let _ = write!(out, "({q} of");
                for i in selections {
                    out.push(' ');
                    out.push_str(names.get(*i).copied().unwrap_or("?"));
                }
                out.push(')');
            }
            Condition::Not(c) => {
                out.push_str("(not ");
                c.render_into(names, out);
                out.push(')');
            }
            Condition::And(cs) => list(out, "and", cs),
            Condition::Or(cs) => list(out, "or", cs),
        }
    }
}

/// Parses `text` against the selection names of its detection (in detection order).
pub fn parse(text: &str, names: &[&str]) -> Result<Condition, ConditionError> {
    let mut p = Parser {
        tokens: tokenize(text),
        next: 0,
        names,
        end: text.chars().count(),
    };
    let cond = p.or()?;
    match p.peek() {
        None => Ok(cond),
        Some(t) => Err(match t.tok {
            Tok::Pipe => p.aggregation(t),
            Tok::RParen => invalid(t.column, "unexpected `)`: it closes no `(`"),
            _ => invalid(
                t.column,
                format!(
                    "unexpected `{}` after a complete condition: join the parts with `and` or `or`",
                    t.text
                ),
            ),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    Pipe,
    Word,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok,
    text: &'a str,
    /// 1-based column of its first character.
    column: usize,
}

fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().enumerate().peekable();
    while let Some((n, (i, c))) = chars.next() {
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '|' => Some(Tok::Pipe),
            c if c.is_whitespace() => continue,
            _ => None,
        };
        if let Some(tok) = single {
            tokens.push(Token {
                tok,
                text: &text[i..i + 1],
                column: n + 1,
            });
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(_, (j, d))) = chars.peek() {
            if d.is_whitespace() || matches!(d, '(' | ')' | '|') {
                break;
            }
            end = j + d.len_utf8();
            chars.next();
        }
        tokens.push(Token {
            tok: Tok::Word,
            text: &text[i..end],
            column: n + 1,
        });
    }
    tokens
}

fn invalid(column: usize, message: impl Into<String>) -> ConditionError {
    ConditionError {
        column,
        unsupported: None,
        message: message.into(),
    }
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

const KEYWORDS: [&str; 6] = ["and", "or", "not", "of", "them", "all"];

struct Parser<'a, 'n> {
    tokens: Vec<Token<'a>>,
    next: usize,
    names: &'n [&'n str],
    /// Number of characters in the condition, for "ends too early" errors.
    end: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        match self.peek() {
            Some(t) if t.tok == Tok::Word && is_keyword(t.text, keyword) => {
                self.next += 1;
                true
            }
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut terms = vec![self.and()?];
        while self.eat_keyword("or") {
            terms.push(self.and()?);
        }
        Ok(join(terms, Condition::Or))
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut terms = vec![self.not()?];
        while self.eat_keyword("and") {
            terms.push(self.not()?);
        }
        Ok(join(terms, Condition::And))
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.eat_keyword("not") {
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        let Some(t) = self.peek() else {
            return Err(invalid(
                self.end + 1,
                "the condition ends too early: expected a selection name, `not`, `1 of`, \
                 `all of` or `(`",
            ));
        };
        self.next += 1;
        match t.tok {
            Tok::LParen => {
                let inner = self.or()?;
                match self.peek() {
                    Some(c) if c.tok == Tok::RParen => {
                        self.next += 1;
                        Ok(inner)
                    }
                    Some(c) if c.tok == Tok::Pipe => Err(self.aggregation(c)),
                    Some(c) => Err(invalid(
                        c.column,
                        format!(
                            "unexpected `{}` inside parentheses: join the parts with `and` or `or`",
                            c.text
                        ),
                    )),
                    None => Err(invalid(t.column, "this `(` is never closed: add a `)`")),
                }
            }
            Tok::RParen => Err(invalid(
                t.column,
                "unexpected `)`: expected a selection name, `not`, `1 of`, `all of` or `(`",
            )),
            Tok::Pipe => Err(self.aggregation(t)),
            Tok::Word => self.word(t),
        }
    }

    fn word(&mut self, t: Token<'a>) -> Result<Condition, ConditionError> {
        let followed_by_of =
            matches!(self.peek(), Some(n) if n.tok == Tok::Word && is_keyword(n.text, "of"));
        if followed_by_of {
            let quantifier = if t.text == "1" {
                Quantifier::One
            } else if is_keyword(t.text, "all") {
                Quantifier::All
            } else if t.text.bytes().all(|b| b.is_ascii_digit()) || is_keyword(t.text, "any") {
                return Err(invalid(
                    t.column,
                    format!(
                        "`{} of` is not Sigma: use `1 of` (at least one) or `all of`",
                        t.text
                    ),
                ));
            } else {
                return Err(invalid(
                    t.column,
                    format!("`{} of`: expected `1 of` or `all of`", t.text),
                ));
            };
            self.next += 1;
            return self.of(t, quantifier);
        }
        if KEYWORDS.iter().any(|k| is_keyword(t.text, k)) {
            return Err(invalid(
                t.column,
                format!(
                    "expected a selection name, `not`, `1 of`, `all of` or `(`, found `{}`",
                    t.text
                ),
            ));
        }
        if t.text.contains('*') {
            return Err(invalid(
                t.column,
                format!(
                    "a name with `*` must follow `1 of` or `all of`: write `1 of {}`",
                    t.text
                ),
            ));
        }
        match self.names.iter().position(|n| *n == t.text) {
            Some(i) => Ok(Condition::Selection(i)),
            None => Err(invalid(
                t.column,
                format!(
                    "`{}` is not a selection of this detection{}",
                    t.text,
                    self.known_names()
                ),
            )),
        }
    }

    fn of(&mut self, q: Token<'a>, quantifier: Quantifier) -> Result<Condition, ConditionError> {
        let Some(t) = self.peek().filter(|t| t.tok == Tok::Word) else {
            return Err(invalid(
                self.peek().map_or(self.end + 1, |t| t.column),
                format!(
                    "`{} of` must be followed by `them` or a selection name pattern",
                    q.text
                ),
            ));
        };
        self.next += 1;
        let (target, selections): (OfTarget, Vec<usize>) = if is_keyword(t.text, "them") {
            let s = (0..self.names.len())
                .filter(|&i| !self.names[i].starts_with('_'))
                .collect();
            (OfTarget::Them, s)
        } else {
            let s = (0..self.names.len())
                .filter(|&i| {
                    let name = self.names[i];
                    (!name.starts_with('_') || t.text.starts_with('_')) && glob(t.text, name)
                })
                .collect();
            (OfTarget::Pattern(t.text.to_string()), s)
        };
        if selections.is_empty() {
            return Err(invalid(
                t.column,
                format!(
                    "`{} of {}` covers no selection{}",
                    q.text,
                    t.text,
                    self.known_names()
                ),
            ));
        }
        Ok(Condition::Of {
            quantifier,
            target,
            selections,
        })
    }

    fn known_names(&self) -> String {
        if self.names.is_empty() {
            return String::new();
        }
        format!("; the selections are: {}", self.names.join(", "))
    }

    /// The pre-2.0 aggregation syntax, `... | count(x) by y > 3` or `... | near ...`.
    fn aggregation(&self, pipe: Token<'a>) -> ConditionError {
        let after = self
            .tokens
            .iter()
            .find(|t| t.column > pipe.column && t.tok == Tok::Word)
            .map(|t| t.text.split('(').next().unwrap_or(t.text))
            .unwrap_or("");
        let feature = if after.is_empty() {
            "condition aggregation `|`".to_string()
        } else {
            format!("condition aggregation `| {after}`")
        };
        ConditionError {
            column: pipe.column,
            unsupported: Some(feature),
            message: "the `| count()` / `| near` aggregations are deprecated since Sigma 2.0 and \
                      not supported: keep the condition before `|` and express the aggregation \
                      as a correlation rule (e.g. `correlation: {type: event_count, rules: [...], \
                      group-by: [...], timespan: 5m, condition: {gte: 10}}`)"
                .to_string(),
        }
    }
}

/// `items` as one node: the item itself if alone, else `make`, with same-kind children
/// flattened into it.
fn join(items: Vec<Condition>, make: fn(Vec<Condition>) -> Condition) -> Condition {
    if items.len() == 1 {
        return items.into_iter().next().expect("one item");
    }
    let mut flat = Vec::with_capacity(items.len());
    let probe = make(Vec::new());
    for item in items {
        match (item, &probe) {
            (Condition::And(cs), Condition::And(_)) | (Condition::Or(cs), Condition::Or(_)) => {
                flat.extend(cs)
            }
            (other, _) => flat.push(other),
        }
    }
    make(flat)
}

/// Whether `name` matches `pattern`, where `*` is any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 6] = ["sel", "sel_a", "sel_b", "filter_x", "filter_y", "_hidden"];

    /// Parses against [`NAMES`] and renders, or renders the error as `col: message`.
    fn check(text: &str, expected: &str) {
        let got = match parse(text, &NAMES) {
            Ok(c) => c.render(&NAMES),
            Err(e) => format!("{}: {}", e.column, e.message),
        };
        assert!(
            got == expected
                || (expected.ends_with("...") && got.starts_with(&expected[..expected.len() - 3])),
            "condition `{text}`\n  got      {got}\n  expected {expected}"
        );
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        check("sel or sel_a and sel_b", "(or sel (and sel_a sel_b))");
        check("sel and sel_a or sel_b", "(or (and sel sel_a) sel_b)");
        check("not sel and sel_a", "(and (not sel) sel_a)");
        check("not sel or not sel_a", "(or (not sel) (not sel_a))");
        check("not not sel", "(not (not sel))");
        check("sel and (sel_a or sel_b)", "(and sel (or sel_a sel_b))");
        check("sel and sel_a and sel_b", "(and sel sel_a sel_b)");
        check(
            "(sel or sel_a) or (sel_b or filter_x)",
            "(or sel sel_a sel_b filter_x)",
        );
        check("  ( ( sel ) )  ", "sel");
    }

    #[test]
    fn quantifiers_cover_matching_selections() {
        check("1 of sel_*", "(1 of sel_a sel_b)");
        check("all of sel*", "(all of sel sel_a sel_b)");
        check(
            "sel and not 1 of filter_*",
            "(and sel (not (1 of filter_x filter_y)))",
        );
        check("1 of *_x", "(1 of filter_x)");
        check("1 of f*r_*", "(1 of filter_x filter_y)");
        // `not` binds less tightly than `x of`.
        check("not all of filter_*", "(not (all of filter_x filter_y))");
        // Explicitly underscored patterns do reach `_` selections.
        check("1 of _h*", "(1 of _hidden)");
        check("1 of sel_a", "(1 of sel_a)");
    }

    #[test]
    fn them_leaves_out_underscored_selections() {
        check("1 of them", "(1 of sel sel_a sel_b filter_x filter_y)");
        check("all of them", "(all of sel sel_a sel_b filter_x filter_y)");
        check(
            "1 of * and _hidden",
            "(and (1 of sel sel_a sel_b filter_x filter_y) _hidden)",
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        check(
            "sel AND NOT sel_a Or sel_b",
            "(or (and sel (not sel_a)) sel_b)",
        );
        check(
            "ALL OF filter_* and 1 Of THEM",
            "(and (all of filter_x filter_y) (1 of sel sel_a sel_b filter_x filter_y))",
        );
    }

    #[test]
    fn names_are_exact() {
        let err = parse("Sel", &NAMES).unwrap_err();
        assert_eq!(err.column, 1);
        assert!(err.message.contains("`Sel` is not a selection"), "{err:?}");
    }

    #[test]
    fn errors_carry_the_column() {
        check(
            "sel and sel_c",
            "9: `sel_c` is not a selection of this detection; the selections are: sel, sel_a, sel_b, filter_x, filter_y, _hidden",
        );
        check("sel and", "8: the condition ends too early...");
        check(
            "sel sel_a",
            "5: unexpected `sel_a` after a complete condition...",
        );
        check("(sel or sel_a", "1: this `(` is never closed: add a `)`");
        check(
            "(sel sel_a)",
            "6: unexpected `sel_a` inside parentheses: join the parts with `and` or `or`",
        );
        check("sel)", "4: unexpected `)`: it closes no `(`");
        check(
            "sel and ()",
            "10: unexpected `)`: expected a selection name...",
        );
        check(
            "1 of nothing_*",
            "6: `1 of nothing_*` covers no selection...",
        );
        check(
            "2 of sel_*",
            "1: `2 of` is not Sigma: use `1 of` (at least one) or `all of`",
        );
        check(
            "sel_* and sel",
            "1: a name with `*` must follow `1 of` or `all of`: write `1 of sel_*`",
        );
        check(
            "sel and or sel_a",
            "9: expected a selection name, `not`, `1 of`, `all of` or `(`, found `or`",
        );
        check(
            "1 of",
            "5: `1 of` must be followed by `them` or a selection name pattern",
        );
        check("", "1: the condition ends too early...");
    }

    #[test]
    fn aggregations_are_unsupported_at_the_pipe() {
        let err = parse("sel | count(dst) by src > 10", &NAMES).unwrap_err();
        assert_eq!(err.column, 5);
        assert_eq!(
            err.unsupported.as_deref(),
            Some("condition aggregation `| count`")
        );
        assert!(err.message.contains("correlation rule"), "{}", err.message);
        let err = parse("(sel | near sel_a)", &NAMES).unwrap_err();
        assert_eq!(err.column, 6);
        assert_eq!(
            err.unsupported.as_deref(),
            Some("condition aggregation `| near`")
        );
        // A plain syntax error is not "unsupported".
        assert_eq!(parse("sel and", &NAMES).unwrap_err().unsupported, None);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let names = ["sél", "b"];
        let err = parse("sél and ç", &names).unwrap_err();
        assert_eq!(err.column, 9);
    }

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("a*", "a"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
