//! The projecting decoder's fast walk over one JSON record: checks the syntax as it goes,
//! descends only into the requested paths, and skips everything else byte by byte.
//!
//! In: a record (valid UTF-8, checked by the caller) and the decoder's path trie. Out: for
//! each requested value, its raw JSON text, handed to a callback in document order; or
//! [`GiveUp`].
//!
//! serde_json's walk with `IgnoredAny` costs more than the rules once a rule set reads a few
//! dozen of an event's hundred fields: every skipped value goes through the visitor machinery.
//! Here skipping a string is a word-at-a-time search for its closing quote, and skipping a
//! container is a loop over bytes.
//!
//! It accepts only what is certainly valid JSON as serde_json reads it (RFC 8259): strings
//! without raw control characters and with valid escapes (a `\u` surrogate escape only as a
//! pair), numbers by the JSON grammar, `true` / `false` / `null`, nothing but whitespace after
//! the object. On anything else — malformed input, but also nesting deeper than
//! [`MAX_DEPTH`] or an unpaired surrogate escape, which serde_json may accept — it gives up,
//! and the decoder walks the record again with serde_json, which either accepts it or says
//! exactly what is wrong. So this walk never decides on its own that a record is bad, and
//! never accepts one serde_json would refuse.

use super::project::Node;

/// Beyond this nesting the walk leaves the record to serde_json (whose limit is 128).
pub(super) const MAX_DEPTH: usize = 100;

/// The record is not one the fast walk accepts; walk it with serde_json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GiveUp;

/// Walks `text`, which must be one JSON object, through the trie `nodes` (node 0 the root);
/// calls `leaf(column, raw)` for the value of every requested path met (a later duplicate
/// key calls it again). `key` is scratch space for keys with escapes.
pub(super) fn record<'a>(
    text: &'a str,
    nodes: &[Node],
    key: &mut String,
    leaf: &mut dyn FnMut(usize, &'a str),
) -> Result<(), GiveUp> {
    let mut s = Skim {
        text,
        b: text.as_bytes(),
        i: 0,
        nodes,
        key,
        leaf,
    };
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(GiveUp);
    }
    s.object(0, 1)?;
    s.ws();
    if s.i == s.b.len() {
        Ok(())
    } else {
        Err(GiveUp)
    }
}

struct Skim<'a, 'n, 'k, 'f> {
    text: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    i: usize,
    nodes: &'n [Node],
    key: &'k mut String,
    leaf: &'f mut dyn FnMut(usize, &'a str),
}

impl Skim<'_, '_, '_, '_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// At `{`: the members, those on a requested path (children of trie node `node`)
    /// descended into, the others skipped.
    fn object(&mut self, node: usize, depth: usize) -> Result<(), GiveUp> {
        if depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            let start = self.i + 1;
            let (end, escaped) = self.string()?;
            let children = &self.nodes[node].children;
            let child = if children.is_empty() {
                None
            } else if escaped {
                self.key.clear();
                super::project::unescape(&self.text[start..end], self.key);
                children.get(self.key)
            } else {
                children.get(&self.text[start..end])
            };
            self.ws();
            if self.peek() != Some(b':') {
                return Err(GiveUp);
            }
            self.i += 1;
            self.ws();
            match child {
                Some(child) => self.member(child, depth)?,
                None => self.skip(depth)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(GiveUp),
            }
        }
    }

    /// At the value of a member that reached trie node `node`: walked into when it is an
    /// object on the way to other paths, given to `leaf` when a path ends here (both, as
    /// serde_json's walk does).
    fn member(&mut self, node: usize, depth: usize) -> Result<(), GiveUp> {
        let start = self.i;
        let n = &self.nodes[node];
        let column = n.column;
        if self.peek() == Some(b'{') && !n.children.is_empty() {
            self.object(node, depth + 1)?;
        } else {
            self.skip(depth)?;
        }
        if let Some(column) = column {
            (self.leaf)(column, &self.text[start..self.i]);
        }
        Ok(())
    }

    /// Skips one value, at its first byte, checking its syntax.
    fn skip(&mut self, depth: usize) -> Result<(), GiveUp> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.skip_object(depth + 1),
            Some(b'[') => self.skip_array(depth + 1),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(GiveUp),
        }
    }

    fn skip_object(&mut self, depth: usize) -> Result<(), GiveUp> {
        if depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(GiveUp);
            }
            self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(GiveUp);
            }
            self.i += 1;
            self.ws();
            self.skip(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(GiveUp),
            }
        }
    }

    fn skip_array(&mut self, depth: usize) -> Result<(), GiveUp> {
        if depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(GiveUp),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), GiveUp> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what follows is the caller's
    /// to check (`01` leaves `1`, which no caller accepts).
    fn number(&mut self) -> Result<(), GiveUp> {
        let b = self.b;
        let mut i = self.i;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i + 1),
            _ => return Err(GiveUp),
        };
        if b.get(i) == Some(&b'.') {
            let after = digits(i + 1);
            if after == i + 1 {
                return Err(GiveUp);
            }
            i = after;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let after = digits(i);
            if after == i {
                return Err(GiveUp);
            }
            i = after;
        }
        self.i = i;
        Ok(())
    }

    /// At `"`: moves past the closing quote; returns where that quote is and whether the
    /// string has escapes.
    fn string(&mut self) -> Result<(usize, bool), GiveUp> {
        let mut i = self.i + 1;
        let mut escaped = false;
        loop {
            i = find_special(self.b, i).ok_or(GiveUp)?;
            match self.b[i] {
                b'"' => {
                    self.i = i + 1;
                    return Ok((i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    i = escape_end(self.b, i + 1)?;
                }
                // A raw control character.
                _ => return Err(GiveUp),
            }
        }
    }
}

/// Past the escape whose letter is at `at` (just after the backslash). A `\u` high surrogate
/// must be followed by a `\u` low surrogate.
fn escape_end(b: &[u8], at: usize) -> Result<usize, GiveUp> {
    match b.get(at) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 1),
        Some(b'u') => match hex4(b, at + 1)? {
            0xD800..=0xDBFF if b.get(at + 5) == Some(&b'\\') && b.get(at + 6) == Some(&b'u') => {
                match hex4(b, at + 7)? {
                    0xDC00..=0xDFFF => Ok(at + 11),
                    _ => Err(GiveUp),
                }
            }
            0xD800..=0xDFFF => Err(GiveUp),
            _ => Ok(at + 5),
        },
        _ => Err(GiveUp),
    }
}

/// The four hex digits at `at` (digits only: no sign, unlike `from_str_radix`).
fn hex4(b: &[u8], at: usize) -> Result<u32, GiveUp> {
    let digits = b.get(at..at + 4).ok_or(GiveUp)?;
    digits.iter().try_fold(0, |n, &d| {
        let v = (d as char).to_digit(16).ok_or(GiveUp)?;
        Ok(n * 16 + v)
    })
}

/// The first `"`, `\` or control character (below 0x20) in `b` at or after `from`, eight
/// bytes at a time.
fn find_special(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte below `n` (n <= 0x80); the lowest flagged byte is always exact
    // (a borrow only runs upwards from a byte that is itself flagged).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let found = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|at| i + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_bytes_are_found_exactly() {
        for text in [
            "abcdefgh\"",
            "\\",
            "abc\u{1}def\"",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"",
            "0123456789abcdef\\x",
            "\u{7f}\u{80}\u{ff} \"",
        ] {
            let b = text.as_bytes();
            let want = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(find_special(b, 0), want, "{text:?}");
        }
        assert_eq!(find_special(b"no special bytes here", 0), None);
        assert_eq!(hex4(b"+abc", 0), Err(GiveUp));
        assert_eq!(hex4(b"00e9", 0), Ok(0xe9));
    }
}
