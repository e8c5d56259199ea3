//! Wires the stages with bounded channels, and owns ordering, acknowledgement and shutdown.
//!
//! ```text
//!  source task ──RawBatch──▶ compute thread ──Processed──▶ deliver task ──▶ sink (alerts, DLQ)
//!  (Kafka/files)  bounded     decode + detect    bounded     │ acked?
//!                                                            └──▶ committer (store offsets)
//! ```
//!
//! Between the source and the compute thread a small task merges the batches with a
//! processing-time tick (live only): on a tick the compute thread re-evaluates which
//! partitions are idle, so a stream's watermark — and the windows it closes — moves on even
//! when a partition stops sending (see [`crate::watermark`]). When a replay's input ends,
//! every watermark moves to the end of time and the last windows close.
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
use crate::decode::{DeadLetter, FailureKind};
use crate::detect::{DetectorSet, EvalContext, StateEntry, Timing};
use crate::metrics::Metrics;
use crate::privacy::Pseudonymiser;
use crate::repartition::{Route, Shuffled};
use crate::source::{Position, RawBatch};
use crate::watermark::Watermarks;

/// What the compute thread receives.
enum Input {
    /// A batch to decode and evaluate.
    Batch(RawBatch),
    /// Processing time went by: idle partitions may release the watermark.
    Tick,
}

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
    /// Detector state changed since the previous checkpoint, when this output closes one
    /// (see [`Checkpointing`]): written, once the output is acknowledged, with the positions
    /// of every batch up to this one.
    pub checkpoint: Option<Vec<StateEntry>>,
    /// The route whose internal topic the batch was read from (its records were counted when
    /// first read from the stream's own topic).
    pub route: Option<usize>,
    /// Records (and watermark markers) for the routes' internal topics, delivered with the
    /// alerts, before the batch's positions are committed (see [`crate::repartition`]).
    pub shuffled: Vec<Shuffled>,
}

/// A route fed through an internal topic in this run (live).
#[derive(Debug, Clone)]
pub struct LiveRoute {
    /// The stream and key column.
    pub route: Route,
    /// The internal topic.
    pub topic: String,
    /// Its partition count (its stream's).
    pub partitions: i32,
}

/// Periodic checkpoints of detector state, consistent with the input positions (live runs).
///
/// The compute thread takes the state changed since the last checkpoint every `interval`
/// (and when the input ends for a shutdown) and attaches it to the output it just produced;
/// the deliver task, once that output is acknowledged, hands the entries and the positions
/// of every batch since the previous checkpoint to the [`StateStore`]. Outputs stay in
/// order, so the state covers exactly those positions.
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
    /// Enrichment and suppression of alerts before delivery (live runs; see
    /// [`crate::alert::stage`]).
    pub alerting: Option<Arc<std::sync::Mutex<crate::alert::stage::AlertStage>>>,
    /// Checkpoints of detector state, when the run keeps it durable.
    pub checkpoints: Option<Checkpointing>,
    /// Routes fed through internal topics (live; empty in replays, where the detectors bound
    /// to a route see their stream's batches). Must equal the detectors' routes.
    pub routes: Vec<LiveRoute>,
    /// The partitions the source holds undelivered records of (live Kafka runs): slow, not
    /// idle, for the watermarks (see [`crate::watermark`]).
    pub backlog: Option<Arc<crate::source::Backlog>>,
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
            alerting,
            checkpoints,
            routes,
            backlog,
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
        let input = forward_with_ticks(raw, &config, clock);
        let route_columns: Vec<String> = routes.iter().map(|r| r.route.column.clone()).collect();
        let compute = {
            let config = Arc::clone(&config);
            let metrics = Arc::clone(&metrics);
            let ctx = EvalContext {
                now_ms: 0,
                pseudonymiser,
                partition: 0,
                watermark_ms: i64::MIN,
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
                        routes: &routes,
                        backlog,
                    };
                    let detectors = compute_loop(stages, detectors, ctx, input, tx);
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
        while let Some(mut batch) = processed.recv().await {
            if let Some(stage) = &alerting {
                stage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(&mut batch.alerts);
            }
            let stream = streams[batch.stream].as_str();
            if batch.route.is_none() {
                metrics
                    .records
                    .with_label_values(&[stream])
                    .inc_by(batch.records as u64);
                metrics
                    .bytes
                    .with_label_values(&[stream])
                    .inc_by(batch.bytes as u64);
            }
            if batch.records > 0 && batch.route.is_none() {
                // Not the alerts of windows an idle tick or the end of a replay closed.
                metrics.batches.with_label_values(&[stream]).inc();
            }
            for d in batch.dead.iter().filter(|d| d.kind != FailureKind::Late) {
                metrics
                    .decode_failures
                    .with_label_values(&[stream, d.kind.as_str()])
                    .inc();
            }
            tracing::trace!(
                alerts = batch.alerts.len(),
                records = batch.records,
                "delivering a batch"
            );
            if (!batch.alerts.is_empty() || !batch.dead.is_empty() || !batch.shuffled.is_empty())
                && let Err(e) = sink.deliver(&batch).await
            {
                outcome = Err(e);
                break;
            }
            for s in batch.shuffled.iter().filter(|s| s.mark.is_none()) {
                metrics
                    .repartitioned
                    .with_label_values(&[stream, &route_columns[s.route]])
                    .inc();
            }
            if !batch.positions.is_empty() {
                committer.commit(&batch.positions);
                metrics.commits.inc();
            }
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
            if batch.route.is_none() {
                summary.records += batch.records as u64;
            }
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

/// Forwards `raw` into a channel that also carries a processing-time tick (live only), so
/// that watermarks of idle partitions move on without a batch. A tick is skipped rather than
/// wait when the channel is full: a busy compute thread sees batches anyway.
fn forward_with_ticks(
    mut raw: mpsc::Receiver<RawBatch>,
    config: &Config,
    clock: Clock,
) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(*config.pipeline.channel_batches.get_ref());
    // A quarter of the shortest idle timeout, between 50 ms and 1 s: idle partitions are
    // noticed within that much of their timeout.
    let idle = config
        .streams
        .iter()
        .map(|s| s.watermark.idle_timeout_ms)
        .min()
        .unwrap_or(1000);
    let period = Duration::from_millis((idle / 4).clamp(50, 1000));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                batch = raw.recv() => match batch {
                    Some(b) => {
                        if tx.send(Input::Batch(b)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tick.tick(), if clock == Clock::Wall => {
                    if tx.is_closed() {
                        return;
                    }
                    let _ = tx.try_send(Input::Tick);
                }
            }
        }
    });
    rx
}

/// What the compute stage works with besides its input and output.
struct Compute<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    clock: Clock,
    reload: Option<std::sync::mpsc::Receiver<DetectorSet>>,
    /// Checkpoint interval, why the input ends, state to restore first.
    checkpoints: Option<(Duration, Arc<AtomicU8>, Vec<StateEntry>)>,
    /// Routes fed through internal topics.
    routes: &'a [LiveRoute],
    /// What the source holds of which partitions, for the watermarks.
    backlog: Option<Arc<crate::source::Backlog>>,
}

/// The compute stage: decode and detect, one batch at a time, on its own thread.
fn compute_loop(
    stages: Compute<'_>,
    mut detectors: DetectorSet,
    mut ctx: EvalContext,
    mut input: mpsc::Receiver<Input>,
    out: mpsc::Sender<Processed>,
) -> DetectorSet {
    let Compute {
        config,
        metrics,
        clock,
        reload,
        checkpoints,
        routes,
        backlog,
    } = stages;
    detectors.set_repartitioned(!routes.is_empty());
    // Event-time progress of the partitions restored: their watermarks start from it.
    let mut restored_progress: Vec<(usize, i32, i64)> = Vec::new();
    let (interval, ending) = match checkpoints {
        Some((interval, ending, mut restore)) => {
            restore.retain(|e| match progress_of(config, e) {
                Some(p) => {
                    restored_progress.push(p);
                    false
                }
                None => true,
            });
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
            (Some(interval), Some(ending))
        }
        None => (None, None),
    };
    let mut last_checkpoint = std::time::Instant::now();
    let mut entries_out: Vec<StateEntry> = Vec::new();
    let mut decoders = detectors.decoders(config);
    let mut detector_names = detectors.detector_names();
    let mut state = detectors.state();
    let mut rule_gauges = RuleStateGauges::default();
    let mut timings: Vec<Timing> = Vec::new();
    let mut stream_time = i64::MIN;
    let mut watermarks = match clock {
        // A consumer catching up hears from its partitions one fetch at a time.
        Clock::Wall => Watermarks::new(config).hold_for_discovery(),
        Clock::EventTime => Watermarks::new(config),
    };
    // A partition taken over resumes its previous owner's event-time progress: a window
    // restored with it closes when the watermark passes it, even if the partition has
    // nothing more to read (it starts the discovery hold, like a first batch).
    for &(stream, partition, progress) in &restored_progress {
        watermarks.observe(stream, partition, Some(progress), 0);
    }
    // Progress last written per (stream, partition), so checkpoints carry only changes.
    let mut progress_written: std::collections::HashMap<(usize, i32), i64> = restored_progress
        .iter()
        .map(|&(s, p, t)| ((s, p), t))
        .collect();
    // A route's watermark comes from its markers, over (partition, source partition).
    let lanes: Vec<usize> = routes
        .iter()
        .map(|r| watermarks.add_lane(r.route.stream))
        .collect();
    let mut shuffled: Vec<Shuffled> = Vec::new();
    // Processing time for idle partitions: monotonic, from the start of the run.
    let started = std::time::Instant::now();
    let processing_ms = || started.elapsed().as_millis() as i64;
    let streams: Vec<&str> = config.streams.iter().map(|s| s.name()).collect();
    let report_watermark = |watermarks: &Watermarks, stream: usize| {
        let w = watermarks.watermark(stream);
        if w == i64::MIN || w == i64::MAX {
            return;
        }
        let reference = match clock {
            Clock::Wall => now_ms(),
            Clock::EventTime => watermarks.max_event_ms(stream).unwrap_or(w),
        };
        metrics
            .watermark_delay
            .with_label_values(&[streams[stream]])
            .set((reference - w) as f64 / 1000.0);
    };
    let mut finished = false;
    let mut backlog_seen = 0;
    let mut backlogged: Vec<Vec<i32>> = vec![Vec::new(); config.streams.len()];
    loop {
        let msg = input.blocking_recv();
        // Partitions the source holds records of are slow, not idle (changes are rare).
        if let Some(b) = &backlog
            && b.generation() != backlog_seen
        {
            backlog_seen = b.generation();
            backlogged.iter_mut().for_each(Vec::clear);
            for (topic, partition) in b.pending() {
                if let Some(stream) = config.stream_of_topic(&topic) {
                    backlogged[stream].push(partition);
                }
            }
            for (stream, partitions) in backlogged.iter().enumerate() {
                watermarks.set_backlog(stream, partitions);
            }
        }
        // A new rule set takes over between batches: none is evaluated twice or skipped.
        while let Some(mut new) = reload.as_ref().and_then(|rx| rx.try_recv().ok()) {
            if !routes.is_empty() && new.routes() != detectors.routes() {
                // The internal topics a run reads are fixed when it starts.
                tracing::error!(
                    "rule reload refused: it changes which streams are repartitioned by which column; restart to apply it"
                );
                continue;
            }
            new.set_repartitioned(!routes.is_empty());
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
                kept_state = kept,
                "new rule set in effect"
            );
        }
        let mut alerts = Vec::new();
        timings.clear();
        let processed = match msg {
            Some(Input::Batch(batch)) if batch.route.is_some() => {
                let route = batch.route.expect("guarded");
                let lane = lanes[route];
                let decoder = &mut decoders[batch.stream];
                let mut decoded = decoder.decode(&batch);
                let time_col = decoder.time_col();
                let late = watermarks.split_late(lane, &batch, &mut decoded, time_col);
                if late.late > 0 {
                    metrics
                        .late_events
                        .with_label_values(&[streams[batch.stream]])
                        .inc_by(late.late as u64);
                }
                let now = processing_ms();
                for &(source, progress) in &batch.marks {
                    let p = crate::repartition::virtual_partition(batch.partition, source);
                    watermarks.observe(lane, p, Some(progress), now);
                }
                ctx.partition = batch.partition;
                ctx.watermark_ms = watermarks.watermark(lane);
                ctx.now_ms = now_ms();
                detectors.evaluate_route(route, &decoded.batch, &ctx, &mut alerts, &mut timings);
                vec![Processed {
                    stream: batch.stream,
                    records: batch.len(),
                    bytes: batch.payload_bytes(),
                    alerts,
                    dead: decoded.dead,
                    oldest_timestamp_ms: batch.oldest_timestamp_ms(),
                    positions: batch.positions,
                    checkpoint: None,
                    route: Some(route),
                    shuffled: Vec::new(),
                }]
            }
            Some(Input::Batch(batch)) => {
                let decoder = &mut decoders[batch.stream];
                let mut decoded = decoder.decode(&batch);
                let time_col = decoder.time_col();
                let late = watermarks.split_late(batch.stream, &batch, &mut decoded, time_col);
                if late.late > 0 {
                    metrics
                        .late_events
                        .with_label_values(&[streams[batch.stream]])
                        .inc_by(late.late as u64);
                }
                let max = max_millis(&decoded.batch, time_col);
                let before = watermarks.progress(batch.stream, batch.partition);
                watermarks.observe(batch.stream, batch.partition, max, processing_ms());
                let after = watermarks.progress(batch.stream, batch.partition);
                // The records, then (when the partition's progress moved) a marker to every
                // partition of each route of the stream.
                shuffled.clear();
                for (r, live) in routes.iter().enumerate() {
                    if live.route.stream != batch.stream {
                        continue;
                    }
                    crate::repartition::shuffle(
                        r,
                        &live.route.column,
                        live.partitions,
                        &batch,
                        &decoded,
                        &mut shuffled,
                    );
                    if let Some(progress) = after.filter(|_| after != before) {
                        crate::repartition::marks(
                            r,
                            live.partitions,
                            batch.partition,
                            progress,
                            &mut shuffled,
                        );
                    }
                }
                ctx.partition = batch.partition;
                ctx.watermark_ms = watermarks.watermark(batch.stream);
                ctx.now_ms = match clock {
                    Clock::Wall => now_ms(),
                    Clock::EventTime => {
                        if let Some(max) = max {
                            stream_time = stream_time.max(max);
                        }
                        stream_time.max(0)
                    }
                };
                detectors.evaluate(
                    batch.stream,
                    &decoded.batch,
                    &ctx,
                    &mut alerts,
                    &mut timings,
                );
                report_watermark(&watermarks, batch.stream);
                vec![Processed {
                    stream: batch.stream,
                    records: batch.len(),
                    bytes: batch.payload_bytes(),
                    alerts,
                    dead: decoded.dead,
                    oldest_timestamp_ms: batch.oldest_timestamp_ms(),
                    positions: batch.positions,
                    checkpoint: None,
                    route: None,
                    shuffled: std::mem::take(&mut shuffled),
                }]
            }
            Some(Input::Tick) | None => {
                // A tick: idle partitions may let watermarks move. The end of a replay: every
                // window closes. The end of a live run closes nothing (its state is the
                // checkpoint's to keep).
                if msg.is_none() {
                    if clock == Clock::Wall || finished {
                        break;
                    }
                    finished = true;
                    watermarks.finish();
                }
                let now = processing_ms();
                let mut outputs = Vec::new();
                for stream in 0..config.streams.len() {
                    if !finished && !watermarks.refresh(stream, now) {
                        continue;
                    }
                    report_watermark(&watermarks, stream);
                    ctx.watermark_ms = watermarks.watermark(stream);
                    if clock == Clock::Wall {
                        ctx.now_ms = now_ms();
                    }
                    let mut alerts = Vec::new();
                    detectors.advance(stream, &ctx, &mut alerts, &mut timings);
                    if !alerts.is_empty() {
                        outputs.push(Processed {
                            stream,
                            records: 0,
                            bytes: 0,
                            alerts,
                            dead: Vec::new(),
                            oldest_timestamp_ms: None,
                            positions: Vec::new(),
                            checkpoint: None,
                            route: None,
                            shuffled: Vec::new(),
                        });
                    }
                }
                for (route, &lane) in lanes.iter().enumerate() {
                    if !finished && !watermarks.refresh(lane, now) {
                        continue;
                    }
                    ctx.watermark_ms = watermarks.watermark(lane);
                    ctx.now_ms = now_ms();
                    let mut alerts = Vec::new();
                    detectors.advance_route(route, &ctx, &mut alerts, &mut timings);
                    if !alerts.is_empty() {
                        outputs.push(Processed {
                            stream: routes[route].route.stream,
                            records: 0,
                            bytes: 0,
                            alerts,
                            dead: Vec::new(),
                            oldest_timestamp_ms: None,
                            positions: Vec::new(),
                            checkpoint: None,
                            route: Some(route),
                            shuffled: Vec::new(),
                        });
                    }
                }
                outputs
            }
        };
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
        detectors.rule_seconds(&timings, &mut |rule, spent| {
            metrics
                .rule_eval_seconds
                .with_label_values(&[rule])
                .inc_by(spent.as_secs_f64());
        });
        let now = detectors.state();
        if now != state {
            report_state(metrics, &state, &now);
            state = now;
        }
        rule_gauges.refresh(&detectors, metrics);
        let mut processed = processed;
        if let (Some(interval), Some(ending), Some(last)) =
            (interval, &ending, processed.last_mut())
        {
            // Not once the run is ending for a rebalance: the partitions may be another
            // instance's now, and it restores them from the previous checkpoint.
            if last_checkpoint.elapsed() >= interval
                && ending.load(Ordering::SeqCst) != ENDING_REBALANCE
            {
                last_checkpoint = std::time::Instant::now();
                let mut entries = take_checkpoint(&mut detectors, &mut entries_out, metrics);
                progress_entries(config, &watermarks, &mut progress_written, &mut entries);
                last.checkpoint = Some(entries);
            }
        }
        for p in processed {
            if out.blocking_send(p).is_err() {
                return detectors; // the deliver task stopped
            }
        }
        // The deliver task stopped (a failed checkpoint ends the run) and waits for this
        // thread: noticed here too, since ticks and batches without output send nothing.
        if out.is_closed() {
            return detectors;
        }
        if finished {
            break;
        }
    }
    // The input ended: at shutdown, a last checkpoint of everything processed.
    if let Some(ending) = ending
        && ending.load(Ordering::SeqCst) == ENDING_SHUTDOWN
    {
        let mut entries = take_checkpoint(&mut detectors, &mut entries_out, metrics);
        progress_entries(config, &watermarks, &mut progress_written, &mut entries);
        let _ = out.blocking_send(Processed {
            stream: 0,
            records: 0,
            bytes: 0,
            alerts: Vec::new(),
            dead: Vec::new(),
            positions: Vec::new(),
            oldest_timestamp_ms: None,
            checkpoint: Some(entries),
            route: None,
            shuffled: Vec::new(),
        });
    }
    detectors
}

/// Changelog key prefix of a partition's event-time progress (then the stream's name). No
/// detector key starts with a zero byte then `p` (those start with the name's length), and
/// the restore reader skips only `\0palisade.` keys.
const PROGRESS_KEY: &[u8] = b"\0progress\0";

/// Appends the event-time progress of every partition that moved since it was last written.
fn progress_entries(
    config: &Config,
    watermarks: &Watermarks,
    written: &mut std::collections::HashMap<(usize, i32), i64>,
    out: &mut Vec<StateEntry>,
) {
    for (stream, s) in config.streams.iter().enumerate() {
        for (partition, progress) in watermarks.partitions(stream) {
            if written.get(&(stream, partition)) == Some(&progress) {
                continue;
            }
            written.insert((stream, partition), progress);
            let mut key = PROGRESS_KEY.to_vec();
            key.extend_from_slice(s.name().as_bytes());
            out.push(StateEntry {
                partition,
                key,
                value: Some(progress.to_le_bytes().to_vec()),
            });
        }
    }
}

/// A progress entry's (stream, partition, event time); `None` for any other entry.
fn progress_of(config: &Config, e: &StateEntry) -> Option<(usize, i32, i64)> {
    let name = e.key.strip_prefix(PROGRESS_KEY)?;
    let stream = config.stream_index(std::str::from_utf8(name).ok()?)?;
    let bytes: [u8; 8] = e.value.as_deref()?.try_into().ok()?;
    Some((stream, e.partition, i64::from_le_bytes(bytes)))
}

/// The state changed since the last checkpoint, with its size per key for the gauge.
fn take_checkpoint(
    detectors: &mut DetectorSet,
    scratch: &mut Vec<StateEntry>,
    metrics: &Metrics,
) -> Vec<StateEntry> {
    scratch.clear();
    detectors.checkpoint(scratch);
    // Per detector kind: (bytes, values).
    let mut sizes = [(0usize, 0usize); 3];
    for e in scratch.iter() {
        if let Some(v) = &e.value {
            let kind = match crate::detect::detector_of(&e.key) {
                Some(b"sigma") => 0,
                Some(b"baseline") => 1,
                _ => 2,
            };
            sizes[kind].0 += v.len();
            sizes[kind].1 += 1;
        }
    }
    for (kind, (bytes, values)) in ["sigma", "baseline", "sql"].into_iter().zip(sizes) {
        if values > 0 {
            metrics
                .state_bytes_per_key
                .with_label_values(&[kind])
                .set(bytes as f64 / values as f64);
        }
    }
    std::mem::take(scratch)
}

/// The per-rule state gauges: refreshed at most once a second (a refresh walks every rule's
/// state), their series removed when a reload drops the rule.
#[derive(Default)]
struct RuleStateGauges {
    last: Option<std::time::Instant>,
    /// Rules exported at the last refresh.
    exported: std::collections::HashSet<String>,
    seen: std::collections::HashSet<String>,
}

impl RuleStateGauges {
    const EVERY: Duration = Duration::from_secs(1);

    fn refresh(&mut self, detectors: &DetectorSet, metrics: &Metrics) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        self.seen.clear();
        detectors.rule_state(&mut |rule, size| {
            metrics
                .rule_state_entries
                .with_label_values(&[rule])
                .set(size.entries as i64);
            metrics
                .rule_state_bytes
                .with_label_values(&[rule])
                .set(size.bytes as i64);
            self.seen.insert(rule.to_string());
        });
        for gone in self.exported.difference(&self.seen) {
            let _ = metrics.rule_state_entries.remove_label_values(&[gone]);
            let _ = metrics.rule_state_bytes.remove_label_values(&[gone]);
        }
        std::mem::swap(&mut self.exported, &mut self.seen);
    }
}

/// Exports the detectors' state gauges and what their bounds evicted since `was`.
fn report_state(
    metrics: &Metrics,
    was: &crate::detect::StateCounters,
    now: &crate::detect::StateCounters,
) {
    for (kind, n) in [
        ("groups", now.groups),
        ("events", now.events),
        ("window_keys", now.window_keys),
    ] {
        metrics.state_held.with_label_values(&[kind]).set(n as i64);
    }
    metrics
        .state_bytes
        .with_label_values(&["sql_window"])
        .set(now.window_bytes as i64);
    for (reason, was, is) in [
        ("groups_evicted", was.groups_evicted, now.groups_evicted),
        ("events_dropped", was.events_dropped, now.events_dropped),
        ("events_late", was.events_late, now.events_late),
        (
            "evidence_truncated",
            was.evidence_truncated,
            now.evidence_truncated,
        ),
        (
            "window_keys_evicted",
            was.window_keys_evicted,
            now.window_keys_evicted,
        ),
    ] {
        if is > was {
            metrics
                .state_evicted
                .with_label_values(&[reason])
                .inc_by(is - was);
        }
    }
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
