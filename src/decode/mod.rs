//! Raw record bytes -> Arrow `RecordBatch`, with bad records split off as dead letters.
//!
//! In: a [`RawBatch`] (records of one stream, concatenated). Out: a [`Decoded`]: one batch in
//! the stream's schema holding every good record, in order, and one [`DeadLetter`] per record
//! that is not a JSON object fitting the schema or has no event time. Pure: no I/O, no logging;
//! the caller counts and ships the dead letters.
//!
//! The fast path hands the whole batch to arrow-json's tape decoder in one call, with no
//! per-record work. Only when that fails (or the record count does not match) is each record
//! probed on its own to find the culprits, so a bad record costs its batch a slower decode but
//! never the loss of its neighbours.
//!
//! [`project`] holds the other decoder, [`project::ProjectingDecoder`]: for wide nested events
//! (Windows events as evtx-dump writes them) of which the rules read only a few dotted paths,
//! it extracts just those, as strings, in one serde_json pass per record.

pub mod project;
mod skim;

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;

use crate::source::{Origin, RawBatch};

/// Why a record was rejected. Low-cardinality: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Not valid JSON, not an object, truncated, or several documents in one record.
    Malformed,
    /// Valid JSON whose values do not fit the declared types.
    Schema,
    /// The event-time field is missing or null.
    MissingEventTime,
    /// An empty payload (e.g. a tombstone).
    Empty,
    /// Decoded, but older than its stream's watermark (see [`crate::watermark`]); not a
    /// decoding failure, but dead-lettered the same way.
    Late,
}

impl FailureKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Schema => "schema",
            FailureKind::MissingEventTime => "missing_event_time",
            FailureKind::Empty => "empty",
            FailureKind::Late => "late",
        }
    }
}

/// A record that could not be decoded, with everything needed to find and replay it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where the record came from.
    pub origin: Origin,
    /// The record's original bytes.
    pub payload: Vec<u8>,
    /// Class of failure (metric label).
    pub kind: FailureKind,
    /// Human-readable reason.
    pub reason: String,
}

/// The result of decoding one raw batch.
#[derive(Debug)]
pub struct Decoded {
    /// Good records in the stream's schema, in input order.
    pub batch: RecordBatch,
    /// Records that were rejected.
    pub dead: Vec<DeadLetter>,
}

/// Decodes JSON records of one stream. Built once per stream and reused for every batch.
pub struct JsonDecoder {
    schema: SchemaRef,
    /// Column index of the event-time field.
    time_col: usize,
    /// The decoder for the fast path, reused across batches.
    decoder: Decoder,
    /// Most records a batch may hold (sizes the decoders' buffers).
    max_rows: usize,
}

impl JsonDecoder {
    /// A decoder for batches of up to `max_rows` records in `schema`, rejecting records whose
    /// `time_field` is missing. Larger batches work, through the slower path.
    pub fn new(schema: SchemaRef, time_field: &str, max_rows: usize) -> Result<Self, ArrowError> {
        let time_col = schema.index_of(time_field)?;
        let decoder = build(&schema, max_rows)?;
        Ok(JsonDecoder {
            schema,
            time_col,
            decoder,
            max_rows,
        })
    }

    /// Column index of the event time in decoded batches.
    pub fn time_col(&self) -> usize {
        self.time_col
    }

    /// The schema batches are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes every record of `raw`; never fails as a whole.
    pub fn decode(&mut self, raw: &RawBatch) -> Decoded {
        let n = raw.len();
        if n == 0 {
            return Decoded {
                batch: RecordBatch::new_empty(Arc::clone(&self.schema)),
                dead: Vec::new(),
            };
        }
        let (batch, dead) = match self.fast(raw) {
            Some(batch) => (batch, Vec::new()),
            None => self.slow(raw),
        };
        self.drop_missing_time(batch, dead, raw)
    }

    /// All records through one decoder, checking after each that it added exactly one whole
    /// row, so two documents in one record, or half of one, cannot shift rows against their
    /// records. (Checking only the total would not do: arrow-json accepts a raw newline inside
    /// a string, so an open string can swallow the separator and the next record; see
    /// `records_cannot_merge_across_the_separator`.) `None` if anything is off; the decoder is
    /// rebuilt in that case.
    fn fast(&mut self, raw: &RawBatch) -> Option<RecordBatch> {
        let result = (|| {
            for i in 0..raw.len() {
                let record = raw.record(i);
                let consumed = self.decoder.decode(record)?;
                if consumed != record.len()
                    || self.decoder.has_partial_record()
                    || self.decoder.len() != i + 1
                {
                    return Err(ArrowError::JsonError("record boundary mismatch".into()));
                }
            }
            self.decoder.flush()
        })();
        match result {
            Ok(Some(batch)) => Some(batch),
            _ => {
                // The decoder may hold half a batch: start clean.
                self.decoder =
                    build(&self.schema, self.max_rows).expect("schema was accepted before");
                None
            }
        }
    }

    /// Probes each record alone, then decodes the good ones together. Dead letters come back
    /// with their record index, in record order.
    fn slow(&mut self, raw: &RawBatch) -> (RecordBatch, Vec<(usize, DeadLetter)>) {
        // A probe stops after two documents: enough to see that a record holds more than one.
        let mut probe = build(&self.schema, 2).expect("schema was accepted before");
        let mut dead = Vec::new();
        let mut all = build(&self.schema, raw.len()).expect("schema was accepted before");
        for i in 0..raw.len() {
            let record = raw.record(i);
            match probe_one(&mut probe, record) {
                // Decoded alone above, so it cannot fail here.
                Ok(()) => {
                    all.decode(record).expect("probed record decodes");
                    all.decode(b"\n").expect("whitespace decodes");
                }
                Err((kind, reason)) => {
                    probe = build(&self.schema, 2).expect("schema was accepted before");
                    let origin = raw.origins[i];
                    dead.push((
                        i,
                        DeadLetter {
                            origin,
                            payload: record.to_vec(),
                            kind,
                            reason,
                        },
                    ));
                }
            }
        }
        let batch = match all.flush() {
            Ok(Some(batch)) => batch,
            _ => RecordBatch::new_empty(Arc::clone(&self.schema)),
        };
        (batch, dead)
    }

    /// Rows whose event time is null become dead letters too.
    fn drop_missing_time(
        &self,
        batch: RecordBatch,
        mut dead: Vec<(usize, DeadLetter)>,
        raw: &RawBatch,
    ) -> Decoded {
        let time = batch.column(self.time_col);
        if time.null_count() > 0 {
            // Row r of the batch is the r-th record that is not already dead.
            let dead_at: Vec<usize> = dead.iter().map(|(i, _)| *i).collect();
            let mut already = dead_at.into_iter().peekable();
            let mut row = 0;
            let field = self.schema.field(self.time_col).name();
            for i in 0..raw.len() {
                if already.peek() == Some(&i) {
                    already.next();
                    continue;
                }
                if time.is_null(row) {
                    dead.push((
                        i,
                        DeadLetter {
                            origin: raw.origins[i],
                            payload: raw.record(i).to_vec(),
                            kind: FailureKind::MissingEventTime,
                            reason: format!("event-time field `{field}` is missing or null"),
                        },
                    ));
                }
                row += 1;
            }
            dead.sort_by_key(|(i, _)| *i);
            let keep = datafusion::arrow::compute::is_not_null(time).expect("never fails");
            let batch = filter_record_batch(&batch, &keep).expect("filter by own-length mask");
            return Decoded {
                batch,
                dead: dead.into_iter().map(|(_, d)| d).collect(),
            };
        }
        Decoded {
            batch,
            dead: dead.into_iter().map(|(_, d)| d).collect(),
        }
    }
}

fn build(schema: &SchemaRef, rows: usize) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(rows.max(1))
        .with_coerce_primitive(true)
        .build_decoder()
}

fn probe_one(probe: &mut Decoder, record: &[u8]) -> Result<(), (FailureKind, String)> {
    if record.iter().all(u8::is_ascii_whitespace) {
        return Err((FailureKind::Empty, "empty record".into()));
    }
    let malformed = |e: ArrowError| (FailureKind::Malformed, clean(e));
    let consumed = probe.decode(record).map_err(malformed)?;
    if consumed < record.len() {
        return Err((
            FailureKind::Malformed,
            "a record must hold exactly one JSON object, found more".into(),
        ));
    }
    if probe.has_partial_record() {
        return Err((
            FailureKind::Malformed,
            "truncated JSON: the record ends inside a value".into(),
        ));
    }
    if probe.len() != 1 {
        return Err((
            FailureKind::Malformed,
            format!(
                "a record must hold exactly one JSON object, found {}",
                probe.len()
            ),
        ));
    }
    match probe.flush() {
        Ok(_) => Ok(()),
        Err(e) => Err((FailureKind::Schema, clean(e))),
    }
}

/// arrow's messages carry a redundant "Json error: " prefix.
fn clean(e: ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ")
        .map(str::to_string)
        .unwrap_or(s)
}

/// The decoder of one stream: arrow-json over its declared schema, or, for a stream without
/// one, a projection of the dotted paths its detectors read.
pub enum StreamDecoder {
    /// A stream with `[streams.schema]`.
    Json(JsonDecoder),
    /// A projected stream.
    Projected(project::ProjectingDecoder),
}

impl StreamDecoder {
    /// The decoder of `stream`: `paths` and `keywords` say what its detectors read when it is
    /// projected (its entity fields are always decoded too); ignored otherwise.
    pub fn for_stream(
        stream: &crate::config::StreamConfig,
        paths: &[String],
        keywords: bool,
        max_rows: usize,
    ) -> Result<StreamDecoder, String> {
        let time = stream.event_time.get_ref();
        match stream.arrow_schema() {
            Some(schema) => JsonDecoder::new(Arc::clone(schema), time, max_rows)
                .map(StreamDecoder::Json)
                .map_err(|e| e.to_string()),
            None => {
                let mut all = paths.to_vec();
                for e in stream.entity.get_ref() {
                    if !all.contains(e) {
                        all.push(e.clone());
                    }
                }
                project::ProjectingDecoder::new(all, time, max_rows)
                    .map(|d| StreamDecoder::Projected(d.with_keywords(keywords)))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Decodes `raw`; see [`JsonDecoder::decode`].
    pub fn decode(&mut self, raw: &RawBatch) -> Decoded {
        match self {
            StreamDecoder::Json(d) => d.decode(raw),
            StreamDecoder::Projected(d) => d.decode(raw),
        }
    }

    /// Index of the event-time column in decoded batches.
    pub fn time_col(&self) -> usize {
        match self {
            StreamDecoder::Json(d) => d.time_col(),
            StreamDecoder::Projected(d) => d.time_col(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn raw(records: &[&str]) -> RawBatch {
        let mut raw = RawBatch::new(0);
        for (i, r) in records.iter().enumerate() {
            raw.push(
                r.as_bytes(),
                Origin {
                    source: 0,
                    partition: 0,
                    offset: i as i64,
                    timestamp_ms: 0,
                },
            );
        }
        raw
    }

    /// Decodes `records`; returns the `n` column of good rows and (offset, kind) of dead ones.
    fn check(records: &[&str], good_n: &[i64], dead: &[(i64, FailureKind)]) {
        let mut decoder = JsonDecoder::new(schema(), "ts", 16).unwrap();
        // Twice: the decoder must be reusable after both paths.
        for _ in 0..2 {
            let out = decoder.decode(&raw(records));
            let n: &Int64Array = out.batch.column(1).as_primitive();
            assert_eq!(n.values().to_vec(), good_n);
            let got: Vec<_> = out.dead.iter().map(|d| (d.origin.offset, d.kind)).collect();
            assert_eq!(got, dead);
        }
    }

    const T: &str = "\"ts\":\"2026-01-05T02:30:00Z\"";

    #[test]
    fn good_records_decode_in_one_pass() {
        let a = format!("{{{T},\"n\":1,\"s\":\"a\"}}");
        let b = format!("{{{T},\"n\":2,\"extra\":[1,2]}}");
        check(&[&a, &b], &[1, 2], &[]);
    }

    #[test]
    fn bad_records_are_isolated_with_their_reason() {
        let ok1 = format!("{{{T},\"n\":1}}");
        let truncated = format!("{{{T},\"n\":2");
        let wrong_type = format!("{{{T},\"n\":\"many\"}}");
        let two = format!("{{{T},\"n\":3}}{{{T},\"n\":4}}");
        let ok2 = format!("{{{T},\"n\":5}}");
        let no_time = "{\"n\":6}";
        check(
            &[
                &ok1,
                &truncated,
                &wrong_type,
                "",
                &two,
                "[1]",
                &ok2,
                no_time,
            ],
            &[1, 5],
            &[
                (1, FailureKind::Malformed),
                (2, FailureKind::Schema),
                (3, FailureKind::Empty),
                (4, FailureKind::Malformed),
                // Valid JSON, but not an object as the schema requires.
                (5, FailureKind::Schema),
                (7, FailureKind::MissingEventTime),
            ],
        );
    }

    #[test]
    fn records_cannot_merge_across_the_separator() {
        // If a string could span the `\n` between records, these three records would decode
        // to three rows that belong to the wrong records. The fast path must not accept them.
        let first = format!("{{{T},\"s\":\"}}");
        let second = "{\",\"n\":1}";
        let third = format!("{{{T},\"n\":2}}{{{T},\"n\":3}}");
        let mut decoder = JsonDecoder::new(schema(), "ts", 16).unwrap();
        let out = decoder.decode(&raw(&[&first, second, &third]));
        assert_eq!(out.batch.num_rows(), 0, "{:?}", out.batch);
        assert_eq!(out.dead.len(), 3);
    }

    #[test]
    fn dead_letter_keeps_bytes_and_reason() {
        let mut decoder = JsonDecoder::new(schema(), "ts", 16).unwrap();
        let bad = format!("{{{T},\"n\":\"x\"}}");
        let out = decoder.decode(&raw(&[&bad]));
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.dead[0].payload, bad.as_bytes());
        assert!(out.dead[0].reason.contains("n"), "{}", out.dead[0].reason);
    }

    #[test]
    fn numbers_as_strings_and_epoch_times_are_accepted() {
        let mut decoder = JsonDecoder::new(schema(), "ts", 16).unwrap();
        let out = decoder.decode(&raw(&["{\"ts\":1767580200000,\"n\":\"7\",\"s\":8}"]));
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        assert_eq!(out.batch.column(2).as_string::<i32>().value(0), "8");
    }
}
