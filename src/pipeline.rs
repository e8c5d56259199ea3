//! Wires the stages with bounded channels, and owns ordering, acknowledgement and shutdown.
//!
//! ```text
//!  source task ──RawBatch──▶ compute thread ──Processed──▶ deliver task ──▶ sink (alerts, DLQ)
//!  (Kafka/files)  bounded     decode + detect    bounded     │ acked?
//!                                                            └──▶ committer (store offsets)
//! ```
//!
//! Batches keep their order through every stage (one compute thread, one deliver task, FIFO
//! channels), so when a batch's outputs are acknowledged every earlier batch's were too, and
//! its positions can be committed. A full channel blocks the stage before it: a slow sink
//! stops the consumer instead of growing memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::alert::Alert;
use crate::config::Config;
use crate::decode::DeadLetter;
use crate::detect::{DetectorSet, EvalContext, StateEntry, Timing};
use crate::metrics::Metrics;
use crate::privacy::Pseudonymiser;
use crate::source::{Position, RawBatch};

/// What "now" means to detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The wall clock (live).
    Wall,
    /// The highest event time seen so far (replay: the same input gives the same output).
    EventTime,
}

/// The output of the compute stage for one batch.
#[derive(Debug)]
pub struct Processed {
    /// Stream index.
    pub stream: usize,
    /// Records in the raw batch (good and bad).
    pub records: usize,
    /// Payload bytes of the raw batch.
    pub bytes: usize,
    /// Alerts raised on the batch.
    pub alerts: Vec<Alert>,
    /// Records that could not be decoded.
    pub dead: Vec<DeadLetter>,
    /// What to commit once `alerts` and `dead` are acknowledged.
    pub positions: Vec<Position>,
    /// Oldest Kafka timestamp in the batch, for end-to-end latency.
    pub oldest_timestamp_ms: Option<i64>,
    /// Detector state changed since the previous checkpoint, when this batch closes one
    /// (see [`Checkpointing`]): written with the positions of every batch up to this one.
    pub checkpoint: Option<Vec<StateEntry>>,
}

/// Periodic checkpoints of detector state, consistent with the input positions (live runs).
///
/// The compute thread takes the state changed since the last checkpoint every `interval`
/// (and when the input ends, if `final_checkpoint` is set) and attaches it to the batch it
/// just processed; the deliver task, once that batch's outputs are acknowledged, hands the
/// entries and the positions of every batch since the previous checkpoint to the
/// [`StateStore`]. Batches stay in order, so the state covers exactly those positions.
pub struct Checkpointing {
    /// How often a checkpoint is taken.
    pub interval: Duration,
    /// Where checkpoints go.
    pub store: Box<dyn StateStore>,
    /// Why the input is ending, set by the source before it closes: [`ENDING_SHUTDOWN`]
    /// (a last checkpoint is written), [`ENDING_REBALANCE`] (no more checkpoints: the
    /// partitions may be another instance's now, and their work is redone from the last
    /// checkpoint by whoever owns them), or 0 while running.
    pub ending: Arc<AtomicU8>,
    /// State read back from the changelog, restored before the first batch.
    pub restore: Vec<StateEntry>,
    /// Where the detectors are left when the run ends (the live run's next assignment
    /// reuses them, rule reloads included, after releasing their state).
    pub returned: Arc<std::sync::Mutex<Option<DetectorSet>>>,
}

/// [`Checkpointing::ending`]: shutdown, write a last checkpoint.
pub const ENDING_SHUTDOWN: u8 = 1;
/// [`Checkpointing::ending`]: a rebalance, write no more checkpoints.
pub const ENDING_REBALANCE: u8 = 2;

/// Writes checkpoints: state entries and the input positions they cover, durably and
/// together (see [`crate::state`]).
pub trait StateStore: Send {
    /// Resolves once `entries` and `positions` (the last position per source and partition
    /// since the previous checkpoint) are durable. An error means the checkpoint did not
    /// happen; the run stops and resumes from the previous one.
    fn checkpoint<'a>(
        &'a mut self,
        entries: &'a [StateEntry],
        positions: &'a [Position],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// A sink failed in a way retrying cannot fix, or shutdown was forced mid-delivery.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Shutdown was forced while outputs were still unacknowledged.
    #[error("shutdown forced with {0} outputs unacknowledged; their offsets were not committed")]
    Aborted(usize),
    /// Writing failed (files).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A checkpoint could not be written (see [`StateStore`]).
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
}

/// Delivers a batch's alerts and dead letters.
pub trait Sink: Send {
    /// Resolves once every alert and dead letter of `batch` is acknowledged. Retries
    /// transient failures itself; an error means the batch must not be committed.
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Called once after the last batch.
    fn finish(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Commits positions whose outputs are acknowledged.
pub trait Committer: Send + Sync {
    /// The batch covering `positions` is fully acknowledged.
    fn commit(&self, positions: &[Position]);
}

/// A committer for sources with nothing to commit (replay).
pub struct NoCommit;

impl Committer for NoCommit {
    fn commit(&self, _positions: &[Position]) {}
}

/// How acknowledged alerts are shown on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Not at all.
    Off,
    /// One readable line per alert.
    Human,
    /// One JSON object per line.
    Json,
}

/// Totals of a finished run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Alerts acknowledged.
    pub alerts: u64,
    /// Dead letters acknowledged.
    pub dead_letters: u64,
}

/// The stages after the source.
pub struct Pipeline {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The rule set.
    pub detectors: DetectorSet,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Alert and dead-letter delivery.
    pub sink: Box<dyn Sink>,
    /// Offset commits.
    pub committer: Arc<dyn Committer>,
    /// Terminal output of acknowledged alerts.
    pub echo: Echo,
    /// What "now" is.
    pub clock: Clock,
    /// Pseudonymisation key.
    pub pseudonymiser: Pseudonymiser,
    /// New rule sets, compiled elsewhere (see [`crate::app::watch_rules`]): swapped in
    /// between two batches, so every batch is evaluated by exactly one rule set.
    pub reload: Option<std::sync::mpsc::Receiver<DetectorSet>>,
    /// Checkpoints of detector state, when the run keeps it durable.
    pub checkpoints: Option<Checkpointing>,
}

impl Pipeline {
    /// Processes raw batches until `raw` is closed and drained. Returns the totals.
    pub async fn run(self, raw: mpsc::Receiver<RawBatch>) -> Result<Summary, SinkError> {
        let Pipeline {
            config,
            detectors,
            metrics,
            mut sink,
            committer,
            echo,
            clock,
            pseudonymiser,
            reload,
            checkpoints,
        } = self;
        let (mut store, plan, returned) = match checkpoints {
            Some(c) => (
                Some(c.store),
                Some((c.interval, c.ending, c.restore)),
                Some(c.returned),
            ),
            None => (None, None, None),
        };
        // Positions of the batches since the last checkpoint: the last one per source and
        // partition (batches are in order).
        let mut since_checkpoint: std::collections::BTreeMap<(u32, i32), Position> =
            std::collections::BTreeMap::new();
        let capacity = *config.pipeline.channel_batches.get_ref();
        let (tx, mut processed) = mpsc::channel::<Processed>(capacity);
        let compute = {
            let config = Arc::clone(&config);
            let metrics = Arc::clone(&metrics);
            let ctx = EvalContext {
                now_ms: 0,
                pseudonymiser,
                partition: 0,
            };
            std::thread::Builder::new()
                .name("palisade-compute".into())
                .spawn(move || {
                    let stages = Compute {
                        config: &config,
                        metrics: &metrics,
                        clock,
                        reload,
                        checkpoints: plan,
                    };
                    let detectors = compute_loop(stages, detectors, ctx, raw, tx);
                    if let Some(slot) = returned {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(detectors);
                    }
                })
                .expect("spawning a thread")
        };
        let mut summary = Summary::default();
        let streams: Vec<String> = config
            .streams
            .iter()
            .map(|s| s.name.get_ref().clone())
            .collect();
        let mut outcome = Ok(());
        while let Some(batch) = processed.recv().await {
            if let (Some(entries), true) = (&batch.checkpoint, batch.records == 0) {
                // The last checkpoint, after the last batch.
                if let Some(store) = &mut store {
                    let positions: Vec<Position> = since_checkpoint.values().copied().collect();
                    if let Err(e) = store.checkpoint(entries, &positions).await {
                        outcome = Err(e);
                        break;
                    }
                    since_checkpoint.clear();
                }
                continue;
            }
            let stream = streams[batch.stream].as_str();
            metrics
                .records
                .with_label_values(&[stream])
                .inc_by(batch.records as u64);
            metrics
                .bytes
                .with_label_values(&[stream])
                .inc_by(batch.bytes as u64);
            metrics.batches.with_label_values(&[stream]).inc();
            for d in &batch.dead {
                metrics
                    .decode_failures
                    .with_label_values(&[stream, d.kind.as_str()])
                    .inc();
            }
            if (!batch.alerts.is_empty() || !batch.dead.is_empty())
                && let Err(e) = sink.deliver(&batch).await
            {
                outcome = Err(e);
                break;
            }
            committer.commit(&batch.positions);
            metrics.commits.inc();
            if let Some(store) = &mut store {
                for p in &batch.positions {
                    since_checkpoint.insert((p.source, p.partition), *p);
                }
                if let Some(entries) = &batch.checkpoint {
                    let positions: Vec<Position> = since_checkpoint.values().copied().collect();
                    if let Err(e) = store.checkpoint(entries, &positions).await {
                        outcome = Err(e);
                        break;
                    }
                    since_checkpoint.clear();
                }
            }
            summary.records += batch.records as u64;
            summary.alerts += batch.alerts.len() as u64;
            summary.dead_letters += batch.dead.len() as u64;
            if !batch.dead.is_empty() {
                metrics
                    .dead_letters
                    .with_label_values(&[stream])
                    .inc_by(batch.dead.len() as u64);
            }
            let latency = batch
                .oldest_timestamp_ms
                .map(|ts| Duration::from_millis((now_ms() - ts).max(0) as u64));
            for alert in &batch.alerts {
                metrics
                    .alerts
                    .with_label_values(&[alert.rule.id.as_str(), alert.severity.as_str()])
                    .inc();
                if let Some(latency) = latency {
                    metrics.latency.record(latency);
                }
                match echo {
                    Echo::Off => {}
                    Echo::Human => println!("{}", alert.to_human()),
                    Echo::Json => println!("{}", alert.to_json()),
                }
            }
        }
        // Unblock the compute thread if we stopped early, then wait for it.
        drop(processed);
        let _ = tokio::task::spawn_blocking(move || compute.join()).await;
        outcome?;
        sink.finish().await?;
        Ok(summary)
    }
}

/// What the compute stage works with besides its input and output.
struct Compute<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    clock: Clock,
    reload: Option<std::sync::mpsc::Receiver<DetectorSet>>,
    /// Checkpoint interval, whether to take a last one at the end, state to restore first.
    checkpoints: Option<(Duration, Arc<AtomicU8>, Vec<StateEntry>)>,
}

/// The compute stage: decode and detect, one batch at a time, on its own thread.
fn compute_loop(
    stages: Compute<'_>,
    mut detectors: DetectorSet,
    mut ctx: EvalContext,
    mut raw: mpsc::Receiver<RawBatch>,
    out: mpsc::Sender<Processed>,
) -> DetectorSet {
    let Compute {
        config,
        metrics,
        clock,
        reload,
        checkpoints,
    } = stages;
    let (interval, ending) = match checkpoints {
        Some((interval, last, restore)) => {
            if !restore.is_empty() {
                let start = std::time::Instant::now();
                match detectors.restore(&restore) {
                    Ok(ignored) => {
                        tracing::info!(entries = restore.len(), ignored, "detector state restored")
                    }
                    // Damaged or foreign state: start those detectors empty rather than not
                    // at all; the loss is logged.
                    Err(e) => {
                        tracing::error!(error = %e, "detector state could not be restored; starting it empty")
                    }
                }
                metrics
                    .restore_seconds
                    .observe(start.elapsed().as_secs_f64());
                metrics.restore_entries.inc_by(restore.len() as u64);
            }
            (Some(interval), Some(last))
        }
        None => (None, None),
    };
    let mut last_checkpoint = std::time::Instant::now();
    let mut entries_out: Vec<StateEntry> = Vec::new();
    let mut decoders = detectors.decoders(config);
    let mut detector_names = detectors.detector_names();
    let mut state = detectors.state();
    let mut timings: Vec<Timing> = Vec::new();
    let mut stream_time = i64::MIN;
    while let Some(batch) = raw.blocking_recv() {
        // A new rule set takes over between batches: none is evaluated twice or skipped.
        while let Some(mut new) = reload.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let kept = new.adopt_state(&mut detectors);
            if !new.same_projections(&detectors) {
                // Projected streams now decode what the new rules read.
                decoders = new.decoders(config);
            }
            detectors = new;
            detector_names = detectors.detector_names();
            state = detectors.state();
            metrics.rules_loaded.set(detectors.len() as i64);
            tracing::info!(
                rules = detectors.len(),
                correlations_kept = kept,
                "new rule set in effect"
            );
        }
        let decoder = &mut decoders[batch.stream];
        let decoded = decoder.decode(&batch);
        ctx.partition = batch.partition;
        ctx.now_ms = match clock {
            Clock::Wall => now_ms(),
            Clock::EventTime => {
                if let Some(max) = max_millis(&decoded.batch, decoder.time_col()) {
                    stream_time = stream_time.max(max);
                }
                stream_time.max(0)
            }
        };
        let mut alerts = Vec::new();
        timings.clear();
        detectors.evaluate(
            batch.stream,
            &decoded.batch,
            &ctx,
            &mut alerts,
            &mut timings,
        );
        for t in &timings {
            let detector = detector_names[t.detector].as_str();
            metrics
                .detector_seconds
                .with_label_values(&[detector])
                .observe(t.elapsed.as_secs_f64());
            if let Some(e) = &t.error {
                metrics.detector_errors.with_label_values(&[detector]).inc();
                tracing::warn!(detector, error = %e, "detector failed on a batch; other detectors ran");
            }
        }
        let now = detectors.state();
        if now != state {
            metrics
                .state_held
                .with_label_values(&["groups"])
                .set(now.groups as i64);
            metrics
                .state_held
                .with_label_values(&["events"])
                .set(now.events as i64);
            for (reason, was, is) in [
                ("groups_evicted", state.groups_evicted, now.groups_evicted),
                ("events_dropped", state.events_dropped, now.events_dropped),
                ("events_late", state.events_late, now.events_late),
                (
                    "evidence_truncated",
                    state.evidence_truncated,
                    now.evidence_truncated,
                ),
            ] {
                if is > was {
                    metrics
                        .state_evicted
                        .with_label_values(&[reason])
                        .inc_by(is - was);
                }
            }
            state = now;
        }
        let checkpoint = match (interval, &ending) {
            // Not once the run is ending for a rebalance: the partitions may be another
            // instance's now, and it restores them from the previous checkpoint.
            (Some(interval), Some(ending))
                if last_checkpoint.elapsed() >= interval
                    && ending.load(Ordering::SeqCst) != ENDING_REBALANCE =>
            {
                last_checkpoint = std::time::Instant::now();
                Some(take_checkpoint(&mut detectors, &mut entries_out, metrics))
            }
            _ => None,
        };
        let processed = Processed {
            stream: batch.stream,
            records: batch.len(),
            bytes: batch.payload_bytes(),
            alerts,
            dead: decoded.dead,
            oldest_timestamp_ms: batch.oldest_timestamp_ms(),
            positions: batch.positions,
            checkpoint,
        };
        if out.blocking_send(processed).is_err() {
            return detectors; // the deliver task stopped
        }
    }
    // The input ended: at shutdown, a last checkpoint of everything processed.
    if let Some(ending) = ending
        && ending.load(Ordering::SeqCst) == ENDING_SHUTDOWN
    {
        let entries = take_checkpoint(&mut detectors, &mut entries_out, metrics);
        let _ = out.blocking_send(Processed {
            stream: 0,
            records: 0,
            bytes: 0,
            alerts: Vec::new(),
            dead: Vec::new(),
            positions: Vec::new(),
            oldest_timestamp_ms: None,
            checkpoint: Some(entries),
        });
    }
    detectors
}

/// The state changed since the last checkpoint, with its size per key for the gauge.
fn take_checkpoint(
    detectors: &mut DetectorSet,
    scratch: &mut Vec<StateEntry>,
    metrics: &Metrics,
) -> Vec<StateEntry> {
    scratch.clear();
    detectors.checkpoint(scratch);
    let (mut bytes, mut values) = (0usize, 0usize);
    for e in scratch.iter() {
        if let Some(v) = &e.value {
            bytes += v.len();
            values += 1;
        }
    }
    if values > 0 {
        // One kind today: correlations are the only durable state (SQL windows add theirs).
        metrics
            .state_bytes_per_key
            .with_label_values(&["sigma"])
            .set(bytes as f64 / values as f64);
    }
    std::mem::take(scratch)
}

fn max_millis(batch: &RecordBatch, col: usize) -> Option<i64> {
    let col = batch.column(col);
    let DataType::Timestamp(unit, _) = col.data_type() else {
        return None;
    };
    use datafusion::arrow::compute::max;
    use datafusion::arrow::datatypes as t;
    Some(match unit {
        TimeUnit::Second => max(col.as_primitive::<t::TimestampSecondType>())? * 1000,
        TimeUnit::Millisecond => max(col.as_primitive::<t::TimestampMillisecondType>())?,
        TimeUnit::Microsecond => max(col.as_primitive::<t::TimestampMicrosecondType>())? / 1000,
        TimeUnit::Nanosecond => max(col.as_primitive::<t::TimestampNanosecondType>())? / 1_000_000,
    })
    .filter(|_| col.len() > col.null_count())
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resolves when shutdown is requested (the watch turns true or its sender is dropped).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
