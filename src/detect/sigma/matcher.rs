//! One column, every value every rule tests on it: a [`ColumnMatcher`] built once, evaluated
//! per batch in a single pass over the column.
//!
//! In: at build time, any number of `(slot, &Value)` pairs registered on a
//! [`ColumnMatcherBuilder`]; values registered on the same slot are alternatives (ORed), which
//! is how the variants of one [`super::MatchValue`] share a result. Per batch, one Arrow array:
//! `Utf8`, `LargeUtf8`, `Utf8View`, `Boolean`, `Int8..Int64`, `UInt8..UInt64`, `Float32/64`.
//! Out: one [`BooleanBuffer`] per slot, bit `i` set when row `i` matches, and whether the slot
//! holds any row ([`SlotBits`]). A null row matches only `null` and `exists: false`; every
//! other value is false on it, so a negation built on top (`neq`, `not`) is true on it.
//!
//! How the work is shared: every string literal of every pattern registered on the column is
//! deduplicated (ASCII-case-folded) and goes where its anchoring says. Literals that must sit
//! at the value's start (exact values, `startswith`) form one trie walked from the value's
//! first byte, those at its end (`endswith`) one walked back from its last byte
//! (`anchored.rs`): a walk stops where the value leaves the trie, usually within a few
//! bytes, however many literals there are. Only `contains` literals and prefilters need a scan
//! of the whole value: one Aho-Corasick automaton of their first `SCAN_PREFIX` bytes, run
//! once per row with overlapping matches, and where such a start occurs a trie walk checks
//! the rest of the longer literals. When there are few such starts (at most
//! `MAX_PACKED_LITERALS`, as on most columns and on the keywords), a SIMD search (Teddy) over
//! the row's lower-cased bytes first finds the earliest one, and the automaton runs from there
//! only: a row without any costs a fraction of a byte-by-byte scan. Patterns with an inner `*`
//! or a `?` use their longest literal as a prefilter and are verified by a wildcard matcher
//! only on rows where it occurred. Regexes are compiled once at build time. Only the non-null
//! rows the caller selects are visited; `null`, `exists` and `*` are set from the null bitmap,
//! word by word. A value repeated in the batch (an image, a user, a channel) is matched once:
//! its later rows copy the slots it set (`Distinct`, which gives up on a column whose first
//! values are mostly distinct).
//!
//! Value kinds on a string column: patterns as above; numbers by the text the rule wrote
//! (`EventID: 4688` matches "4688", `0x17` matches "0x17"); comparisons on the value parsed as
//! a decimal number; booleans as `true` / `false` in any case; CIDR networks on the value parsed
//! as an IPv4 or IPv6 address (an IPv4 network also holds `::ffff:a.b.c.d`). On a numeric
//! column: numbers and comparisons by value (integers exactly, floats as `f64`), and the
//! patterns, regexes and networks on the value's decimal text (formatted on the stack). On a
//! boolean column: booleans by value, patterns on `true` / `false`.
//!
//! Two more evaluations over arrays serve the values that are not a column's own:
//! [`compare_columns`] compares two columns row by row (`fieldref`), and [`time_parts`] turns a
//! date column (timestamps, ISO 8601 strings) into the integer column of its minutes, hours,
//! days, ISO weeks, months or years in UTC, which a column matcher then matches the time
//! modifiers' numbers and comparisons against.
//!
//! Guarantees: no allocation per row (scratch space is per batch, every slot's bits in one
//! buffer; [`compare_columns`] lower-cases the rare pairs outside ASCII); a value that cannot be evaluated on one column
//! (`%placeholder%`s not yet expanded, `fieldref`: [`super::plan`] deals with both before
//! registering values here) is an [`Unsupported`] error from the builder, never a silent
//! non-match; an array type not listed above is an [`EvalError`], never a silent non-match.
//! Strings match case-insensitively (unless `cased`) in the Unicode sense, as the specification
//! treats values as "case-insensitive strings": the automaton folds ASCII letters only, so a
//! pattern with a letter outside ASCII that has a case (`arrêté`) is registered as each of its
//! case variants, every such letter replaced by each letter of its class under Unicode simple
//! case folding (`arrêté`, `arrÊté`, `arrêtÉ`, `arrÊtÉ`: it matches `ARRÊTÉ`); beyond
//! [`MAX_CASE_VARIANTS`] variants, by a case-insensitive regex instead. `fieldref` compares such
//! values by their lower case. An ASCII letter in a pattern matches only ASCII letters (not the
//! Kelvin sign `K`), except in the rare patterns left to a regex.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::Write as _;
use std::net::IpAddr;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use chrono::{
    DateTime, Datelike as _, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike as _, Utc,
};
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, LargeStringArray, StringArray, StringViewArray, UInt8Array, UInt16Array,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use super::anchored::{AnchoredTrie, TrieBuilder};
use super::value::{Cidr, CmpOp, Number, Part, Pattern, TimePart, Value};

/// Beyond this many literals on one column, the automaton is an NFA (smaller, slower).
const MAX_DFA_LITERALS: usize = 20_000;

/// The automaton holds only the first this many bytes of a longer scanned literal; the rest
/// is checked by a trie walk from where that start occurred. Thousands of long literals on one
/// column (hash IOCs: `IMPHASH=` and 32 hex digits) would make a DFA of megabytes, whose every
/// transition misses the cache; their starts make a small one. Tests cut at 2 bytes, so that
/// their short literals go through both paths.
const SCAN_PREFIX: usize = if cfg!(test) { 2 } else { 8 };

/// At most this many distinct literal starts, none shorter than [`MIN_PACKED_LEN`], and a
/// column's scan first looks for the earliest of them with a SIMD searcher (Teddy, from the
/// aho-corasick crate's `packed` module) over the row's ASCII-lower-cased bytes: the
/// automaton runs from there, and not at all on the rows where none occurs. Teddy takes up to
/// 64 literals; the automaton itself (overlapping, case-folded) has no SIMD prefilter.
const MAX_PACKED_LITERALS: usize = 64;

/// Shorter literal starts occur too often for the SIMD search to skip much. Tests take every
/// length, so that their short literals go through the prefiltered scan too.
const MIN_PACKED_LEN: usize = if cfg!(test) { 1 } else { 3 };

/// A value the evaluator cannot match, found when building: the rule has to be left out (or
/// the feature implemented), never run with a matcher that silently never fires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported feature `{feature}`: {message}")]
pub struct Unsupported {
    /// The feature, e.g. `fieldref`.
    pub feature: &'static str,
    /// Why, and what the rule author can do.
    pub message: String,
}

/// A column whose Arrow type the evaluation at hand does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reads}, not a column of type {data_type}")]
pub struct EvalError {
    /// The column's type.
    pub data_type: DataType,
    /// What the evaluation reads, e.g. "Sigma values are matched against strings, booleans
    /// and numbers".
    pub reads: &'static str,
}

/// What [`ColumnMatcher::evaluate`] and [`compare_columns`] read.
const READS_VALUES: &str = "Sigma values are matched against strings, booleans and numbers";
/// What [`time_parts`] reads.
const READS_DATES: &str = "time modifiers read dates from timestamps and date strings";

/// Where a literal must sit in the value for its user to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// The whole value.
    Exact,
    /// At the start.
    Prefix,
    /// At the end.
    Suffix,
    /// Anywhere.
    Contains,
    /// Anywhere; marks a complex pattern or a regex as a candidate to verify.
    Prefilter(Verify),
}

/// What runs on a row where its prefilter literal occurred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// The wildcard matcher of complex pattern `n`.
    Glob(usize),
    /// Regex `n`.
    Regex(usize),
}

/// One user of an automaton literal.
#[derive(Debug, Clone)]
struct Hook {
    anchor: Anchor,
    slot: usize,
    /// For `cased` literals: the exact text, compared with the occurrence. Cased literals
    /// share the case-folded automaton and are verified on a hit rather than scanned by a
    /// second automaton: one scan per row instead of two, and the check is a compare of the
    /// literal's length only where it occurred.
    cased: Option<Box<str>>,
}

/// A pattern with an inner `*` or a `?`.
#[derive(Debug, Clone)]
struct Complex {
    slot: usize,
    parts: Vec<Glob>,
    case_sensitive: bool,
}

/// A pattern piece for the wildcard verifier.
#[derive(Debug, Clone)]
enum Glob {
    Lit(Box<str>),
    Any,
    One,
}

/// Collects the values of one column; [`ColumnMatcherBuilder::build`] compiles them.
#[derive(Debug, Default)]
pub struct ColumnMatcherBuilder {
    /// One past the highest slot registered.
    slots: usize,
    /// Folded literal -> its index in `literals` (deduplication across rules).
    literal_ids: HashMap<Box<str>, usize>,
    /// The automaton's patterns, ASCII-lower-cased.
    literals: Vec<Box<str>>,
    /// Per literal, who uses it and how.
    hooks: Vec<Vec<Hook>>,
    /// How many hooks come from patterns (the others are numbers' texts).
    pattern_hooks: usize,
    complex: Vec<Complex>,
    /// Complex patterns without any literal (`?`, `??*`) and regexes without required
    /// literals: verified on every row.
    unfiltered: Vec<Verify>,
    /// Slots matching the empty string exactly (pattern `''`).
    empty: Vec<usize>,
    /// Slots matching any non-null value (pattern `*`).
    any: Vec<usize>,
    regexes: Vec<(usize, regex::Regex)>,
    /// Numbers: equality with numeric values (their text is also a literal, for strings).
    numbers: Vec<(usize, Number)>,
    compares: Vec<(usize, CmpOp, Number)>,
    bools: Vec<(usize, bool)>,
    cidrs: Vec<(usize, Cidr)>,
    nulls: Vec<usize>,
    exists: Vec<(usize, bool)>,
}

impl ColumnMatcherBuilder {
    /// An empty builder.
    pub fn new() -> ColumnMatcherBuilder {
        ColumnMatcherBuilder::default()
    }

    /// Whether [`ColumnMatcherBuilder::add`] would accept `value`; lets a caller check a whole
    /// rule before registering any of it.
    pub fn check(value: &Value) -> Result<(), Unsupported> {
        match value {
            // The plan expands placeholders and compares fields (`super::plan`); what reaches
            // a column matcher has neither.
            Value::Pattern(p) if p.has_placeholders() => Err(Unsupported {
                feature: "expand",
                message: format!(
                    "`{p}` has `%placeholders%`: expand them (with their configured values) \
                     before registering the pattern on a column"
                ),
            }),
            Value::FieldRef { field, .. } => Err(Unsupported {
                feature: "fieldref",
                message: format!(
                    "comparing with field `{field}` needs two columns; a column matcher sees \
                     one (compare the columns with `compare_columns`)"
                ),
            }),
            Value::Regex(r) => compile_regex(r).map(drop),
            _ => Ok(()),
        }
    }

    /// Registers `value` on `slot`; values on the same slot are ORed.
    pub fn add(&mut self, slot: usize, value: &Value) -> Result<(), Unsupported> {
        ColumnMatcherBuilder::check(value)?;
        self.slots = self.slots.max(slot + 1);
        match value {
            Value::Pattern(p) => self.add_pattern(slot, p),
            Value::Number { value, text } => {
                self.numbers.push((slot, *value));
                // Against text, a number is compared by how the rule wrote it (`EventID:
                // 4688` matches the string "4688"; `0x17` matches "0x17").
                self.hook(text, slot, Anchor::Exact, None);
            }
            Value::Bool(b) => self.bools.push((slot, *b)),
            Value::Null => self.nulls.push(slot),
            Value::Regex(r) => {
                let re = compile_regex(r)?;
                let n = self.regexes.len();
                self.regexes.push((slot, re));
                match required_literals(r) {
                    Some(literals) => {
                        for l in &literals {
                            self.hook(l, slot, Anchor::Prefilter(Verify::Regex(n)), None);
                        }
                    }
                    None => self.unfiltered.push(Verify::Regex(n)),
                }
            }
            Value::Cidr(c) => self.cidrs.push((slot, *c)),
            Value::Compare { op, value } => self.compares.push((slot, *op, *value)),
            Value::Exists(e) => self.exists.push((slot, *e)),
            Value::FieldRef { .. } => unreachable!("rejected by check"),
        }
        Ok(())
    }

    /// Registers a keyword: `value` searched anywhere in the text (a pattern gets `*` on both
    /// sides), as Sigma keywords are substring searches.
    pub fn add_keyword(&mut self, slot: usize, value: &Value) -> Result<(), Unsupported> {
        match value {
            Value::Pattern(p) => {
                let mut parts = p.parts.clone();
                if parts.first() != Some(&Part::AnyChars) {
                    parts.insert(0, Part::AnyChars);
                }
                if parts.last() != Some(&Part::AnyChars) || parts.len() == 1 {
                    parts.push(Part::AnyChars);
                }
                parts.dedup_by(|a, b| *a == Part::AnyChars && *b == Part::AnyChars);
                let p = Pattern {
                    parts,
                    case_sensitive: p.case_sensitive,
                };
                self.add(slot, &Value::Pattern(p))
            }
            _ => self.add(slot, value),
        }
    }

    fn hook(&mut self, text: &str, slot: usize, anchor: Anchor, cased: Option<&str>) {
        let folded: Box<str> = text.to_ascii_lowercase().into();
        let id = *self.literal_ids.entry(folded.clone()).or_insert_with(|| {
            self.literals.push(folded);
            self.hooks.push(Vec::new());
            self.literals.len() - 1
        });
        self.hooks[id].push(Hook {
            anchor,
            slot,
            cased: cased.map(Into::into),
        });
    }

    fn add_pattern(&mut self, slot: usize, p: &Pattern) {
        if !p.case_sensitive && has_non_ascii_case(p) {
            // The automaton would take `É` and `é` for different letters: each case variant
            // of the pattern is registered instead, all on the slot.
            if let Some(variants) = case_variants(p) {
                for v in &variants {
                    self.add_folded_pattern(slot, v);
                }
                return;
            }
            // Too many variants: the regex engine folds every case. Anchored, `*` and `?` as
            // `.*` and `.` over any character.
            let r = super::value::Regex {
                pattern: glob_regex(p),
                case_insensitive: true,
                multi_line: false,
                dot_all: true,
            };
            self.add(slot, &Value::Regex(r))
                .expect("an escaped pattern is a valid regex");
            return;
        }
        self.add_folded_pattern(slot, p);
    }

    /// A pattern whose letters the automaton folds well enough: ASCII letters are folded,
    /// and any other letter is matched as written (a case variant).
    fn add_folded_pattern(&mut self, slot: usize, p: &Pattern) {
        use Part::{AnyChars as Any, Literal as Lit};
        let simple = match p.parts.as_slice() {
            [] => {
                self.empty.push(slot);
                return;
            }
            [Any] => {
                self.any.push(slot);
                return;
            }
            [Lit(s)] => Some((s, Anchor::Exact)),
            [Lit(s), Any] => Some((s, Anchor::Prefix)),
            [Any, Lit(s)] => Some((s, Anchor::Suffix)),
            [Any, Lit(s), Any] => Some((s, Anchor::Contains)),
            _ => None,
        };
        self.pattern_hooks += 1;
        if let Some((s, anchor)) = simple {
            self.hook(s, slot, anchor, p.case_sensitive.then_some(s.as_str()));
            return;
        }
        let parts: Vec<Glob> = p
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(s) => Glob::Lit(s.as_str().into()),
                Part::AnyChars => Glob::Any,
                Part::OneChar => Glob::One,
                Part::Placeholder(_) => unreachable!("rejected by check"),
            })
            .collect();
        let n = self.complex.len();
        self.complex.push(Complex {
            slot,
            parts,
            case_sensitive: p.case_sensitive,
        });
        // The longest literal is the rarest in practice, so the fewest rows get verified.
        let longest = p
            .parts
            .iter()
            .filter_map(|part| match part {
                Part::Literal(s) => Some(s.as_str()),
                _ => None,
            })
            .max_by_key(|s| s.len());
        match longest {
            Some(s) => self.hook(s, slot, Anchor::Prefilter(Verify::Glob(n)), None),
            None => self.unfiltered.push(Verify::Glob(n)),
        }
    }

    /// Compiles everything registered into the matcher. Fails only when the literals exceed
    /// the automaton's size limits (far beyond the whole SigmaHQ corpus on one column).
    pub fn build(self) -> Result<ColumnMatcher, Unsupported> {
        // Anchored uses of a literal go to the tries, walked from the end they are anchored
        // at; only `contains` and prefilters need the scan of the whole value.
        let mut front = TrieBuilder::default();
        let mut back = TrieBuilder::default();
        let mut scanned: Vec<Box<str>> = Vec::new();
        let mut scan_hooks: Vec<Vec<Hook>> = Vec::new();
        for (literal, hooks) in self.literals.into_iter().zip(self.hooks) {
            let (mut starts, mut ends, mut anywhere) = (Vec::new(), Vec::new(), Vec::new());
            for h in hooks {
                match h.anchor {
                    Anchor::Exact | Anchor::Prefix => starts.push(h),
                    Anchor::Suffix => ends.push(h),
                    Anchor::Contains | Anchor::Prefilter(_) => anywhere.push(h),
                }
            }
            if !starts.is_empty() {
                front.insert(literal.bytes(), starts.into_iter());
            }
            if !ends.is_empty() {
                back.insert(literal.bytes().rev(), ends.into_iter());
            }
            if !anywhere.is_empty() {
                scanned.push(literal);
                scan_hooks.push(anywhere);
            }
        }
        // Scanned literals by their first `SCAN_PREFIX` bytes: the automaton's patterns.
        let mut starts: Vec<Box<[u8]>> = Vec::new();
        let mut start_ids: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut groups: Vec<ScanGroup> = Vec::new();
        let mut tails = TrieBuilder::default();
        for (literal, hooks) in scanned.iter().zip(scan_hooks) {
            let bytes = literal.as_bytes();
            let cut = bytes.len().min(SCAN_PREFIX);
            let id = *start_ids.entry(bytes[..cut].into()).or_insert_with(|| {
                starts.push(bytes[..cut].into());
                groups.push(ScanGroup::default());
                groups.len() - 1
            });
            let group = &mut groups[id];
            if cut == bytes.len() {
                group.whole.extend(hooks);
            } else {
                let root = *group.tails.get_or_insert_with(|| tails.add_root());
                tails.insert_from(root, bytes[cut..].iter().copied(), hooks.into_iter());
            }
        }
        let tails = (!tails.is_empty()).then(|| tails.build());
        let automaton = if starts.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                // Standard semantics is the one that reports overlapping matches.
                .match_kind(MatchKind::Standard)
                // A DFA: one table lookup per byte. The crate's default picks an NFA beyond a
                // hundred patterns, which costs several times more per byte on the overlapping
                // search every row goes through; a column's literals (a few thousand for the
                // whole SigmaHQ corpus on `CommandLine`) make a DFA of a few megabytes.
                .kind((starts.len() <= MAX_DFA_LITERALS).then_some(AhoCorasickKind::DFA))
                .build(&starts)
                .map_err(|e| Unsupported {
                    feature: "literal count",
                    message: format!("{} distinct literals on one column: {e}", scanned.len()),
                })?;
            Some(ac)
        };
        let packed = if starts.len() <= MAX_PACKED_LITERALS
            && starts.iter().all(|s| s.len() >= MIN_PACKED_LEN)
        {
            // The starts are folded already; the rows will be folded the same way (ASCII
            // letters only), so a case-sensitive search finds what the case-insensitive
            // automaton would.
            let mut b = aho_corasick::packed::Config::new()
                .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                .builder();
            b.extend(&starts);
            // `None` when Teddy does not apply (no SIMD, or too many one-byte literals).
            b.build()
        } else {
            None
        };
        // Numbers, comparisons and booleans are decided on a numeric value itself; its text
        // matters only to patterns (a number's own literal would say nothing new), regexes and
        // networks.
        let scalars_as_text = self.pattern_hooks > 0
            || !self.empty.is_empty()
            || !self.regexes.is_empty()
            || !self.cidrs.is_empty();
        Ok(ColumnMatcher {
            slots: self.slots,
            front: (!front.is_empty()).then(|| front.build()),
            back: (!back.is_empty()).then(|| back.build()),
            automaton,
            packed,
            groups,
            tails,
            complex: self.complex,
            unfiltered: self.unfiltered,
            empty: self.empty,
            any: self.any,
            regexes: self.regexes,
            numbers: self.numbers,
            compares: self.compares,
            bools: self.bools,
            cidrs: self.cidrs,
            nulls: self.nulls,
            exists: self.exists,
            scalars_as_text,
        })
    }
}

/// Whether a literal of `p` has a letter outside ASCII that has an upper and a lower case.
fn has_non_ascii_case(p: &Pattern) -> bool {
    p.parts.iter().any(|part| {
        matches!(part, Part::Literal(s)
            if s.chars().any(|c| !c.is_ascii() && (c.is_lowercase() || c.is_uppercase())))
    })
}

/// Most case variants [`case_variants`] gives for one pattern: beyond, the pattern is matched
/// by a case-insensitive regex (thousands of variants would bloat the automaton).
const MAX_CASE_VARIANTS: usize = 64;

/// The case variants of `p` (case-insensitive, with letters outside ASCII that have a case):
/// every such letter replaced by each letter of its class under Unicode simple case folding
/// (`é`, `É`; `σ`, `ς`, `Σ`), in every combination, so that the ASCII-folding automaton
/// matches any of them case-insensitively; ASCII letters are left to the automaton's folding.
/// `None` beyond [`MAX_CASE_VARIANTS`].
fn case_variants(p: &Pattern) -> Option<Vec<Pattern>> {
    let mut variants: Vec<Vec<Part>> = vec![Vec::new()];
    for part in &p.parts {
        let Part::Literal(s) = part else {
            variants.iter_mut().for_each(|v| v.push(part.clone()));
            continue;
        };
        let mut literals = vec![String::new()];
        for c in s.chars() {
            let class = case_class(c);
            if literals.len() * class.len() * variants.len() > MAX_CASE_VARIANTS {
                return None;
            }
            literals = literals
                .iter()
                .flat_map(|l| {
                    class.iter().map(move |&d| {
                        let mut l = l.clone();
                        l.push(d);
                        l
                    })
                })
                .collect();
        }
        variants = variants
            .iter()
            .flat_map(|v| {
                literals.iter().map(move |l| {
                    let mut v = v.clone();
                    v.push(Part::Literal(l.clone()));
                    v
                })
            })
            .collect();
    }
    Some(
        variants
            .into_iter()
            .map(|parts| Pattern {
                parts,
                case_sensitive: false,
            })
            .collect(),
    )
}

/// `c` and the letters it equals under Unicode simple case folding; `c` alone for ASCII
/// (the automaton folds ASCII letters itself) and for characters without case.
fn case_class(c: char) -> Vec<char> {
    use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};
    if c.is_ascii() {
        return vec![c];
    }
    let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
    class.case_fold_simple();
    class
        .iter()
        .flat_map(|r| r.start()..=r.end())
        // An ASCII letter in the class (`s` for `ſ`) once: the automaton folds its case.
        .filter(|d| !d.is_ascii_uppercase())
        .collect()
}

/// `p` as an anchored regex: literals escaped, `*` as `.*`, `?` as `.`.
fn glob_regex(p: &Pattern) -> String {
    let mut re = String::from("^");
    for part in &p.parts {
        match part {
            Part::Literal(s) => re.push_str(&regex_syntax::escape(s)),
            Part::AnyChars => re.push_str(".*"),
            Part::OneChar => re.push('.'),
            Part::Placeholder(_) => unreachable!("rejected by check"),
        }
    }
    re.push('$');
    re
}

fn compile_regex(r: &super::value::Regex) -> Result<regex::Regex, Unsupported> {
    regex::RegexBuilder::new(&r.pattern)
        .case_insensitive(r.case_insensitive)
        .multi_line(r.multi_line)
        .dot_matches_new_line(r.dot_all)
        .build()
        .map_err(|e| Unsupported {
            feature: "re",
            message: format!("regex `{}` does not compile: {e}", r.pattern),
        })
}

/// Literals one of which every match of `r` contains, for the automaton to find the rows worth
/// running `r` on; `None` when there is no useful set (a match may start and end with
/// anything, the literals are too short to be rare, or too many). Sound because every match
/// starts with one of its prefix literals and ends with one of its suffix literals (see
/// `regex_syntax::hir::literal`); the case-folded automaton only widens the candidates.
fn required_literals(r: &super::value::Regex) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(r.case_insensitive)
        .multi_line(r.multi_line)
        .dot_matches_new_line(r.dot_all)
        .build()
        .parse(&r.pattern)
        .ok()?;
    [ExtractKind::Prefix, ExtractKind::Suffix]
        .into_iter()
        .filter_map(|kind| {
            let suffix = matches!(kind, ExtractKind::Suffix);
            let seq = Extractor::new().kind(kind).extract(&hir);
            let literals = seq
                .literals()?
                .iter()
                .map(|l| {
                    std::str::from_utf8(l.as_bytes())
                        .ok()
                        .map(str::to_ascii_lowercase)
                })
                .collect::<Option<Vec<String>>>()?;
            let longest = literals.iter().map(String::len).max()?;
            // Classes multiply literals (`0x[0-9a-f]{8}`); cutting every literal to its first
            // (prefix) or last (suffix) `len` bytes keeps the property and merges many, so
            // take the longest cut that leaves few enough.
            (MIN_REGEX_LITERAL..=longest).rev().find_map(|len| {
                let mut cut: Vec<String> = literals
                    .iter()
                    .map(|l| if suffix { tail(l, len) } else { head(l, len) }.to_owned())
                    .collect();
                cut.sort();
                cut.dedup();
                let shortest = cut.iter().map(String::len).min()?;
                (shortest >= MIN_REGEX_LITERAL && cut.len() <= MAX_REGEX_LITERALS)
                    .then_some((shortest, cut))
            })
        })
        .max_by_key(|(shortest, _)| *shortest)
        .map(|(_, literals)| literals)
}

/// The longest start of `s` of at most `len` bytes that ends on a character boundary.
fn head(s: &str, len: usize) -> &str {
    let mut end = len.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest end of `s` of at most `len` bytes that starts on a character boundary.
fn tail(s: &str, len: usize) -> &str {
    let mut start = s.len().saturating_sub(len);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Shorter literals occur in most command lines: the prefilter would pass nearly every row.
const MIN_REGEX_LITERAL: usize = 3;
/// More literals than this for one regex (case variants multiply) cost more in the automaton
/// than they save.
const MAX_REGEX_LITERALS: usize = 64;

/// The compiled matchers of one column. Immutable: evaluation takes `&self`, so one matcher
/// serves every batch.
#[derive(Debug)]
pub struct ColumnMatcher {
    slots: usize,
    /// Exact and prefix literals, walked from a value's start.
    front: Option<AnchoredTrie<Hook>>,
    /// Suffix literals, reversed, walked from a value's end.
    back: Option<AnchoredTrie<Hook>>,
    /// The starts of the `contains` and prefilter literals, scanned over the whole value.
    automaton: Option<AhoCorasick>,
    /// The same starts, searched for the earliest one in a row's folded bytes: the automaton
    /// starts there (see [`MAX_PACKED_LITERALS`]).
    packed: Option<aho_corasick::packed::Searcher>,
    /// Per automaton pattern, the literals it starts.
    groups: Vec<ScanGroup>,
    /// The rest of the literals longer than [`SCAN_PREFIX`], from each group's own root.
    tails: Option<AnchoredTrie<Hook>>,
    complex: Vec<Complex>,
    unfiltered: Vec<Verify>,
    empty: Vec<usize>,
    any: Vec<usize>,
    regexes: Vec<(usize, regex::Regex)>,
    numbers: Vec<(usize, Number)>,
    compares: Vec<(usize, CmpOp, Number)>,
    bools: Vec<(usize, bool)>,
    cidrs: Vec<(usize, Cidr)>,
    nulls: Vec<usize>,
    exists: Vec<(usize, bool)>,
    /// Whether numeric and boolean rows are also formatted as text and run through the string
    /// tests; false when no pattern, regex or network is registered (e.g. only `EventID:
    /// 4688`), which spares a formatting and a scan per row.
    scalars_as_text: bool,
}

/// The scanned literals that start with one automaton pattern.
#[derive(Debug, Default)]
struct ScanGroup {
    /// The users of the literal that is the pattern itself.
    whole: Vec<Hook>,
    /// The root, in the matcher's `tails` trie, of the longer literals' remainders.
    tails: Option<usize>,
}

/// The distinct values of one column in one batch and the slots each set, so that a value
/// repeated in the batch (an image, a user, a channel: most of a Sysmon event's short fields)
/// is matched once and its later rows only copy its slots. Values are borrowed from the array,
/// hashed with [`FxHasher`]. When the first [`Distinct::PROBE`] values are mostly distinct
/// (command lines, hashes, GUIDs) it switches itself off for the rest of the batch, so such
/// a column pays for a few hundred hash insertions per batch and nothing per row after.
#[derive(Default)]
struct Distinct<'a> {
    /// Value -> its range in `slots`.
    seen: HashMap<&'a str, (u32, u32), BuildHasherDefault<FxHasher>>,
    /// The slots of every value seen, back to back.
    slots: Vec<u32>,
    /// Values looked up so far.
    looked_up: usize,
    off: bool,
}

impl<'a> Distinct<'a> {
    /// Values looked up before deciding whether the column repeats enough.
    const PROBE: usize = 256;
    /// At most this many distinct values among the first `PROBE`, or it switches off.
    const MAX_DISTINCT_IN_PROBE: usize = Distinct::PROBE / 2;
    /// Beyond this many distinct values it stops remembering new ones.
    const MAX_VALUES: usize = 4096;

    /// The slots `text` set when it was matched earlier in the batch.
    #[inline]
    fn get(&mut self, text: &str) -> Option<&[u32]> {
        if self.off {
            return None;
        }
        self.looked_up += 1;
        if self.looked_up == Distinct::PROBE && self.seen.len() > Distinct::MAX_DISTINCT_IN_PROBE {
            self.off = true;
            self.seen = HashMap::default();
            self.slots = Vec::new();
            return None;
        }
        let &(from, to) = self.seen.get(text)?;
        Some(&self.slots[from as usize..to as usize])
    }

    /// Remembers that `text` sets `slots`.
    fn insert(&mut self, text: &'a str, slots: &[u32]) {
        if self.off || self.seen.len() >= Distinct::MAX_VALUES {
            return;
        }
        let from = self.slots.len() as u32;
        self.slots.extend_from_slice(slots);
        self.seen.insert(text, (from, self.slots.len() as u32));
    }
}

/// A fast non-cryptographic hash (rustc's Fx): the values hashed are a batch's own, so
/// flooding is not a concern, and SipHash would cost more than matching a short value.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.0 =
            (self.0.rotate_left(5) ^ u64::from_le_bytes(last) ^ rest.len() as u64).wrapping_mul(K);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A non-null value of a numeric or boolean column.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    /// The value as a number, unless it is a boolean.
    fn num(self) -> Option<Num> {
        match self {
            Scalar::Int(i) => Some(Num::Int(i128::from(i))),
            Scalar::UInt(u) => Some(Num::Int(i128::from(u))),
            Scalar::Float(f) => Some(Num::Float(f)),
            Scalar::Bool(_) => None,
        }
    }
}

/// Room on the stack for a scalar's text: f64's Display writes every digit (up to 309 before
/// the point).
struct TextBuf([u8; 400]);

impl TextBuf {
    fn new() -> TextBuf {
        TextBuf([0; 400])
    }

    /// `v` as decimal text (`true` / `false` for booleans), without allocating.
    fn format(&mut self, v: Scalar) -> Option<&str> {
        let mut cursor = std::io::Cursor::new(&mut self.0[..]);
        let written = match v {
            Scalar::Int(i) => write!(cursor, "{i}"),
            Scalar::UInt(u) => write!(cursor, "{u}"),
            Scalar::Float(f) => write!(cursor, "{f}"),
            Scalar::Bool(b) => write!(cursor, "{b}"),
        };
        let end = cursor.position() as usize;
        written.ok()?;
        std::str::from_utf8(&self.0[..end]).ok()
    }
}

/// Per-batch bits and scratch: every slot's words in one vector (one allocation per column
/// and batch, whatever the number of slots), and the verifications already queued for the
/// current row.
struct Out {
    /// Words per slot.
    words: usize,
    /// Slot `s` is `bits[s * words..(s + 1) * words]`.
    bits: Vec<u64>,
    /// Row + 1 at which each complex pattern, then each regex, was last queued (0 = never).
    queued_at: Vec<usize>,
    queue: Vec<Verify>,
    /// The current row, ASCII-lower-cased, for the packed search.
    folded: Vec<u8>,
    /// The slots set on the current row (cleared before each row), for [`Distinct`].
    row_slots: Vec<u32>,
    /// Per slot: whether any row is set.
    set: Vec<bool>,
    /// Rows matched (the others copied a repeated value's slots).
    values_matched: usize,
}

impl Out {
    /// Sets `slot` on `row`, and notes it among the row's slots.
    #[inline]
    fn set(&mut self, slot: usize, row: usize) {
        self.bits[slot * self.words + (row >> 6)] |= 1 << (row & 63);
        self.set[slot] = true;
        self.row_slots.push(slot as u32);
    }

    /// Sets `slots` on `row`: those an earlier row with the same value set.
    #[inline]
    fn copy(&mut self, slots: &[u32], row: usize) {
        for &slot in slots {
            self.bits[slot as usize * self.words + (row >> 6)] |= 1 << (row & 63);
        }
    }

    /// ORs `rows` into slot `slot`.
    fn or(&mut self, slot: usize, rows: &BooleanBuffer) {
        let at = slot * self.words;
        let chunks = rows.bit_chunks();
        let mut any = 0;
        for (w, chunk) in self.bits[at..at + self.words]
            .iter_mut()
            .zip(chunks.iter_padded())
        {
            *w |= chunk;
            any |= chunk;
        }
        self.set[slot] |= any != 0;
    }
}

/// A column matcher's result for one batch: per slot, its bitmap and whether it holds any
/// row, so that combining the slots of a rule skips the (many) empty ones without reading
/// them.
#[derive(Debug, Clone, Default)]
pub struct SlotBits {
    /// Per slot: bit `i` set when row `i` matches the slot's values.
    pub bits: Vec<BooleanBuffer>,
    /// Per slot: whether any bit of `bits` is set.
    pub set: Vec<bool>,
}

impl SlotBits {
    /// `slots` slots of `len` rows, none set (one shared buffer).
    pub fn none(len: usize, slots: usize) -> SlotBits {
        SlotBits {
            bits: vec![BooleanBuffer::new_unset(len); slots],
            set: vec![false; slots],
        }
    }

    /// `bits`, each slot's `set` counted.
    pub fn counted(bits: Vec<BooleanBuffer>) -> SlotBits {
        let set = bits.iter().map(|b| b.count_set_bits() > 0).collect();
        SlotBits { bits, set }
    }
}

impl ColumnMatcher {
    /// How many slots the result has (one past the highest slot registered).
    pub fn slots(&self) -> usize {
        self.slots
    }

    #[cfg(test)]
    pub(super) fn describe(&self) -> String {
        let hooks = |t: &Option<AnchoredTrie<Hook>>| t.as_ref().map_or(0, AnchoredTrie::nodes);
        format!(
            "{} slots, {} prefix/exact trie nodes, {} suffix trie nodes, {} scanned literals{}, \
             {} scan hooks, {} complex, {} regexes, {} checks run on every row",
            self.slots,
            hooks(&self.front),
            hooks(&self.back),
            self.automaton.as_ref().map_or(0, |a| a.patterns_len()),
            if self.packed.is_some() {
                " (packed search first)"
            } else {
                ""
            },
            self.groups.iter().map(|g| g.whole.len()).sum::<usize>() + hooks(&self.tails),
            self.complex.len(),
            self.regexes.len(),
            self.unfiltered.len()
        )
    }

    /// How many scanned literals (`contains`, prefilters) the matcher holds, counted by their
    /// users: those the automaton holds whole and those whose tails are in the trie.
    #[cfg(test)]
    pub(super) fn scanned_hooks(&self) -> usize {
        self.groups.iter().map(|g| g.whole.len()).sum::<usize>()
            + self.tails.as_ref().map_or(0, AnchoredTrie::payloads)
    }

    /// Whether [`ColumnMatcher::evaluate`] reads arrays of this type.
    pub fn supports(data_type: &DataType) -> bool {
        use DataType as D;
        matches!(
            data_type,
            D::Utf8
                | D::LargeUtf8
                | D::Utf8View
                | D::Boolean
                | D::Int8
                | D::Int16
                | D::Int32
                | D::Int64
                | D::UInt8
                | D::UInt16
                | D::UInt32
                | D::UInt64
                | D::Float32
                | D::Float64
        )
    }

    /// The slots for a batch of `len` rows where the column is absent: only `null` and
    /// `exists: false` hold.
    pub fn evaluate_absent(&self, len: usize) -> SlotBits {
        let mut out = self.out(len);
        self.presence(
            &BooleanBuffer::new_unset(len),
            &BooleanBuffer::new_set(len),
            &mut out,
        );
        self.finish(out, len)
    }

    /// One pass over `array`: bit `i` of slot `s` is set when row `i` matches a value
    /// registered on `s`.
    pub fn evaluate(&self, array: &dyn Array) -> Result<Vec<BooleanBuffer>, EvalError> {
        Ok(self.evaluate_masked(array, None)?.bits)
    }

    /// [`ColumnMatcher::evaluate`] on the rows set in `mask` only: the others are false in
    /// every slot (the caller ANDs them away), and cost nothing.
    ///
    /// Only the non-null selected rows are visited, one by one (a column that the batch's
    /// events do not have costs no per-row work); what depends only on whether a row is null
    /// (`null`, `exists`, `*`) is set word by word from the null bitmap.
    pub fn evaluate_masked(
        &self,
        array: &dyn Array,
        mask: Option<&BooleanBuffer>,
    ) -> Result<SlotBits, EvalError> {
        let out = self.evaluate_into(array, mask)?;
        Ok(self.finish(out, array.len()))
    }

    /// How many values of `array` were matched (rather than copied from an equal value).
    #[cfg(test)]
    pub(super) fn values_matched(&self, array: &dyn Array) -> usize {
        self.evaluate_into(array, None)
            .expect("supported array")
            .values_matched
    }

    fn evaluate_into(
        &self,
        array: &dyn Array,
        mask: Option<&BooleanBuffer>,
    ) -> Result<Out, EvalError> {
        if !ColumnMatcher::supports(array.data_type()) {
            return Err(EvalError {
                data_type: array.data_type().clone(),
                reads: READS_VALUES,
            });
        }
        let len = array.len();
        let mut out = self.out(len);
        let valid = match array.logical_nulls() {
            Some(nulls) => nulls.inner().clone(),
            None => BooleanBuffer::new_set(len),
        };
        let (present, absent) = match mask {
            Some(m) => (&valid & m, &!&valid & m),
            None => (valid.clone(), !&valid),
        };
        self.presence(&present, &absent, &mut out);
        macro_rules! strings {
            ($a:expr) => {{
                let a = $a;
                let mut distinct = Distinct::default();
                for row in present.set_indices() {
                    let text = a.value(row);
                    match distinct.get(text) {
                        Some(slots) => out.copy(slots, row),
                        None => {
                            self.text_row(row, text, &mut out);
                            distinct.insert(text, &out.row_slots);
                        }
                    }
                }
            }};
        }
        macro_rules! numbers {
            ($t:ty, $wrap:expr) => {{
                let a = array.as_primitive::<$t>();
                for row in present.set_indices() {
                    self.scalar_row(row, $wrap(a.value(row)), &mut out);
                }
            }};
        }
        match array.data_type() {
            DataType::Utf8 => strings!(array.as_string::<i32>()),
            DataType::LargeUtf8 => strings!(array.as_string::<i64>()),
            DataType::Utf8View => strings!(array.as_string_view()),
            DataType::Boolean => {
                let a = array.as_boolean();
                for row in present.set_indices() {
                    self.scalar_row(row, Scalar::Bool(a.value(row)), &mut out);
                }
            }
            DataType::Int8 => numbers!(Int8Type, |v| Scalar::Int(i64::from(v))),
            DataType::Int16 => numbers!(Int16Type, |v| Scalar::Int(i64::from(v))),
            DataType::Int32 => numbers!(Int32Type, |v| Scalar::Int(i64::from(v))),
            DataType::Int64 => numbers!(Int64Type, Scalar::Int),
            DataType::UInt8 => numbers!(UInt8Type, |v| Scalar::UInt(u64::from(v))),
            DataType::UInt16 => numbers!(UInt16Type, |v| Scalar::UInt(u64::from(v))),
            DataType::UInt32 => numbers!(UInt32Type, |v| Scalar::UInt(u64::from(v))),
            DataType::UInt64 => numbers!(UInt64Type, Scalar::UInt),
            DataType::Float32 => numbers!(Float32Type, |v| Scalar::Float(f64::from(v))),
            DataType::Float64 => numbers!(Float64Type, Scalar::Float),
            _ => unreachable!("checked by supports"),
        }
        Ok(out)
    }

    fn out(&self, len: usize) -> Out {
        let words = len.div_ceil(64);
        Out {
            words,
            bits: vec![0u64; words * self.slots],
            queued_at: vec![0; self.complex.len() + self.regexes.len()],
            queue: Vec::with_capacity(self.complex.len() + self.regexes.len()),
            folded: Vec::new(),
            row_slots: Vec::new(),
            set: vec![false; self.slots],
            values_matched: 0,
        }
    }

    /// The slots decided by presence alone: `null` and `exists: false` on the `absent` rows,
    /// `exists: true` and `*` on the `present` ones.
    fn presence(&self, present: &BooleanBuffer, absent: &BooleanBuffer, out: &mut Out) {
        for &s in &self.nulls {
            out.or(s, absent);
        }
        for &(s, e) in &self.exists {
            out.or(s, if e { present } else { absent });
        }
        for &s in &self.any {
            out.or(s, present);
        }
    }

    /// Every slot's bitmap, each a slice of the one buffer.
    fn finish(&self, out: Out, len: usize) -> SlotBits {
        let bytes = out.words * 8;
        let buffer = Buffer::from_vec(out.bits);
        let bits = (0..self.slots)
            .map(|s| BooleanBuffer::new(buffer.slice_with_length(s * bytes, bytes), 0, len))
            .collect();
        SlotBits { bits, set: out.set }
    }

    /// A numeric or boolean value: compared as such, and, for the string patterns, as its
    /// text (formatted on the stack: a rule's `'4688'` matches an integer column's 4688).
    fn scalar_row(&self, row: usize, v: Scalar, out: &mut Out) {
        out.row_slots.clear();
        out.values_matched += 1;
        if let Scalar::Bool(b) = v {
            for &(s, want) in &self.bools {
                if b == want {
                    out.set(s, row);
                }
            }
        }
        if let Some(n) = v.num() {
            for &(s, want) in &self.numbers {
                if n.cmp_number(want) == Some(Ordering::Equal) {
                    out.set(s, row);
                }
            }
            for &(s, op, want) in &self.compares {
                if n.cmp_number(want).is_some_and(|o| holds(op, o)) {
                    out.set(s, row);
                }
            }
        }
        if !self.scalars_as_text {
            return;
        }
        let mut buf = TextBuf::new();
        if let Some(text) = buf.format(v) {
            // Numbers, comparisons and booleans were decided on the value itself above.
            self.string_tests(row, text, out);
        }
    }

    /// A string value: every string test, then numbers, comparisons and booleans on its text.
    fn text_row(&self, row: usize, text: &str, out: &mut Out) {
        out.row_slots.clear();
        out.values_matched += 1;
        self.string_tests(row, text, out);
        if !self.compares.is_empty()
            && let Some(n) = Num::parse(text)
        {
            for &(s, op, want) in &self.compares {
                if n.cmp_number(want).is_some_and(|o| holds(op, o)) {
                    out.set(s, row);
                }
            }
        }
        for &(s, want) in &self.bools {
            if text.eq_ignore_ascii_case(if want { "true" } else { "false" }) {
                out.set(s, row);
            }
        }
    }

    /// Patterns (anchored ones by the tries, the others through the automaton), regexes and
    /// networks on a value's text.
    fn string_tests(&self, row: usize, text: &str, out: &mut Out) {
        let hay = text.as_bytes();
        if hay.is_empty() {
            for &s in &self.empty {
                out.set(s, row);
            }
        }
        // A cased literal shares the folded trie or automaton, and is compared with the text
        // it matched (a compare of the literal's length, only where it occurred).
        let cased_ok = |hook: &Hook, start: usize, end: usize| {
            hook.cased
                .as_deref()
                .is_none_or(|c| &hay[start..end] == c.as_bytes())
        };
        if let Some(front) = &self.front {
            front.walk(hay.iter().copied(), |depth, hooks| {
                for hook in hooks {
                    let anchored = hook.anchor == Anchor::Prefix || depth == hay.len();
                    if anchored && cased_ok(hook, 0, depth) {
                        out.set(hook.slot, row);
                    }
                }
            });
        }
        if let Some(back) = &self.back {
            back.walk(hay.iter().rev().copied(), |depth, hooks| {
                for hook in hooks {
                    if cased_ok(hook, hay.len() - depth, hay.len()) {
                        out.set(hook.slot, row);
                    }
                }
            });
        }
        // Where the first literal start occurs: no occurrence of any begins before it.
        let from = match &self.packed {
            Some(packed) => {
                out.folded.clear();
                out.folded.extend(hay.iter().map(u8::to_ascii_lowercase));
                packed.find(&out.folded).map(|m| m.start())
            }
            None => Some(0),
        };
        if let (Some(ac), Some(from)) = (&self.automaton, from) {
            // Every occurrence of a literal begins with an occurrence of its start: the
            // literal is there when the tail walk from that start's end reaches its node.
            let found = |hook: &Hook, start: usize, end: usize, out: &mut Out| {
                if let Anchor::Prefilter(v) = hook.anchor {
                    let n = match v {
                        Verify::Glob(n) => n,
                        Verify::Regex(n) => self.complex.len() + n,
                    };
                    if out.queued_at[n] != row + 1 {
                        out.queued_at[n] = row + 1;
                        out.queue.push(v);
                    }
                } else if cased_ok(hook, start, end) {
                    out.set(hook.slot, row);
                }
            };
            for m in ac.find_overlapping_iter(Input::new(hay).span(from..hay.len())) {
                let (start, end) = (m.start(), m.end());
                let group = &self.groups[m.pattern().as_usize()];
                for hook in &group.whole {
                    found(hook, start, end, out);
                }
                if let (Some(root), Some(tails)) = (group.tails, &self.tails) {
                    tails.walk_from(root, hay[end..].iter().copied(), |depth, hooks| {
                        for hook in hooks {
                            found(hook, start, end + depth, out);
                        }
                    });
                }
            }
        }
        out.queue.extend_from_slice(&self.unfiltered);
        while let Some(v) = out.queue.pop() {
            match v {
                Verify::Glob(n) => {
                    let c = &self.complex[n];
                    if glob_match(&c.parts, text, c.case_sensitive) {
                        out.set(c.slot, row);
                    }
                }
                Verify::Regex(n) => {
                    let (s, re) = &self.regexes[n];
                    if re.is_match(text) {
                        out.set(*s, row);
                    }
                }
            }
        }
        if !self.cidrs.is_empty()
            && let Ok(ip) = text.parse::<IpAddr>()
        {
            for &(s, c) in &self.cidrs {
                if in_network(ip, c) {
                    out.set(s, row);
                }
            }
        }
    }
}

/// Row by row, whether `left` and `right` hold the same value: a `fieldref` match. Strings
/// compare byte for byte, case-insensitively unless `case_sensitive` (by their lower case when
/// a letter outside ASCII is involved); numbers by value (an integer and a float as f64);
/// booleans by value; a string with a number or a boolean by text (the number's decimal text,
/// `true` / `false`). A null on either side is not equal. One pass, no allocation per row
/// but to lower-case a pair of strings outside ASCII that differ.
pub fn compare_columns(
    left: &dyn Array,
    right: &dyn Array,
    case_sensitive: bool,
) -> Result<BooleanBuffer, EvalError> {
    let (l, r) = (Cells::new(left)?, Cells::new(right)?);
    debug_assert_eq!(left.len(), right.len(), "columns of one batch");
    let mut buf = TextBuf::new();
    Ok(BooleanBuffer::collect_bool(
        left.len().min(right.len()),
        |row| match (l.get(row), r.get(row)) {
            (Some(a), Some(b)) => same_cell(a, b, case_sensitive, &mut buf),
            _ => false,
        },
    ))
}

fn same_cell(a: Cell<'_>, b: Cell<'_>, case_sensitive: bool, buf: &mut TextBuf) -> bool {
    let same_text = |x: &str, y: &str| {
        if case_sensitive {
            x == y
        } else {
            // Lower-casing allocates: only when a letter outside ASCII may differ in case.
            x.eq_ignore_ascii_case(y)
                || (!(x.is_ascii() && y.is_ascii()) && x.to_lowercase() == y.to_lowercase())
        }
    };
    match (a, b) {
        (Cell::Text(x), Cell::Text(y)) => same_text(x, y),
        (Cell::Scalar(x), Cell::Scalar(y)) => match (x, y) {
            (Scalar::Bool(p), Scalar::Bool(q)) => p == q,
            _ => match (x.num(), y.num()) {
                (Some(p), Some(q)) => p.same(q),
                // A boolean and a number are never the same value.
                _ => false,
            },
        },
        (Cell::Text(t), Cell::Scalar(v)) | (Cell::Scalar(v), Cell::Text(t)) => {
            buf.format(v).is_some_and(|text| same_text(t, text))
        }
    }
}

/// One non-null value of a row.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Text(&'a str),
    Scalar(Scalar),
}

/// A column read one cell at a time, whatever its type: the row-wise comparisons of two
/// columns, which a per-type loop would have to write for every pair of types.
enum Cells<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
}

impl<'a> Cells<'a> {
    /// Reads the types [`ColumnMatcher::evaluate`] reads.
    fn new(array: &'a dyn Array) -> Result<Cells<'a>, EvalError> {
        Ok(match array.data_type() {
            DataType::Utf8 => Cells::Utf8(array.as_string()),
            DataType::LargeUtf8 => Cells::LargeUtf8(array.as_string()),
            DataType::Utf8View => Cells::Utf8View(array.as_string_view()),
            DataType::Boolean => Cells::Bool(array.as_boolean()),
            DataType::Int8 => Cells::I8(array.as_primitive()),
            DataType::Int16 => Cells::I16(array.as_primitive()),
            DataType::Int32 => Cells::I32(array.as_primitive()),
            DataType::Int64 => Cells::I64(array.as_primitive()),
            DataType::UInt8 => Cells::U8(array.as_primitive()),
            DataType::UInt16 => Cells::U16(array.as_primitive()),
            DataType::UInt32 => Cells::U32(array.as_primitive()),
            DataType::UInt64 => Cells::U64(array.as_primitive()),
            DataType::Float32 => Cells::F32(array.as_primitive()),
            DataType::Float64 => Cells::F64(array.as_primitive()),
            other => {
                return Err(EvalError {
                    data_type: other.clone(),
                    reads: READS_VALUES,
                });
            }
        })
    }

    /// Row `row`, `None` when null.
    #[inline]
    fn get(&self, row: usize) -> Option<Cell<'a>> {
        macro_rules! read {
            ($a:expr, $cell:expr) => {
                if $a.is_null(row) {
                    None
                } else {
                    Some($cell($a.value(row)))
                }
            };
        }
        let int = |v: i64| Cell::Scalar(Scalar::Int(v));
        let uint = |v: u64| Cell::Scalar(Scalar::UInt(v));
        match self {
            Cells::Utf8(a) => read!(a, Cell::Text),
            Cells::LargeUtf8(a) => read!(a, Cell::Text),
            Cells::Utf8View(a) => read!(a, Cell::Text),
            Cells::Bool(a) => read!(a, |v| Cell::Scalar(Scalar::Bool(v))),
            Cells::I8(a) => read!(a, |v| int(i64::from(v))),
            Cells::I16(a) => read!(a, |v| int(i64::from(v))),
            Cells::I32(a) => read!(a, |v| int(i64::from(v))),
            Cells::I64(a) => read!(a, int),
            Cells::U8(a) => read!(a, |v| uint(u64::from(v))),
            Cells::U16(a) => read!(a, |v| uint(u64::from(v))),
            Cells::U32(a) => read!(a, |v| uint(u64::from(v))),
            Cells::U64(a) => read!(a, uint),
            Cells::F32(a) => read!(a, |v| Cell::Scalar(Scalar::Float(f64::from(v)))),
            Cells::F64(a) => read!(a, |v| Cell::Scalar(Scalar::Float(v))),
        }
    }
}

/// The `part` of each row's date, in UTC, as integers: the column that the values of a time
/// modifier (`hour: 3`, `hour|gte: 22`) are matched against. Reads timestamps of any unit (the
/// instant they hold, whatever zone the type names) and strings in the ISO 8601 forms of
/// [`parse_datetime`]. A null row, a string that is not such a date, or a timestamp outside
/// chrono's range is null, so it matches no value (and a negation holds on it). One allocation
/// per batch (the result), none per row.
pub fn time_parts(array: &dyn Array, part: TimePart) -> Result<Int64Array, EvalError> {
    let len = array.len();
    macro_rules! timestamps {
        ($t:ty, $to_utc:expr) => {{
            let a = array.as_primitive::<$t>();
            (0..len)
                .map(|row| {
                    if a.is_null(row) {
                        return None;
                    }
                    let utc: Option<DateTime<Utc>> = $to_utc(a.value(row));
                    utc.map(|t| part_of(t.naive_utc(), part))
                })
                .collect()
        }};
    }
    macro_rules! strings {
        ($a:expr) => {{
            let a = $a;
            (0..len)
                .map(|row| {
                    if a.is_null(row) {
                        return None;
                    }
                    parse_datetime(a.value(row)).map(|t| part_of(t, part))
                })
                .collect()
        }};
    }
    Ok(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            timestamps!(TimestampSecondType, |v| DateTime::from_timestamp(v, 0))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamps!(TimestampMillisecondType, DateTime::from_timestamp_millis)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamps!(TimestampMicrosecondType, DateTime::from_timestamp_micros)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamps!(TimestampNanosecondType, |v| Some(
                DateTime::from_timestamp_nanos(v)
            ))
        }
        DataType::Utf8 => strings!(array.as_string::<i32>()),
        DataType::LargeUtf8 => strings!(array.as_string::<i64>()),
        DataType::Utf8View => strings!(array.as_string_view()),
        other => {
            return Err(EvalError {
                data_type: other.clone(),
                reads: READS_DATES,
            });
        }
    })
}

fn part_of(t: NaiveDateTime, part: TimePart) -> i64 {
    i64::from(match part {
        TimePart::Minute => t.minute(),
        TimePart::Hour => t.hour(),
        TimePart::Day => t.day(),
        TimePart::Week => t.iso_week().week(),
        TimePart::Month => t.month(),
        TimePart::Year => return i64::from(t.year()),
    })
}

/// A date as events write it, in UTC. The forms of ISO 8601 / RFC 3339 that logs use: a date
/// `2025-11-27`; then optionally a time after `T`, `t` or a space: `07:40`, `07:40:10`, or
/// with a fraction of any length after `.` or `,` (`07:40:10.132`); then, after a time,
/// optionally a zone: `Z`, `z`, `+02:00`, `+0200`, `+02` (the time is moved to UTC), or none
/// (the time is taken as UTC, as in evtx's `UtcTime`, `2025-11-27 07:40:10.132`). A date
/// alone is its midnight. Surrounding spaces are ignored; anything else is not a date.
/// Reads the bytes in place: no allocation.
fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    let s = text.trim().as_bytes();
    // The `n`-digit number at `at`.
    let num = |at: usize, n: usize| -> Option<u32> {
        let digits = s.get(at..at + n)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
        })
    };
    let byte = |at: usize| s.get(at).copied();
    if byte(4) != Some(b'-') || byte(7) != Some(b'-') {
        return None;
    }
    let year = i32::try_from(num(0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, num(5, 2)?, num(8, 2)?)?;
    if s.len() == 10 {
        return Some(date.and_time(NaiveTime::MIN));
    }
    if !matches!(byte(10), Some(b'T' | b't' | b' ')) || byte(13) != Some(b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    if byte(i) == Some(b':') {
        second = num(i + 1, 2)?;
        i += 3;
        if matches!(byte(i), Some(b'.' | b',')) {
            let start = i + 1;
            i = start;
            while byte(i).is_some_and(|b| b.is_ascii_digit()) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    let local = date.and_time(NaiveTime::from_hms_opt(hour, minute, second)?);
    let zone = &s[i..];
    let east_secs = match zone {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let at = i + 1;
            let (h, m) = match rest {
                [_, _] => (num(at, 2)?, 0),
                [_, _, _, _] => (num(at, 2)?, num(at + 2, 2)?),
                [_, _, b':', _, _] => (num(at, 2)?, num(at + 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    local.checked_sub_signed(TimeDelta::seconds(east_secs))
}

/// A number read from a row: integers exactly (i128 holds every i64 and u64), floats as f64.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// A decimal number written as text (surrounding spaces allowed), for comparisons with
    /// string columns. Only digits, sign, point and exponent: `inf` or `NaN` are not numbers
    /// an event means to compare.
    fn parse(text: &str) -> Option<Num> {
        let t = text.trim();
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        {
            return None;
        }
        if let Ok(i) = t.parse::<i128>() {
            return Some(Num::Int(i));
        }
        t.parse::<f64>().ok().map(Num::Float)
    }

    /// Whether two values read from rows are the same number (an integer and a float compare
    /// as f64; NaN equals nothing).
    fn same(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a == b,
            (Num::Int(a), Num::Float(b)) | (Num::Float(b), Num::Int(a)) => a as f64 == b,
            (Num::Float(a), Num::Float(b)) => a == b,
        }
    }

    /// `self` compared with `other`; `None` when either is NaN.
    fn cmp_number(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Number::Int(b)) => Some(a.cmp(&i128::from(b))),
            (Num::Int(a), Number::Float(b)) => (a as f64).partial_cmp(&b),
            (Num::Float(a), b) => a.partial_cmp(&b.as_f64()),
        }
    }
}

/// Whether `field op value` holds when field compares `o` to value.
fn holds(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Lte => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Gte => o != Ordering::Less,
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Neq => o != Ordering::Equal,
    }
}

/// Whether `ip` is in `net`. An IPv4 network also holds IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`), which dual-stack sockets log for IPv4 peers.
fn in_network(ip: IpAddr, net: Cidr) -> bool {
    let prefix = u32::from(net.prefix);
    match (ip, net.address) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(v4) => in_network(IpAddr::V4(v4), net),
            None => false,
        },
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Sigma wildcard match of the whole `text`: `*` any run of characters, `?` one character,
/// literals compared ASCII-case-insensitively unless `case_sensitive`.
///
/// Backtracks only to the last `*` seen: the pieces between two stars have a fixed length, and
/// placing each at its leftmost occurrence leaves the most room for the rest, so an earlier
/// star never needs to grow again. Time O(len(text) * len(pattern)), no allocation.
fn glob_match(parts: &[Glob], text: &str, case_sensitive: bool) -> bool {
    let s = text.as_bytes();
    let (mut p, mut i) = (0, 0);
    // (part after the star, where that part's attempt started)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(part) = parts.get(p) {
            let advanced = match part {
                Glob::Any => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                Glob::One if i < s.len() => Some(i + char_len(s[i])),
                Glob::Lit(l) if literal_at(s, i, l.as_bytes(), case_sensitive) => Some(i + l.len()),
                _ => None,
            };
            if let Some(next) = advanced {
                i = next;
                p += 1;
                continue;
            }
        } else if i == s.len() {
            return true;
        }
        match star {
            Some((sp, si)) if si < s.len() => {
                let next = si + char_len(s[si]);
                star = Some((sp, next));
                p = sp;
                i = next;
            }
            _ => return false,
        }
    }
}

fn literal_at(s: &[u8], i: usize, lit: &[u8], case_sensitive: bool) -> bool {
    s.len() - i >= lit.len() && {
        let window = &s[i..i + lit.len()];
        if case_sensitive {
            window == lit
        } else {
            window.eq_ignore_ascii_case(lit)
        }
    }
}

/// Length of the UTF-8 character whose first byte is `lead`.
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
