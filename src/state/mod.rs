//! Durable detector state in Kafka itself: a compacted changelog topic, checkpoints written
//! consistently with the input offsets, and the restore that precedes processing.
//!
//! **The changelog.** One topic (`[state] changelog_topic`, default `<group>.state`,
//! `cleanup.policy=compact`) with one partition per input partition number: state built from
//! records of input partition `p` (of any input topic) lives in changelog partition `p`,
//! keyed by detector and state key ([`crate::detect::DetectorSet::checkpoint`]); a tombstone
//! (null value) deletes a key. After the entries of a checkpoint, each changelog partition it
//! touched gets an *offset marker* per input topic (key [`OFFSETS_KEY`] + topic, value: the
//! next offset to read): the input position that state covers.
//!
//! **A checkpoint** ([`KafkaStateStore`]) writes the entries changed since the previous one,
//! then the markers, and commits the consumer group's offsets to the same positions:
//! - *exactly once* (the broker supports transactions): alerts, dead letters, changelog
//!   entries, markers and the group offsets (`send_offsets_to_transaction`) are one
//!   transaction, committed at each checkpoint; consumers reading with `read_committed` see
//!   a checkpoint's alerts exactly once, or not at all if it aborts (then its input is
//!   processed again from the previous checkpoint).
//! - *at least once* (no transactions, e.g. tansu 0.6 answers `EndTxn` as unsupported):
//!   entries are acknowledged before the markers are written, and markers before the group
//!   offsets are committed. A crash between two checkpoints processes the records after the
//!   last marker again and produces the same alerts again, with the same deterministic ids.
//!
//! **Restore** ([`read_changelog`]): the changelog partitions of the partition numbers an
//! instance owns are read to their end (`read_committed` in exactly-once mode, so aborted
//! checkpoints are skipped; `read_uncommitted` at least once, where nothing is written in a
//! transaction and a transaction the broker cannot end — the failed probe's — must not pin
//! the readable end of a partition: tansu 0.6 keeps its last stable offset there for ever);
//! entries count only when an offset marker follows them (a checkpoint cut short by a crash
//! is ignored), and the instance seeks every input partition to the offset of its last
//! marker: state and position come from the same checkpoint, whatever the group offsets say.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, join_all};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::detect::StateEntry;
use crate::metrics::Metrics;
use crate::pipeline::{SinkError, StateStore};
use crate::source::Position;
use crate::source::kafka::{PalisadeConsumer, client_config};

/// Key prefix of offset markers (no detector key starts with a zero byte then `p`: those
/// start with the detector name's length).
pub const OFFSETS_KEY: &[u8] = b"\0palisade.offsets\0";

/// How long a transaction call (send the offsets, commit, begin the next) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long past [`TXN_CALL_TIMEOUT`] a transaction call may go on before its producer is
/// declared wedged.
const TXN_WEDGE_GRACE: Duration = Duration::from_secs(15);

/// The producer of a live run's alerts, dead letters, changelog entries and offsets, shared
/// by the Kafka sink and the state store, and replaced when it wedges: librdkafka's
/// `send_offsets_to_transaction` can block past its timeout for good when the group
/// coordinator went away and came back (confluentinc/librdkafka#5456, #5511; seen here when
/// every broker of the mock cluster went down mid-transaction). A wedged producer cannot be
/// unblocked; a new one with the same `transactional.id` fences it and takes over.
#[derive(Clone)]
pub struct SharedProducer {
    inner: Arc<(RwLock<FutureProducer>, AtomicBool)>,
}

impl SharedProducer {
    pub fn new(producer: FutureProducer) -> SharedProducer {
        SharedProducer {
            inner: Arc::new((RwLock::new(producer), AtomicBool::new(false))),
        }
    }

    /// The current producer (a handle: cheap to clone).
    pub fn get(&self) -> FutureProducer {
        self.inner.0.read().expect("producer lock").clone()
    }

    /// Puts `producer` in place of a wedged one.
    pub fn replace(&self, producer: FutureProducer) {
        *self.inner.0.write().expect("producer lock") = producer;
        self.inner.1.store(false, Ordering::SeqCst);
    }

    /// Whether a transaction call of the current producer never returned.
    pub fn is_wedged(&self) -> bool {
        self.inner.1.load(Ordering::SeqCst)
    }

    fn mark_wedged(&self) {
        self.inner.1.store(true, Ordering::SeqCst);
    }
}

/// How alerts are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Kafka transactions: a checkpoint's outputs, state and offsets commit together.
    ExactlyOnce,
    /// No transactions: outputs before state before offsets; a crash repeats alerts with
    /// the same ids.
    AtLeastOnce,
}

impl DeliveryMode {
    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::ExactlyOnce => "exactly_once",
            DeliveryMode::AtLeastOnce => "at_least_once",
        }
    }
}

fn marker_key(topic: &str) -> Vec<u8> {
    let mut k = OFFSETS_KEY.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

/// The producer for alerts, dead letters and the changelog, and the delivery mode it gives:
/// transactional when `[state] transactions` is on and the broker completes a probe
/// transaction (a tombstone of a probe key in the changelog), else the plain idempotent
/// producer. `instance` names the transactional id, so that a restarted instance fences its
/// predecessor's unfinished transaction.
pub async fn producer(
    config: &Config,
    changelog: &str,
    instance: &str,
) -> Result<(FutureProducer, DeliveryMode), KafkaError> {
    if config.state.transactions {
        let mut c = client_config(config);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "transactional.id",
                format!("{}-{instance}", config.kafka.group_id),
            )
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "30000");
        for (k, v) in &config.kafka.producer {
            c.set(k, v);
        }
        let p: FutureProducer = c.create()?;
        let probe = p.clone();
        let topic = changelog.to_string();
        let ok = tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            probe.init_transactions(Duration::from_secs(15))?;
            probe.begin_transaction()?;
            let key = b"\0palisade.probe".to_vec();
            let record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).partition(0).key(&key[..]);
            futures::executor::block_on(
                probe.send(record, Timeout::After(Duration::from_secs(15))),
            )
            .map_err(|(e, _)| e)?;
            if let Err(e) = probe.commit_transaction(Duration::from_secs(15)) {
                let _ = probe.abort_transaction(Duration::from_secs(5));
                return Err(e);
            }
            Ok(())
        })
        .await
        .expect("transaction probe panicked");
        match ok {
            Ok(()) => return Ok((p, DeliveryMode::ExactlyOnce)),
            Err(e) => tracing::warn!(
                error = %e,
                "the broker does not complete transactions; delivering at least once (alerts carry deterministic ids for de-duplication)"
            ),
        }
    }
    Ok((
        crate::alert::sink::producer(config)?,
        DeliveryMode::AtLeastOnce,
    ))
}

/// State and positions read back from the changelog.
#[derive(Debug, Default)]
pub struct Restored {
    /// The latest value per key (no tombstones), of complete checkpoints only.
    pub entries: Vec<StateEntry>,
    /// Next offset to read per (input topic, partition), from the last offset markers.
    pub offsets: HashMap<(String, i32), i64>,
    /// Entries of a checkpoint cut short (no marker after them), ignored.
    pub incomplete: usize,
}

/// A changelog record not yet followed by a marker: key and value (`None`: tombstone).
type Pending = (Vec<u8>, Option<Vec<u8>>);

/// Reads changelog partitions `partitions` to their end (see the module docs).
pub fn read_changelog(
    config: &Config,
    topic: &str,
    partitions: &[i32],
    mode: DeliveryMode,
) -> Result<Restored, KafkaError> {
    let isolation = match mode {
        DeliveryMode::ExactlyOnce => "read_committed",
        DeliveryMode::AtLeastOnce => "read_uncommitted",
    };
    let mut c = client_config(config);
    c.set("group.id", format!("{}.restore", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // Restore reads as fast as it can: when the prefetch queue is full, fetch again as
        // soon as it drains (the default waits a second per partition, which dominated the
        // restore of a million keys) rather than idling.
        .set("fetch.queue.backoff.ms", "5");
    let consumer: BaseConsumer = c.create()?;
    let result = read_to_end(&consumer, topic, partitions);
    // Closing a consumer that has a group id can wait on the group's coordinator (for good,
    // when it does not answer): closed off the restore's path.
    let _ = std::thread::Builder::new()
        .name("palisade-restore-close".into())
        .spawn(move || drop(consumer));
    result
}

/// [`read_changelog`] with its consumer.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<Restored, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    let mut open: HashSet<i32> = HashSet::new();
    for &p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            open.insert(p);
        }
    }
    let mut out = Restored::default();
    if open.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    // Per partition: the state of complete checkpoints, and the entries since its last
    // marker (applied when the next marker comes).
    let mut applied: HashMap<(i32, Vec<u8>), Vec<u8>> = HashMap::new();
    let mut tentative: HashMap<i32, Vec<Pending>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = match result {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                open.remove(&p);
                continue;
            }
            Err(e) => return Err(e),
        };
        let p = msg.partition();
        let key = msg.key().unwrap_or_default();
        if let Some(source) = key.strip_prefix(OFFSETS_KEY) {
            let Some(v) = msg.payload() else { continue };
            let mut d = crate::detect::codec::Dec::new(v);
            let (Ok(1), Ok(next)) = (d.u8(), d.i64()) else {
                tracing::warn!(
                    partition = p,
                    "damaged offset marker in the changelog; ignored"
                );
                continue;
            };
            for (k, v) in tentative.remove(&p).unwrap_or_default() {
                match v {
                    Some(v) => applied.insert((p, k), v),
                    None => applied.remove(&(p, k)),
                };
            }
            out.offsets
                .insert((String::from_utf8_lossy(source).into_owned(), p), next);
        } else if key.starts_with(b"\0palisade.") {
            continue; // the transaction probe
        } else {
            tentative
                .entry(p)
                .or_default()
                .push((key.to_vec(), msg.payload().map(<[u8]>::to_vec)));
        }
    }
    out.incomplete = tentative.values().map(Vec::len).sum();
    out.entries = applied
        .into_iter()
        .map(|((partition, key), value)| StateEntry {
            partition,
            key,
            value: Some(value),
        })
        .collect();
    // Deterministic order: restore does not depend on hash order.
    out.entries
        .sort_by(|a, b| (a.partition, &a.key).cmp(&(b.partition, &b.key)));
    Ok(out)
}

/// Writes checkpoints to the changelog and commits the group offsets with them (see the
/// module docs); in exactly-once mode also owns the transaction the sink produces into.
pub struct KafkaStateStore {
    producer: FutureProducer,
    shared: SharedProducer,
    consumer: Arc<PalisadeConsumer>,
    mode: DeliveryMode,
    topic: String,
    /// Input topic names by source index.
    sources: Arc<Vec<String>>,
    /// The last position per (source, partition), so that every changelog partition a
    /// checkpoint writes to also gets its markers.
    known: BTreeMap<(u32, i32), i64>,
    metrics: Arc<Metrics>,
}

impl KafkaStateStore {
    /// A store for one run of the pipeline (between two rebalances). In exactly-once mode
    /// the transaction the run's outputs go into is begun here.
    pub fn new(
        shared: &SharedProducer,
        consumer: Arc<PalisadeConsumer>,
        mode: DeliveryMode,
        topic: String,
        sources: Arc<Vec<String>>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaStateStore, KafkaError> {
        let producer = shared.get();
        if mode == DeliveryMode::ExactlyOnce {
            producer.begin_transaction()?;
        }
        Ok(KafkaStateStore {
            producer,
            shared: shared.clone(),
            consumer,
            mode,
            topic,
            sources,
            known: BTreeMap::new(),
            metrics,
        })
    }

    /// Aborts the open transaction (exactly-once mode): at the end of a run, whatever it
    /// produced since its last checkpoint is redone from that checkpoint.
    pub fn abort(producer: &FutureProducer, mode: DeliveryMode, metrics: &Metrics) {
        if mode == DeliveryMode::ExactlyOnce {
            match producer.abort_transaction(Duration::from_secs(30)) {
                Ok(()) => metrics.transaction_aborts.inc(),
                Err(e) => tracing::warn!(error = %e, "aborting the transaction failed"),
            }
        }
    }

    async fn write(
        &mut self,
        entries: &[StateEntry],
        positions: &[Position],
    ) -> Result<(), WriteError> {
        for p in positions {
            self.known.insert((p.source, p.partition), p.offset + 1);
        }
        tracing::debug!(entries = entries.len(), "checkpoint: writing entries");
        let sends = entries.iter().map(|e| {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .partition(e.partition)
                .key(&e.key[..]);
            if let Some(v) = &e.value {
                record = record.payload(&v[..]);
            }
            self.producer.send(record, Timeout::Never)
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
        // Markers after the entries are acknowledged: a marker always follows complete state.
        let touched: HashSet<i32> = entries
            .iter()
            .map(|e| e.partition)
            .chain(positions.iter().map(|p| p.partition))
            .collect();
        let markers: Vec<(i32, Vec<u8>, Vec<u8>)> = self
            .known
            .iter()
            .filter(|((_, partition), _)| touched.contains(partition))
            .map(|(&(source, partition), &next)| {
                let mut v = crate::detect::codec::Enc::new();
                v.u8(1);
                v.i64(next);
                (partition, marker_key(&self.sources[source as usize]), v.buf)
            })
            .collect();
        let sends = markers.iter().map(|(partition, key, value)| {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .partition(*partition)
                .key(&key[..])
                .payload(&value[..]);
            self.producer.send(record, Timeout::Never)
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
        let mut tpl = TopicPartitionList::new();
        for p in positions {
            tpl.add_partition_offset(
                &self.sources[p.source as usize],
                p.partition,
                Offset::Offset(p.offset + 1),
            )?;
        }
        match self.mode {
            DeliveryMode::ExactlyOnce => {
                let offsets = tpl.clone();
                let producer = self.producer.clone();
                let metadata = self.consumer.group_metadata();
                let call = tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
                    if let Some(metadata) = metadata
                        && tpl.count() > 0
                    {
                        producer.send_offsets_to_transaction(&tpl, &metadata, TXN_CALL_TIMEOUT)?;
                    }
                    producer.commit_transaction(TXN_CALL_TIMEOUT)?;
                    producer.begin_transaction()
                });
                let bound = TXN_CALL_TIMEOUT + TXN_WEDGE_GRACE;
                tracing::debug!("checkpoint: committing the transaction");
                match tokio::time::timeout(bound, call).await {
                    Ok(joined) => joined.expect("transaction commit panicked")?,
                    Err(_) => {
                        self.shared.mark_wedged();
                        return Err(WriteError::Wedged(bound));
                    }
                }
                // The same offsets again, outside the transaction: a no-op where the broker
                // stored them with it, and the group's lag is right where it did not (the
                // mock cluster accepts TxnOffsetCommit but keeps nothing). Markers rule.
                if offsets.count() > 0
                    && let Err(e) = self.consumer.commit(&offsets, CommitMode::Async)
                {
                    tracing::debug!(error = %e, "offset commit after the transaction failed");
                }
            }
            DeliveryMode::AtLeastOnce => {
                if tpl.count() > 0 {
                    // Fails for partitions revoked meanwhile: their new owner starts from
                    // the markers, which are what counts.
                    if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                        tracing::debug!(error = %e, "offset commit after checkpoint failed");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "a transaction call did not return within {0:?} (librdkafka can block for good after \
         its group coordinator went away: confluentinc/librdkafka#5456); the producer is replaced"
    )]
    Wedged(Duration),
}

impl StateStore for KafkaStateStore {
    fn checkpoint<'a>(
        &'a mut self,
        entries: &'a [StateEntry],
        positions: &'a [Position],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = self.write(entries, positions).await;
            let seconds = start.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    self.metrics.checkpoint_seconds.observe(seconds);
                    self.metrics.checkpoints.with_label_values(&["ok"]).inc();
                    let tombstones = entries.iter().filter(|e| e.value.is_none()).count();
                    self.metrics
                        .checkpoint_entries
                        .with_label_values(&["update"])
                        .inc_by((entries.len() - tombstones) as u64);
                    self.metrics
                        .checkpoint_entries
                        .with_label_values(&["tombstone"])
                        .inc_by(tombstones as u64);
                    tracing::debug!(entries = entries.len(), seconds, "checkpoint written");
                    Ok(())
                }
                Err(e) => {
                    self.metrics
                        .checkpoints
                        .with_label_values(&["failed"])
                        .inc();
                    Err(SinkError::Checkpoint(e.to_string()))
                }
            }
        })
    }
}
