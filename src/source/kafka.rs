//! The Kafka source: one consumer-group member over every configured topic.
//!
//! Records are copied into per-stream [`RawBatch`]es as they arrive and a batch is sent on
//! when full or when its linger expires. Offsets are stored (`enable.auto.offset.store =
//! false`) only by [`KafkaCommitter`], which the pipeline calls after a batch's outputs are
//! acknowledged; librdkafka's auto-commit then commits only those stored offsets, and the
//! final commit at shutdown is synchronous.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::{Backlog, Batcher, Origin, PartitionReading, Position, RawBatch};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Committer, ENDING_REBALANCE, ENDING_SHUTDOWN};
use crate::repartition::{MARK_HEADER, decode_mark};
use crate::server::Health;
use rdkafka::message::Headers;
use std::sync::atomic::{AtomicU8, Ordering};

/// Client properties shared by every palisade client: the configured brokers plus the
/// pass-through `[kafka.client]` table.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    c.set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &config.kafka.client {
        c.set(k, v);
    }
    c
}

/// Observes the consumer: lag from statistics, readiness from errors, rebalances in the log.
pub struct SourceContext {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Bumped at every rebalance (assignment or revocation): a run of the pipeline that
    /// keeps state ends when it changes (see [`run_until_rebalance`]).
    rebalances: std::sync::atomic::AtomicU64,
    /// Assigned partitions with records not delivered yet, from the statistics.
    backlog: Arc<Backlog>,
}

impl SourceContext {
    /// Rebalances so far.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
    }

    /// The partitions this consumer holds undelivered records of (see [`Backlog`]).
    pub fn backlog(&self) -> Arc<Backlog> {
        Arc::clone(&self.backlog)
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let mut readings = Vec::new();
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition.
                if *partition < 0 {
                    continue;
                }
                // Records fetched but not yet handed to palisade, or not yet fetched below
                // the readable end (the last stable offset, as the consumer reads
                // committed records).
                readings.push(PartitionReading {
                    topic: topic.clone(),
                    partition: *partition,
                    fetching: p.fetch_state == "active",
                    queued: p.fetchq_cnt,
                    next_offset: p.next_offset,
                    end: if p.ls_offset >= 0 {
                        p.ls_offset
                    } else {
                        p.hi_offset
                    },
                });
                // Negative lag is "unknown".
                if p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
        self.backlog.observe(&readings, std::time::Instant::now());
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health
                .set("kafka", false, format!("all brokers are down: {reason}"));
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// How often a run that keeps state checks for a rebalance while no record arrives.
const REBALANCE_CHECK: Duration = Duration::from_millis(250);

/// The consumer type palisade uses.
pub type PalisadeConsumer = StreamConsumer<SourceContext>;

/// Creates the group consumer, subscribed to every configured topic.
pub fn consumer(
    config: &Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<PalisadeConsumer, KafkaError> {
    consumer_with(config, metrics, health, &[])
}

/// Like [`consumer`], also subscribed to `internal` (the routes' topics, see
/// [`crate::repartition`]), which have the partition count of their streams' topics: the
/// range assignor gives partition p of every topic, internal ones included, to one member.
pub fn consumer_with(
    config: &Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    internal: &[String],
) -> Result<PalisadeConsumer, KafkaError> {
    let mut c = client_config(config);
    for (k, v) in &config.kafka.consumer {
        c.set(k, v);
    }
    c.set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by the pipeline once outputs are acknowledged, never on receipt.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Durable state is partitioned by partition number across the input topics: an
        // instance must own partition p of every topic (co-partitioned topics, as Kafka
        // Streams requires), which the range assignor gives.
        .set("partition.assignment.strategy", "range");
    let consumer: PalisadeConsumer = c.create_with_context(SourceContext {
        metrics,
        health,
        rebalances: std::sync::atomic::AtomicU64::new(0),
        backlog: Arc::default(),
    })?;
    let mut topics = config.input_topics();
    topics.extend(internal.iter().cloned());
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}

/// Reads the consumer into batches until shutdown, then flushes the open batches.
pub async fn run(
    consumer: Arc<PalisadeConsumer>,
    config: Arc<Config>,
    sources: Arc<Vec<String>>,
    health: Arc<Health>,
    tx: mpsc::Sender<RawBatch>,
    shutdown: watch::Receiver<bool>,
) {
    let epoch = consumer.context().rebalances();
    source_loop(
        consumer,
        config,
        sources,
        &[],
        health,
        tx,
        shutdown,
        None,
        epoch,
    )
    .await;
}

/// Like [`run`], but also ends at the next rebalance, *without* flushing the open batches
/// (their records are read again from the last checkpoint by whoever owns them now).
/// Sets `ending` to say which ([`ENDING_SHUTDOWN`] or [`ENDING_REBALANCE`]) before the
/// batches channel closes. Returns true for a rebalance. `route_topics` are the internal
/// topics of the run's routes, in route order, with their stream (see
/// [`crate::repartition`]); their records become route batches, their markers batch marks.
/// `epoch` is [`SourceContext::rebalances`] as read *before* the run read its assignment: a
/// rebalance in between ends the run at once, rather than leaving it on an assignment it
/// never restored.
#[allow(clippy::too_many_arguments)]
pub async fn run_until_rebalance(
    consumer: Arc<PalisadeConsumer>,
    config: Arc<Config>,
    sources: Arc<Vec<String>>,
    route_topics: Arc<Vec<(String, usize)>>,
    health: Arc<Health>,
    tx: mpsc::Sender<RawBatch>,
    shutdown: watch::Receiver<bool>,
    ending: Arc<AtomicU8>,
    epoch: u64,
) -> bool {
    source_loop(
        consumer,
        config,
        sources,
        &route_topics,
        health,
        tx,
        shutdown,
        Some(ending),
        epoch,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn source_loop(
    consumer: Arc<PalisadeConsumer>,
    config: Arc<Config>,
    sources: Arc<Vec<String>>,
    route_topics: &[(String, usize)],
    health: Arc<Health>,
    tx: mpsc::Sender<RawBatch>,
    mut shutdown: watch::Receiver<bool>,
    ending: Option<Arc<AtomicU8>>,
    epoch: u64,
) -> bool {
    // topic -> (lane, source index); looked up once per record, no allocation. A lane is
    // a stream, or (after the streams) a route.
    let streams = config.streams.len();
    let routes: HashMap<&str, (usize, u32)> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, topic)| {
            let lane = config.stream_of_topic(topic).or_else(|| {
                route_topics
                    .iter()
                    .position(|(t, _)| t == topic)
                    .map(|r| streams + r)
            });
            lane.map(|lane| (topic.as_str(), (lane, i as u32)))
        })
        .collect();
    let linger = Duration::from_millis(config.pipeline.linger_ms);
    let mut batcher = Batcher::with_routes(
        streams,
        route_topics.iter().map(|(_, s)| *s).collect(),
        *config.pipeline.batch_rows.get_ref(),
        linger,
    );
    // One timer for the whole run, not one per received record.
    let mut rebalance_check = tokio::time::interval(REBALANCE_CHECK);
    rebalance_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = batcher.next_deadline();
        let full = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await }, if deadline.is_some() => {
                batcher.expired(std::time::Instant::now())
            }
            // A rebalance is noticed even when no record arrives: a run left on its old
            // assignment would never restore the new one (seen with tansu: an instance given
            // partitions at their end, then others, read nothing for minutes).
            _ = rebalance_check.tick(), if ending.is_some() => {
                if consumer.context().rebalances() != epoch {
                    if let Some(ending) = &ending {
                        ending.store(ENDING_REBALANCE, Ordering::SeqCst);
                    }
                    return true;
                }
                Vec::new()
            }
            received = consumer.recv() => match received {
                // A rebalance happened inside this poll: what was received belongs to the
                // next run, which seeks to its checkpoint first.
                _ if ending.is_some() && consumer.context().rebalances() != epoch => {
                    if let Some(ending) = &ending {
                        ending.store(ENDING_REBALANCE, Ordering::SeqCst);
                    }
                    return true;
                }
                Ok(msg) => {
                    let Some(&(lane, source)) = routes.get(msg.topic()) else { continue };
                    if !health.check("kafka") {
                        health.set("kafka", true, "consuming");
                    }
                    let origin = Origin {
                        source,
                        partition: msg.partition(),
                        offset: msg.offset(),
                        timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
                    };
                    let mark = (lane >= streams)
                        .then(|| msg.headers())
                        .flatten()
                        .and_then(|h| h.iter().find(|h| h.key == MARK_HEADER))
                        .and_then(|h| decode_mark(h.value.unwrap_or_default()));
                    match mark {
                        Some((from, progress)) => {
                            batcher.push_mark(lane, from, progress, origin);
                            Vec::new()
                        }
                        None => batcher
                            .push_lane(lane, msg.payload().unwrap_or_default(), origin)
                            .into_iter()
                            .collect(),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed; retrying");
                    Vec::new()
                }
            },
        };
        // A rebalance seen by a poll (or while batches lingered): the open and just-cut
        // batches are dropped, not sent; the next run reads them again from its checkpoint.
        if let Some(ending) = &ending
            && consumer.context().rebalances() != epoch
        {
            ending.store(ENDING_REBALANCE, Ordering::SeqCst);
            return true;
        }
        for batch in full {
            tracing::trace!(
                records = batch.len(),
                partition = batch.partition,
                "source: batch cut"
            );
            if tx.send(batch).await.is_err() {
                return false; // the pipeline stopped
            }
        }
    }
    for batch in batcher.drain() {
        if tx.send(batch).await.is_err() {
            return false;
        }
    }
    if let Some(ending) = &ending {
        ending.store(ENDING_SHUTDOWN, Ordering::SeqCst);
    }
    false
}

/// Stores acknowledged positions on the consumer; auto-commit sends them to the broker.
pub struct KafkaCommitter {
    /// The consumer whose offsets are stored.
    pub consumer: Arc<PalisadeConsumer>,
    /// Topic names by source index.
    pub sources: Arc<Vec<String>>,
}

impl Committer for KafkaCommitter {
    fn commit(&self, positions: &[Position]) {
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        for p in positions {
            let topic = &self.sources[p.source as usize];
            if let Err(e) =
                tpl.add_partition_offset(topic, p.partition, Offset::Offset(p.offset + 1))
            {
                tracing::warn!(error = %e, topic, "cannot build the offset list");
            }
        }
        // Fails for partitions revoked in a rebalance meanwhile: their new owner reprocesses
        // from the last commit, which is at-least-once as promised.
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "offset store skipped (partition no longer assigned?)");
        }
    }
}

impl KafkaCommitter {
    /// Commits the stored offsets synchronously (at shutdown).
    pub fn commit_now(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
    }
}

/// Creates those of `topics` that do not exist yet. Existing topics are left alone.
pub async fn ensure_topics(config: &Config, topics: &[String]) -> Result<(), KafkaError> {
    ensure_topics_with(config, topics, &[]).await
}

/// Creates a route's internal topic if missing, with `partitions` partitions (its stream's),
/// deleted by time like any topic (the broker's retention; see the README, "Repartitioning").
pub async fn ensure_internal(
    config: &Config,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let mut config = config.clone();
    config.kafka.create_partitions = partitions;
    ensure_topics_with(
        &config,
        &[topic.to_string()],
        &[("cleanup.policy", "delete")],
    )
    .await
}

/// The partition count of `topic`, from the cluster's metadata.
pub fn partition_count(config: &Config, topic: &str) -> Result<Option<i32>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0))
}

/// Creates the changelog topic if missing: compacted, as many partitions as the inputs.
pub async fn ensure_changelog(config: &Config, topic: &str) -> Result<(), KafkaError> {
    ensure_topics_with(
        config,
        &[topic.to_string()],
        &[("cleanup.policy", "compact")],
    )
    .await
}

async fn ensure_topics_with(
    config: &Config,
    topics: &[String],
    topic_config: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let existing: Vec<String> = {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    };
    let missing: Vec<&String> = topics.iter().filter(|t| !existing.contains(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(
                t,
                config.kafka.create_partitions,
                TopicReplication::Fixed(1),
            );
            for (k, v) in topic_config {
                n = n.set(k, v);
            }
            n
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::warn!(topic, error = %code, "could not create topic; assuming it is managed elsewhere")
            }
        }
    }
    Ok(())
}

/// Runs the group check (see [`super::group`]) every `[kafka] group_check_ms` until
/// `shutdown`: rejoins the group when this instance's assignment has not fitted the group's
/// members at two checks in a row. Turns itself off when the broker does not describe
/// groups. `topics` are the subscribed topics.
pub async fn watch_group(
    consumer: Arc<PalisadeConsumer>,
    config: Arc<Config>,
    topics: Vec<String>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    use super::group::{GroupCheck, Verdict};
    if config.kafka.group_check_ms == 0 {
        return;
    }
    let every = Duration::from_millis(config.kafka.group_check_ms);
    let mut check = GroupCheck::default();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (c, g, t) = (
            Arc::clone(&consumer),
            config.kafka.group_id.clone(),
            topics.clone(),
        );
        let observed = tokio::task::spawn_blocking(move || observe_group(&c, &g, &t)).await;
        let round = match observed {
            Ok(Ok(round)) => round,
            Ok(Err(e))
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion
                    )
                ) =>
            {
                tracing::info!(error = %e, "the broker does not describe groups: group check off");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "group check skipped");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "group check failed");
                continue;
            }
        };
        let verdict = check.observe(
            &round.state,
            &round.members,
            &round.me,
            &round.assigned,
            &round.topics,
        );
        if let Verdict::Rejoin(unread) = verdict {
            let unread: Vec<String> = unread.iter().map(|(t, p)| format!("{t}/{p}")).collect();
            tracing::warn!(
                members = round.members.len(),
                unread = ?unread,
                "this instance's partitions do not fit the group's members (the coordinator did not rebalance); rejoining"
            );
            metrics.group_rejoins.inc();
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&refs) {
                tracing::error!(error = %e, "cannot subscribe again after leaving the group");
            }
        }
    }
}

/// One round of the group check's inputs, read from the coordinator and the client.
struct GroupRound {
    state: String,
    members: Vec<String>,
    me: String,
    assigned: std::collections::BTreeSet<super::group::TopicPartition>,
    topics: Vec<(String, i32)>,
}

fn observe_group(
    consumer: &PalisadeConsumer,
    group: &str,
    topics: &[String],
) -> Result<GroupRound, KafkaError> {
    let timeout = Duration::from_secs(5);
    let list = consumer.fetch_group_list(Some(group), timeout)?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Err(KafkaError::GroupListFetch(
            RDKafkaErrorCode::GroupIdNotFound,
        ));
    };
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let counts = metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|s| s == t.name()) && t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();
    let assigned = consumer
        .assignment()?
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    Ok(GroupRound {
        state: info.state().to_string(),
        members: info.members().iter().map(|m| m.id().to_string()).collect(),
        me: member_id(consumer),
        assigned,
        topics: counts,
    })
}

/// This client's member id in its group (empty before it has joined).
fn member_id(consumer: &PalisadeConsumer) -> String {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live client handle owned by `consumer`, which outlives this call.
    // `rd_kafka_memberid` returns a copy of the id (or null) that the caller owns and frees
    // with `rd_kafka_mem_free`; it is read before being freed.
    unsafe {
        let id = rdkafka::bindings::rd_kafka_memberid(rk);
        if id.is_null() {
            return String::new();
        }
        let owned = std::ffi::CStr::from_ptr(id).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, id.cast());
        owned
    }
}
