//! JSON records -> a `RecordBatch` of only the requested fields, in one pass per record.
//!
//! In: a [`RawBatch`] of JSON objects, typically Windows events exported by evtx-dump (about
//! 1.5 KB each, hundreds of possible fields). Out: a [`Decoded`] whose batch holds the event
//! time and one `Utf8` column per requested dotted path (`Event.EventData.Image`), plus
//! optionally `_keywords`; bad records become [`DeadLetter`]s as with [`JsonDecoder`].
//!
//! Sigma rules read a few dozen fields, so building Arrow columns for every field would cost
//! far more than the rules. Instead the requested paths form a trie, built once, and each record
//! is walked once by `skim.rs`: a key that matches the trie is descended into, every other
//! value is skipped byte by byte while its syntax is checked, so a malformed record is always
//! caught. Whatever that walk does not accept (malformed, or rare forms it leaves alone) is
//! walked again by serde_json (with [`IgnoredAny`] for the skipped values), which accepts it or
//! names the error. A requested value's raw JSON text is written into a per-record scratch
//! string; only once the whole record has parsed and has an event time are its values
//! appended to the columns, so a bad record never leaves half a row behind. Scratch buffers
//! live in the decoder and are reused: there is no allocation per record or per field on the
//! hot path. A column is written only on the rows that have a value (the rows between become
//! nulls when the next value or the batch's end comes), so a record costs nothing for the
//! requested paths it does not have. Output buffers are handed downstream with each batch, so
//! they are allocated once per batch, sized from the previous batch.
//!
//! Value semantics, per requested path:
//!
//! - a string is given with its escapes resolved (an unpaired `\uD800`-style surrogate becomes
//!   U+FFFD); a number as its JSON text, exactly as written (`4624`, `1.50`, `1e3`); a boolean
//!   as `true` / `false`; `null`, or a path that is absent, as null;
//! - an object with a `#text` key (XML-derived JSON: `{"#attributes": {..}, "#text": 4624}`)
//!   gives its `#text` value, by the same rules;
//! - any other object or array gives its compact JSON text (insignificant whitespace removed,
//!   keys in document order, strings still escaped as in the input);
//! - when a key occurs twice in one object, the last occurrence wins (as in JavaScript and
//!   `serde_json::Value`);
//! - a path never indexes into an array, and a JSON key containing a dot cannot be addressed
//!   (path segments are split at every dot).
//!
//! The event time (column 0, named by its path) accepts an RFC 3339 / ISO 8601 string, with
//! or without fraction (digits past milliseconds are truncated) and zone (none means UTC), a
//! date alone, an integer string, or a JSON integer, both as epoch milliseconds. A record
//! without one is dead-lettered as [`FailureKind::MissingEventTime`].
//!
//! Input must be UTF-8 throughout, unrequested parts included (checked up front, which also
//! lets serde_json skip its own checks).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize as _;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

#[cfg(doc)]
use super::JsonDecoder;
use super::{DeadLetter, Decoded, FailureKind, skim};
use crate::source::RawBatch;

/// Name of the optional column holding every string and number of a record.
pub const KEYWORDS_COLUMN: &str = "_keywords";

/// A requested path that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path `{path}`: {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Decodes JSON records of one stream into the requested paths only. Built once per stream and
/// reused for every batch.
pub struct ProjectingDecoder {
    /// Output schema: time, the paths, then `_keywords` when enabled.
    schema: SchemaRef,
    /// The time path and the requested paths as a trie; node 0 is the root.
    nodes: Vec<Node>,
    /// Number of output columns from paths (the time column included).
    path_cols: usize,
    /// Whether the `_keywords` column is produced.
    keywords: bool,
    /// Most records a batch is expected to hold (sizes the builders).
    max_rows: usize,
    /// The current record's requested values, back to back; reused across records.
    scratch: String,
    /// Where each path column's value for the current record sits in `scratch`.
    slots: Vec<Slot>,
    /// The columns of `slots` the current record set, each once: only those are read and
    /// reset, so a record costs nothing for the requested paths it does not have.
    touched: Vec<usize>,
    /// Scratch for object keys with escapes (fast walk).
    key: String,
    /// Whether records are walked by [`skim`] first (serde_json only when it gives up);
    /// tests turn it off to compare the two walks.
    fast: bool,
    /// The current record's keywords; reused across records.
    keyword_buf: String,
    /// Bytes each string column took in the previous batch, to size the next one's buffers.
    /// Indexed by string column: the paths, then `_keywords`.
    bytes_hint: Vec<usize>,
}

/// One node of the path trie.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Child segments and their nodes.
    pub(super) children: Children,
    /// The output column when a requested path ends here.
    pub(super) column: Option<usize>,
}

/// A node's child segments, found by hash: most keys of an event lie on no requested path, and
/// this rejects them with one hash and (mostly) one probe, without comparing strings.
#[derive(Debug, Default)]
pub(super) struct Children {
    /// (segment, node index), in insertion order.
    entries: Vec<(Box<str>, usize)>,
    /// Bit `n` is set if a segment is `n` bytes long (63: or longer): a free first filter.
    lengths: u64,
    /// Open addressing over `entries`, at most half full, size a power of two: (tag, entry
    /// index + 1), where the tag is the hash's upper half with its low bit set, and (0, 0) is
    /// an empty slot.
    table: Vec<(u32, u32)>,
}

impl Children {
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The node of segment `key`.
    pub(super) fn get(&self, key: &str) -> Option<usize> {
        if self.lengths & length_bit(key) == 0 {
            return None;
        }
        let mask = self.table.len() - 1;
        let h = hash(key.as_bytes());
        let tag = (h >> 32) as u32 | 1;
        let mut at = h as usize & mask;
        loop {
            let (t, entry) = self.table[at];
            if entry == 0 {
                return None;
            }
            if t == tag {
                let (name, node) = &self.entries[entry as usize - 1];
                if name.as_ref() == key {
                    return Some(*node);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds segment `key` (not yet present) leading to `node`.
    fn insert(&mut self, key: &str, node: usize) {
        self.entries.push((key.into(), node));
        self.lengths |= length_bit(key);
        let size = (self.entries.len() * 2).next_power_of_two().max(8);
        self.table = vec![(0, 0); size];
        for (i, (name, _)) in self.entries.iter().enumerate() {
            let h = hash(name.as_bytes());
            let mut at = h as usize & (size - 1);
            while self.table[at].1 != 0 {
                at = (at + 1) & (size - 1);
            }
            self.table[at] = ((h >> 32) as u32 | 1, i as u32 + 1);
        }
    }
}

fn length_bit(key: &str) -> u64 {
    1 << key.len().min(63)
}

/// A fast hash of short keys (FxHash's mixing, 8 bytes at a time). Not DoS-resistant, which
/// does not matter here: the table holds only the configured segments, and a key that collides
/// costs one string comparison.
fn hash(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut h = key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        h = mix(h, u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    // Byte by byte: `copy_from_slice` into a zeroed word would call memcpy.
    let tail = (chunks.remainder().iter().enumerate())
        .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i));
    h = mix(h, tail);
    h ^ (h >> 29)
}

/// What a requested value turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Bool,
    Null,
    Json,
}

/// Where one column's value for the current record is in the scratch string.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Absent,
    Value {
        start: usize,
        end: usize,
        kind: Kind,
    },
}

impl ProjectingDecoder {
    /// A decoder producing the event time at `time_path`, then one column per path of `paths`
    /// (in order, duplicates and the time path dropped), for batches of about `max_rows`
    /// records (larger ones work, with more allocation).
    pub fn new(
        paths: Vec<String>,
        time_path: &str,
        max_rows: usize,
    ) -> Result<ProjectingDecoder, PathError> {
        let mut nodes = vec![Node::default()];
        let mut names: Vec<String> = Vec::with_capacity(paths.len() + 1);
        for path in std::iter::once(time_path.to_string()).chain(paths) {
            if names.contains(&path) {
                continue;
            }
            insert(&mut nodes, &path, names.len())?;
            names.push(path);
        }
        let path_cols = names.len();
        let mut decoder = ProjectingDecoder {
            schema: Arc::new(Schema::empty()),
            nodes,
            path_cols,
            keywords: false,
            max_rows: max_rows.max(1),
            scratch: String::new(),
            slots: vec![Slot::Absent; path_cols],
            touched: Vec::with_capacity(path_cols),
            key: String::new(),
            fast: true,
            keyword_buf: String::new(),
            // The path columns but time, and keywords.
            bytes_hint: vec![0; path_cols],
        };
        decoder.schema = decoder.build_schema(&names);
        Ok(decoder)
    }

    /// Adds (or removes) the `_keywords` column: every string and number of the record, in
    /// document order, requested or not, joined by `\n` (keys, booleans and nulls excluded).
    /// For Sigma keyword searches, which look for a value in any field.
    pub fn with_keywords(mut self, keywords: bool) -> ProjectingDecoder {
        self.keywords = keywords;
        let names: Vec<String> = self.schema.fields()[..self.path_cols]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        self.schema = self.build_schema(&names);
        self
    }

    fn build_schema(&self, names: &[String]) -> SchemaRef {
        let mut fields = vec![Field::new(
            &names[0],
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        )];
        fields.extend(
            names[1..]
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true)),
        );
        if self.keywords {
            fields.push(Field::new(KEYWORDS_COLUMN, DataType::Utf8, false));
        }
        Arc::new(Schema::new(fields))
    }

    /// Column index of the event time in decoded batches (always 0).
    pub fn time_col(&self) -> usize {
        0
    }

    /// The schema batches are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes every record of `raw`; never fails as a whole.
    pub fn decode(&mut self, raw: &RawBatch) -> Decoded {
        let rows = raw.len().max(self.max_rows);
        let mut time = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
        let string_cols = self.path_cols - 1 + usize::from(self.keywords);
        let mut strings: Vec<LazyStrings> = self.bytes_hint[..string_cols]
            .iter()
            .map(|&bytes| LazyStrings::with_capacity(rows, bytes + bytes / 8))
            .collect();
        let mut dead = Vec::new();
        let mut row = 0;
        for i in 0..raw.len() {
            let record = raw.record(i);
            let (ms, text) = match self.project(record) {
                Ok(good) => good,
                Err((kind, reason)) => {
                    dead.push(DeadLetter {
                        origin: raw.origins[i],
                        payload: record.to_vec(),
                        kind,
                        reason,
                    });
                    continue;
                }
            };
            time.append_value(ms);
            for &col in &self.touched {
                // Column 0 is the time; a JSON null is a null, like an absent value.
                if let (1.., Slot::Value { start, end, kind }) = (col, self.slots[col])
                    && kind != Kind::Null
                {
                    strings[col - 1].push(row, &self.scratch[start..end]);
                }
            }
            if self.keywords {
                self.keyword_buf.clear();
                keywords(text, &mut self.keyword_buf);
                strings[self.path_cols - 1].push(row, &self.keyword_buf);
            }
            row += 1;
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(strings.len() + 1);
        columns.push(Arc::new(time.finish()));
        for (column, hint) in strings.into_iter().zip(&mut self.bytes_hint) {
            let array = column.finish(row);
            if !array.is_empty() {
                // Scaled to a full batch, so a short batch does not shrink the next one's.
                *hint = array.value_data().len() * rows / array.len();
            }
            columns.push(Arc::new(array));
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .expect("columns are built to the schema");
        Decoded { batch, dead }
    }

    /// Walks one record, leaving its values in `scratch` / `slots` (the columns set listed in
    /// `touched`); returns its event time and its text.
    fn project<'r>(&mut self, record: &'r [u8]) -> Result<(i64, &'r str), (FailureKind, String)> {
        self.reset();
        if record.iter().all(u8::is_ascii_whitespace) {
            return Err((FailureKind::Empty, "empty record".into()));
        }
        let text = std::str::from_utf8(record).map_err(|e| {
            (
                FailureKind::Malformed,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let mut walk = Walk {
            nodes: &self.nodes,
            scratch: &mut self.scratch,
            slots: &mut self.slots,
            touched: &mut self.touched,
        };
        let skimmed = self.fast
            && skim::record(text, &self.nodes, &mut self.key, &mut |column, raw| {
                walk.leaf(column, raw)
            })
            .is_ok();
        if !skimmed {
            // Malformed, or a form the fast walk leaves to serde_json: serde_json decides,
            // and says what is wrong.
            walk.reset();
            let mut de = serde_json::Deserializer::from_str(text);
            Root(walk)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|e| json_failure(text, &e))?;
        }
        Ok((self.event_time()?, text))
    }

    /// Forgets the previous record's values.
    fn reset(&mut self) {
        Walk {
            nodes: &self.nodes,
            scratch: &mut self.scratch,
            slots: &mut self.slots,
            touched: &mut self.touched,
        }
        .reset();
    }

    /// Walks records with serde_json only (the reference for the fast walk).
    #[cfg(test)]
    fn serde_only(mut self) -> ProjectingDecoder {
        self.fast = false;
        self
    }

    /// The event time of the record just projected.
    fn event_time(&self) -> Result<i64, (FailureKind, String)> {
        let path = self.schema.field(0).name();
        let missing = |what: String| (FailureKind::MissingEventTime, what);
        match self.slots[0] {
            Slot::Absent
            | Slot::Value {
                kind: Kind::Null, ..
            } => Err(missing(format!(
                "event-time field `{path}` is missing or null"
            ))),
            Slot::Value { start, end, kind } => {
                let value = &self.scratch[start..end];
                time_of(kind, value).ok_or_else(|| {
                    let shown: String = value.chars().take(64).collect();
                    missing(format!(
                        "event-time field `{path}` is not a timestamp: `{shown}`"
                    ))
                })
            }
        }
    }
}

/// Adds `path` to the trie, ending at output column `column`.
fn insert(nodes: &mut Vec<Node>, path: &str, column: usize) -> Result<(), PathError> {
    let err = |reason| PathError {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(err("empty path"));
    }
    if path == KEYWORDS_COLUMN {
        return Err(err("the name is reserved for the keywords column"));
    }
    let mut node = 0;
    for segment in path.split('.') {
        if segment.is_empty() {
            return Err(err("empty segment (leading, trailing or doubled dot)"));
        }
        node = match nodes[node].children.get(segment) {
            Some(child) => child,
            None => {
                let child = nodes.len();
                nodes[node].children.insert(segment, child);
                nodes.push(Node::default());
                child
            }
        };
    }
    nodes[node].column = Some(column);
    Ok(())
}

/// The reason for a serde_json failure, with the byte offset of the problem in the record.
fn json_failure(text: &str, e: &serde_json::Error) -> (FailureKind, String) {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => &message,
    };
    if e.classify() == serde_json::error::Category::Data {
        // The only type the walk rejects is a record that is not an object.
        return (FailureKind::Schema, message.to_string());
    }
    let at = if e.is_eof() {
        text.len()
    } else {
        // serde_json counts lines from 1 and columns as bytes from the line's start, pointing
        // just past the byte it stopped at.
        let line_start: usize = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(str::len)
            .sum();
        (line_start + e.column()).saturating_sub(1).min(text.len())
    };
    (
        FailureKind::Malformed,
        format!("malformed JSON at byte {at}: {message}"),
    )
}

/// The walk's state, borrowed from the decoder for one record.
struct Walk<'t> {
    nodes: &'t [Node],
    scratch: &'t mut String,
    slots: &'t mut [Slot],
    touched: &'t mut Vec<usize>,
}

impl Walk<'_> {
    /// Records the value `raw` (valid JSON) for `column`, replacing an earlier one.
    fn leaf(&mut self, column: usize, raw: &str) {
        let start = self.scratch.len();
        let kind = write_leaf(raw, self.scratch);
        if let Slot::Absent = self.slots[column] {
            self.touched.push(column);
        }
        self.slots[column] = Slot::Value {
            start,
            end: self.scratch.len(),
            kind,
        };
    }
}

impl Walk<'_> {
    /// Forgets every value recorded.
    fn reset(&mut self) {
        for col in self.touched.drain(..) {
            self.slots[col] = Slot::Absent;
        }
        self.scratch.clear();
    }
}

/// One `Utf8` output column, written only on the rows that have a value. Most requested paths
/// are absent from most events (a rule set reads the fields of many event types): an absent
/// value costs nothing until the next value, or the batch's end, pads the offsets over it.
struct LazyStrings {
    offsets: Vec<i32>,
    values: Vec<u8>,
    /// Validity bits of the rows so far.
    valid: Vec<u64>,
    /// Rows with a value.
    count: usize,
}

impl LazyStrings {
    fn with_capacity(rows: usize, bytes: usize) -> LazyStrings {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        LazyStrings {
            offsets,
            values: Vec::with_capacity(bytes),
            valid: vec![0; rows.div_ceil(64)],
            count: 0,
        }
    }

    /// Sets row `row` (after every row set so far) to `value`; the rows between are null.
    fn push(&mut self, row: usize, value: &str) {
        let end = self.end();
        self.offsets.resize(row + 1, end);
        self.values.extend_from_slice(value.as_bytes());
        self.offsets.push(self.end());
        let word = row / 64;
        if word >= self.valid.len() {
            self.valid.resize(word + 1, 0);
        }
        self.valid[word] |= 1 << (row % 64);
        self.count += 1;
    }

    fn end(&self) -> i32 {
        i32::try_from(self.values.len()).expect("a batch's column holds less than 2 GiB")
    }

    /// The column of `rows` rows.
    fn finish(mut self, rows: usize) -> StringArray {
        let end = self.end();
        self.offsets.resize(rows + 1, end);
        self.valid.resize(rows.div_ceil(64), 0);
        let nulls = (self.count < rows)
            .then(|| NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(self.valid), 0, rows)));
        StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.values),
            nulls,
        )
    }
}

/// The whole record: must be an object.
struct Root<'t>(Walk<'t>);

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        walk_map(&mut self.0, 0, map)
    }
}

/// Descends into the members of an object at trie node `node`.
fn walk_map<'de, A: MapAccess<'de>>(
    walk: &mut Walk<'_>,
    node: usize,
    mut map: A,
) -> Result<(), A::Error> {
    let children = &walk.nodes[node].children;
    while let Some(child) = map.next_key_seed(Key(children))? {
        match child {
            Some(node) => map.next_value_seed(Member { walk, node })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// An object key, looked up among a node's children.
struct Key<'t>(&'t Children);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.get(key))
    }
}

/// The value of a key that matched trie node `node`.
struct Member<'w, 't> {
    walk: &'w mut Walk<'t>,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for Member<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let nodes = self.walk.nodes;
        let node = &nodes[self.node];
        let Some(column) = node.column else {
            return d.deserialize_any(self);
        };
        let raw = <&'de RawValue>::deserialize(d)?;
        self.walk.leaf(column, raw.get());
        if !node.children.is_empty() && raw.get().starts_with('{') {
            // Both a requested value and on the way to others: walk it again for those.
            let mut inner = serde_json::Deserializer::from_str(raw.get());
            inner
                .deserialize_map(self)
                .map_err(<D::Error as de::Error>::custom)?;
        }
        Ok(())
    }
}

/// Inside a matched value that is not itself requested: only an object leads further.
impl<'de> Visitor<'de> for Member<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_map(self.walk, self.node, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Writes the column value of `raw` (one valid JSON value) to `out`.
fn write_leaf(raw: &str, out: &mut String) -> Kind {
    match raw.as_bytes().first() {
        Some(b'"') => {
            unescape(&raw[1..raw.len() - 1], out);
            Kind::Str
        }
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => {
            out.push_str(raw);
            Kind::Bool
        }
        Some(b'{') => match hash_text(raw) {
            Some(text) => write_leaf(text, out),
            None => {
                compact_into(raw, out);
                Kind::Json
            }
        },
        Some(b'[') => {
            compact_into(raw, out);
            Kind::Json
        }
        _ => {
            out.push_str(raw);
            Kind::Num
        }
    }
}

/// The `#text` member of a valid JSON object, if it has one (the last, if several).
fn hash_text(object: &str) -> Option<&str> {
    serde_json::Deserializer::from_str(object)
        .deserialize_map(HashText)
        .ok()
        .flatten()
}

/// `hash_text`'s visitor: keeps the raw value of the last `#text` key.
struct HashText;

impl<'de> Visitor<'de> for HashText {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut text = None;
        while let Some(is_text) = map.next_key_seed(IsKey("#text"))? {
            if is_text {
                text = Some(map.next_value::<&'de RawValue>()?.get());
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(text)
    }
}

/// An object key compared with one name.
struct IsKey(&'static str);

impl<'de> DeserializeSeed<'de> for IsKey {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Appends the contents of a JSON string (without its quotes; valid JSON) with escapes
/// resolved. An unpaired surrogate becomes U+FFFD.
pub(super) fn unescape(s: &str, out: &mut String) {
    let b = s.as_bytes();
    // `run`: start of the text not yet copied; `from`: where to look for the next backslash.
    let (mut run, mut from) = (0, 0);
    while let Some(at) = find_backslash(b, from) {
        out.push_str(&s[run..at]);
        let (c, len) = match b.get(at + 1) {
            // `\"`, `\\`, `\/` stand for themselves: drop the backslash, copy the character
            // with the next run.
            Some(b'"' | b'\\' | b'/') => {
                (run, from) = (at + 1, at + 2);
                continue;
            }
            Some(b'n') => ('\n', 2),
            Some(b't') => ('\t', 2),
            Some(b'r') => ('\r', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'u') => match hex4(b, at + 2) {
                Some(hi @ 0xD800..=0xDBFF) => {
                    let lo = (b.get(at + 6) == Some(&b'\\') && b.get(at + 7) == Some(&b'u'))
                        .then(|| hex4(b, at + 8))
                        .flatten()
                        .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
                    match lo {
                        Some(lo) => {
                            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            (char::from_u32(c).unwrap_or('\u{FFFD}'), 12)
                        }
                        None => ('\u{FFFD}', 6),
                    }
                }
                Some(code) => (char::from_u32(code).unwrap_or('\u{FFFD}'), 6),
                None => ('\u{FFFD}', 2),
            },
            // Not valid JSON; the caller promised it would be.
            _ => ('\u{FFFD}', 2),
        };
        out.push(c);
        run = (at + len).min(b.len());
        from = run;
    }
    out.push_str(&s[run..]);
}

/// The first `\\` in `b` at or after `from`.
fn find_backslash(b: &[u8], from: usize) -> Option<usize> {
    find_byte(b, from, b'\\', b'\\')
}

/// The first `x` or `y` in `b` at or after `from`, eight bytes at a time: Windows paths are
/// full of backslashes, and strings are too short for a general search to pay for its setup.
fn find_byte(b: &[u8], from: usize, x: u8, y: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte of `word` that is zero; the lowest flagged one is always exact.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let found =
            zero_bytes(word ^ (ONES * u64::from(x))) | zero_bytes(word ^ (ONES * u64::from(y)));
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == x || c == y)
        .map(|at| i + at)
}

/// The four hex digits at `at`, if they are.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Calls `run` with each byte range of `json` that is not insignificant whitespace (valid JSON
/// assumed: whitespace inside strings is kept).
pub(crate) fn significant_runs(json: &[u8], mut run: impl FnMut(std::ops::Range<usize>)) {
    let mut start = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &c) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            if start < i {
                run(start..i);
            }
            start = i + 1;
        }
    }
    if start < json.len() {
        run(start..json.len());
    }
}

/// Appends `json` (valid JSON) without insignificant whitespace.
fn compact_into(json: &str, out: &mut String) {
    // Runs are cut at ASCII bytes, so they are char boundaries.
    significant_runs(json.as_bytes(), |r| out.push_str(&json[r]));
}

/// Appends every string and number value of `json` (valid JSON, object keys excluded), in
/// document order, separated by `\n`.
fn keywords(json: &str, out: &mut String) {
    let b = json.as_bytes();
    let mut i = 0;
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
    };
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                let mut from = start;
                let end = loop {
                    match find_byte(b, from, b'"', b'\\') {
                        Some(at) if b[at] == b'"' => break at,
                        Some(at) => (escaped, from) = (true, at + 2),
                        // Unterminated: not valid JSON, which the caller has checked.
                        None => break b.len(),
                    }
                };
                i = end + 1;
                while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
                    i += 1;
                }
                if b.get(i) == Some(&b':') {
                    continue; // a key
                }
                separate(out);
                if escaped {
                    unescape(&json[start..end], out);
                } else {
                    out.push_str(&json[start..end]);
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                separate(out);
                out.push_str(&json[start..i]);
            }
            _ => i += 1,
        }
    }
}

/// The event time in `raw` (one valid JSON value) as the decoder reads it, using `scratch`.
pub(crate) fn event_time_of(raw: &str, scratch: &mut String) -> Option<i64> {
    scratch.clear();
    let kind = write_leaf(raw, scratch);
    time_of(kind, scratch)
}

/// The event time in a value of `kind` rendered as `text`.
fn time_of(kind: Kind, text: &str) -> Option<i64> {
    match kind {
        Kind::Str => parse_time_ms(text),
        Kind::Num => text.parse().ok(),
        _ => None,
    }
}

/// Parses an event time: an integer string (epoch milliseconds), or an RFC 3339 / ISO 8601
/// date-time with or without fraction and zone (none means UTC), or a date alone.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Some(ms) = rfc3339_ms(s.as_bytes()) {
        return Some(ms);
    }
    datafusion::arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The common shapes, fast: `YYYY-MM-DD[T ]HH:MM:SS[.fff…][Z|±HH:MM|±HHMM|±HH]`.
fn rfc3339_ms(b: &[u8]) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds from the first three digits; further digits are truncated.
        for k in 0..3 {
            let d = if start + k < i {
                b[start + k] - b'0'
            } else {
                0
            };
            millis = millis * 10 + i64::from(d);
        }
    }
    let offset_minutes = match &b[i..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _] => (num(i + 1..i + 3)?, 0),
                [_, _, b':', _, _] => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                [_, _, _, _] => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Origin;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// A Sysmon process-creation event as evtx-dump writes it (1.7 KB compact), from the Sigma
    /// regression data.
    const EVTX: &str = r##"{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},"EventID":1,"Version":5,"Level":4,"Task":1,"Opcode":0,"Keywords":"0x8000000000000000","TimeCreated":{"#attributes":{"SystemTime":"2025-12-25T14:30:27.369114Z"}},"EventRecordID":16094,"Correlation":null,"Execution":{"#attributes":{"ProcessID":3208,"ThreadID":1724}},"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"swachchhanda","Security":{"#attributes":{"UserID":"S-1-5-18"}}},"EventData":{"RuleName":"-","UtcTime":"2025-12-25 14:30:27.352","ProcessGuid":"0197231E-4A83-694D-9E0E-000000000800","ProcessId":14144,"Image":"C:\\Windows\\System32\\reg.exe","FileVersion":"10.0.26100.1 (WinBuild.160101.0800)","Description":"Registry Console Tool","Product":"Microsoft® Windows® Operating System","Company":"Microsoft Corporation","OriginalFileName":"reg.exe","CommandLine":"\"C:\\WINDOWS\\system32\\reg.exe\" add \"HKCU\\Software\\Microsoft\\Windows Script\\Settings\" /v AmsiEnable /t REG_DWORD /d 0 /f","CurrentDirectory":"C:\\WINDOWS\\system32\\","User":"swachchhanda\\xodih","LogonGuid":"0197231E-AB9F-67AA-4C14-030000000000","LogonId":"0x3144c","TerminalSessionId":1,"IntegrityLevel":"High","Hashes":"MD5=573EB13AC2BA31E9C2E17FB6DAD14154,SHA256=E295E776FD4F7F73DFAAA5698A19EA7A2F4A2F0C5E1681FAC94E45D00296C926,IMPHASH=A26BCB048DF34CBB422F2656F38634D0","ParentProcessGuid":"0197231E-EC48-694C-AA0C-000000000800","ParentProcessId":12456,"ParentImage":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe","ParentCommandLine":"\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\"","ParentUser":"swachchhanda\\xodih"}}}"##;
    const EVTX_TIME: &str = "Event.System.TimeCreated.#attributes.SystemTime";

    fn raw(records: &[&str]) -> RawBatch {
        let mut raw = RawBatch::new(0);
        for (i, r) in records.iter().enumerate() {
            raw.push(r.as_bytes(), origin(i));
        }
        raw
    }

    fn origin(i: usize) -> Origin {
        Origin {
            source: 0,
            partition: 0,
            offset: i as i64,
            timestamp_ms: 0,
        }
    }

    fn decoder(paths: &[&str], time: &str) -> ProjectingDecoder {
        ProjectingDecoder::new(paths.iter().map(|p| p.to_string()).collect(), time, 16).unwrap()
    }

    /// The values of column `name`.
    fn column(out: &Decoded, name: &str) -> Vec<Option<String>> {
        let col = out
            .batch
            .column_by_name(name)
            .expect(name)
            .as_string::<i32>();
        col.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn times(out: &Decoded) -> Vec<i64> {
        out.batch
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    /// Decodes one record holding `{"t": <time>, <members>}` and returns column `path`'s value.
    fn check(members: &str, path: &str, expected: Option<&str>) {
        let record = format!("{{\"t\":\"2026-01-05T02:30:00Z\",{members}}}");
        let mut d = decoder(&[path], "t");
        let out = d.decode(&raw(&[&record]));
        assert!(out.dead.is_empty(), "{record}: {:?}", out.dead);
        assert_eq!(
            column(&out, path),
            vec![expected.map(str::to_string)],
            "{record}"
        );
    }

    #[test]
    fn evtx_event_projects_nested_paths_and_attributes() {
        let paths = [
            "Event.System.Provider.#attributes.Name",
            "Event.System.EventID",
            "Event.System.Correlation",
            "Event.EventData.Image",
            "Event.EventData.CommandLine",
            "Event.EventData.ProcessId",
            "Event.EventData.TargetObject",
            "Event.System.Execution",
        ];
        let mut d = decoder(&paths, EVTX_TIME);
        let out = d.decode(&raw(&[EVTX]));
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        // 2025-12-25T14:30:27.369114Z, truncated to the millisecond.
        assert_eq!(times(&out), vec![1_766_673_027_369]);
        let got: Vec<Option<String>> = paths.iter().map(|p| column(&out, p)[0].clone()).collect();
        let expected = [
            Some("Microsoft-Windows-Sysmon"),
            Some("1"),
            None,
            Some(r"C:\Windows\System32\reg.exe"),
            Some(
                r#""C:\WINDOWS\system32\reg.exe" add "HKCU\Software\Microsoft\Windows Script\Settings" /v AmsiEnable /t REG_DWORD /d 0 /f"#,
            ),
            Some("14144"),
            None,
            Some(r##"{"#attributes":{"ProcessID":3208,"ThreadID":1724}}"##),
        ];
        assert_eq!(got, expected.map(|v| v.map(str::to_string)));
    }

    #[test]
    fn schema_is_time_then_paths_in_order_without_duplicates() {
        let d = decoder(&["b.c", "a", "b.c", "t"], "t").with_keywords(true);
        let fields: Vec<(String, DataType, bool)> = d
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        assert_eq!(
            fields,
            vec![
                ("t".into(), time, false),
                ("b.c".into(), DataType::Utf8, true),
                ("a".into(), DataType::Utf8, true),
                (KEYWORDS_COLUMN.into(), DataType::Utf8, false),
            ]
        );
        assert_eq!(d.time_col(), 0);
        let out = decoder(&["b.c", "a"], "t").decode(&raw(&[]));
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.batch.num_columns(), 3);
    }

    #[test]
    fn invalid_paths_are_refused() {
        for bad in ["", "a..b", ".a", "a.", KEYWORDS_COLUMN] {
            assert!(
                ProjectingDecoder::new(vec![bad.into()], "t", 1).is_err(),
                "{bad:?}"
            );
        }
        assert!(ProjectingDecoder::new(vec![], "", 1).is_err());
    }

    #[test]
    fn scalars_become_their_text() {
        check(r#""a":"x""#, "a", Some("x"));
        check(r#""a":4624"#, "a", Some("4624"));
        // Numbers keep their JSON text exactly.
        check(r#""a":1.50"#, "a", Some("1.50"));
        check(r#""a":-3e+2"#, "a", Some("-3e+2"));
        check(
            r#""a":18446744073709551617"#,
            "a",
            Some("18446744073709551617"),
        );
        check(r#""a":true"#, "a", Some("true"));
        check(r#""a":false"#, "a", Some("false"));
        check(r#""a":null"#, "a", None);
        check(r#""b":1"#, "a", None);
        check(r#""a":"""#, "a", Some(""));
    }

    #[test]
    fn escapes_are_resolved() {
        check(
            r#""a":"C:\\Windows\\x.exe""#,
            "a",
            Some(r"C:\Windows\x.exe"),
        );
        check(
            r#""a":"q\"s\/\b\f\n\r\t!""#,
            "a",
            Some("q\"s/\u{8}\u{c}\n\r\t!"),
        );
        check(r#""a":"caf\u00e9 \u00E9""#, "a", Some("café é"));
        check(r#""a":"\ud83d\ude00 😀""#, "a", Some("😀 😀"));
        // An unpaired surrogate cannot be a char.
        check(r#""a":"x\ud800y\udc00""#, "a", Some("x\u{FFFD}y\u{FFFD}"));
        // Escaped keys match too.
        check(r#""\u0061":"k""#, "a", Some("k"));
    }

    #[test]
    fn objects_give_their_text_member_or_compact_json() {
        let event_id = r##""EventID": {"#attributes": {"Qualifiers": 0}, "#text": 4624}"##;
        check(event_id, "EventID", Some("4624"));
        check(r##""a":{"#text":"x\\y"}"##, "a", Some(r"x\y"));
        check(r##""a":{"#text":null}"##, "a", None);
        check(r##""a":{"#text":{"#text":7}}"##, "a", Some("7"));
        check(
            r#""a": { "b" : [1, "x y" , {"c":null}] , "d":true }"#,
            "a",
            Some(r#"{"b":[1,"x y",{"c":null}],"d":true}"#),
        );
        check(r#""a":[ "\"]", 2 ]"#, "a", Some(r#"["\"]",2]"#));
        // A path through an object that is also requested whole.
        let record = format!("{{\"t\":0,{event_id}}}");
        let mut d = decoder(&["EventID", "EventID.#attributes.Qualifiers"], "t");
        let out = d.decode(&raw(&[&record]));
        assert_eq!(column(&out, "EventID"), vec![Some("4624".into())]);
        assert_eq!(
            column(&out, "EventID.#attributes.Qualifiers"),
            vec![Some("0".into())]
        );
    }

    #[test]
    fn paths_stop_at_non_objects_and_the_last_duplicate_wins() {
        check(r#""a":[{"b":1}]"#, "a.b", None);
        check(r#""a":"b""#, "a.b", None);
        check(r#""a":{"b":1},"a":{"c":2}"#, "a.b", Some("1"));
        check(r#""a":1,"a":2"#, "a", Some("2"));
        check(r#""a":1,"a":null"#, "a", None);
    }

    #[test]
    fn bad_records_are_isolated_with_their_reason() {
        let good = |n: u32| format!("{{\"t\":{n},\"a\":\"{n}\"}}");
        let (g0, g1, g2) = (good(0), good(1), good(2));
        let records = [
            g0.as_str(),
            r#"{"t":1,"a":"x"#,
            r#"{"t":1,"a" 5}"#,
            "{\"t\":1}{\"t\":2}",
            "  ",
            "[1]",
            g1.as_str(),
            r#"{"a":"no time"}"#,
            r#"{"t":"yesterday"}"#,
            r#"{"t":null}"#,
            r#"{"t":{"x":1}}"#,
            r#"{"t":1, "b":[1,}"#,
            r#"{"t":1,"a":"raw	tab"}"#,
            g2.as_str(),
        ];
        let mut d = decoder(&["a"], "t");
        // Twice: nothing of a bad record may linger in the reused buffers.
        for _ in 0..2 {
            let out = d.decode(&raw(&records));
            assert_eq!(
                column(&out, "a"),
                vec![Some("0".into()), Some("1".into()), Some("2".into())]
            );
            assert_eq!(times(&out), vec![0, 1, 2]);
            let dead: Vec<(i64, FailureKind)> =
                out.dead.iter().map(|d| (d.origin.offset, d.kind)).collect();
            use FailureKind::*;
            assert_eq!(
                dead,
                vec![
                    (1, Malformed),
                    (2, Malformed),
                    (3, Malformed),
                    (4, Empty),
                    (5, Schema),
                    (7, MissingEventTime),
                    (8, MissingEventTime),
                    (9, MissingEventTime),
                    (10, MissingEventTime),
                    (11, Malformed),
                    (12, Malformed),
                ]
            );
            let reasons: Vec<&str> = out.dead.iter().map(|d| d.reason.as_str()).collect();
            assert_eq!(
                reasons[..3],
                [
                    "malformed JSON at byte 13: EOF while parsing a string",
                    "malformed JSON at byte 11: expected `:`",
                    "malformed JSON at byte 7: trailing characters",
                ]
            );
            assert_eq!(reasons[4], "invalid type: sequence, expected a JSON object");
            assert_eq!(reasons[5], "event-time field `t` is missing or null");
            assert_eq!(
                reasons[6],
                "event-time field `t` is not a timestamp: `yesterday`"
            );
            assert_eq!(out.dead[1].payload, records[2].as_bytes());
        }
    }

    #[test]
    fn invalid_utf8_is_malformed_even_where_not_requested() {
        let mut d = decoder(&["a"], "t");
        let mut r = RawBatch::new(0);
        r.push(b"{\"t\":1,\"b\":\"\xff\"}", origin(0));
        r.push(b"{\"t\":2}", origin(1));
        let out = d.decode(&r);
        assert_eq!(times(&out), vec![2]);
        assert_eq!(out.dead[0].reason, "invalid UTF-8 at byte 12");
    }

    #[test]
    fn event_time_variants() {
        let cases: &[(&str, Option<i64>)] = &[
            (r#""2025-11-27T07:40:10.165324Z""#, Some(1_764_229_210_165)),
            (r#""2025-11-27T07:40:10.165Z""#, Some(1_764_229_210_165)),
            (r#""2025-11-27T07:40:10.1Z""#, Some(1_764_229_210_100)),
            (r#""2025-11-27T07:40:10Z""#, Some(1_764_229_210_000)),
            (r#""2025-11-27t07:40:10z""#, Some(1_764_229_210_000)),
            (r#""2025-11-27T07:40:10""#, Some(1_764_229_210_000)),
            (r#""2025-11-27 07:40:10.132""#, Some(1_764_229_210_132)),
            (
                r#""2025-11-27T09:40:10.165+02:00""#,
                Some(1_764_229_210_165),
            ),
            (r#""2025-11-27T09:40:10+0200""#, Some(1_764_229_210_000)),
            (r#""2025-11-27T05:10:10-02:30""#, Some(1_764_229_210_000)),
            (r#""2025-11-27T09:40:10+02""#, Some(1_764_229_210_000)),
            (r#""2025-11-27""#, Some(1_764_201_600_000)),
            (r#""1969-12-31T23:59:59.999Z""#, Some(-1)),
            (r#""2024-02-29T00:00:00Z""#, Some(1_709_164_800_000)),
            (r#""2025\u002d11-27T07:40:10Z""#, Some(1_764_229_210_000)),
            ("1764229210165", Some(1_764_229_210_165)),
            (r#""1764229210165""#, Some(1_764_229_210_165)),
            (
                r##"{"#text":"2025-11-27T07:40:10Z"}"##,
                Some(1_764_229_210_000),
            ),
            ("1.5", None),
            (r#""2025-02-30T00:00:00Z""#, None),
            (r#""2025-11-27T24:00:00Z""#, None),
            (r#""2025-11-27T07:40:10.Z""#, None),
            ("true", None),
            ("[]", None),
        ];
        let records: Vec<String> = cases
            .iter()
            .map(|(t, _)| format!("{{\"t\":{t}}}"))
            .collect();
        let records: Vec<&str> = records.iter().map(String::as_str).collect();
        let out = decoder(&[], "t").decode(&raw(&records));
        let dead: Vec<i64> = out.dead.iter().map(|d| d.origin.offset).collect();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (i, (_, ms)) in cases.iter().enumerate() {
            match ms {
                Some(ms) => good.push(*ms),
                None => bad.push(i as i64),
            }
        }
        assert_eq!(times(&out), good);
        assert_eq!(dead, bad);
    }

    #[test]
    fn fast_time_parser_agrees_with_chrono() {
        for s in [
            "2025-11-27T07:40:10.165324Z",
            "1999-12-31T23:59:59.999-11:45",
            "2000-02-29 12:00:00+01:00",
            "1900-03-01T00:00:00Z",
            "2400-02-29T00:00:00.5Z",
            "0001-01-01T00:00:00Z",
        ] {
            let chrono = chrono::DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1))
                .unwrap()
                .timestamp_millis();
            assert_eq!(rfc3339_ms(s.as_bytes()), Some(chrono), "{s}");
        }
    }

    #[test]
    fn keywords_hold_every_string_and_number() {
        let record = r##"{"t":5, "Event": {"a": "x\ty", "n": -1.5e3, "b": true, "z": null,
            "list": ["p", {"#text": "q"}, 7, ""], "k\"ey": "v\\w"}}"##;
        let mut d = decoder(&["Event.a"], "t").with_keywords(true);
        let out = d.decode(&raw(&[record, r#"{"t":6}"#]));
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        assert_eq!(
            column(&out, KEYWORDS_COLUMN),
            vec![
                Some("5\nx\ty\n-1.5e3\np\nq\n7\n\nv\\w".into()),
                Some("6".into())
            ]
        );
        assert_eq!(column(&out, "Event.a"), vec![Some("x\ty".into()), None]);
        let plain = decoder(&["Event.a"], "t").decode(&raw(&[record]));
        assert!(plain.batch.column_by_name(KEYWORDS_COLUMN).is_none());
    }

    #[test]
    fn pretty_printed_records_decode_too() {
        let pretty = serde_json::to_string_pretty(&json!({"t": 3, "a": {"b": "x"}})).unwrap();
        let out = decoder(&["a.b"], "t").decode(&raw(&[&pretty]));
        assert_eq!(column(&out, "a.b"), vec![Some("x".into())]);
    }

    /// What a path of `doc` must decode to, read through `serde_json::Value`.
    fn expected(doc: &Value, path: &str) -> Option<String> {
        let mut v = doc;
        for segment in path.split('.') {
            v = v.as_object()?.get(segment)?;
        }
        render(v)
    }

    fn render(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Object(m) if m.contains_key("#text") => render(&m["#text"]),
            other => Some(other.to_string()),
        }
    }

    /// What the keywords of `doc` must be, read through `serde_json::Value`.
    fn expected_keywords(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| expected_keywords(v, out)),
            Value::Object(m) => m.values().for_each(|v| expected_keywords(v, out)),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let key = prop_oneof![Just("a"), Just("b"), Just("#text"), Just("c d"), Just("\\")];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..4).prop_map(|members| {
                    Value::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn projection_matches_serde_json_value(
            members in prop::collection::vec(
                (prop_oneof![Just("a"), Just("b"), Just("c d")], arb_value()), 0..4),
            pretty in any::<bool>(),
        ) {
            let mut doc = serde_json::Map::new();
            doc.insert("t".into(), json!("2026-01-05T02:30:00Z"));
            for (k, v) in members {
                doc.insert(k.into(), v);
            }
            let doc = Value::Object(doc);
            let text = if pretty {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                doc.to_string()
            };
            let paths = ["a", "b", "a.b", "a.#text", "b.a.c d", "c d.\\", "a.a.a"];
            let mut d = decoder(&paths, "t").with_keywords(true);
            let out = d.decode(&raw(&[&text]));
            prop_assert!(out.dead.is_empty(), "{:?}", out.dead);
            for path in paths {
                prop_assert_eq!(column(&out, path), vec![expected(&doc, path)], "{}", path);
            }
            let mut keywords = Vec::new();
            expected_keywords(&doc, &mut keywords);
            prop_assert_eq!(column(&out, KEYWORDS_COLUMN), vec![Some(keywords.join("\n"))]);
        }
    }

    /// A JSON snippet to splice into a valid record: pieces of valid and invalid syntax.
    fn snippet() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            " ",
            "\t",
            "\u{1}",
            "0",
            "01",
            "-",
            "1e",
            "1.",
            ".5",
            "-0.5e+3",
            "tru",
            "true",
            "null",
            "nul",
            "\\u",
            "\\ud800",
            "\\udc00",
            "\\ud800\\udc00",
            "\\u00e9",
            "\\u+abc",
            "\\x",
            "\"a\":",
            "\u{e9}",
        ])
    }

    proptest! {
        #![proptest_config(crate::proptest_config(512))]

        /// The fast walk decides exactly as serde_json's: same rows, same values, same dead
        /// letters with the same reasons, on valid records and on records broken by a splice.
        #[test]
        fn fast_walk_agrees_with_serde_json(
            members in prop::collection::vec(
                (prop_oneof![Just("a"), Just("b"), Just("c d"), Just("\\")], arb_value()), 0..4),
            splices in prop::collection::vec((any::<prop::sample::Index>(), snippet(), 0..3u8), 0..3),
            pretty in any::<bool>(),
        ) {
            let mut doc = serde_json::Map::new();
            doc.insert("t".into(), json!("2026-01-05T02:30:00Z"));
            for (k, v) in members {
                doc.insert(k.into(), v);
            }
            let doc = Value::Object(doc);
            let mut text = if pretty {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                doc.to_string()
            };
            for (at, piece, how) in splices {
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match how {
                    0 => text.insert_str(at, piece),
                    1 => {
                        let mut end = (at + piece.len()).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, piece);
                    }
                    _ => {
                        if at < text.len() {
                            text.remove(at);
                        }
                    }
                }
            }
            let paths = ["a", "b", "a.b", "a.#text", "b.a.c d", "c d.\\", "\\", "a.a.a"];
            let fast = decoder(&paths, "t").decode(&raw(&[&text]));
            let slow = decoder(&paths, "t").serde_only().decode(&raw(&[&text]));
            let dead = |d: &Decoded| -> Vec<(FailureKind, String)> {
                d.dead.iter().map(|d| (d.kind, d.reason.clone())).collect()
            };
            prop_assert_eq!(dead(&fast), dead(&slow), "{}", text);
            for path in paths {
                prop_assert_eq!(column(&fast, path), column(&slow, path), "{} in {}", path, text);
            }
        }
    }

    /// Decode throughput on the evtx event with 30 requested paths (half of them absent, as
    /// for a rule set written for many event types). Only meaningful in an optimised build.
    #[test]
    #[ignore = "timing harness: cargo test --lib throughput -- --ignored --nocapture"]
    fn throughput() {
        let mut paths: Vec<String> = [
            "Provider.#attributes.Name",
            "EventID",
            "Channel",
            "Computer",
            "Level",
            "Task",
            "Security.#attributes.UserID",
        ]
        .iter()
        .map(|p| format!("Event.System.{p}"))
        .collect();
        paths.extend(
            [
                "Image",
                "CommandLine",
                "ParentImage",
                "ParentCommandLine",
                "OriginalFileName",
                "User",
                "IntegrityLevel",
                "Hashes",
                "CurrentDirectory",
                "Description",
                "Product",
                "Company",
                "TargetFilename",
                "TargetObject",
                "Details",
                "EventType",
                "ImageLoaded",
                "Signed",
                "DestinationIp",
                "DestinationPort",
                "QueryName",
                "ServiceName",
                "TargetImage",
            ]
            .iter()
            .map(|p| format!("Event.EventData.{p}")),
        );
        assert_eq!(paths.len(), 30);
        let rows = 8192;
        let mut batch = RawBatch::new(0);
        for i in 0..rows {
            batch.push(EVTX.as_bytes(), origin(i));
        }
        let batches: usize = std::env::var("PALISADE_PROJECT_BATCHES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(13);
        for keywords in [false, true] {
            let mut d = ProjectingDecoder::new(paths.clone(), EVTX_TIME, rows)
                .unwrap()
                .with_keywords(keywords);
            d.decode(&batch); // warm-up: sizes the builders
            let start = std::time::Instant::now();
            for _ in 0..batches {
                let out = d.decode(&batch);
                assert_eq!(out.batch.num_rows(), rows);
            }
            let secs = start.elapsed().as_secs_f64();
            let events = (rows * batches) as f64;
            eprintln!(
                "keywords={keywords}: {events} events of {} B in {secs:.2} s: {:.0} events/s, {:.1} MB/s",
                EVTX.len(),
                events / secs,
                events * EVTX.len() as f64 / secs / 1e6
            );
        }
    }
}
