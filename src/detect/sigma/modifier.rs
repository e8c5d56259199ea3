//! Field matchers: `field|mod1|mod2: value(s)` -> a [`FieldMatcher`] whose values are already
//! expanded into what an evaluator compares against.
//!
//! In: a selection key (field name and modifier chain) and its YAML value or list of values.
//! Out: a [`FieldMatcher`]: the field, how its values combine (`all`), whether it is negated
//! (`neq`), and for each written value the [`Value`] variants that match it, with every
//! value-transforming modifier of the Sigma modifiers appendix applied in the order written:
//! wildcards and escapes parsed into a [`Pattern`], `contains` / `startswith` / `endswith`
//! turned into leading and trailing wildcards, `windash`, `base64`, `base64offset`, `utf16le` /
//! `utf16be` / `utf16` / `wide` expanded, `re` validated, `cidr` parsed, `%placeholders%` kept
//! as nodes for `expand`.
//!
//! Guarantees: a matcher that is built is meaningful (modifiers that cannot go together, values
//! of the wrong type, regexes that do not compile are errors at the key or value that causes
//! them); an unknown modifier is an error that names it. Nothing here evaluates anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::{Cx, SigmaError};
use super::value::{
    Cidr, CmpOp, FieldMatcher, Link, MatchValue, Number, Part, Pattern, Regex, TimePart, Value,
};
use super::yaml::{Node, NodeKind, Pos, Resolved, Scalar};

/// A value modifier, as written after `|` in a selection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// `all`: the values are linked with AND instead of OR.
    All,
    /// `startswith`: the value is a prefix.
    StartsWith,
    /// `endswith`: the value is a suffix.
    EndsWith,
    /// `contains`: the value appears anywhere.
    Contains,
    /// `exists`: the field is present (`true`) or absent (`false`).
    Exists,
    /// `cased`: match case-sensitively.
    Cased,
    /// `neq`: the field differs from the values.
    Neq,
    /// `windash`: `-`, `/`, en dash, em dash and horizontal bar are interchangeable.
    Windash,
    /// `re`: the value is a regular expression.
    Re,
    /// `i` after `re`: case-insensitive regex.
    ReIgnoreCase,
    /// `m` after `re`: `^` and `$` match at line ends.
    ReMultiLine,
    /// `s` after `re`: `.` matches a newline too.
    ReDotAll,
    /// `base64`: the value, base64-encoded.
    Base64,
    /// `base64offset`: the value as it appears inside any base64 text (three variants).
    Base64Offset,
    /// `utf16le`: UTF-16 little-endian bytes.
    Utf16Le,
    /// `utf16be`: UTF-16 big-endian bytes.
    Utf16Be,
    /// `utf16`: byte order mark, then UTF-16 little-endian bytes.
    Utf16,
    /// `wide`: alias of `utf16le`.
    Wide,
    /// `lt`: the field is less than the number.
    Lt,
    /// `lte`: less than or equal.
    Lte,
    /// `gt`: greater than.
    Gt,
    /// `gte`: greater than or equal.
    Gte,
    /// `minute` of a date field (0-59).
    Minute,
    /// `hour` of a date field (0-23).
    Hour,
    /// `day` of the month of a date field (1-31).
    Day,
    /// `week` of the year of a date field (ISO 8601 week, 1-53).
    Week,
    /// `month` of a date field (1-12).
    Month,
    /// `year` of a date field.
    Year,
    /// `cidr`: the value is an IP network.
    Cidr,
    /// `expand`: `%name%` placeholders are resolved from configuration.
    Expand,
    /// `fieldref`: the value names another field of the same event.
    FieldRef,
}

/// Every modifier by name, in the order of the modifiers appendix.
const MODIFIERS: &[(&str, Modifier)] = &[
    ("all", Modifier::All),
    ("startswith", Modifier::StartsWith),
    ("endswith", Modifier::EndsWith),
    ("contains", Modifier::Contains),
    ("exists", Modifier::Exists),
    ("cased", Modifier::Cased),
    ("neq", Modifier::Neq),
    ("windash", Modifier::Windash),
    ("re", Modifier::Re),
    ("i", Modifier::ReIgnoreCase),
    ("m", Modifier::ReMultiLine),
    ("s", Modifier::ReDotAll),
    ("base64", Modifier::Base64),
    ("base64offset", Modifier::Base64Offset),
    ("utf16le", Modifier::Utf16Le),
    ("utf16be", Modifier::Utf16Be),
    ("utf16", Modifier::Utf16),
    ("wide", Modifier::Wide),
    ("lt", Modifier::Lt),
    ("lte", Modifier::Lte),
    ("gt", Modifier::Gt),
    ("gte", Modifier::Gte),
    ("minute", Modifier::Minute),
    ("hour", Modifier::Hour),
    ("day", Modifier::Day),
    ("week", Modifier::Week),
    ("month", Modifier::Month),
    ("year", Modifier::Year),
    ("cidr", Modifier::Cidr),
    ("expand", Modifier::Expand),
    ("fieldref", Modifier::FieldRef),
];

impl Modifier {
    /// The modifier named `name` (case-sensitive, as the specification writes them).
    pub fn from_name(name: &str) -> Option<Modifier> {
        MODIFIERS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    /// Its name in a rule.
    pub fn name(self) -> &'static str {
        MODIFIERS
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .expect("every modifier is in MODIFIERS")
    }

    fn compare_op(self) -> Option<CmpOp> {
        Some(match self {
            Modifier::Lt => CmpOp::Lt,
            Modifier::Lte => CmpOp::Lte,
            Modifier::Gt => CmpOp::Gt,
            Modifier::Gte => CmpOp::Gte,
            _ => return None,
        })
    }

    fn time_part(self) -> Option<TimePart> {
        Some(match self {
            Modifier::Minute => TimePart::Minute,
            Modifier::Hour => TimePart::Hour,
            Modifier::Day => TimePart::Day,
            Modifier::Week => TimePart::Week,
            Modifier::Month => TimePart::Month,
            Modifier::Year => TimePart::Year,
            _ => return None,
        })
    }

    fn is_shape(self) -> bool {
        matches!(
            self,
            Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith
        )
    }

    fn is_utf16(self) -> bool {
        matches!(
            self,
            Modifier::Utf16Le | Modifier::Utf16Be | Modifier::Utf16 | Modifier::Wide
        )
    }

    fn is_re_flag(self) -> bool {
        matches!(
            self,
            Modifier::ReIgnoreCase | Modifier::ReMultiLine | Modifier::ReDotAll
        )
    }

    /// Modifiers that decide what kind of value the matcher compares; at most one per key.
    fn is_kind(self) -> bool {
        matches!(
            self,
            Modifier::Re | Modifier::Cidr | Modifier::FieldRef | Modifier::Exists
        ) || self.compare_op().is_some()
    }

    /// The other modifiers a kind modifier may be combined with.
    fn allows(self, other: Modifier) -> bool {
        use Modifier as M;
        let generic = matches!(other, M::All | M::Neq);
        match self {
            M::Re => generic || other == M::Cased || other.is_re_flag(),
            M::Cidr => generic,
            M::FieldRef => generic || other == M::Cased,
            M::Exists => false,
            _ if self.compare_op().is_some() || self.time_part().is_some() => {
                generic || other.compare_op().is_some() || other.time_part().is_some()
            }
            _ => true,
        }
    }
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most variants `windash` may produce from one value.
const MAX_WINDASH_VARIANTS: usize = 625;

/// The characters `windash` makes interchangeable: hyphen-minus, slash, en dash, em dash,
/// horizontal bar.
const WINDASH: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Builds the matcher for `key: value` in a selection map.
pub(super) fn field_matcher(cx: &Cx, key: &Node, value: &Node) -> Result<FieldMatcher, SigmaError> {
    let Some(key_scalar) = key.as_scalar() else {
        return Err(cx.invalid(
            key.pos,
            format!(
                "a selection key must be a field name with optional modifiers, not {}",
                key.describe()
            ),
        ));
    };
    let Key { field, mods } = parse_key(cx, key, key_scalar)?;
    let chain = Chain::new(cx, &mods, field.is_none())?;
    let items: Vec<&Node> = match &value.kind {
        NodeKind::Scalar(_) => vec![value],
        NodeKind::Seq(items) => {
            if items.is_empty() {
                return Err(cx.invalid(
                    value.pos,
                    "empty list of values: give at least one value, or remove the key",
                ));
            }
            items.iter().collect()
        }
        NodeKind::Map(_) => {
            return Err(cx.invalid(
                value.pos,
                format!(
                    "the value of `{}` must be a value or a list of values, not a map",
                    key_scalar.text
                ),
            ));
        }
    };
    build(cx, field, &mods, &chain, key.pos, &items)
}

/// Builds the matcher for a keyword list (a selection that is a list of plain values).
pub(super) fn keywords(cx: &Cx, pos: Pos, items: &[&Node]) -> Result<FieldMatcher, SigmaError> {
    let chain = Chain::new(cx, &[], true)?;
    build(cx, None, &[], &chain, pos, items)
}

fn build(
    cx: &Cx,
    field: Option<String>,
    mods: &[(Modifier, At)],
    chain: &Chain,
    key_pos: Pos,
    items: &[&Node],
) -> Result<FieldMatcher, SigmaError> {
    if let Some(all) = chain.all
        && items.len() < 2
    {
        return Err(cx.invalid(
            all.pos(cx),
            "`all` needs a list of at least two values; with one value, remove `all`",
        ));
    }
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        let Some(scalar) = item.as_scalar() else {
            return Err(cx.invalid(
                item.pos,
                format!(
                    "a value must be a string, number or boolean, not {}",
                    item.describe()
                ),
            ));
        };
        if items.len() > 1 && scalar.resolve() == Resolved::Null {
            return Err(cx.invalid(
                item.pos,
                "`null` cannot be part of a list of values (it is its own type): put \
                 `field: null` in a selection of its own and combine the selections in the \
                 condition",
            ));
        }
        let variants = convert(cx, chain, item, scalar)?;
        values.push(MatchValue {
            variants,
            pos: item.pos,
        });
    }
    Ok(FieldMatcher {
        field,
        modifiers: mods.iter().map(|(m, _)| *m).collect(),
        time_part: chain.time_part,
        link: if chain.all.is_some() {
            Link::All
        } else {
            Link::Any
        },
        negated: chain.neq,
        values,
        pos: key_pos,
    })
}

/// Where a modifier was written: its character offset in the key. Turned into a line and
/// column only when an error needs it, because that scans the file.
#[derive(Debug, Clone, Copy)]
struct At<'n> {
    key: &'n Node,
    offset: usize,
}

impl At<'_> {
    fn pos(self, cx: &Cx) -> Pos {
        cx.at(self.key, self.offset)
    }
}

/// A selection key, split.
struct Key<'n> {
    /// `None` for a keyword key (`'|all'`).
    field: Option<String>,
    mods: Vec<(Modifier, At<'n>)>,
}

/// Splits `field|mod|mod` and names each modifier, with where it was written.
fn parse_key<'n>(cx: &Cx, key: &'n Node, scalar: &Scalar) -> Result<Key<'n>, SigmaError> {
    let mut pieces = scalar.text.split('|');
    let field = pieces.next().unwrap_or_default();
    let mut offset = field.chars().count() + 1;
    let mut mods = Vec::new();
    for name in pieces {
        let at = At { key, offset };
        if name.is_empty() {
            return Err(cx.invalid(at.pos(cx), "empty modifier: remove the extra `|`"));
        }
        let Some(m) = Modifier::from_name(name) else {
            let hint = match Modifier::from_name(&name.to_ascii_lowercase()) {
                Some(m) => format!("modifiers are lower-case: write `{m}`"),
                None => format!(
                    "the modifiers of Sigma 2 are {}",
                    MODIFIERS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(cx.invalid(at.pos(cx), format!("unknown modifier `{name}`: {hint}")));
        };
        mods.push((m, at));
        offset += name.chars().count() + 1;
    }
    Ok(Key {
        field: (!field.is_empty()).then(|| field.to_string()),
        mods,
    })
}

/// What a validated modifier chain asks for.
struct Chain<'a, 'n> {
    /// The chain as written, for the in-order string transformations.
    mods: &'a [(Modifier, At<'n>)],
    /// The modifier deciding the value kind (`re`, `cidr`, `fieldref`, `exists`, a comparison).
    kind: Option<Modifier>,
    time_part: Option<TimePart>,
    /// Where `all` was written, if it was.
    all: Option<At<'n>>,
    neq: bool,
    cased: bool,
    expand: bool,
    /// Any modifier that turns the value into a string pattern.
    stringy: bool,
    keyword: bool,
}

impl<'a, 'n> Chain<'a, 'n> {
    fn new(
        cx: &Cx,
        mods: &'a [(Modifier, At<'n>)],
        keyword: bool,
    ) -> Result<Chain<'a, 'n>, SigmaError> {
        let mut chain = Chain {
            mods,
            kind: None,
            time_part: None,
            all: None,
            neq: false,
            cased: false,
            expand: false,
            stringy: false,
            keyword,
        };
        for (i, &(m, at)) in mods.iter().enumerate() {
            let before = &mods[..i];
            let pos = || at.pos(cx);
            if before.iter().any(|(b, _)| *b == m) {
                return Err(cx.invalid(pos(), format!("modifier `{m}` is given twice")));
            }
            if m.is_re_flag() && !before.iter().any(|(b, _)| *b == Modifier::Re) {
                return Err(cx.invalid(
                    pos(),
                    format!("`{m}` is a flag of the `re` modifier: write `re|{m}`"),
                ));
            }
            let clash = |pred: fn(Modifier) -> bool, why: &str| -> Result<(), SigmaError> {
                match before.iter().find(|(b, _)| pred(*b)) {
                    Some((b, _)) => {
                        Err(cx.invalid(pos(), format!("`{b}` and `{m}` cannot be combined: {why}")))
                    }
                    None => Ok(()),
                }
            };
            if m.is_shape() {
                clash(
                    Modifier::is_shape,
                    "use one of `contains`, `startswith`, `endswith`",
                )?;
            }
            if m.is_utf16() {
                clash(Modifier::is_utf16, "a value has one UTF-16 encoding")?;
            }
            if matches!(m, Modifier::Base64 | Modifier::Base64Offset) {
                clash(
                    |b| matches!(b, Modifier::Base64 | Modifier::Base64Offset),
                    "use `base64` for a whole value or `base64offset` for a part of one",
                )?;
            }
            if m.is_kind() {
                clash(Modifier::is_kind, "a value is one kind of match")?;
            }
            if let Some(t) = m.time_part() {
                clash(|b| b.time_part().is_some(), "a field has one time part")?;
                chain.time_part = Some(t);
            }
            match m {
                Modifier::All => chain.all = Some(at),
                Modifier::Neq => chain.neq = true,
                Modifier::Cased => chain.cased = true,
                Modifier::Expand => chain.expand = true,
                _ => {}
            }
            if m.is_kind() {
                chain.kind = Some(m);
            }
            if m.is_shape()
                || m.is_utf16()
                || matches!(
                    m,
                    Modifier::Windash
                        | Modifier::Expand
                        | Modifier::Base64
                        | Modifier::Base64Offset
                )
            {
                chain.stringy = true;
            }
        }
        // Kind modifiers and time parts admit only some companions; check every pair once the
        // whole chain is known, so the order of writing does not matter for this.
        for &(m, _) in mods {
            if !(m.is_kind() || m.time_part().is_some()) {
                continue;
            }
            if let Some(&(other, at)) = mods.iter().find(|(o, _)| *o != m && !m.allows(*o)) {
                let why = match m {
                    Modifier::Re if other.is_shape() => {
                        "a regular expression already matches anywhere; anchor it with `^` or \
                         `$` instead"
                            .to_string()
                    }
                    Modifier::Exists => "`exists` takes no other modifier".to_string(),
                    _ => format!("`{m}` compares the value in its own way"),
                };
                return Err(cx.invalid(
                    at.pos(cx),
                    format!("`{m}` and `{other}` cannot be combined: {why}"),
                ));
            }
        }
        if keyword
            && let Some(&(m, at)) = mods.iter().find(|(m, _)| {
                (m.is_kind() && *m != Modifier::Re)
                    || m.time_part().is_some()
                    || *m == Modifier::Neq
            })
        {
            return Err(cx.invalid(
                at.pos(cx),
                format!("`{m}` needs a field name: write `FieldName|{m}`"),
            ));
        }
        Ok(chain)
    }
}

/// A piece of a value while modifiers are applied; literals are bytes because the UTF-16
/// modifiers produce bytes that only become text again through base64.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Bytes(Vec<u8>),
    Any,
    One,
    Placeholder(String),
}

/// Why one value could not be converted.
struct Fail {
    /// The unsupported feature, or `None` when the value is invalid.
    feature: Option<&'static str>,
    message: String,
    /// A more precise place than the value's start, if known.
    at: Option<Pos>,
}

fn fail(message: impl Into<String>) -> Fail {
    Fail {
        feature: None,
        message: message.into(),
        at: None,
    }
}

fn fail_unsupported(feature: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        feature: Some(feature),
        message: message.into(),
        at: None,
    }
}

fn convert(cx: &Cx, chain: &Chain, node: &Node, scalar: &Scalar) -> Result<Vec<Value>, SigmaError> {
    convert_inner(chain, node, scalar, cx).map_err(|f| {
        let at = f.at.unwrap_or(node.pos);
        match f.feature {
            None => cx.invalid(at, f.message),
            Some(feature) => cx.unsupported(at, feature, f.message),
        }
    })
}

fn convert_inner(chain: &Chain, node: &Node, scalar: &Scalar, cx: &Cx) -> Result<Vec<Value>, Fail> {
    let resolved = scalar.resolve();
    if resolved == Resolved::Null {
        if chain.keyword {
            return Err(fail(
                "a keyword cannot be `null`: give the text to search for",
            ));
        }
        if let Some((m, _)) = chain.mods.first() {
            return Err(fail(format!(
                "`null` takes no modifiers (found `{m}`): `field: null` matches a field that \
                 is absent or null"
            )));
        }
        return Ok(vec![Value::Null]);
    }
    let number = match resolved {
        Resolved::Int(i) => Some(Number::Int(i)),
        Resolved::Float(f) => Some(Number::Float(f)),
        _ => None,
    };
    match chain.kind {
        Some(Modifier::Exists) => match resolved {
            Resolved::Bool(b) => Ok(vec![Value::Exists(b)]),
            _ => Err(fail(format!(
                "`exists` takes `true` or `false`, not {}",
                node.describe()
            ))),
        },
        Some(m) if m.compare_op().is_some() => match number {
            Some(value) => Ok(vec![Value::Compare {
                op: m.compare_op().expect("checked"),
                value,
            }]),
            None => Err(fail(format!(
                "`{m}` compares with a number, not {}{}",
                node.describe(),
                if matches!(resolved, Resolved::Str(s) if s.trim().parse::<f64>().is_ok()) {
                    ": remove the quotes"
                } else {
                    ""
                }
            ))),
        },
        Some(Modifier::Re) => regex(chain, &scalar.text, node, cx).map(|r| vec![Value::Regex(r)]),
        Some(Modifier::Cidr) => parse_cidr(&scalar.text)
            .map(|c| vec![Value::Cidr(c)])
            .map_err(fail),
        Some(Modifier::FieldRef) => {
            if scalar.text.is_empty() {
                return Err(fail(
                    "`fieldref` needs the name of the field to compare with",
                ));
            }
            Ok(vec![Value::FieldRef {
                field: scalar.text.clone(),
                case_sensitive: chain.cased,
            }])
        }
        _ if chain.time_part.is_some() => match number {
            Some(value) => Ok(vec![Value::Number {
                value,
                text: scalar.text.clone(),
            }]),
            None => Err(fail(format!(
                "a time modifier compares with a number, not {}",
                node.describe()
            ))),
        },
        _ if !chain.stringy && !chain.keyword => Ok(vec![match (resolved, number) {
            (_, Some(value)) => Value::Number {
                value,
                text: scalar.text.clone(),
            },
            (Resolved::Bool(b), _) => Value::Bool(b),
            _ => Value::Pattern(finish(parse_pattern(&scalar.text, false), chain.cased)?),
        }]),
        _ => {
            let mut works = vec![parse_pattern(&scalar.text, chain.expand)];
            for &(m, _) in chain.mods {
                let mut next = Vec::with_capacity(works.len());
                for w in works {
                    apply(m, w, &mut next)?;
                }
                works = next;
            }
            let mut values = Vec::with_capacity(works.len());
            for w in works {
                let v = Value::Pattern(finish(w, chain.cased)?);
                if !values.contains(&v) {
                    values.push(v);
                }
            }
            Ok(values)
        }
    }
}

/// The variants of one configured value of an `expand` placeholder, as they stand in place of
/// `%name%` in a value written under `modifiers`: wildcards and escapes parsed as in a rule value
/// (`srv*` is a pattern, `\*` a star), then the chain's text transformations (`windash`, the
/// UTF-16 encodings) applied in order, as they were to the text around the placeholder. The
/// shape modifiers (`contains`, ...) shape the whole value, not this piece of it, and
/// `base64` / `base64offset` never get here (a placeholder cannot be encoded before it is
/// expanded: refused when parsing).
///
/// Errors (a message) when a transformation cannot apply to the value, e.g. its UTF-16 bytes
/// are not text.
pub(super) fn placeholder_value(
    text: &str,
    modifiers: &[Modifier],
) -> Result<Vec<Vec<Part>>, String> {
    let mut works = vec![parse_pattern(text, false)];
    for &m in modifiers {
        let m = match m {
            Modifier::Windash | Modifier::Utf16Le | Modifier::Utf16Be | Modifier::Wide => m,
            // The byte order mark starts the whole value, not this piece.
            Modifier::Utf16 => Modifier::Utf16Le,
            Modifier::Base64 | Modifier::Base64Offset => {
                return Err(format!("`{m}` cannot encode a placeholder's value"));
            }
            _ => continue,
        };
        let mut next = Vec::with_capacity(works.len());
        for w in works {
            apply(m, w, &mut next).map_err(|f| f.message)?;
        }
        works = next;
    }
    let mut variants: Vec<Vec<Part>> = Vec::with_capacity(works.len());
    for w in works {
        let parts = finish(w, false).map_err(|f| f.message)?.parts;
        if !variants.contains(&parts) {
            variants.push(parts);
        }
    }
    Ok(variants)
}

/// Parses Sigma's wildcards and escapes: `*` and `?` are wildcards; `\*`, `\?` and `\\` stand
/// for `*`, `?` and `\`; any other backslash is a plain backslash. Under `expand`, `%name%` is a
/// placeholder and `\%` a plain percent sign.
fn parse_pattern(text: &str, placeholders: bool) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let flush = |lit: &mut String, segs: &mut Vec<Seg>| {
        if !lit.is_empty() {
            segs.push(Seg::Bytes(std::mem::take(lit).into_bytes()));
        }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&(_, n))
                    if n == '*' || n == '?' || n == '\\' || (placeholders && n == '%') =>
                {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' => {
                flush(&mut lit, &mut segs);
                if segs.last() != Some(&Seg::Any) {
                    segs.push(Seg::Any);
                }
            }
            '?' => {
                flush(&mut lit, &mut segs);
                segs.push(Seg::One);
            }
            '%' if placeholders => {
                let rest = &text[i + 1..];
                match rest.find('%') {
                    Some(end)
                        if end > 0
                            && rest[..end]
                                .chars()
                                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
                    {
                        flush(&mut lit, &mut segs);
                        segs.push(Seg::Placeholder(rest[..end].to_string()));
                        // Skip the name and the closing `%`.
                        for _ in 0..=rest[..end].chars().count() {
                            chars.next();
                        }
                    }
                    _ => lit.push('%'),
                }
            }
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut segs);
    segs
}

/// Applies one modifier to one value in progress, pushing its variant(s) to `out`.
fn apply(m: Modifier, mut w: Vec<Seg>, out: &mut Vec<Vec<Seg>>) -> Result<(), Fail> {
    match m {
        Modifier::Contains => {
            if w.first() != Some(&Seg::Any) {
                w.insert(0, Seg::Any);
            }
            if w.last() != Some(&Seg::Any) {
                w.push(Seg::Any);
            }
            out.push(w);
        }
        Modifier::StartsWith => {
            if w.last() != Some(&Seg::Any) {
                w.push(Seg::Any);
            }
            out.push(w);
        }
        Modifier::EndsWith => {
            if w.first() != Some(&Seg::Any) {
                w.insert(0, Seg::Any);
            }
            out.push(w);
        }
        Modifier::Windash => windash(w, out)?,
        Modifier::Base64 => {
            let plain = plain_bytes(&w, m)?;
            out.push(vec![Seg::Bytes(BASE64.encode(plain).into_bytes())]);
        }
        Modifier::Base64Offset => {
            let plain = plain_bytes(&w, m)?;
            for variant in base64_offsets(&plain)? {
                out.push(vec![Seg::Bytes(variant.into_bytes())]);
            }
        }
        Modifier::Utf16Le | Modifier::Wide | Modifier::Utf16Be | Modifier::Utf16 => {
            let mut encoded = Vec::with_capacity(w.len() + 1);
            if m == Modifier::Utf16 {
                // The byte order mark of little-endian UTF-16, as the appendix shows it.
                encoded.push(Seg::Bytes(vec![0xFF, 0xFE]));
            }
            for seg in w {
                encoded.push(match seg {
                    Seg::Bytes(b) => {
                        let text = String::from_utf8(b).map_err(|_| {
                            fail(format!("`{m}` applies to text, not to encoded bytes"))
                        })?;
                        let units = text.encode_utf16();
                        Seg::Bytes(if m == Modifier::Utf16Be {
                            units.flat_map(u16::to_be_bytes).collect()
                        } else {
                            units.flat_map(u16::to_le_bytes).collect()
                        })
                    }
                    other => other,
                });
            }
            out.push(encoded);
        }
        // Flags and kinds act on the matcher as a whole; `expand` acted when parsing.
        _ => out.push(w),
    }
    Ok(())
}

/// The value's bytes when it has no wildcard or placeholder, for the base64 modifiers.
fn plain_bytes(w: &[Seg], m: Modifier) -> Result<Vec<u8>, Fail> {
    let mut bytes = Vec::new();
    for seg in w {
        match seg {
            Seg::Bytes(b) => bytes.extend_from_slice(b),
            Seg::Placeholder(name) => {
                return Err(fail_unsupported(
                    "expand with base64",
                    format!("`{m}` cannot encode the placeholder `%{name}%` before it is expanded"),
                ));
            }
            Seg::Any | Seg::One => {
                return Err(fail(format!(
                    "`{m}` cannot encode a wildcard: escape a literal `*` or `?` as `\\*` / \
                     `\\?`, and put `contains`, `startswith` or `endswith` after `{m}`, not \
                     before"
                )));
            }
        }
    }
    Ok(bytes)
}

/// The three base64 forms of `plain` found inside a longer base64 text.
///
/// Base64 encodes 3 bytes as 4 characters, so the encoding of `plain` depends on where it
/// starts relative to a 3-byte boundary: shift 0, 1 or 2 bytes. For each shift, encode
/// `plain` after that many filler bytes and keep only the characters that depend on `plain`
/// alone: with 1 filler byte the first 2 characters also encode the filler, with 2 the first 3.
/// At the end, a last group of 1 byte leaves its 2nd character mixed with whatever follows
/// (drop it and the `==`: 3 characters), a group of 2 bytes its 3rd character (drop it and the
/// `=`: 2 characters).
fn base64_offsets(plain: &[u8]) -> Result<Vec<String>, Fail> {
    let mut out = Vec::with_capacity(3);
    for shift in 0..3 {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(plain);
        let encoded = BASE64.encode(&bytes);
        let start = [0, 2, 3][shift];
        let trim = [0, 3, 2][bytes.len() % 3];
        if start + trim >= encoded.len() {
            return Err(fail(
                "value too short for `base64offset`: it needs at least 2 bytes to leave \
                 characters that do not depend on the surrounding text",
            ));
        }
        let variant = encoded[start..encoded.len() - trim].to_string();
        if !out.contains(&variant) {
            out.push(variant);
        }
    }
    Ok(out)
}

/// Every variant of `w` with each windash character replaced by each of the five.
fn windash(w: Vec<Seg>, out: &mut Vec<Vec<Seg>>) -> Result<(), Fail> {
    let mut variants: Vec<Vec<Seg>> = vec![Vec::new()];
    for seg in w {
        match seg {
            Seg::Bytes(b) => {
                let text = String::from_utf8(b).map_err(|_| {
                    fail("`windash` applies to text: put it before the UTF-16 modifiers")
                })?;
                let dashes = text.chars().filter(|c| WINDASH.contains(c)).count();
                let count = u32::try_from(dashes)
                    .ok()
                    .and_then(|d| WINDASH.len().checked_pow(d))
                    .unwrap_or(usize::MAX)
                    .saturating_mul(variants.len());
                if count > MAX_WINDASH_VARIANTS {
                    return Err(fail_unsupported(
                        "windash with many dashes",
                        format!(
                            "`windash` would expand this value into more than \
                             {MAX_WINDASH_VARIANTS} variants ({dashes} dash characters); split \
                             it into several values joined with `all`"
                        ),
                    ));
                }
                let texts = windash_text(&text);
                variants = variants
                    .into_iter()
                    .flat_map(|prefix| {
                        texts.iter().map(move |t| {
                            let mut v = prefix.clone();
                            v.push(Seg::Bytes(t.clone().into_bytes()));
                            v
                        })
                    })
                    .collect();
            }
            other => {
                for v in &mut variants {
                    v.push(other.clone());
                }
            }
        }
    }
    out.extend(variants);
    Ok(())
}

/// All texts obtained from `text` by replacing each windash character with each of the five
/// (the original text first).
fn windash_text(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for c in text.chars() {
        if WINDASH.contains(&c) {
            // Keep the written character first so the first variant is the value as written.
            let order = std::iter::once(c).chain(WINDASH.iter().copied().filter(|d| *d != c));
            let choices: Vec<char> = order.collect();
            out = out
                .into_iter()
                .flat_map(|p| {
                    choices.iter().map(move |d| {
                        let mut s = p.clone();
                        s.push(*d);
                        s
                    })
                })
                .collect();
        } else {
            for s in &mut out {
                s.push(c);
            }
        }
    }
    out
}

/// Turns a finished value into a [`Pattern`]: literals must be text again.
fn finish(w: Vec<Seg>, case_sensitive: bool) -> Result<Pattern, Fail> {
    let mut parts: Vec<Part> = Vec::with_capacity(w.len());
    for seg in w {
        let part = match seg {
            Seg::Bytes(b) => {
                let text = String::from_utf8(b).map_err(|_| {
                    fail_unsupported(
                        "utf16 without base64",
                        "the UTF-16 bytes of this value are not UTF-8 text, and palisade \
                         matches text fields: add `base64` or `base64offset` after the UTF-16 \
                         modifier",
                    )
                })?;
                if let Some(Part::Literal(prev)) = parts.last_mut() {
                    prev.push_str(&text);
                    continue;
                }
                if text.is_empty() {
                    continue;
                }
                Part::Literal(text)
            }
            Seg::Any => {
                if parts.last() == Some(&Part::AnyChars) {
                    continue;
                }
                Part::AnyChars
            }
            Seg::One => Part::OneChar,
            Seg::Placeholder(name) => Part::Placeholder(name),
        };
        parts.push(part);
    }
    Ok(Pattern {
        parts,
        case_sensitive,
    })
}

/// Validates a `re` value with the regex syntax palisade's evaluator will compile.
fn regex(chain: &Chain, pattern: &str, node: &Node, cx: &Cx) -> Result<Regex, Fail> {
    let has = |m: Modifier| chain.mods.iter().any(|(x, _)| *x == m);
    let re = Regex {
        pattern: pattern.to_string(),
        case_insensitive: has(Modifier::ReIgnoreCase),
        multi_line: has(Modifier::ReMultiLine),
        dot_all: has(Modifier::ReDotAll),
    };
    let result = regex_syntax::ParserBuilder::new()
        .case_insensitive(re.case_insensitive)
        .multi_line(re.multi_line)
        .dot_matches_new_line(re.dot_all)
        .build()
        .parse(pattern);
    let err = match result {
        Ok(_) => return Ok(re),
        Err(e) => e,
    };
    let (span, unsupported, what) = match &err {
        regex_syntax::Error::Parse(e) => {
            let unsupported = match e.kind() {
                regex_syntax::ast::ErrorKind::UnsupportedLookAround => Some("regex look-around"),
                regex_syntax::ast::ErrorKind::UnsupportedBackreference => {
                    Some("regex backreference")
                }
                _ => None,
            };
            (*e.span(), unsupported, e.kind().to_string())
        }
        regex_syntax::Error::Translate(e) => (*e.span(), None, e.kind().to_string()),
        other => (
            regex_syntax::ast::Span::splat(regex_syntax::ast::Position::new(0, 1, 1)),
            None,
            other.to_string(),
        ),
    };
    // Point at the offending character of the regex, in the file.
    let offset = pattern[..span.start.offset.min(pattern.len())]
        .chars()
        .count();
    let mut fail = match unsupported {
        Some(feature) => fail_unsupported(
            feature,
            format!(
                "{what} (palisade matches regexes in linear time, which rules out look-around \
                 and backreferences): rewrite the expression without it"
            ),
        ),
        None => fail(format!("invalid regular expression: {what}")),
    };
    fail.at = Some(cx.at(node, offset));
    Err(fail)
}

/// Parses `10.0.0.0/8`, `fe80::/10`, or a bare address (a /32 or /128 network).
fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (text.trim(), None),
    };
    let address: IpAddr = addr.parse().map_err(|_| {
        format!("`{text}` is not an IP network: write e.g. `10.0.0.0/8` or `fe80::/10`")
    })?;
    let max: u8 = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("`{text}`: the prefix length must be a number from 0 to {max}")
        })?,
    };
    let network = match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    if network != address {
        return Err(format!(
            "`{text}` has host bits set: the network is `{network}/{prefix}`"
        ));
    }
    Ok(Cidr { address, prefix })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::detect::sigma::yaml;

    /// Builds the matcher of the first `key: value` of `src`.
    fn matcher(src: &str) -> Result<FieldMatcher, SigmaError> {
        let docs = yaml::load(src).expect("test YAML parses");
        let root = docs[0].root.as_ref().expect("a document");
        let NodeKind::Map(entries) = &root.kind else {
            panic!("test YAML is a map")
        };
        let (k, v) = &entries[0];
        let cx = Cx {
            file: Path::new("t.yml"),
            source: src,
        };
        field_matcher(&cx, k, v)
    }

    /// A value in a compact, unambiguous form.
    fn render(v: &Value) -> String {
        match v {
            Value::Pattern(p) => {
                let cased = if p.case_sensitive { "cased:" } else { "" };
                format!("{cased}{p}")
            }
            Value::Number { value, text } => format!("num:{value}({text})"),
            Value::Bool(b) => format!("bool:{b}"),
            Value::Null => "null".to_string(),
            Value::Regex(r) => format!(
                "re:{}{}{}{}",
                r.pattern,
                if r.case_insensitive { "/i" } else { "" },
                if r.multi_line { "/m" } else { "" },
                if r.dot_all { "/s" } else { "" }
            ),
            Value::Cidr(c) => format!("cidr:{c}"),
            Value::Compare { op, value } => format!("{op:?}:{value}"),
            Value::Exists(b) => format!("exists:{b}"),
            Value::FieldRef {
                field,
                case_sensitive,
            } => format!(
                "fieldref:{field}{}",
                if *case_sensitive { "/cased" } else { "" }
            ),
        }
    }

    /// Every variant of every value, rendered.
    fn values(src: &str) -> Vec<Vec<String>> {
        let m = matcher(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        m.values
            .iter()
            .map(|v| v.variants.iter().map(render).collect())
            .collect()
    }

    /// The single variant of the single value.
    fn one(src: &str) -> String {
        let mut v = values(src);
        assert_eq!(v.len(), 1, "{src}: {v:?}");
        assert_eq!(v[0].len(), 1, "{src}: {v:?}");
        v.remove(0).remove(0)
    }

    /// The error as `line:column: message` (and whether unsupported).
    fn err(src: &str) -> String {
        let e = matcher(src).expect_err(src);
        let shown = e.to_string();
        shown.strip_prefix("t.yml:").unwrap_or(&shown).to_string()
    }

    fn parts(text: &str) -> Vec<Part> {
        finish(parse_pattern(text, false), false)
            .ok()
            .unwrap()
            .parts
    }

    fn lit(s: &str) -> Part {
        Part::Literal(s.to_string())
    }

    #[test]
    fn wildcards_and_escapes_follow_the_specification() {
        use Part::{AnyChars, OneChar};
        // A plain backslash, single or doubled.
        assert_eq!(
            parts(r"C:\Windows\cmd.exe"),
            vec![lit(r"C:\Windows\cmd.exe")]
        );
        assert_eq!(parts(r"C:\\Windows"), vec![lit(r"C:\Windows")]);
        // Escaped wildcards are plain characters.
        assert_eq!(parts(r"what\?"), vec![lit("what?")]);
        assert_eq!(parts(r"\*star"), vec![lit("*star")]);
        // An escaped backslash before a wildcard: backslash, then the wildcard.
        assert_eq!(parts(r"dir\\*"), vec![lit(r"dir\"), AnyChars]);
        // Three backslashes: a backslash and a plain star.
        assert_eq!(parts(r"dir\\\*"), vec![lit(r"dir\*")]);
        // Three or four backslashes are a double backslash.
        assert_eq!(parts(r"\\\\server"), vec![lit(r"\\server")]);
        assert_eq!(parts(r"\\\server"), vec![lit(r"\\server")]);
        // Wildcards.
        assert_eq!(parts("prog?.exe"), vec![lit("prog"), OneChar, lit(".exe")]);
        assert_eq!(parts("a**b"), vec![lit("a"), AnyChars, lit("b")]);
        assert_eq!(parts("*"), vec![AnyChars]);
        assert_eq!(parts(""), Vec::<Part>::new());
        // Without `expand`, percent signs are plain.
        assert_eq!(parts("%name%"), vec![lit("%name%")]);
        // A trailing backslash is plain.
        assert_eq!(parts("end\\"), vec![lit("end\\")]);
    }

    #[test]
    fn patterns_display_as_sigma_and_parse_back() {
        for text in [
            r"C:\Windows\*",
            r"dir\\*",
            r"dir\\\*",
            r"\\\\server\share",
            r"what\?",
            "prog?.exe",
            "*contains*",
            r"a\b\\",
            "",
        ] {
            let p = finish(parse_pattern(text, false), false).ok().unwrap();
            let shown = p.to_string();
            let again = finish(parse_pattern(&shown, false), false).ok().unwrap();
            assert_eq!(again, p, "{text} displayed as {shown}");
        }
    }

    #[test]
    fn plain_values_and_types() {
        assert_eq!(
            one(r"Image: 'C:\Windows\System32\whoami.exe'"),
            r"C:\Windows\System32\whoami.exe"
        );
        assert_eq!(one("EventID: 4624"), "num:4624(4624)");
        assert_eq!(one("EventID: '4624'"), "4624");
        assert_eq!(one("Flags: 0x17"), "num:23(0x17)");
        assert_eq!(one("Ratio: 1.5"), "num:1.5(1.5)");
        assert_eq!(one("Signed: true"), "bool:true");
        assert_eq!(one("Image: null"), "null");
        assert_eq!(one("Image: ''"), "");
        assert_eq!(
            values("EventID: [4624, 4625]"),
            vec![vec!["num:4624(4624)"], vec!["num:4625(4625)"]]
        );
        let m = matcher("EventID: [1, 2]").unwrap();
        assert_eq!((m.link, m.negated), (Link::Any, false));
        assert_eq!(m.field.as_deref(), Some("EventID"));
        let m = matcher("dns.question.name: x").unwrap();
        assert_eq!(m.field.as_deref(), Some("dns.question.name"));
    }

    #[test]
    fn null_and_empty_lists() {
        assert_eq!(
            err("Image: ['', null]"),
            "1:13: `null` cannot be part of a list of values (it is its own type): put `field: \
             null` in a selection of its own and combine the selections in the condition"
        );
        assert!(err("Image|contains: null").contains("`null` takes no modifiers"));
        assert!(err("Image: []").starts_with("1:8: empty list of values"));
        assert!(err("Image: {a: b}").contains("must be a value or a list of values, not a map"));
        assert!(err("Image: [[a]]").contains("must be a string, number or boolean, not a list"));
    }

    #[test]
    fn contains_startswith_endswith_add_wildcards_once() {
        assert_eq!(one(r"CommandLine|contains: 'mimikatz'"), "*mimikatz*");
        assert_eq!(one(r"CommandLine|contains: '*mimi*katz'"), "*mimi*katz*");
        assert_eq!(one(r"Image|endswith: '\cmd.exe'"), r"*\cmd.exe");
        assert_eq!(one(r"Image|startswith: 'C:\Temp\'"), r"C:\Temp\\*");
        // A number under a string modifier is its text.
        assert_eq!(one("EventID|contains: 46"), "*46*");
        assert_eq!(one("Flags|startswith: 0x1"), "0x1*");
    }

    #[test]
    fn all_links_values_with_and() {
        let m = matcher("CommandLine|contains|all: [' -a ', ' -b ']").unwrap();
        assert_eq!(m.link, Link::All);
        assert_eq!(m.modifiers, vec![Modifier::Contains, Modifier::All]);
        assert_eq!(
            values("CommandLine|contains|all: [' -a ', ' -b ']"),
            vec![vec!["* -a *"], vec!["* -b *"]]
        );
        assert_eq!(
            err("CommandLine|contains|all: 'x'"),
            "1:22: `all` needs a list of at least two values; with one value, remove `all`"
        );
    }

    #[test]
    fn cased_makes_patterns_case_sensitive() {
        assert_eq!(one("Name|cased: Admin"), "cased:Admin");
        assert_eq!(one("Name|contains|cased: Admin"), "cased:*Admin*");
        assert_eq!(one("Name: Admin"), "Admin");
    }

    #[test]
    fn windash_gives_every_permutation() {
        let v = values("CommandLine|contains|windash: ' -s -i'");
        assert_eq!(v.len(), 1);
        let variants = &v[0];
        assert_eq!(variants.len(), 25);
        assert_eq!(variants[0], "* -s -i*", "the value as written comes first");
        for expected in ["* /s /i*", "* –s —i*", "* ―s -i*", "* -s ―i*", "* —s /i*"] {
            assert!(variants.iter().any(|v| v == expected), "{expected} missing");
        }
        let mut unique = variants.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 25);
        // Every written dash-like character is a source, not only `-`.
        let v = values("CommandLine|windash: '/c'");
        assert_eq!(v[0], vec!["/c", "-c", "–c", "—c", "―c"]);
        // No dash: the value alone.
        assert_eq!(values("CommandLine|windash: 'abc'"), vec![vec!["abc"]]);
        // Too many dashes is a limit of palisade, said as such.
        let e = err("CommandLine|windash: '-a -b -c -d -e'");
        assert!(
            e.contains("unsupported feature `windash with many dashes`"),
            "{e}"
        );
        assert!(
            e.contains("more than 625 variants (5 dash characters)"),
            "{e}"
        );
    }

    #[test]
    fn base64_encodes_the_whole_value() {
        assert_eq!(
            one("CommandLine|base64: 'Invoke-Mimikatz'"),
            "SW52b2tlLU1pbWlrYXR6"
        );
        assert_eq!(
            one("CommandLine|base64|contains: 'Invoke-Mimikatz'"),
            "*SW52b2tlLU1pbWlrYXR6*"
        );
        let e = err("CommandLine|contains|base64: 'abc'");
        assert!(
            e.starts_with("1:30: `base64` cannot encode a wildcard"),
            "{e}"
        );
        let e = err("CommandLine|base64: 'a*c'");
        assert!(e.contains("cannot encode a wildcard"), "{e}");
        // An escaped star is a plain character and is encoded.
        assert_eq!(one(r"CommandLine|base64: 'a\*c'"), "YSpj");
    }

    #[test]
    fn base64offset_gives_the_three_shifted_encodings() {
        assert_eq!(
            values("CommandLine|base64offset|contains: '/bin/bash'"),
            vec![vec!["*L2Jpbi9iYXNo*", "*9iaW4vYmFza*", "*vYmluL2Jhc2*"]]
        );
        assert_eq!(
            values("CommandLine|base64offset|contains: 'http://'"),
            vec![vec!["*aHR0cDovL*", "*h0dHA6Ly*", "*odHRwOi8v*"]]
        );
    }

    #[test]
    fn base64offset_variants_occur_in_real_encodings() {
        // Whatever precedes the value (0, 1 or 2 bytes modulo 3) and follows it, one variant
        // must occur in the base64 of the whole text: that is the point of the modifier.
        for value in ["/bin/bash", "http://", "ab", "Invoke-Expression", "é€"] {
            let variants = base64_offsets(value.as_bytes()).ok().unwrap();
            for prefix in ["", "x", "xy", "xyz", "wxyz"] {
                for suffix in ["", "!", "!!", "!!!"] {
                    let encoded = BASE64.encode(format!("{prefix}{value}{suffix}"));
                    let shift = prefix.len() % 3;
                    assert!(
                        encoded.contains(&variants[shift]),
                        "{prefix}|{value}|{suffix}: {encoded} lacks {}",
                        variants[shift]
                    );
                }
            }
        }
        assert!(err("CommandLine|base64offset: 'a'").contains("too short for `base64offset`"));
    }

    #[test]
    fn utf16_encodings() {
        assert_eq!(one("CommandLine|utf16le|base64: 'cmd'"), "YwBtAGQA");
        assert_eq!(one("CommandLine|wide|base64: 'cmd'"), "YwBtAGQA");
        assert_eq!(one("CommandLine|utf16be|base64: 'cmd'"), "AGMAbQBk");
        // `utf16` puts the byte order mark FF FE first.
        assert_eq!(one("CommandLine|utf16|base64: 'cmd'"), "//5jAG0AZAA=");
        // As real rules combine them.
        let expected = vec![vec!["*cABpAG4AZw*", "*AAaQBuAGcA*", "*wAGkAbgBnA*"]];
        assert_eq!(
            values("CommandLine|utf16le|base64offset|contains: 'ping'"),
            expected
        );
        assert_eq!(
            values("CommandLine|wide|base64offset|contains: 'ping'"),
            expected
        );
        // UTF-16LE of ASCII is still text (with NULs).
        assert_eq!(one("Data|utf16le: 'cmd'"), "c\0m\0d\0");
        // Wildcards survive the encoding.
        assert_eq!(one("Data|utf16le|contains: 'cmd'"), "*c\0m\0d\0*");
        // The byte order mark is not text: it needs base64 after it.
        let e = err("Data|utf16: 'cmd'");
        assert!(
            e.contains("unsupported feature `utf16 without base64`"),
            "{e}"
        );
        assert!(err("Data|utf16le|utf16be|base64: 'x'").contains("cannot be combined"));
    }

    #[test]
    fn regular_expressions_are_validated_with_their_flags() {
        assert_eq!(
            one(r"CommandLine|re: '(?i)\s(-u|--user)\s*:'"),
            r"re:(?i)\s(-u|--user)\s*:"
        );
        assert_eq!(one("CommandLine|re|i|m|s: '^a.b$'"), "re:^a.b$/i/m/s");
        assert_eq!(one("CommandLine|re|s: 'a.b'"), "re:a.b/s");
        // Wildcards and escapes mean nothing in a regex: the text is kept as is.
        assert_eq!(one(r"CommandLine|re: 'a\*b*'"), r"re:a\*b*");
        let e = err("CommandLine|re: 'a(b'");
        // At the unclosed `(`.
        assert_eq!(e, "1:19: invalid regular expression: unclosed group");
        // Look-around: unsupported, pointing at `(?=` (column 17 + 4).
        let e = err("CommandLine|re: 'foo(?=bar)'");
        assert!(
            e.starts_with("1:21: unsupported feature `regex look-around`"),
            "{e}"
        );
        let e = err(r"CommandLine|re: '(a)\1'");
        assert!(
            e.contains("unsupported feature `regex backreference`"),
            "{e}"
        );
        assert!(
            err("CommandLine|i: 'x'").contains("`i` is a flag of the `re` modifier: write `re|i`")
        );
        let e = err("CommandLine|re|contains: 'x'");
        assert!(
            e.starts_with("1:16: `re` and `contains` cannot be combined"),
            "{e}"
        );
    }

    #[test]
    fn cidr_networks() {
        assert_eq!(one("DestinationIp|cidr: '10.0.0.0/8'"), "cidr:10.0.0.0/8");
        assert_eq!(one("DestinationIp|cidr: '::1/128'"), "cidr:::1/128");
        assert_eq!(one("DestinationIp|cidr: 'fe80::/10'"), "cidr:fe80::/10");
        assert_eq!(
            one("DestinationIp|cidr: '192.168.1.7'"),
            "cidr:192.168.1.7/32"
        );
        assert_eq!(one("DestinationIp|cidr: '0.0.0.0/0'"), "cidr:0.0.0.0/0");
        assert!(
            err("DestinationIp|cidr: '10.1.0.0/8'")
                .contains("host bits set: the network is `10.0.0.0/8`")
        );
        assert!(
            err("DestinationIp|cidr: '10.0.0.0/33'")
                .contains("prefix length must be a number from 0 to 32")
        );
        assert!(err("DestinationIp|cidr: 'intranet'").contains("is not an IP network"));
        assert!(err("DestinationIp|cidr|contains: '10.0.0.0/8'").contains("cannot be combined"));
    }

    #[test]
    fn numeric_and_time_comparisons() {
        assert_eq!(one("Size|gt: 1000"), "Gt:1000");
        assert_eq!(one("Size|lte: 2.5"), "Lte:2.5");
        let e = err("Size|gte: '10'");
        assert!(
            e.contains("`gte` compares with a number, not `10`: remove the quotes"),
            "{e}"
        );
        assert!(err("Size|gt|lt: 5").contains("`gt` and `lt` cannot be combined"));
        let m = matcher("Timestamp|hour|gte: 22").unwrap();
        assert_eq!(m.time_part, Some(TimePart::Hour));
        assert_eq!(render(&m.values[0].variants[0]), "Gte:22");
        let m = matcher("Timestamp|month: 12").unwrap();
        assert_eq!(m.time_part, Some(TimePart::Month));
        assert_eq!(render(&m.values[0].variants[0]), "num:12(12)");
        assert!(err("Timestamp|hour: 'x'").contains("time modifier compares with a number"));
        assert!(err("Timestamp|hour|contains: 1").contains("cannot be combined"));
    }

    #[test]
    fn exists_fieldref_neq_expand() {
        assert_eq!(one("PasswordLastSet|exists: true"), "exists:true");
        assert_eq!(one("PasswordLastSet|exists: false"), "exists:false");
        assert!(err("PasswordLastSet|exists: 'yes'").contains("`exists` takes `true` or `false`"));
        assert!(
            err("PasswordLastSet|exists|neq: true").contains("`exists` takes no other modifier")
        );

        assert_eq!(one("TargetFilename|fieldref: Image"), "fieldref:Image");
        let m = matcher("User|fieldref|neq: ParentUser").unwrap();
        assert!(m.negated);
        assert_eq!(render(&m.values[0].variants[0]), "fieldref:ParentUser");
        assert!(err("User|fieldref|contains: X").contains("cannot be combined"));

        let m = matcher("Status|neq: [a, b]").unwrap();
        assert!(m.negated);
        assert_eq!(values("Status|neq: [a, b]"), vec![vec!["a"], vec!["b"]]);

        assert_eq!(one("User|expand: '%Administrators%'"), "%Administrators%");
        let m = matcher("Path|contains|expand: '\\%plain%name%\\x'").unwrap();
        let Value::Pattern(p) = &m.values[0].variants[0] else {
            panic!("pattern")
        };
        assert_eq!(
            p.parts,
            vec![
                Part::AnyChars,
                lit("%plain"),
                Part::Placeholder("name".to_string()),
                lit("\\x"),
                Part::AnyChars
            ]
        );
        assert!(p.has_placeholders());
        let e = err("User|expand|base64: '%admins%'");
        assert!(
            e.contains("unsupported feature `expand with base64`"),
            "{e}"
        );
    }

    #[test]
    fn placeholder_values_are_patterns_under_the_text_modifiers() {
        use Modifier as M;
        let shown = |text: &str, mods: &[Modifier]| -> Vec<String> {
            placeholder_value(text, mods)
                .unwrap()
                .into_iter()
                .map(|parts| {
                    Pattern {
                        parts,
                        case_sensitive: false,
                    }
                    .to_string()
                })
                .collect()
        };
        // Wildcards and escapes as in a rule; the shape of the whole value is not this piece's.
        assert_eq!(shown("srv*", &[M::Contains, M::Expand]), ["srv*"]);
        assert_eq!(shown(r"a\*b?", &[M::Expand]), [r"a\*b?"]);
        // No placeholders within placeholders.
        assert_eq!(shown("%x%", &[M::Expand]), ["%x%"]);
        assert_eq!(
            shown("-a", &[M::Windash, M::Expand]),
            ["-a", "/a", "\u{2013}a", "\u{2014}a", "\u{2015}a"]
        );
        assert_eq!(shown("ab", &[M::Expand, M::Utf16Le]), ["a\0b\0"]);
        // The byte order mark starts the whole value, not the placeholder's piece.
        assert_eq!(shown("ab", &[M::Utf16, M::Expand]), ["a\0b\0"]);
        let e = placeholder_value("\u{e9}", &[M::Utf16Be, M::Expand]).unwrap_err();
        assert!(e.contains("not UTF-8 text"), "{e}");
    }

    #[test]
    fn bad_modifiers_are_named_and_located() {
        assert_eq!(
            err("Image|endswith|contians: x")
                .split(':')
                .take(3)
                .collect::<Vec<_>>()
                .join(":"),
            "1:16: unknown modifier `contians`"
        );
        assert!(err("Image|Contains: x").contains("modifiers are lower-case: write `contains`"));
        assert_eq!(
            err("Image||contains: x"),
            "1:7: empty modifier: remove the extra `|`"
        );
        assert_eq!(
            err("Image|contains|contains: x"),
            "1:16: modifier `contains` is given twice"
        );
        assert!(
            err("Image|contains|endswith: x")
                .starts_with("1:16: `contains` and `endswith` cannot be combined")
        );
        assert!(err("Image|base64|base64offset: x").contains("cannot be combined"));
        // In a quoted key the column still lands on the modifier.
        assert!(err("'Image|nope': x").starts_with("1:8: unknown modifier `nope`"));
    }

    #[test]
    fn keyword_keys_have_no_field() {
        let m = matcher("'|all': [foo, bar]").unwrap();
        assert_eq!(m.field, None);
        assert_eq!(m.link, Link::All);
        assert_eq!(values("'|all': [foo, bar]"), vec![vec!["foo"], vec!["bar"]]);
        assert!(err("'|exists': true").contains("`exists` needs a field name"));
    }
}
