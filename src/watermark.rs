//! Event time: per-partition progress, the stream watermark, idle partitions and late events.
//!
//! In: for each decoded batch, its stream, partition, event times and the processing time it
//! arrived at. Out: the stream's watermark (the event time before which no more events are
//! expected), and the batch's late rows split off by the stream's [`LatePolicy`].
//!
//! A partition's watermark is the highest event time seen on it minus the stream's
//! `allowed_lateness_ms`. The stream's watermark is the lowest over its *active* partitions:
//! one that has sent nothing for `idle_timeout_ms` of processing time stops holding it back
//! (when every partition is idle, the most advanced one sets it). It never moves back: a
//! partition that resumes behind it sends late events. Partitions that never sent anything
//! are not known and do not hold it back. Pure: processing time is passed in, so tests drive
//! it without sleeping.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Scalar};
use datafusion::arrow::compute::kernels::cmp::lt;
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::alert::format_time_ms;
use crate::config::{Config, LatePolicy};
use crate::decode::{DeadLetter, Decoded, FailureKind};
use crate::source::RawBatch;

/// Progress of one partition of a stream.
#[derive(Debug, Clone, Copy)]
struct PartitionTime {
    partition: i32,
    /// Highest event time seen, ms.
    max_event_ms: i64,
    /// Processing time of its last batch, ms (caller's clock).
    last_seen_ms: i64,
}

/// Event-time progress of one stream.
#[derive(Debug, Clone)]
struct StreamTime {
    lateness_ms: i64,
    idle_ms: i64,
    policy: LatePolicy,
    partitions: Vec<PartitionTime>,
    /// The stream's watermark, ms; `i64::MIN` before any event.
    watermark_ms: i64,
}

/// The watermark of every stream of a configuration.
#[derive(Debug, Clone)]
pub struct Watermarks {
    streams: Vec<StreamTime>,
}

/// What [`Watermarks::split_late`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LateRows {
    /// Rows older than the watermark.
    pub late: usize,
    /// Of those, rows removed from the batch and dead-lettered.
    pub dead_lettered: usize,
}

impl Watermarks {
    /// Watermarks of `config`'s streams, none advanced yet.
    pub fn new(config: &Config) -> Watermarks {
        let streams = config
            .streams
            .iter()
            .map(|s| StreamTime {
                lateness_ms: s.watermark.allowed_lateness_ms as i64,
                idle_ms: s.watermark.idle_timeout_ms as i64,
                policy: s.watermark.late_events,
                partitions: Vec::new(),
                watermark_ms: i64::MIN,
            })
            .collect();
        Watermarks { streams }
    }

    /// The watermark of `stream` in ms since the epoch; `i64::MIN` before its first event.
    pub fn watermark(&self, stream: usize) -> i64 {
        self.streams[stream].watermark_ms
    }

    /// The highest event time seen on `stream`, over every partition.
    pub fn max_event_ms(&self, stream: usize) -> Option<i64> {
        self.streams[stream]
            .partitions
            .iter()
            .map(|p| p.max_event_ms)
            .max()
    }

    /// Records that `partition` of `stream` reached event time `max_event_ms` (the batch's
    /// highest, if it had rows) at processing time `now_ms`. Returns true when the stream's
    /// watermark advanced.
    pub fn observe(
        &mut self,
        stream: usize,
        partition: i32,
        max_event_ms: Option<i64>,
        now_ms: i64,
    ) -> bool {
        let s = &mut self.streams[stream];
        match s.partitions.iter_mut().find(|p| p.partition == partition) {
            Some(p) => {
                p.last_seen_ms = now_ms;
                if let Some(max) = max_event_ms {
                    p.max_event_ms = p.max_event_ms.max(max);
                }
            }
            None => {
                let Some(max) = max_event_ms else {
                    return false;
                };
                s.partitions.push(PartitionTime {
                    partition,
                    max_event_ms: max,
                    last_seen_ms: now_ms,
                });
            }
        }
        s.recompute(now_ms)
    }

    /// Re-evaluates which partitions are idle at processing time `now_ms` (a tick with no
    /// batch). Returns true when the watermark of `stream` advanced.
    pub fn refresh(&mut self, stream: usize, now_ms: i64) -> bool {
        self.streams[stream].recompute(now_ms)
    }

    /// Moves every watermark to the end of time: the input is finished (replay, rule tests),
    /// so every window can close.
    pub fn finish(&mut self) {
        for s in &mut self.streams {
            s.watermark_ms = i64::MAX;
        }
    }

    /// Splits off the rows of `decoded` (decoded from `raw`, a batch of `stream`) whose event
    /// time, in column `time_col`, is older than the stream's current watermark. With the
    /// `dead_letter` policy they leave the batch and become dead letters (reason `late`);
    /// with `process` they stay. Call before [`Watermarks::observe`] for the same batch.
    pub fn split_late(
        &self,
        stream: usize,
        raw: &RawBatch,
        decoded: &mut Decoded,
        time_col: usize,
    ) -> LateRows {
        let s = &self.streams[stream];
        if s.watermark_ms == i64::MIN || decoded.batch.num_rows() == 0 {
            return LateRows::default();
        }
        let Some(late) = older_than(decoded.batch.column(time_col), s.watermark_ms) else {
            return LateRows::default();
        };
        let count = late.true_count();
        if count == 0 {
            return LateRows::default();
        }
        if s.policy == LatePolicy::Process {
            return LateRows {
                late: count,
                dead_lettered: 0,
            };
        }
        // Decoded rows are the raw records minus the dead ones, in order: walk both to find
        // the raw record of each late row (rare path: only batches with late rows).
        let mut dead = decoded.dead.iter().map(|d| d.origin).peekable();
        let mut row = 0;
        let mut letters = Vec::with_capacity(count);
        let times = crate::detect::timestamp_millis(decoded.batch.column(time_col).as_ref());
        for (i, origin) in raw.origins.iter().enumerate() {
            if dead.peek() == Some(origin) {
                dead.next();
                continue;
            }
            if row < late.len() && late.value(row) {
                let t = times[row].unwrap_or(i64::MIN);
                letters.push(DeadLetter {
                    origin: *origin,
                    payload: raw.record(i).to_vec(),
                    kind: FailureKind::Late,
                    reason: format!(
                        "late: event time {} is before the watermark {} (allowed lateness {} ms)",
                        format_time_ms(t),
                        format_time_ms(s.watermark_ms),
                        s.lateness_ms
                    ),
                });
            }
            row += 1;
        }
        match filter_record_batch(&decoded.batch, &not(&late).expect("a boolean array")) {
            Ok(kept) => decoded.batch = kept,
            // Cannot happen for a boolean mask of the batch's length; keep the rows rather than
            // lose them.
            Err(_) => {
                return LateRows {
                    late: count,
                    dead_lettered: 0,
                };
            }
        }
        let dead_lettered = letters.len();
        decoded.dead.extend(letters);
        LateRows {
            late: count,
            dead_lettered,
        }
    }
}

impl StreamTime {
    fn recompute(&mut self, now_ms: i64) -> bool {
        let active = self
            .partitions
            .iter()
            .filter(|p| now_ms.saturating_sub(p.last_seen_ms) < self.idle_ms)
            .map(|p| p.max_event_ms)
            .min();
        let Some(progress) =
            active.or_else(|| self.partitions.iter().map(|p| p.max_event_ms).max())
        else {
            return false;
        };
        let candidate = progress.saturating_sub(self.lateness_ms);
        if candidate > self.watermark_ms {
            self.watermark_ms = candidate;
            true
        } else {
            false
        }
    }
}

/// Rows of a timestamp column older than `watermark_ms` (`None` if it is not a timestamp).
fn older_than(col: &ArrayRef, watermark_ms: i64) -> Option<BooleanArray> {
    use datafusion::arrow::array::PrimitiveArray;
    use datafusion::arrow::datatypes as t;
    let DataType::Timestamp(unit, tz) = col.data_type() else {
        return None;
    };
    let bound: ArrayRef = match unit {
        TimeUnit::Second => Arc::new(
            PrimitiveArray::<t::TimestampSecondType>::from(vec![
                watermark_ms.div_euclid(1000) + i64::from(watermark_ms.rem_euclid(1000) != 0),
            ])
            .with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Millisecond => Arc::new(
            PrimitiveArray::<t::TimestampMillisecondType>::from(vec![watermark_ms])
                .with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Microsecond => Arc::new(
            PrimitiveArray::<t::TimestampMicrosecondType>::from(vec![
                watermark_ms.saturating_mul(1000),
            ])
            .with_timezone_opt(tz.clone()),
        ),
        TimeUnit::Nanosecond => Arc::new(
            PrimitiveArray::<t::TimestampNanosecondType>::from(vec![
                watermark_ms.saturating_mul(1_000_000),
            ])
            .with_timezone_opt(tz.clone()),
        ),
    };
    lt(col, &Scalar::new(bound)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(policy: &str) -> Config {
        let text = format!(
            r#"
[kafka]
brokers = "b:9092"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"
[detectors]
rules = ["rules"]
[[streams]]
name = "s"
topics = ["t"]
format = "json"
event_time = "ts"
entity = ["host"]
[streams.schema]
ts = "timestamp"
host = "string"
[streams.watermark]
allowed_lateness_ms = 1000
idle_timeout_ms = 5000
late_events = "{policy}"
"#
        );
        Config::parse(&text, "t.toml", Path::new(".")).unwrap()
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = Watermarks::new(&config("dead_letter"));
        assert_eq!(w.watermark(0), i64::MIN);
        assert!(w.observe(0, 0, Some(10_000), 0));
        assert_eq!(w.watermark(0), 9_000);
        // Partition 1 is behind: the stream waits for it (the watermark never moves back).
        assert!(!w.observe(0, 1, Some(5_000), 100));
        assert_eq!(w.watermark(0), 9_000);
        assert!(!w.observe(0, 0, Some(20_000), 200));
        assert_eq!(w.watermark(0), 9_000, "partition 1 still holds it back");
        assert!(w.observe(0, 1, Some(15_000), 300));
        assert_eq!(w.watermark(0), 14_000);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let mut w = Watermarks::new(&config("dead_letter"));
        w.observe(0, 0, Some(10_000), 0);
        w.observe(0, 1, Some(10_000), 0);
        // Partition 1 goes quiet while partition 0 moves on.
        for t in 1..=4 {
            w.observe(0, 0, Some(10_000 + t * 1000), t * 1000);
            assert_eq!(w.watermark(0), 9_000, "at {t}s partition 1 is not idle yet");
        }
        // 5 s (the idle timeout) after partition 1's last batch, a tick releases it.
        assert!(w.refresh(0, 5_000));
        assert_eq!(w.watermark(0), 13_000);
        // Every partition idle: the most advanced one sets the watermark.
        assert!(!w.refresh(0, 60_000));
        assert_eq!(w.watermark(0), 13_000);
        // Partition 1 resumes behind: it does not pull the watermark back.
        w.observe(0, 1, Some(11_000), 61_000);
        assert_eq!(w.watermark(0), 13_000);
    }

    fn raw_and_decoded(lines: &[&str]) -> (RawBatch, Decoded) {
        let config = config("dead_letter");
        let mut raw = RawBatch::new(0);
        for (i, l) in lines.iter().enumerate() {
            raw.push(
                l.as_bytes(),
                crate::source::Origin {
                    source: 0,
                    partition: 0,
                    offset: i as i64,
                    timestamp_ms: 0,
                },
            );
        }
        let mut d =
            crate::decode::StreamDecoder::for_stream(&config.streams[0], &[], false, 16).unwrap();
        let decoded = d.decode(&raw);
        (raw, decoded)
    }

    #[test]
    fn late_rows_are_dead_lettered_with_their_bytes_or_kept_by_policy() {
        let lines = [
            r#"{"ts":"1970-01-01T00:00:20Z","host":"on-time"}"#,
            r#"not json"#,
            r#"{"ts":"1970-01-01T00:00:08Z","host":"late"}"#,
            r#"{"ts":"1970-01-01T00:00:09Z","host":"at-the-watermark"}"#,
        ];
        for (policy, kept) in [("dead_letter", 2), ("process", 3)] {
            let mut w = Watermarks::new(&config(policy));
            w.observe(0, 0, Some(10_000), 0); // watermark 9 s
            let (raw, mut decoded) = raw_and_decoded(&lines);
            assert_eq!(decoded.batch.num_rows(), 3);
            let late = w.split_late(0, &raw, &mut decoded, 0);
            assert_eq!(late.late, 1, "{policy}");
            assert_eq!(decoded.batch.num_rows(), kept, "{policy}");
            let letters: Vec<_> = decoded
                .dead
                .iter()
                .filter(|d| d.kind == FailureKind::Late)
                .collect();
            if policy == "dead_letter" {
                assert_eq!(late.dead_lettered, 1);
                assert_eq!(letters.len(), 1);
                assert_eq!(letters[0].payload, lines[2].as_bytes());
                assert_eq!(letters[0].origin.offset, 2);
                assert!(
                    letters[0]
                        .reason
                        .starts_with("late: event time 1970-01-01T00:00:08"),
                    "{}",
                    letters[0].reason
                );
            } else {
                assert!(letters.is_empty());
            }
        }
    }
}
