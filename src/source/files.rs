//! Replay: JSONL, JSON and CSV files read as one stream in event-time order.
//!
//! Each file is treated like a Kafka partition: read in order, and merged with the other files
//! by event time (ties broken by file order, so the merge is deterministic). A file is one of:
//!
//! - **JSONL envelopes**, as written by `palisade simulate --output`: one Kafka record per
//!   line, `{"topic": "...", "key": "...", "timestamp": <ms>, "value": {...}}`; the topic picks
//!   the stream, `timestamp` orders the merge.
//! - **plain JSONL** (any other extension but `.json` and `.csv`): one event per line; the
//!   stream is `--stream`, or the stream whose name or topic is the file's name (`auth.jsonl`,
//!   `city.auth.jsonl`).
//! - **JSON documents** (`.json`), as evtx-dump writes them: one or several documents per file,
//!   pretty-printed or one per line, or a top-level array whose elements are the events. Each
//!   document is one record, compacted onto one line; stream chosen as for plain JSONL.
//! - **CSV** (`.csv`): a header row naming the fields; each row becomes a JSON object of its
//!   non-empty cells (types come from the stream's schema), stream chosen as for plain JSONL.
//!
//! The merge reads each record's event time at the stream's `event_time`, which may be a dotted
//! path into nested objects (`Event.System.TimeCreated.#attributes.SystemTime`); a record
//! without one goes first.
//!
//! Blank lines are skipped. A line or document that cannot be read as its format says is passed
//! on as is, so the decoder dead-letters it with its line number (a document's first line), like
//! any other bad record. A document with unbalanced brackets would swallow the ones after it: it
//! ends instead where a later line opens a document at the same indentation (the next line of a
//! JSONL file, the next top-level `{` of a pretty-printed one), and only when no such line
//! follows does it run to the end of the file, as one dead letter. Nothing is dropped.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Batcher, Origin, RawBatch};
use crate::config::Config;
use crate::decode::project::{event_time_of, parse_time_ms, significant_runs};

/// A replay input that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct InputError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    topic: Option<&'a str>,
    timestamp: Option<i64>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

enum Kind {
    /// Envelope lines: the stream comes from each line's topic.
    Envelope,
    /// One event per line, all of one stream.
    Plain { stream: usize, time_field: String },
    /// JSON documents of one stream, however laid out.
    Documents {
        stream: usize,
        time_field: String,
        docs: Box<Documents>,
    },
    /// CSV rows of one stream.
    Csv {
        stream: usize,
        time_field: String,
        headers: Vec<String>,
        reader: csv::Reader<File>,
    },
}

/// One input file and the record it holds ready for the merge.
struct Input {
    source: u32,
    kind: Kind,
    lines: Option<BufReader<File>>,
    line: i64,
    /// Raw line buffer, reused.
    buf: String,
    /// Scratch for reading event times, reused.
    scratch: String,
    /// The ready record: bytes, stream and merge key. Buffer reused.
    ready: Vec<u8>,
    ready_stream: usize,
    ready_key: i64,
    done: bool,
}

/// Opens every input, failing early with the file named if one cannot be used.
pub struct FileSource {
    inputs: Vec<Input>,
    config: Arc<Config>,
    /// The names of the inputs, by source index (for dead letters).
    pub sources: Arc<Vec<String>>,
}

impl FileSource {
    /// Opens `paths`. `stream` forces the stream of plain and CSV files.
    pub fn open(
        config: Arc<Config>,
        paths: &[PathBuf],
        stream: Option<&str>,
    ) -> Result<FileSource, InputError> {
        let forced = match stream {
            Some(name) => Some(config.stream_index(name).ok_or_else(|| InputError {
                path: PathBuf::from(name),
                message: format!(
                        "--stream `{name}` is not a configured stream (configured: {})",
                        config
                            .streams
                            .iter()
                            .map(|s| s.name.get_ref().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
            })?),
            None => None,
        };
        let mut inputs = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let err = |message: String| InputError {
                path: path.clone(),
                message,
            };
            let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
            let stream_of_file = || {
                forced.or_else(|| stream_by_name(&config, path)).ok_or_else(|| {
                    err("cannot tell which stream this file belongs to: name it after a stream or topic \
                         (e.g. auth.jsonl) or pass --stream NAME"
                        .into())
                })
            };
            let is_ext = |ext: &str| {
                path.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case(ext))
            };
            let is_csv = is_ext("csv");
            // `first_line`: blank lines skipped before the first record.
            let (kind, lines, first_line) = if is_csv {
                let stream = stream_of_file()?;
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let headers = reader
                    .headers()
                    .map_err(|e| err(format!("cannot read the CSV header: {e}")))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                let time_field = config.streams[stream].event_time.get_ref().clone();
                (
                    Kind::Csv {
                        stream,
                        time_field,
                        headers,
                        reader,
                    },
                    None,
                    0,
                )
            } else {
                let mut lines = BufReader::new(file);
                let (envelope, skipped) = first_line_is_envelope(&mut lines)
                    .map_err(|e| err(format!("cannot read: {e}")))?;
                if envelope {
                    (Kind::Envelope, Some(lines), skipped)
                } else {
                    let stream = stream_of_file()?;
                    let time_field = config.streams[stream].event_time.get_ref().clone();
                    if is_ext("json") {
                        let docs = Box::new(Documents::new(lines, skipped + 1));
                        (
                            Kind::Documents {
                                stream,
                                time_field,
                                docs,
                            },
                            None,
                            skipped,
                        )
                    } else {
                        (Kind::Plain { stream, time_field }, Some(lines), skipped)
                    }
                }
            };
            inputs.push(Input {
                source: i as u32,
                kind,
                lines,
                line: first_line,
                buf: String::new(),
                scratch: String::new(),
                ready: Vec::new(),
                ready_stream: 0,
                ready_key: 0,
                done: false,
            });
        }
        let sources = Arc::new(paths.iter().map(|p| p.display().to_string()).collect());
        Ok(FileSource {
            inputs,
            config,
            sources,
        })
    }

    /// Reads every input to the end, merged by event time, sending full batches to `tx`.
    /// Blocking: run it on a blocking thread.
    pub fn run(mut self, tx: mpsc::Sender<RawBatch>) -> Result<(), InputError> {
        let merge = self.inputs.len() > 1;
        let linger = std::time::Duration::from_secs(3600); // only row counts cut batches
        let mut batcher = Batcher::new(
            self.config.streams.len(),
            *self.config.pipeline.batch_rows.get_ref(),
            linger,
        );
        for input in &mut self.inputs {
            input.advance(&self.config, merge)?;
        }
        loop {
            // The input with the smallest key; ties go to the earlier file.
            let next = self
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, i)| !i.done)
                .min_by_key(|(n, i)| (i.ready_key, *n));
            let Some((n, _)) = next else { break };
            let input = &mut self.inputs[n];
            let origin = Origin {
                source: input.source,
                partition: 0,
                offset: input.line,
                timestamp_ms: 0,
            };
            if let Some(full) = batcher.push(input.ready_stream, &input.ready, origin)
                && tx.blocking_send(full).is_err()
            {
                return Ok(());
            }
            input.advance(&self.config, merge)?;
        }
        for batch in batcher.drain() {
            if tx.blocking_send(batch).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Input {
    /// Makes the next record ready, or marks the input done.
    fn advance(&mut self, config: &Config, merge: bool) -> Result<(), InputError> {
        loop {
            self.ready.clear();
            match &mut self.kind {
                Kind::Csv {
                    stream,
                    time_field,
                    headers,
                    reader,
                } => {
                    let mut record = csv::StringRecord::new();
                    let more = reader.read_record(&mut record).map_err(|e| InputError {
                        path: PathBuf::from(format!("source #{}", self.source)),
                        message: format!("CSV read failed: {e}"),
                    })?;
                    if !more {
                        self.done = true;
                        return Ok(());
                    }
                    self.line = record.position().map_or(self.line + 1, |p| p.line() as i64);
                    self.ready_stream = *stream;
                    csv_row_to_json(headers, &record, &mut self.ready);
                    if merge {
                        let time = headers
                            .iter()
                            .position(|h| h == time_field)
                            .and_then(|i| record.get(i));
                        self.ready_key = time.and_then(parse_time_ms).unwrap_or(i64::MIN);
                    }
                    return Ok(());
                }
                Kind::Documents {
                    stream,
                    time_field,
                    docs,
                } => {
                    let read_failed = |e: std::io::Error| InputError {
                        path: PathBuf::from(format!("source #{}", self.source)),
                        message: format!("read failed: {e}"),
                    };
                    let Some(doc) = docs.next(time_field).map_err(read_failed)? else {
                        self.done = true;
                        return Ok(());
                    };
                    self.line = doc.line;
                    self.ready_stream = *stream;
                    let bytes = docs.bytes(doc.range);
                    match doc.time {
                        // Valid JSON: its whitespace outside strings can go, newlines included.
                        Some(time) => {
                            if bytes.contains(&b'\n') {
                                significant_runs(bytes, |r| {
                                    self.ready.extend_from_slice(&bytes[r])
                                });
                            } else {
                                self.ready.extend_from_slice(bytes);
                            }
                            self.ready_key = time.unwrap_or(i64::MIN);
                        }
                        None => {
                            self.ready.extend_from_slice(bytes);
                            self.ready_key = i64::MIN;
                        }
                    }
                    return Ok(());
                }
                Kind::Envelope | Kind::Plain { .. } => {
                    let lines = self.lines.as_mut().expect("line-based input");
                    self.buf.clear();
                    let n = lines.read_line(&mut self.buf).map_err(|e| InputError {
                        path: PathBuf::from(format!("source #{}", self.source)),
                        message: format!("read failed: {e}"),
                    })?;
                    if n == 0 {
                        self.done = true;
                        return Ok(());
                    }
                    self.line += 1;
                    let text = self.buf.trim();
                    if text.is_empty() {
                        continue;
                    }
                    match &self.kind {
                        Kind::Envelope => match serde_json::from_str::<Envelope>(text) {
                            Ok(Envelope {
                                topic: Some(topic),
                                timestamp,
                                value: Some(value),
                            }) => {
                                let Some(stream) = config.stream_of_topic(topic) else {
                                    tracing::debug!(
                                        topic,
                                        line = self.line,
                                        "no stream reads this topic; skipped"
                                    );
                                    continue;
                                };
                                self.ready_stream = stream;
                                self.ready.extend_from_slice(value.get().as_bytes());
                                self.ready_key = timestamp.unwrap_or(i64::MIN);
                            }
                            // Not an envelope: hand the line to the first stream's decoder so it
                            // is dead-lettered with its line number rather than lost.
                            _ => {
                                self.ready_stream = 0;
                                self.ready.extend_from_slice(text.as_bytes());
                            }
                        },
                        Kind::Plain { stream, time_field } => {
                            self.ready_stream = *stream;
                            self.ready.extend_from_slice(text.as_bytes());
                            if merge {
                                self.ready_key =
                                    inspect(text.as_bytes(), time_field, &mut self.scratch)
                                        .flatten()
                                        .unwrap_or(i64::MIN);
                            }
                        }
                        Kind::Csv { .. } | Kind::Documents { .. } => {
                            unreachable!("handled above")
                        }
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// Whether the first non-blank line is an envelope, and how many blank lines precede it (they
/// are consumed).
fn first_line_is_envelope(lines: &mut BufReader<File>) -> std::io::Result<(bool, i64)> {
    let mut skipped = 0;
    loop {
        let buf = lines.fill_buf()?;
        if buf.is_empty() {
            return Ok((false, skipped));
        }
        // Look at the first non-blank line without consuming it.
        let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        let line = std::str::from_utf8(&buf[..end]).unwrap_or("").trim();
        if line.is_empty() && end < buf.len() {
            lines.consume(end + 1);
            skipped += 1;
            continue;
        }
        let envelope = matches!(
            serde_json::from_str::<Envelope>(line),
            Ok(Envelope { topic: Some(_), value: Some(v), .. }) if v.get().starts_with('{')
        );
        return Ok((envelope, skipped));
    }
}

fn stream_by_name(config: &Config, path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let stem = name.split_once('.').map_or(name, |(s, _)| s);
    let without_ext = name.rsplit_once('.').map_or(name, |(s, _)| s);
    config
        .stream_index(stem)
        .or_else(|| config.stream_of_topic(without_ext))
}

fn csv_row_to_json(headers: &[String], record: &csv::StringRecord, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (name, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, name).expect("writing to a Vec");
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("writing to a Vec");
    }
    out.push(b'}');
}

/// How much the document reader asks of the file at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Splits a file into JSON documents, however they are laid out: one per line, pretty-printed,
/// concatenated, or the elements of top-level arrays. Scans bytes for brackets and strings only;
/// each document is then checked by serde_json (see [`inspect`]).
struct Documents {
    /// The file (after the envelope check, which may have buffered its start).
    file: BufReader<File>,
    /// Bytes read and not yet consumed, from the start of the current line or document.
    window: Vec<u8>,
    /// Scan position in `window`.
    pos: usize,
    /// Line number (1-based) at `pos`.
    line: i64,
    /// Where the line of `pos` starts in `window`; negative once dropped from it.
    line_start: isize,
    /// Inside a top-level array: its elements are the documents.
    in_array: bool,
    /// A leading byte-order mark has been looked for.
    started: bool,
    /// Scratch for reading event times, reused.
    scratch: String,
}

/// One document found by [`Documents::next`].
struct Doc {
    /// Line of its first byte.
    line: i64,
    /// Its bytes in the window (valid until the next call).
    range: Range<usize>,
    /// `None` if it is not valid JSON, else its event time, if it has one.
    time: Option<Option<i64>>,
}

impl Documents {
    fn new(file: BufReader<File>, line: i64) -> Documents {
        Documents {
            file,
            window: Vec::new(),
            pos: 0,
            line,
            line_start: 0,
            in_array: false,
            started: false,
            scratch: String::new(),
        }
    }

    /// The bytes of a document just returned.
    fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.window[range]
    }

    /// The next document, reading its event time at `time_field`; `None` at the end.
    fn next(&mut self, time_field: &str) -> std::io::Result<Option<Doc>> {
        // Drop what earlier documents used; the window keeps only what is ahead.
        if self.pos >= READ_CHUNK {
            self.window.drain(..self.pos);
            self.line_start -= self.pos as isize;
            self.pos = 0;
        }
        if !self.started {
            self.started = true;
            while self.window.len() < 3 && self.fill()? {}
            if self.window.starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
                self.line_start = 3;
            }
        }
        loop {
            if self.pos == self.window.len() && !self.fill()? {
                return Ok(None);
            }
            match self.window[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.newline();
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'[' if !self.in_array => {
                    self.in_array = true;
                    self.pos += 1;
                }
                b',' if self.in_array => self.pos += 1,
                b']' if self.in_array => {
                    self.in_array = false;
                    self.pos += 1;
                }
                _ => return self.document(time_field).map(Some),
            }
        }
    }

    /// Scans the document starting at `pos`.
    fn document(&mut self, time_field: &str) -> std::io::Result<Doc> {
        let start = self.pos;
        let line = self.line;
        let indent = start as isize - self.line_start;
        let open = self.window[start];
        self.pos += 1;
        // Where a line opens a document like this one at the same indentation: the place to
        // resume if this one turns out broken. (offset, line, line start)
        let mut resume: Option<(usize, i64, isize)> = None;
        let complete = match open {
            b'{' | b'[' => {
                let (mut depth, mut in_string, mut escaped) = (1usize, false, false);
                let mut line_blank = false;
                'scan: loop {
                    while self.pos < self.window.len() {
                        let c = self.window[self.pos];
                        self.pos += 1;
                        if c == b'\n' {
                            // JSON strings cannot hold a raw newline: if one seems open, the
                            // document is broken, and scanning on as structure finds its end.
                            (in_string, escaped) = (false, false);
                            self.newline();
                            line_blank = true;
                            continue;
                        }
                        if line_blank && !matches!(c, b' ' | b'\t' | b'\r') {
                            line_blank = false;
                            let at = self.pos - 1;
                            if c == open
                                && resume.is_none()
                                && at as isize - self.line_start == indent
                            {
                                resume = Some((at, self.line, self.line_start));
                            }
                        }
                        if in_string {
                            if escaped {
                                escaped = false;
                            } else if c == b'\\' {
                                escaped = true;
                            } else if c == b'"' {
                                in_string = false;
                            }
                        } else {
                            match c {
                                b'"' => in_string = true,
                                b'{' | b'[' => depth += 1,
                                b'}' | b']' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break 'scan true;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    if !self.fill()? {
                        break false;
                    }
                }
            }
            // A string, a number, a literal or garbage: one token, to the end of the line.
            _ => {
                let mut in_string = open == b'"';
                let mut escaped = false;
                loop {
                    if self.pos == self.window.len() && !self.fill()? {
                        break;
                    }
                    let c = self.window[self.pos];
                    if c == b'\n' {
                        break;
                    }
                    if in_string {
                        if escaped {
                            escaped = false;
                        } else if c == b'\\' {
                            escaped = true;
                        } else if c == b'"' {
                            in_string = false;
                        }
                    } else if matches!(c, b' ' | b'\t' | b'\r')
                        || (self.in_array && matches!(c, b',' | b']'))
                    {
                        break;
                    }
                    self.pos += 1;
                }
                true
            }
        };
        let time = if complete {
            inspect(&self.window[start..self.pos], time_field, &mut self.scratch)
        } else {
            None
        };
        if time.is_none()
            && let Some((at, resume_line, line_start)) = resume
        {
            // Broken, and another document starts inside: this one ends there.
            (self.pos, self.line, self.line_start) = (at, resume_line, line_start);
            let end = start + self.window[start..at].trim_ascii_end().len();
            return Ok(Doc {
                line,
                range: start..end,
                time: None,
            });
        }
        Ok(Doc {
            line,
            range: start..self.pos,
            time,
        })
    }

    /// Counts the newline just passed.
    fn newline(&mut self) {
        self.line += 1;
        self.line_start = self.pos as isize;
    }

    /// Appends the next chunk of the file to the window; false at its end.
    fn fill(&mut self) -> std::io::Result<bool> {
        let len = self.window.len();
        self.window.resize(len + READ_CHUNK, 0);
        let read = loop {
            match self.file.read(&mut self.window[len..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *read.as_ref().unwrap_or(&0);
        self.window.truncate(len + n);
        Ok(read? > 0)
    }
}

/// Checks that `doc` is exactly one JSON document, and reads its event time at `path` (dotted
/// for nested objects; a key that itself contains dots matches too). `None` if it is not valid
/// JSON; else its time, `None` when absent or not a time. Same time rules as the decoder.
fn inspect(doc: &[u8], path: &str, scratch: &mut String) -> Option<Option<i64>> {
    let text = std::str::from_utf8(doc).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = TimeAt(path).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(raw.and_then(|raw| event_time_of(raw, scratch)))
}

/// The raw value at a dotted path (the last, if a key repeats), skipping everything else.
struct TimeAt<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for TimeAt<'_> {
    type Value = Option<&'de str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for TimeAt<'p> {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(step) = map.next_key_seed(PathKey(self.0))? {
            match step {
                Step::Here => found = Some(map.next_value::<&'de RawValue>()?.get()),
                Step::Into(rest) => {
                    if let Some(raw) = map.next_value_seed(TimeAt(rest))? {
                        found = Some(raw);
                    }
                }
                Step::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// What an object key means for the rest of a dotted path.
enum Step<'p> {
    /// The key is the rest of the path.
    Here,
    /// The key is the path's next segment: go on with the remainder.
    Into(&'p str),
    /// Not on the path.
    Skip,
}

/// An object key, matched against the rest of a dotted path.
struct PathKey<'p>(&'p str);

impl<'de, 'p> DeserializeSeed<'de> for PathKey<'p> {
    type Value = Step<'p>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Step<'p>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for PathKey<'p> {
    type Value = Step<'p>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Step<'p>, E> {
        let path = self.0;
        Ok(if key == path {
            Step::Here
        } else if let Some(rest) = path
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            Step::Into(rest)
        } else {
            Step::Skip
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::FailureKind;
    use crate::decode::project::ProjectingDecoder;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    use proptest::prelude::*;

    const TIME: &str = "Event.System.TimeCreated.#attributes.SystemTime";
    const REGRESSION: &str = "/work/shared/data/sigma/regression/regression_data/rules/windows";

    fn config(batch_rows: usize) -> Arc<Config> {
        let text = format!(
            r#"
[kafka]
brokers = "b:9092"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"
[pipeline]
batch_rows = {batch_rows}
[detectors]
rules = ["rules"]
[[streams]]
name = "flows"
topics = ["city.flows"]
format = "json"
event_time = "ts"
entity = ["src"]
[streams.schema]
ts = "timestamp"
src = "string"
[[streams]]
name = "sysmon"
topics = ["win.sysmon"]
format = "json"
event_time = "{TIME}"
entity = ["Event.System.Computer"]
[streams.schema]
"{TIME}" = "timestamp"
"Event.System.Computer" = "string"
"#
        );
        Arc::new(Config::parse(&text, "test.toml", Path::new(".")).unwrap())
    }

    /// One record as the replay produced it.
    #[derive(Debug, PartialEq)]
    struct Record {
        source: u32,
        line: i64,
        stream: usize,
        text: String,
    }

    /// Replays `paths` as stream `stream`, returning every record in the order sent.
    fn replay(paths: &[PathBuf], stream: &str) -> Vec<Record> {
        let (tx, mut rx) = mpsc::channel(1024);
        FileSource::open(config(3), paths, Some(stream))
            .unwrap()
            .run(tx)
            .unwrap();
        let mut records = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            for i in 0..batch.len() {
                records.push(Record {
                    source: batch.origins[i].source,
                    line: batch.origins[i].offset,
                    stream: batch.stream,
                    text: String::from_utf8(batch.record(i).to_vec()).unwrap(),
                });
            }
        }
        // Batches of different streams interleave; within a stream the order is the merge's.
        records.sort_by_key(|r| r.stream);
        records
    }

    /// Writes `files` (name, contents) to a temporary directory.
    fn write(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = files
            .iter()
            .map(|(name, text)| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        (dir, paths)
    }

    /// (line, text) of each record.
    fn lines_and_texts(records: &[Record]) -> Vec<(i64, &str)> {
        records.iter().map(|r| (r.line, r.text.as_str())).collect()
    }

    fn event(time: &str, n: u32) -> String {
        format!(
            r##"{{"Event":{{"EventData":{{"N":{n}}},"System":{{"TimeCreated":{{"#attributes":{{"SystemTime":"{time}"}}}}}}}}}}"##
        )
    }

    #[test]
    fn regression_files_become_one_compact_record_per_document_in_time_order() {
        let many = format!(
            "{REGRESSION}/file/file_event/file_event_win_hktl_netexec_file_indicators/efc21479-9e83-41da-8cf1-122e06ba8db3.json"
        );
        let one = format!(
            "{REGRESSION}/process_creation/proc_creation_win_amsi_registry_tampering/7dbbcac2-57a0-45ac-b306-ff30a8bd2981.json"
        );
        let paths = [PathBuf::from(&many), PathBuf::from(&one)];
        let records = replay(&paths, "sysmon");

        // The documents, read independently, with the line each starts on.
        let mut expected = Vec::new();
        for (source, path) in paths.iter().enumerate() {
            let text = std::fs::read_to_string(path).unwrap();
            let starts = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.starts_with('{'))
                .map(|(i, _)| i as i64 + 1);
            let docs = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
            for (doc, line) in docs.zip(starts) {
                expected.push((source as u32, line, doc.unwrap()));
            }
        }
        assert_eq!((expected.len(), records.len()), (8, 8));
        for r in &records {
            assert!(!r.text.contains('\n'), "not compacted: {}", r.text);
            let doc: serde_json::Value = serde_json::from_str(&r.text).unwrap();
            assert!(
                expected.contains(&(r.source, r.line, doc)),
                "record at {}:{} is not the document there",
                r.source,
                r.line
            );
        }

        // Merged by the dotted event time, and every record decodes.
        let mut raw = RawBatch::new(1);
        for r in &records {
            raw.push(
                r.text.as_bytes(),
                Origin {
                    source: r.source,
                    partition: 0,
                    offset: r.line,
                    timestamp_ms: 0,
                },
            );
        }
        let mut decoder =
            ProjectingDecoder::new(vec!["Event.EventData.Image".into()], TIME, 16).unwrap();
        let out = decoder.decode(&raw);
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let times = out
            .batch
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        assert!(times.is_sorted(), "{times:?}");
        assert!(times[0] < times[7], "{times:?}");
    }

    #[test]
    fn documents_in_any_layout() {
        let (a, b, c, d) = (
            event("2026-01-01T00:00:01Z", 1),
            event("2026-01-01T00:00:02Z", 2),
            event("2026-01-01T00:00:03Z", 3),
            event("2026-01-01T00:00:04Z", 4),
        );
        // serde_json sorts keys; `event` writes them sorted, so this only adds whitespace.
        let pretty = |s: &str| {
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(s).unwrap())
                .unwrap()
        };
        let cases: Vec<(&str, String, Vec<i64>)> = vec![
            // Pretty-printed, one after the other, a byte-order mark first.
            (
                "pretty.json",
                format!("\u{feff}{}\n{}\n", pretty(&a), pretty(&b)),
                vec![1, 15],
            ),
            // One per line, blank lines between, and two on one line.
            (
                "lines.json",
                format!("\n{a}\n\n{b}{c}\n  {d}"),
                vec![2, 4, 4, 5],
            ),
            // A top-level array, pretty-printed, then a compact one.
            (
                "array.json",
                format!("[\n{},\n{}\n]\n[{c},{d}]", pretty(&a), pretty(&b)).replace('\n', "\n  "),
                vec![2, 16, 31, 31],
            ),
        ];
        for (name, text, lines) in cases {
            let (_dir, paths) = write(&[(name, &text)]);
            let records = replay(&paths, "sysmon");
            let got: Vec<(i64, &str)> = lines_and_texts(&records);
            let expected: Vec<(i64, &str)> = lines
                .iter()
                .zip([&a, &b, &c, &d])
                .map(|(&line, doc)| (line, doc.as_str()))
                .collect();
            assert_eq!(got, expected, "{name}:\n{text}");
        }
    }

    #[test]
    fn strings_keep_their_whitespace_and_brackets() {
        let doc = "{\n  \"ts\": \"2026-01-01T00:00:00Z\",\n  \"s\": \"a  }]{[ \\\" \\\\\"\n}";
        let (_dir, paths) = write(&[("flows.json", doc)]);
        let records = replay(&paths, "flows");
        assert_eq!(
            lines_and_texts(&records),
            vec![(1, r#"{"ts":"2026-01-01T00:00:00Z","s":"a  }]{[ \" \\"}"#)]
        );
    }

    #[test]
    fn broken_documents_are_passed_on_and_reading_resumes() {
        let good = |n: u32| event(&format!("2026-01-01T00:00:0{n}Z"), n);
        let (g1, g2, g3, g4) = (good(1), good(2), good(3), good(4));
        let text = [
            // 1: balanced but invalid (missing comma): one document.
            "{\"Event\": 1\n  \"x\": 2}",
            // 3: fine.
            &g1,
            // 4-5: never closed; the next line opening at column 0 starts a new document.
            "{\"Event\": {\"a\": [1,\n  2}",
            &g2,
            // 7: an unterminated string swallows no line.
            "{\"Event\": \"abc}",
            &g3,
            // 9: trailing garbage, then a stray bracket.
            "{\"a\":1} x }",
            &g4,
            // 11: never closed, nothing to resume at: the rest is one record.
            "{\"Event\":\n  {\"b\": 1,\n  \"c\": [",
        ]
        .join("\n");
        let (_dir, paths) = write(&[("sysmon.json", &text)]);
        let records = replay(&paths, "sysmon");
        assert_eq!(
            lines_and_texts(&records),
            vec![
                (1, "{\"Event\": 1\n  \"x\": 2}"),
                (3, g1.as_str()),
                (4, "{\"Event\": {\"a\": [1,\n  2}"),
                (6, g2.as_str()),
                (7, "{\"Event\": \"abc}"),
                (8, g3.as_str()),
                (9, "{\"a\":1}"),
                (9, "x"),
                (9, "}"),
                (10, g4.as_str()),
                (11, "{\"Event\":\n  {\"b\": 1,\n  \"c\": ["),
            ]
        );

        // The decoder dead-letters exactly the broken ones, with their lines.
        let mut raw = RawBatch::new(1);
        for r in &records {
            raw.push(
                r.text.as_bytes(),
                Origin {
                    source: 0,
                    partition: 0,
                    offset: r.line,
                    timestamp_ms: 0,
                },
            );
        }
        let out = ProjectingDecoder::new(vec![], TIME, 16)
            .unwrap()
            .decode(&raw);
        assert_eq!(out.batch.num_rows(), 4);
        let dead: Vec<(i64, FailureKind)> =
            out.dead.iter().map(|d| (d.origin.offset, d.kind)).collect();
        use FailureKind::*;
        assert_eq!(
            dead,
            vec![
                (1, Malformed),
                (4, Malformed),
                (7, Malformed),
                (9, MissingEventTime),
                (9, Malformed),
                (9, Malformed),
                (11, Malformed),
            ]
        );
    }

    #[test]
    fn broken_array_element_resumes_at_the_next_element() {
        let (a, b) = (
            event("2026-01-01T00:00:01Z", 1),
            event("2026-01-01T00:00:02Z", 2),
        );
        let text = format!("[\n  {{\"Event\": {{\n    \"x\": [1,\n  }},\n  {a},\n  {b}\n]\n");
        let (_dir, paths) = write(&[("sysmon.json", &text)]);
        let records = replay(&paths, "sysmon");
        assert_eq!(
            lines_and_texts(&records),
            vec![
                (2, "{\"Event\": {\n    \"x\": [1,\n  },"),
                (5, a.as_str()),
                (6, b.as_str())
            ]
        );
    }

    #[test]
    fn files_merge_by_dotted_event_time_and_other_formats_are_unchanged() {
        let e = |s: u32| event(&format!("2026-01-01T00:00:0{s}Z"), s);
        let (_dir, paths) = write(&[
            ("sysmon.json", &format!("[{}, {}]", e(1), e(4))),
            ("second.json", &format!("{}\n{}", e(2), e(3))),
            ("third.jsonl", &format!("{}\n{}\n", e(0), e(5))),
        ]);
        let records = replay(&paths, "sysmon");
        let order: Vec<(u32, i64)> = records.iter().map(|r| (r.source, r.line)).collect();
        assert_eq!(order, vec![(2, 1), (0, 1), (1, 1), (1, 2), (0, 1), (2, 2)]);
        assert!(records.iter().all(|r| r.stream == 1));

        // Plain JSONL and CSV keep their top-level time field.
        let (_dir, paths) = write(&[
            (
                "flows.jsonl",
                "{\"ts\":\"2026-01-01T00:00:02Z\",\"src\":\"a\"}\n",
            ),
            (
                "flows.csv",
                "ts,src\n2026-01-01T00:00:01Z,b\n1767225603000,c\n",
            ),
        ]);
        let records = replay(&paths, "flows");
        let order: Vec<(u32, i64)> = records.iter().map(|r| (r.source, r.line)).collect();
        assert_eq!(order, vec![(1, 2), (0, 1), (1, 3)]);
    }

    fn arb_doc() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            // Brackets, quotes, backslashes and newlines inside strings must not cut documents.
            "[a-c{}\\[\\]\"\\\\\n ]{0,6}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-d]", value, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn every_layout_gives_back_the_documents(
            docs in prop::collection::vec(arb_doc(), 0..5),
            layout in 0..5u8,
        ) {
            let compact: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
            let pretty: Vec<String> =
                docs.iter().map(|d| serde_json::to_string_pretty(d).unwrap()).collect();
            let text = match layout {
                0 => compact.join("\n"),
                1 => pretty.join("\n"),
                2 => compact.concat(),
                3 => format!("[{}]", compact.join(",")),
                _ => format!("[\n{}\n]\n", pretty.join(",\n")),
            };
            let (_dir, paths) = write(&[("sysmon.json", &text)]);
            let records = replay(&paths, "sysmon");
            let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
            prop_assert_eq!(texts, compact.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    #[test]
    fn event_time_is_read_at_a_dotted_path() {
        let check = |doc: &str, path: &str| inspect(doc.as_bytes(), path, &mut String::new());
        let t = Some(Some(1_767_225_600_000));
        assert_eq!(check(r#"{"a":{"b":"2026-01-01T00:00:00Z"}}"#, "a.b"), t);
        assert_eq!(check(r#"{"a.b":"2026-01-01T00:00:00Z"}"#, "a.b"), t);
        assert_eq!(check(r#"{"a":{"b":1767225600000}}"#, "a.b"), t);
        assert_eq!(
            check(r##"{"a":{"b":{"#text":"2026-01-01T00:00:00Z"}}}"##, "a.b"),
            t
        );
        assert_eq!(check(r#"{"a":{"b":1},"a":{"c":2}}"#, "a.b"), Some(Some(1)));
        assert_eq!(check(r#"{"a":[{"b":1}]}"#, "a.b"), Some(None));
        assert_eq!(check(r#"{"ab":1}"#, "a.b"), Some(None));
        assert_eq!(check("[1]", "a"), Some(None));
        assert_eq!(check(r#"{"a":1"#, "a"), None);
        assert_eq!(check(r#"{"a":1}{"a":2}"#, "a"), None);
        assert_eq!(check(r#"{"a":1, "b": "\u00zz"}"#, "a"), None);
    }
}
