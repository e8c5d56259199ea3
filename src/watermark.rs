//! Event time: per-partition progress, the stream watermark, idle partitions and late events.
//!
//! In: for each decoded batch, its stream, partition, event times and the processing time it
//! arrived at. Out: the stream's watermark (the event time before which no more events are
//! expected), and the batch's late rows split off by the stream's [`LatePolicy`].
//!
//! A partition's watermark is the highest event time seen on it minus the stream's
//! `allowed_lateness_ms`. The stream's watermark is the lowest over its *active* partitions:
//! one that has sent nothing for `idle_timeout_ms` of processing time stops holding it back
//! (when every partition is idle, the most advanced one sets it) — unless its source still
//! holds records of it ([`Watermarks::set_backlog`]): a partition behind a backlog is slow,
//! not idle, and releasing it would make its events late. Under backpressure a consumer
//! catching up reads one partition's data for long stretches while another's waits in its
//! fetch queue; only silence with nothing pending is idleness. It never moves back: a
//! partition that resumes behind it sends late events. Partitions that never sent anything
//! are not known and do not hold it back — except at the start of a live run
//! ([`Watermarks::hold_for_discovery`]): a consumer catching up on a backlog hears from its
//! partitions one fetch at a time, and the first partition's newest event must not make the
//! whole backlog of the others late. So for `idle_timeout_ms` after a stream's first batch
//! its watermark stays where it is, as if every partition not yet heard from were one that
//! has not gone idle yet. Pure: processing time is passed in, so tests drive it without
//! sleeping.

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;

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
    /// Whether it held the watermark back at the last evaluation (not idle).
    active: bool,
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
    /// Until this processing time the watermark does not move (partitions not yet heard
    /// from may still be catching up); set by the stream's first batch in a live run.
    held_until_ms: Option<i64>,
    /// The latest processing time seen by a batch or tick.
    last_now_ms: i64,
    /// Partitions whose source holds records not delivered yet (sorted): never idle, and,
    /// when not heard from yet, waited for like partitions in the discovery hold.
    backlogged: Vec<i32>,
}

/// The watermark of every stream of a configuration.
#[derive(Debug, Clone)]
pub struct Watermarks {
    streams: Vec<StreamTime>,
    /// Whether a stream's first batch starts a hold (see [`Watermarks::hold_for_discovery`]).
    discovery: bool,
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
                held_until_ms: None,
                last_now_ms: i64::MIN,
                backlogged: Vec::new(),
            })
            .collect();
        Watermarks {
            streams,
            discovery: false,
        }
    }

    /// Adds a lane with the settings of stream `like` (a [`crate::repartition::Route`] of it)
    /// and returns its index, after the streams and the lanes added before.
    pub fn add_lane(&mut self, like: usize) -> usize {
        let mut lane = self.streams[like].clone();
        lane.partitions.clear();
        lane.watermark_ms = i64::MIN;
        lane.held_until_ms = None;
        lane.last_now_ms = i64::MIN;
        lane.backlogged.clear();
        self.streams.push(lane);
        self.streams.len() - 1
    }

    /// The highest event time seen on `partition` of `stream`.
    pub fn progress(&self, stream: usize, partition: i32) -> Option<i64> {
        self.streams[stream]
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.max_event_ms)
    }

    /// Makes every stream hold its watermark for `idle_timeout_ms` of processing time after
    /// its first batch, so that partitions which have not delivered yet (a consumer group
    /// catching up on a backlog) are waited for like partitions that have not gone idle.
    /// For live runs; a replay knows its inputs and needs no such wait.
    pub fn hold_for_discovery(mut self) -> Watermarks {
        self.discovery = true;
        self
    }

    /// Each partition of `stream` heard from, with the highest event time seen on it.
    pub fn partitions(&self, stream: usize) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.streams[stream]
            .partitions
            .iter()
            .map(|p| (p.partition, p.max_event_ms))
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
        let discovery = self.discovery;
        let s = &mut self.streams[stream];
        if discovery && s.held_until_ms.is_none() && max_event_ms.is_some() {
            s.held_until_ms = Some(now_ms.saturating_add(s.idle_ms));
        }
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
                    active: true,
                });
            }
        }
        s.recompute(now_ms)
    }

    /// Tells which partitions of `stream` its source holds undelivered records of (the live
    /// Kafka source's fetch queues and unfetched ranges; see [`crate::source::Backlog`]).
    /// They are not idle however long they have been silent, and those not heard from yet
    /// hold the watermark back as if in the discovery hold. Takes effect at the next batch
    /// or [`Watermarks::refresh`].
    pub fn set_backlog(&mut self, stream: usize, partitions: &[i32]) {
        let s = &mut self.streams[stream];
        s.backlogged.clear();
        s.backlogged.extend_from_slice(partitions);
        s.backlogged.sort_unstable();
        s.backlogged.dedup();
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
    /// time, in column `time_col`, is older than the stream's watermark when the row arrives.
    /// The watermark moves within the batch as it would record by record (the batch's
    /// partition progresses row by row; the others stand still), so which rows are late does
    /// not depend on where batches were cut. With the `dead_letter` policy late rows leave
    /// the batch and become dead letters (reason `late`); with `process` they stay. Call
    /// before [`Watermarks::observe`] for the same batch.
    pub fn split_late(
        &self,
        stream: usize,
        raw: &RawBatch,
        decoded: &mut Decoded,
        time_col: usize,
    ) -> LateRows {
        let s = &self.streams[stream];
        if decoded.batch.num_rows() == 0 || s.holding() {
            return LateRows::default();
        }
        let times = crate::detect::timestamp_millis(decoded.batch.column(time_col).as_ref());
        let mut running = s
            .partitions
            .iter()
            .find(|p| p.partition == raw.partition)
            .map_or(i64::MIN, |p| p.max_event_ms);
        let others = s
            .partitions
            .iter()
            .filter(|p| p.partition != raw.partition && p.active)
            .map(|p| p.max_event_ms)
            .min()
            .unwrap_or(i64::MAX);
        let mut watermark = s.watermark_ms;
        // The watermark each late row was behind, for its dead letter's reason.
        let mut behind = Vec::new();
        let late: BooleanArray = times
            .iter()
            .map(|t| {
                let t = (*t)?;
                let late = t < watermark;
                if late {
                    behind.push(watermark);
                }
                running = running.max(t);
                watermark = watermark.max(running.min(others).saturating_sub(s.lateness_ms));
                Some(late)
            })
            .collect();
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
        for (i, origin) in raw.origins.iter().enumerate() {
            if dead.peek() == Some(origin) {
                dead.next();
                continue;
            }
            if row < late.len() && late.is_valid(row) && late.value(row) {
                let t = times[row].unwrap_or(i64::MIN);
                let w = behind.get(letters.len()).copied().unwrap_or(s.watermark_ms);
                letters.push(DeadLetter {
                    origin: *origin,
                    payload: raw.record(i).to_vec(),
                    kind: FailureKind::Late,
                    reason: format!(
                        "late: event time {} is before the stream's watermark {} (allowed \
                         lateness {} ms)",
                        format_time_ms(t),
                        format_time_ms(w),
                        s.lateness_ms
                    ),
                });
            }
            row += 1;
        }
        let keep: BooleanArray = late.iter().map(|l| Some(l != Some(true))).collect();
        match filter_record_batch(&decoded.batch, &keep) {
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
    /// Whether the watermark is still held for partitions not yet heard from, as of the
    /// last batch or tick (`last_now_ms`).
    fn holding(&self) -> bool {
        self.held_until_ms
            .is_some_and(|until| self.last_now_ms < until)
            || self
                .backlogged
                .iter()
                .any(|b| !self.partitions.iter().any(|p| p.partition == *b))
    }

    /// Whether `p` holds the watermark back at processing time `now_ms`.
    fn is_active(&self, p: &PartitionTime, now_ms: i64) -> bool {
        now_ms.saturating_sub(p.last_seen_ms) < self.idle_ms
            || self.backlogged.binary_search(&p.partition).is_ok()
    }

    fn recompute(&mut self, now_ms: i64) -> bool {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        if self.holding() {
            return false;
        }
        for i in 0..self.partitions.len() {
            self.partitions[i].active = self.is_active(&self.partitions[i], now_ms);
        }
        let active = self
            .partitions
            .iter()
            .filter(|p| p.active)
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

    #[test]
    fn a_partition_behind_a_backlog_is_slow_not_idle() {
        let mut w = Watermarks::new(&config("dead_letter"));
        w.observe(0, 0, Some(10_000), 0);
        w.observe(0, 1, Some(10_000), 0);
        // Partition 1's records wait in the source (behind partition 0's, say) while
        // partition 0 moves on: past the idle timeout, partition 1 still holds.
        w.set_backlog(0, &[1]);
        for t in 1..=20 {
            w.observe(0, 0, Some(10_000 + t * 1000), t * 1000);
        }
        assert!(!w.refresh(0, 60_000));
        assert_eq!(w.watermark(0), 9_000, "partition 1 is behind a backlog");
        // Its records arrive: on time, not late.
        let (raw, mut decoded) = raw_and_decoded(&[r#"{"ts":"1970-01-01T00:00:11Z","host":"p1"}"#]);
        let raw = RawBatch {
            partition: 1,
            ..raw
        };
        assert_eq!(w.split_late(0, &raw, &mut decoded, 0), LateRows::default());
        w.observe(0, 1, Some(11_000), 61_000);
        assert_eq!(w.watermark(0), 10_000);
        // Caught up and silent for the idle timeout: now it is idle.
        w.set_backlog(0, &[]);
        assert!(!w.refresh(0, 65_000), "silent for 4 s only");
        assert!(w.refresh(0, 66_000));
        assert_eq!(w.watermark(0), 29_000);
    }

    #[test]
    fn a_partition_not_heard_from_holds_while_its_source_has_records_of_it() {
        let mut w = Watermarks::new(&config("dead_letter")).hold_for_discovery();
        w.set_backlog(0, &[1]);
        w.observe(0, 0, Some(60_000), 0);
        // Far past the discovery hold (5 s): partition 1 has records on the way.
        assert!(!w.refresh(0, 30_000));
        assert_eq!(w.watermark(0), i64::MIN);
        w.observe(0, 1, Some(20_000), 31_000);
        assert_eq!(w.watermark(0), 19_000, "the slowest partition sets it");
        // Without a backlog the hold ends with the idle timeout, as before.
        let mut plain = Watermarks::new(&config("dead_letter")).hold_for_discovery();
        plain.observe(0, 0, Some(60_000), 0);
        assert!(plain.refresh(0, 30_000));
        assert_eq!(plain.watermark(0), 59_000);
    }

    #[test]
    fn a_live_backlog_waits_for_partitions_not_yet_heard_from() {
        // Without the hold, partition 0's backlog (up to 60 s) would set the watermark, and
        // partition 1's backlog, fetched a moment later, would all be late.
        let mut plain = Watermarks::new(&config("dead_letter"));
        plain.observe(0, 0, Some(60_000), 0);
        assert_eq!(plain.watermark(0), 59_000);

        let mut w = Watermarks::new(&config("dead_letter")).hold_for_discovery();
        assert!(!w.observe(0, 0, Some(60_000), 0));
        assert_eq!(w.watermark(0), i64::MIN, "held: partition 1 may still come");
        let (raw, mut decoded) = raw_and_decoded(&[
            r#"{"ts":"1970-01-01T00:00:05Z","host":"p1-old"}"#,
            r#"{"ts":"1970-01-01T00:00:01Z","host":"p1-older"}"#,
        ]);
        assert_eq!(w.split_late(0, &raw, &mut decoded, 0), LateRows::default());
        assert_eq!(decoded.batch.num_rows(), 2);
        assert!(!w.observe(0, 1, Some(30_000), 1_000));
        // The hold lasts the idle timeout (5 s) from the stream's first batch; then the
        // slowest partition heard from sets the watermark as usual.
        assert!(!w.refresh(0, 4_999));
        assert_eq!(w.watermark(0), i64::MIN);
        assert!(w.refresh(0, 5_000));
        assert_eq!(w.watermark(0), 29_000);
        // After the hold, rows behind the watermark are late again.
        let (raw, mut decoded) =
            raw_and_decoded(&[r#"{"ts":"1970-01-01T00:00:05Z","host":"late"}"#]);
        assert_eq!(w.split_late(0, &raw, &mut decoded, 0).late, 1);
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
        // The watermark is 9 s before the batch, and 19 s after its fourth row.
        let lines = [
            r#"{"ts":"1970-01-01T00:00:08Z","host":"late"}"#,
            r#"not json"#,
            r#"{"ts":"1970-01-01T00:00:09Z","host":"at-the-watermark"}"#,
            r#"{"ts":"1970-01-01T00:00:20Z","host":"on-time"}"#,
            r#"{"ts":"1970-01-01T00:00:18Z","host":"late-within-the-batch"}"#,
        ];
        for (policy, kept) in [("dead_letter", 2), ("process", 4)] {
            let mut w = Watermarks::new(&config(policy));
            w.observe(0, 0, Some(10_000), 0); // watermark 9 s
            let (raw, mut decoded) = raw_and_decoded(&lines);
            assert_eq!(decoded.batch.num_rows(), 4);
            let late = w.split_late(0, &raw, &mut decoded, 0);
            assert_eq!(late.late, 2, "{policy}");
            assert_eq!(decoded.batch.num_rows(), kept, "{policy}");
            let letters: Vec<_> = decoded
                .dead
                .iter()
                .filter(|d| d.kind == FailureKind::Late)
                .collect();
            if policy == "dead_letter" {
                assert_eq!(late.dead_lettered, 2);
                assert_eq!(letters.len(), 2);
                assert_eq!(letters[0].payload, lines[0].as_bytes());
                assert_eq!(letters[0].origin.offset, 0);
                assert_eq!(letters[1].payload, lines[4].as_bytes());
                assert_eq!(letters[1].origin.offset, 4);
                assert_eq!(
                    letters[1].reason,
                    "late: event time 1970-01-01T00:00:18.000Z is before the stream's watermark \
                     1970-01-01T00:00:19.000Z (allowed lateness 1000 ms)"
                );
            } else {
                assert!(letters.is_empty());
            }
        }
    }
}
