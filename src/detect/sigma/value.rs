//! The values a Sigma matcher compares fields with, after every modifier has been applied.
//!
//! In: built by [`super::modifier`] from the rule text.
//! Out: plain data for the evaluator: a [`FieldMatcher`] per `field|modifiers: values` entry,
//! each value a [`MatchValue`] whose variants are [`Value`]s — a wildcard [`Pattern`], a number,
//! a validated [`Regex`], a [`Cidr`] network, a comparison, a field reference...
//!
//! Guarantees: patterns are normalised (escapes resolved, adjacent literals merged, no two `*`
//! in a row), regexes parse under the syntax of Rust's `regex` crate, CIDR networks
//! have no host bits. Nothing here matches anything: that is the evaluator's job.

use std::fmt;
use std::net::IpAddr;

use super::modifier::Modifier;
use super::yaml::Pos;

/// A comparison, for numeric modifiers and correlation conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `eq` (correlation conditions only)
    Eq,
    /// `neq` (correlation conditions only)
    Neq,
}

impl CmpOp {
    /// The operator named `name` (`gt`, `gte`, ...).
    pub fn from_name(name: &str) -> Option<CmpOp> {
        Some(match name {
            "lt" => CmpOp::Lt,
            "lte" => CmpOp::Lte,
            "gt" => CmpOp::Gt,
            "gte" => CmpOp::Gte,
            "eq" => CmpOp::Eq,
            "neq" => CmpOp::Neq,
            _ => return None,
        })
    }
}

/// The part of a date field that the time modifiers extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimePart {
    /// 0-59
    Minute,
    /// 0-23
    Hour,
    /// Day of the month, 1-31.
    Day,
    /// ISO 8601 week of the year, 1-53: weeks start on Monday and week 1 holds the year's
    /// first Thursday, so the first days of January may be in week 52 or 53 of the year
    /// before, and the last days of December in week 1. (The specification says 1-52; an ISO
    /// year has 53 weeks every five or six years.)
    Week,
    /// 1-12
    Month,
    /// The year.
    Year,
}

/// How the values of one matcher combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// At least one value matches (the default).
    Any,
    /// Every value matches (`all`).
    All,
}

/// A number as YAML typed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
}

impl Number {
    /// The number as a float, for comparisons.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One piece of a string [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// Text matched as is (up to case, see [`Pattern::case_sensitive`]).
    Literal(String),
    /// `*`: any run of characters, possibly empty.
    AnyChars,
    /// `?`: exactly one character.
    OneChar,
    /// `%name%` under `expand`: to be replaced from configuration before evaluation.
    Placeholder(String),
}

/// A string match with Sigma wildcards, escapes already resolved. A pattern without wildcards
/// is an exact match of the whole field value; `contains` is `*text*`, `startswith` `text*`,
/// `endswith` `*text`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// The pieces, with adjacent literals merged and no two `AnyChars` in a row.
    pub parts: Vec<Part>,
    /// False by default: Sigma matches strings case-insensitively unless `cased`.
    pub case_sensitive: bool,
}

impl Pattern {
    /// The text when the pattern is one literal (or empty): an exact match.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// True when a `%placeholder%` is still to be resolved.
    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Placeholder(_)))
    }

    /// The pattern of `parts` in normal form: adjacent literals merged, empty literals dropped,
    /// no two `AnyChars` in a row. For patterns assembled from pieces, such as a placeholder
    /// replaced by a configured value.
    pub fn normalised(parts: impl IntoIterator<Item = Part>, case_sensitive: bool) -> Pattern {
        let mut out: Vec<Part> = Vec::new();
        for part in parts {
            match (out.last_mut(), part) {
                (_, Part::Literal(s)) if s.is_empty() => {}
                (Some(Part::Literal(prev)), Part::Literal(s)) => prev.push_str(&s),
                (Some(Part::AnyChars), Part::AnyChars) => {}
                (_, part) => out.push(part),
            }
        }
        Pattern {
            parts: out,
            case_sensitive,
        }
    }
}

impl fmt::Display for Pattern {
    /// Sigma syntax: wildcards as `*` / `?`, literal ones escaped, a backslash escaped only
    /// where the specification needs it, so that the output parses back to the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(s) => {
                    let next_is_special =
                        matches!(self.parts.get(i + 1), Some(Part::AnyChars | Part::OneChar));
                    let mut chars = s.chars().peekable();
                    while let Some(c) = chars.next() {
                        match c {
                            '*' | '?' => write!(f, "\\{c}")?,
                            '\\' => {
                                let escape = match chars.peek() {
                                    Some('*' | '?' | '\\') => true,
                                    Some(_) => false,
                                    None => next_is_special,
                                };
                                f.write_str(if escape { "\\\\" } else { "\\" })?;
                            }
                            c => write!(f, "{c}")?,
                        }
                    }
                }
                Part::AnyChars => f.write_str("*")?,
                Part::OneChar => f.write_str("?")?,
                Part::Placeholder(name) => write!(f, "%{name}%")?,
            }
        }
        Ok(())
    }
}

/// A regular expression (`re`), validated; matched as a search anywhere in the value unless
/// it anchors itself with `^` / `$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regex {
    /// The expression as written.
    pub pattern: String,
    /// `re|i`. Sigma regexes are case-sensitive unless this is set or the pattern says `(?i)`.
    pub case_insensitive: bool,
    /// `re|m`: `^` / `$` match at line breaks.
    pub multi_line: bool,
    /// `re|s`: `.` matches `\n`.
    pub dot_all: bool,
}

/// An IP network (`cidr`), host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address.
    pub address: IpAddr,
    /// Prefix length, up to 32 (IPv4) or 128 (IPv6).
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// What a field value is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string match (exact, or with wildcards).
    Pattern(Pattern),
    /// A number as YAML typed it: compare numerically with numeric fields, and by `text` (as
    /// written, e.g. `0x17`) with string fields.
    Number {
        /// Its value.
        value: Number,
        /// Its text in the rule.
        text: String,
    },
    /// `true` / `false`.
    Bool(bool),
    /// `null`: the field is absent or null.
    Null,
    /// `re`
    Regex(Regex),
    /// `cidr`
    Cidr(Cidr),
    /// `lt` / `lte` / `gt` / `gte` against a number.
    Compare {
        /// The comparison (field `op` number).
        op: CmpOp,
        /// The number compared with.
        value: Number,
    },
    /// `exists`: the field is present (true) or absent (false), whatever its value.
    Exists(bool),
    /// `fieldref`: equal to the value of another field of the same event.
    FieldRef {
        /// The other field.
        field: String,
        /// `fieldref|cased`.
        case_sensitive: bool,
    },
}

/// One value as written in the rule; it matches when any of its variants does. Most values
/// have one variant; `windash` and `base64offset` give several.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchValue {
    /// The alternatives, deduplicated, in a stable order.
    pub variants: Vec<Value>,
    /// Where the value was written.
    pub pos: Pos,
}

/// `field|modifiers: values`: one condition on one field (or, without a field, on the whole
/// event: a keyword search).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMatcher {
    /// The field name, possibly a dotted path (`dns.question.name`); `None` for keywords,
    /// which search every string field of the event for the value (as a substring).
    pub field: Option<String>,
    /// The modifier chain as written, validated.
    pub modifiers: Vec<Modifier>,
    /// For time modifiers (`hour`, ...): compare this part of the field's date, not the field.
    pub time_part: Option<TimePart>,
    /// How the values combine: any (default) or all (`all`).
    pub link: Link,
    /// `neq`: the matcher holds when the combined values do *not* match.
    pub negated: bool,
    /// One entry per written value.
    pub values: Vec<MatchValue>,
    /// Where the key was written.
    pub pos: Pos,
}
