//! Sources: where records come from, cut into per-stream micro-batches of raw bytes.
//!
//! - [`kafka`]: a consumer-group member over every configured topic (live); [`group`]
//!   checks that its assignment fits the group and rejoins when a coordinator failed to
//!   rebalance.
//! - [`files`]: JSONL and CSV files merged in event-time order (replay, backtests).
//! - [`embedded`]: an in-process Kafka cluster fed by the simulator (`palisade run`).
//!
//! Every source produces [`RawBatch`]es: the bytes of up to `batch_rows` records of one stream,
//! copied into one buffer (no allocation per record), with each record's [`Origin`] and the
//! highest offset per partition the batch covers, which is what may be committed once the
//! batch's outputs are acknowledged.

pub mod embedded;
pub mod files;
pub mod group;
pub mod kafka;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The partitions a source holds records of that it has not delivered yet: fetched and
/// queued, or not yet fetched below the partition's end. Such a partition is slow, not idle
/// (see [`crate::watermark`]). The live Kafka source publishes it from librdkafka's
/// statistics (every `statistics.interval.ms`); the compute stage reads it when it changes.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Bumped at every change of `pending`.
    generation: AtomicU64,
    /// (topic, partition), sorted.
    pending: Mutex<Vec<(String, i32)>>,
    /// Per partition: the consumer's next offset at the last reading, and since when.
    progress: Mutex<std::collections::HashMap<(String, i32), (i64, Instant)>>,
}

/// What the statistics say of one assigned partition.
#[derive(Debug, Clone)]
pub struct PartitionReading {
    pub topic: String,
    pub partition: i32,
    /// The consumer is fetching it.
    pub fetching: bool,
    /// Records fetched and not yet handed over.
    pub queued: i64,
    /// The next offset the consumer will hand over (negative: unknown).
    pub next_offset: i64,
    /// The readable end: the last stable offset (committed reads), else the high watermark.
    pub end: i64,
}

/// How long a partition may sit below its readable end without the consumer's position
/// moving, with nothing queued, before it counts as idle rather than slow: a broker can
/// report an end that no fetch reaches (seen with tansu 0.6), which would otherwise hold
/// the stream's watermark for good.
pub const BACKLOG_STALL: std::time::Duration = std::time::Duration::from_secs(15);

impl Backlog {
    /// Publishes the partitions with undelivered records from one reading of the
    /// statistics at `now`: records queued, or a position below the end that has moved
    /// within [`BACKLOG_STALL`].
    pub fn observe(&self, readings: &[PartitionReading], now: Instant) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let mut pending = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in readings {
            let key = (r.topic.clone(), r.partition);
            let since = match progress.get(&key) {
                Some(&(next, since)) if next == r.next_offset => since,
                _ => now,
            };
            progress.insert(key.clone(), (r.next_offset, since));
            seen.insert(key.clone());
            let below_end = r.next_offset >= 0 && r.end > r.next_offset;
            let moving = now.saturating_duration_since(since) < BACKLOG_STALL;
            if r.fetching && (r.queued > 0 || (below_end && moving)) {
                pending.push(key);
            }
        }
        progress.retain(|k, _| seen.contains(k));
        drop(progress);
        self.publish(pending);
    }

    /// Replaces the set of partitions with undelivered records.
    pub fn publish(&self, mut pending: Vec<(String, i32)>) {
        pending.sort_unstable();
        let mut current = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if *current != pending {
            *current = pending;
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes so far: read it before [`Backlog::pending`] to notice the next one.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The partitions with undelivered records, as (topic, partition), sorted.
    pub fn pending(&self) -> Vec<(String, i32)> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where one record came from: a Kafka position, or a file and line in replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index into the pipeline's source names (topics, or files in replay).
    pub source: u32,
    /// Kafka partition (0 for files).
    pub partition: i32,
    /// Kafka offset, or 1-based line number in replay.
    pub offset: i64,
    /// Kafka timestamp in ms since the epoch (0 when absent).
    pub timestamp_ms: i64,
}

/// The highest offset of one partition covered by a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Index into the pipeline's source names.
    pub source: u32,
    /// Kafka partition.
    pub partition: i32,
    /// Highest offset in the batch; the offset to commit is this + 1.
    pub offset: i64,
}

/// Records of one stream and one partition number, cut from a source. The unit that flows
/// through the pipeline.
///
/// A batch never mixes partition numbers (it may mix topics of its stream, whose partitions
/// of the same number are processed together, as Kafka Streams' co-partitioned tasks are): a
/// detector's state then belongs to one partition, and moves with it when a rebalance gives
/// the partition to another instance.
#[derive(Debug)]
pub struct RawBatch {
    /// Index of the stream in the config.
    pub stream: usize,
    /// For records read back from a route's internal topic, the route (index into the run's
    /// [`crate::repartition::Route`]s); `None` for records of the stream's own topics.
    pub route: Option<usize>,
    /// Watermark markers read among the records (route batches only): source partition and
    /// its progress, ms. Not records.
    pub marks: Vec<(i32, i64)>,
    /// The partition number of every record (0 for files).
    pub partition: i32,
    /// Record bytes, each followed by `\n`.
    pub buf: Vec<u8>,
    /// End (exclusive, before its `\n`) of each record in `buf`.
    pub ends: Vec<usize>,
    /// Origin of each record.
    pub origins: Vec<Origin>,
    /// Highest offset per partition.
    pub positions: Vec<Position>,
    /// When the first record of the batch arrived (drives the linger timer).
    pub opened: Option<Instant>,
}

impl RawBatch {
    /// An empty batch of `stream`, partition 0.
    pub fn new(stream: usize) -> RawBatch {
        RawBatch::of_partition(stream, 0)
    }

    /// An empty batch of `stream` and `partition`.
    pub fn of_partition(stream: usize, partition: i32) -> RawBatch {
        RawBatch {
            stream,
            route: None,
            marks: Vec::new(),
            partition,
            buf: Vec::new(),
            ends: Vec::new(),
            origins: Vec::new(),
            positions: Vec::new(),
            opened: None,
        }
    }

    /// Appends one record (of this batch's partition).
    pub fn push(&mut self, payload: &[u8], origin: Origin) {
        debug_assert_eq!(
            origin.partition, self.partition,
            "a batch holds one partition"
        );
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.buf.extend_from_slice(payload);
        self.ends.push(self.buf.len());
        self.buf.push(b'\n');
        self.origins.push(origin);
        self.advance(origin);
    }

    /// Appends a watermark marker (of this batch's partition): source partition `source`
    /// reached event time `progress_ms`. Its offset is covered, it is not a record.
    pub fn push_mark(&mut self, source: i32, progress_ms: i64, origin: Origin) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.marks.push((source, progress_ms));
        self.advance(origin);
    }

    /// Covers `origin` in the batch's positions.
    fn advance(&mut self, origin: Origin) {
        match self
            .positions
            .iter_mut()
            .find(|p| p.source == origin.source && p.partition == origin.partition)
        {
            Some(p) => p.offset = p.offset.max(origin.offset),
            None => self.positions.push(Position {
                source: origin.source,
                partition: origin.partition,
                offset: origin.offset,
            }),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if the batch holds no record (it may hold markers).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// True if the batch holds neither records nor markers.
    pub fn is_blank(&self) -> bool {
        self.ends.is_empty() && self.marks.is_empty()
    }

    /// Bytes of record `i` (without the separator).
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        &self.buf[start..self.ends[i]]
    }

    /// Payload bytes (without separators).
    pub fn payload_bytes(&self) -> usize {
        self.buf.len() - self.ends.len()
    }

    /// Oldest Kafka timestamp among the records, if any record has one.
    pub fn oldest_timestamp_ms(&self) -> Option<i64> {
        self.origins
            .iter()
            .map(|o| o.timestamp_ms)
            .filter(|&t| t > 0)
            .min()
    }

    /// Moves the contents out, leaving an empty batch of the same stream that keeps its
    /// buffers' capacity for reuse.
    pub fn take(&mut self) -> RawBatch {
        let next = RawBatch {
            stream: self.stream,
            route: self.route,
            marks: Vec::new(),
            partition: self.partition,
            buf: Vec::with_capacity(self.buf.capacity()),
            ends: Vec::with_capacity(self.ends.capacity()),
            origins: Vec::with_capacity(self.origins.capacity()),
            positions: Vec::new(),
            opened: None,
        };
        std::mem::replace(self, next)
    }
}

/// Open batches, one per lane (a stream, or a route of one) and partition number, cut at a
/// row count or after a linger.
pub struct Batcher {
    /// Per lane, the open batch of each partition number seen (few: a linear search).
    open: Vec<Vec<RawBatch>>,
    /// Lanes after the streams: the stream of each route.
    route_streams: Vec<usize>,
    max_rows: usize,
    linger: std::time::Duration,
}

impl Batcher {
    /// No open batch yet; `streams` streams.
    pub fn new(streams: usize, max_rows: usize, linger: std::time::Duration) -> Batcher {
        Batcher::with_routes(streams, Vec::new(), max_rows, linger)
    }

    /// No open batch yet; `streams` streams, then one lane per route (its stream's index).
    pub fn with_routes(
        streams: usize,
        route_streams: Vec<usize>,
        max_rows: usize,
        linger: std::time::Duration,
    ) -> Batcher {
        Batcher {
            open: (0..streams + route_streams.len())
                .map(|_| Vec::new())
                .collect(),
            route_streams,
            max_rows,
            linger,
        }
    }

    /// The open batch of `lane` and `partition`.
    fn open(&mut self, lane: usize, partition: i32) -> &mut RawBatch {
        let streams = self.open.len() - self.route_streams.len();
        let (stream, route) = match lane.checked_sub(streams) {
            Some(r) => (self.route_streams[r], Some(r)),
            None => (lane, None),
        };
        let open = &mut self.open[lane];
        let i = match open.iter().position(|b| b.partition == partition) {
            Some(i) => i,
            None => {
                let mut b = RawBatch::of_partition(stream, partition);
                b.route = route;
                open.push(b);
                open.len() - 1
            }
        };
        &mut open[i]
    }

    /// Adds a record to its stream's batch of its partition; returns that batch if it is now
    /// full.
    pub fn push(&mut self, stream: usize, payload: &[u8], origin: Origin) -> Option<RawBatch> {
        self.push_lane(stream, payload, origin)
    }

    /// Adds a record to a lane's batch of its partition: `lane` is a stream index, or the
    /// number of streams plus a route index. Returns that batch if it is now full.
    pub fn push_lane(&mut self, lane: usize, payload: &[u8], origin: Origin) -> Option<RawBatch> {
        let max_rows = self.max_rows;
        let batch = self.open(lane, origin.partition);
        batch.push(payload, origin);
        (batch.len() >= max_rows).then(|| batch.take())
    }

    /// Adds a watermark marker to a route lane's batch of its partition (see
    /// [`RawBatch::push_mark`]).
    pub fn push_mark(&mut self, lane: usize, source: i32, progress_ms: i64, origin: Origin) {
        self.open(lane, origin.partition)
            .push_mark(source, progress_ms, origin);
    }

    fn batches(&mut self) -> impl Iterator<Item = &mut RawBatch> {
        self.open.iter_mut().flatten()
    }

    /// The earliest instant at which an open batch must be cut.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .flatten()
            .filter_map(|b| b.opened)
            .min()
            .map(|t| t + self.linger)
    }

    /// Batches whose linger has expired at `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<RawBatch> {
        let linger = self.linger;
        self.batches()
            .filter(|b| b.opened.is_some_and(|t| t + linger <= now))
            .map(RawBatch::take)
            .collect()
    }

    /// Every non-empty batch, for shutdown or end of input.
    pub fn drain(&mut self) -> Vec<RawBatch> {
        self.batches()
            .filter(|b| !b.is_blank())
            .map(RawBatch::take)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn origin(partition: i32, offset: i64) -> Origin {
        Origin {
            source: partition as u32,
            partition: 0,
            offset,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn records_and_positions_round_trip() {
        let mut b = RawBatch::new(3);
        b.push(b"{\"a\":1}", origin(0, 10));
        b.push(b"", origin(1, 4));
        b.push(b"xyz", origin(0, 11));
        assert_eq!(b.len(), 3);
        assert_eq!(b.record(0), b"{\"a\":1}");
        assert_eq!(b.record(1), b"");
        assert_eq!(b.record(2), b"xyz");
        assert_eq!(b.payload_bytes(), 10);
        assert_eq!(
            b.positions,
            vec![
                Position {
                    source: 0,
                    partition: 0,
                    offset: 11
                },
                Position {
                    source: 1,
                    partition: 0,
                    offset: 4
                }
            ]
        );
    }

    #[test]
    fn batcher_cuts_at_rows_and_linger() {
        let mut batcher = Batcher::new(2, 2, Duration::from_millis(50));
        assert!(batcher.push(0, b"a", origin(0, 0)).is_none());
        let full = batcher.push(0, b"b", origin(0, 1)).expect("full at 2 rows");
        assert_eq!(full.len(), 2);
        assert!(batcher.next_deadline().is_none());
        batcher.push(1, b"c", origin(0, 2));
        let deadline = batcher.next_deadline().unwrap();
        assert!(
            batcher
                .expired(deadline - Duration::from_millis(1))
                .is_empty()
        );
        let cut = batcher.expired(deadline);
        assert_eq!((cut.len(), cut[0].stream, cut[0].len()), (1, 1, 1));
        assert!(batcher.drain().is_empty());
    }

    #[test]
    fn batcher_keeps_partitions_apart() {
        let mut batcher = Batcher::new(1, 2, Duration::from_secs(60));
        let at = |partition, offset| Origin {
            source: 0,
            partition,
            offset,
            timestamp_ms: 0,
        };
        assert!(batcher.push(0, b"a", at(0, 0)).is_none());
        assert!(batcher.push(0, b"b", at(3, 0)).is_none());
        let full = batcher
            .push(0, b"c", at(3, 1))
            .expect("partition 3 full at 2 rows");
        assert_eq!((full.partition, full.len()), (3, 2));
        assert!(full.positions.iter().all(|p| p.partition == 3));
        let rest = batcher.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].partition, rest[0].record(0)), (0, &b"a"[..]));
    }

    fn reading(partition: i32, queued: i64, next_offset: i64, end: i64) -> PartitionReading {
        PartitionReading {
            topic: "t".into(),
            partition,
            fetching: true,
            queued,
            next_offset,
            end,
        }
    }

    #[test]
    fn a_partition_below_its_end_is_backlogged_while_its_position_moves() {
        let b = Backlog::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        // Partition 0 is read steadily; partition 1 sits below an end no fetch reaches.
        b.observe(&[reading(0, 0, 10, 100), reading(1, 0, 50, 51)], at(0));
        assert_eq!(b.pending(), vec![("t".into(), 0), ("t".into(), 1)]);
        b.observe(&[reading(0, 0, 40, 100), reading(1, 0, 50, 51)], at(10));
        assert_eq!(b.pending(), vec![("t".into(), 0), ("t".into(), 1)]);
        // Stalled past BACKLOG_STALL with nothing queued: idle, not slow.
        b.observe(&[reading(0, 0, 70, 100), reading(1, 0, 50, 51)], at(20));
        assert_eq!(b.pending(), vec![("t".into(), 0)]);
        // Records queued always count (a consumer held back by the pipeline), and a
        // position that moves again is a backlog again.
        b.observe(&[reading(0, 5, 70, 100), reading(1, 0, 51, 60)], at(40));
        assert_eq!(b.pending(), vec![("t".into(), 0), ("t".into(), 1)]);
        // At its end: nothing pending.
        b.observe(&[reading(0, 0, 100, 100), reading(1, 0, 60, 60)], at(45));
        assert!(b.pending().is_empty());
    }
}
