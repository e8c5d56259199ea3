//! Repartitioning: windowed rules that group by a key other than their stream's Kafka key.
//!
//! Detector state is kept per input partition (see [`crate::detect::StateEntry`]). That is
//! right only when every record of a group is in one partition, i.e. when the rule groups by
//! the field the producers key the stream by (`[[streams]] key`). A windowed SQL rule that
//! does not (a password spray grouped by source address over logins keyed by user) is bound
//! at load to a [`Route`]: the stream *re-keyed by* the rule's first group column. In a live
//! run, as Kafka Streams does, the records of every source batch are produced (payload
//! unchanged) to an internal topic keyed by that column, `<group>.repartition.<stream>.<column>`
//! with the source's partition count, in the same transaction as the batch's alerts (or, at
//! least once, acknowledged before the source offsets are committed); the consumer reads the
//! internal topic too, and its records are evaluated only by the rules bound to the route.
//! A replay (one partition) evaluates every rule on the source batches: same results.
//!
//! **Event time across the shuffle.** A repartition partition interleaves records of every
//! source partition, each read at its own speed. After each source batch that moves its
//! partition's progress (highest event time), a *watermark marker* (a record with no payload
//! and a [`MARK_HEADER`]) carrying the source partition and that progress is produced to every
//! partition of the internal topic, after the batch's records. The route's watermark is kept
//! by [`crate::watermark::Watermarks`] over *virtual partitions*, one per (repartition
//! partition, source partition) ([`virtual_partition`]), fed by markers only: the lowest
//! progress over them minus the allowed lateness, with idle ones released as for any
//! partition. A record is never ahead of the markers of its source partition that precede
//! it, so the route's watermark is never ahead of the source's when the record was read.
//! Markers are not rows: no decode or record metric counts them.

use std::collections::HashSet;

use crate::config::Config;
use crate::decode::Decoded;
use crate::source::RawBatch;

/// Header of a watermark marker: `<source partition>:<progress ms>`.
pub const MARK_HEADER: &str = "palisade.watermark";

/// A stream re-keyed by a column, fed through an internal topic (live runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The source stream (index in the config): its schema decodes the route's records.
    pub stream: usize,
    /// The column records are keyed by.
    pub column: String,
}

impl Route {
    /// The internal topic of this route for consumer group `group`.
    pub fn topic(&self, config: &Config, group: &str) -> String {
        format!(
            "{group}.repartition.{}.{}",
            config.streams[self.stream].name(),
            self.column
        )
    }

    /// `stream/column`, the metric label and log name.
    pub fn name(&self, config: &Config) -> String {
        format!("{}/{}", config.streams[self.stream].name(), self.column)
    }
}

/// The binding decision: the column a grouped stateful rule must be re-keyed by, or `None`
/// when its state can stay per input partition. `stream_key` is the field the stream's
/// records are keyed by (`None`: unknown); `group_by` the rule's group columns (those of its
/// stream, in order). A rule that groups by the stream's key (alone or with other columns)
/// sees every record of a group in one partition; one that groups by nothing keeps one
/// state per partition whatever happens. Otherwise the first group column is the new key.
pub fn rekey_column(stream_key: Option<&str>, group_by: &[String]) -> Option<String> {
    let first = group_by.first()?;
    match stream_key {
        Some(key) if group_by.iter().any(|c| c == key) => None,
        _ => Some(first.clone()),
    }
}

/// The repartition partition of a record whose key column holds `key` (its JSON text; empty
/// when absent or null): FNV-1a, stable across versions and instances.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// The watermark partition of source partition `source` as seen through repartition partition
/// `partition` (see the module docs).
pub fn virtual_partition(partition: i32, source: i32) -> i32 {
    (partition << 16) | (source & 0xffff)
}

/// A marker's header value.
pub fn encode_mark(source: i32, progress_ms: i64) -> String {
    format!("{source}:{progress_ms}")
}

/// A marker's (source partition, progress) from its header value.
pub fn decode_mark(value: &[u8]) -> Option<(i32, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (source, progress) = text.split_once(':')?;
    Some((source.parse().ok()?, progress.parse().ok()?))
}

/// One record to produce to an internal topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shuffled {
    /// Index into the run's routes.
    pub route: usize,
    /// Partition of the internal topic.
    pub partition: i32,
    /// The key column's value (JSON text).
    pub key: Vec<u8>,
    /// The source record's bytes, unchanged; empty for a marker.
    pub payload: Vec<u8>,
    /// A watermark marker: (source partition, progress ms).
    pub mark: Option<(i32, i64)>,
}

/// The records of `raw` that decoded and were not dead-lettered (late), keyed by `column` and
/// sent to their partition of `route`'s topic (`partitions` partitions).
pub fn shuffle(
    route: usize,
    column: &str,
    partitions: i32,
    raw: &RawBatch,
    decoded: &Decoded,
    out: &mut Vec<Shuffled>,
) {
    let dead: HashSet<(u32, i32, i64)> = decoded
        .dead
        .iter()
        .map(|d| (d.origin.source, d.origin.partition, d.origin.offset))
        .collect();
    for (i, o) in raw.origins.iter().enumerate() {
        if dead.contains(&(o.source, o.partition, o.offset)) {
            continue;
        }
        let payload = raw.record(i);
        let key = key_of(payload, column);
        out.push(Shuffled {
            route,
            partition: partition_of(&key, partitions),
            key,
            payload: payload.to_vec(),
            mark: None,
        });
    }
}

/// Markers of source partition `source` at `progress_ms`, one per partition of `route`.
pub fn marks(
    route: usize,
    partitions: i32,
    source: i32,
    progress_ms: i64,
    out: &mut Vec<Shuffled>,
) {
    for partition in 0..partitions {
        out.push(Shuffled {
            route,
            partition,
            key: Vec::new(),
            payload: Vec::new(),
            mark: Some((source, progress_ms)),
        });
    }
}

/// The JSON text of top-level field `column` of a record (empty when absent or null, or the
/// record is not an object: all of those go to one partition, as they form one group).
fn key_of(record: &[u8], column: &str) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Any<'a>(
        #[serde(borrow)] std::collections::HashMap<&'a str, &'a serde_json::value::RawValue>,
    );
    match serde_json::from_slice::<Any<'_>>(record) {
        Ok(Any(fields)) => match fields.get(column) {
            Some(v) if v.get() != "null" => v.get().as_bytes().to_vec(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Origin;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_rule_grouped_off_the_stream_key_is_rekeyed_by_its_first_group_column() {
        // The password spray: logins keyed by user, grouped by source address and target.
        assert_eq!(
            rekey_column(Some("user"), &cols(&["src_ip", "target"])),
            Some("src_ip".into())
        );
        // Grouped by the key (alone or among others): every group is in one partition.
        assert_eq!(rekey_column(Some("user"), &cols(&["user"])), None);
        assert_eq!(rekey_column(Some("user"), &cols(&["target", "user"])), None);
        // No group: one state per partition, whatever the key.
        assert_eq!(rekey_column(Some("user"), &[]), None);
        assert_eq!(rekey_column(None, &[]), None);
        // Key unknown: every grouped rule is re-keyed.
        assert_eq!(rekey_column(None, &cols(&["user"])), Some("user".into()));
    }

    #[test]
    fn records_are_keyed_by_their_column_and_dead_ones_stay_behind() {
        let mut raw = RawBatch::of_partition(0, 2);
        let lines = [
            r#"{"user":"a","src_ip":"10.0.0.1"}"#,
            r#"{"user":"b","src_ip":"10.0.0.2"}"#,
            r#"not json"#,
            r#"{"user":"c","src_ip":"10.0.0.1"}"#,
            r#"{"user":"d","src_ip":null}"#,
        ];
        for (i, l) in lines.iter().enumerate() {
            raw.push(
                l.as_bytes(),
                Origin {
                    source: 0,
                    partition: 2,
                    offset: i as i64,
                    timestamp_ms: 0,
                },
            );
        }
        let decoded = Decoded {
            batch: datafusion::arrow::array::RecordBatch::new_empty(std::sync::Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            )),
            dead: vec![crate::decode::DeadLetter {
                origin: raw.origins[2],
                payload: b"not json".to_vec(),
                kind: crate::decode::FailureKind::Malformed,
                reason: String::new(),
            }],
        };
        let mut out = Vec::new();
        shuffle(0, "src_ip", 3, &raw, &decoded, &mut out);
        let keys: Vec<&[u8]> = out.iter().map(|s| s.key.as_slice()).collect();
        assert_eq!(
            keys,
            vec![&b"\"10.0.0.1\""[..], b"\"10.0.0.2\"", b"\"10.0.0.1\"", b""]
        );
        assert_eq!(out[0].partition, out[2].partition, "one key, one partition");
        assert_eq!(out[0].payload, lines[0].as_bytes(), "payload unchanged");
        assert!(out.iter().all(|s| s.mark.is_none() && s.partition < 3));
        let mut m = Vec::new();
        marks(1, 3, 2, 5_000, &mut m);
        assert_eq!(m.len(), 3);
        assert!(
            m.iter()
                .all(|s| s.mark == Some((2, 5_000)) && s.payload.is_empty())
        );
        assert_eq!(decode_mark(encode_mark(2, -7).as_bytes()), Some((2, -7)));
    }

    /// The route's watermark is the lowest progress of any source partition, as seen through
    /// every repartition partition this instance reads, whatever the reading order.
    #[test]
    fn the_route_watermark_waits_for_the_slowest_source_partition() {
        let config = crate::config::Config::builtin();
        let auth = config.stream_index("auth").unwrap();
        let lateness = config.streams[auth].watermark.allowed_lateness_ms as i64;
        let mut w = crate::watermark::Watermarks::new(&config);
        let lane = w.add_lane(auth);
        let now = 0;
        // Repartition partition 0 has caught up with source partitions 0 and 1 to 1000 s;
        // source partition 2 has reached only 100 s there. (Partitions not heard from yet
        // are waited for by `hold_for_discovery` in a live run, as for any stream.)
        for (s, p) in [(2, 100_000), (0, 1_000_000), (1, 1_000_000)] {
            w.observe(lane, virtual_partition(0, s), Some(p), now);
        }
        assert_eq!(w.watermark(lane), 100_000 - lateness);
        // Through repartition partition 1 (read behind), source partition 0 is at 50 s.
        w.observe(lane, virtual_partition(1, 0), Some(50_000), now);
        assert_eq!(w.watermark(lane), 100_000 - lateness, "never moves back");
        w.observe(lane, virtual_partition(0, 2), Some(2_000_000), now);
        assert_eq!(
            w.watermark(lane),
            100_000 - lateness,
            "partition 1 still holds it"
        );
        for s in [1, 2] {
            w.observe(lane, virtual_partition(1, s), Some(3_000_000), now);
        }
        w.observe(lane, virtual_partition(1, 0), Some(900_000), now);
        assert_eq!(w.watermark(lane), 900_000 - lateness);
        // The source stream's own watermark is untouched.
        assert_eq!(w.watermark(auth), i64::MIN);
        // A source partition that goes quiet is released after the idle timeout.
        let idle = config.streams[auth].watermark.idle_timeout_ms as i64;
        for (q, s) in [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)] {
            w.observe(lane, virtual_partition(q, s), Some(3_000_000), idle - 1);
        }
        assert_eq!(w.watermark(lane), 900_000 - lateness, "not idle yet");
        assert!(w.refresh(lane, idle));
        assert_eq!(w.watermark(lane), 3_000_000 - lateness);
    }
}
