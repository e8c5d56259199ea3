//! Replay: JSONL and CSV files read as one stream in event-time order.
//!
//! Each file is treated like a Kafka partition: read in order, and merged with the other files
//! by event time (ties broken by file order, so the merge is deterministic). A file is one of:
//!
//! - **JSONL envelopes**, as written by `palisade simulate --output`: one Kafka record per
//!   line, `{"topic": "...", "key": "...", "timestamp": <ms>, "value": {...}}`; the topic picks
//!   the stream, `timestamp` orders the merge.
//! - **plain JSONL**: one event per line; the stream is `--stream`, or the stream whose name or
//!   topic is the file's name (`auth.jsonl`, `city.auth.jsonl`).
//! - **CSV** (`.csv`): a header row naming the fields; each row becomes a JSON object of its
//!   non-empty cells (types come from the stream's schema), stream chosen as for plain JSONL.
//!
//! Blank lines are skipped. A line that cannot be read as its format says is passed on as is,
//! so the decoder dead-letters it with its line number, like any other bad record.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Batcher, Origin, RawBatch};
use crate::config::Config;

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
            let is_csv = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            let (kind, lines) = if is_csv {
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
                )
            } else {
                let mut lines = BufReader::new(file);
                let envelope = first_line_is_envelope(&mut lines)
                    .map_err(|e| err(format!("cannot read: {e}")))?;
                let kind = if envelope {
                    Kind::Envelope
                } else {
                    let stream = stream_of_file()?;
                    Kind::Plain {
                        stream,
                        time_field: config.streams[stream].event_time.get_ref().clone(),
                    }
                };
                (kind, Some(lines))
            };
            inputs.push(Input {
                source: i as u32,
                kind,
                lines,
                line: 0,
                buf: String::new(),
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
                                    plain_time_ms(text, time_field).unwrap_or(i64::MIN);
                            }
                        }
                        Kind::Csv { .. } => unreachable!("handled above"),
                    }
                    return Ok(());
                }
            }
        }
    }
}

fn first_line_is_envelope(lines: &mut BufReader<File>) -> std::io::Result<bool> {
    loop {
        let buf = lines.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        // Look at the first non-blank line without consuming it.
        let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        let line = std::str::from_utf8(&buf[..end]).unwrap_or("").trim();
        if line.is_empty() && end < buf.len() {
            lines.consume(end + 1);
            continue;
        }
        return Ok(matches!(
            serde_json::from_str::<Envelope>(line),
            Ok(Envelope { topic: Some(_), value: Some(v), .. }) if v.get().starts_with('{')
        ));
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

fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s.trim())
        .ok()
        .map(|ns| ns / 1_000_000)
}

/// The event time of a plain JSON line, for the merge.
fn plain_time_ms(line: &str, field: &str) -> Option<i64> {
    let map: std::collections::HashMap<&str, &RawValue> = serde_json::from_str(line).ok()?;
    let raw = map.get(field)?.get();
    match serde_json::from_str::<&str>(raw) {
        Ok(s) => parse_time_ms(s),
        Err(_) => raw.parse().ok(),
    }
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
