//! The commands, assembled from the stages: live runs against Kafka (embedded or real),
//! replay of files, and the simulator writers. `main.rs` parses arguments and calls these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};

use crate::alert::Severity;
use crate::alert::alertmanager::AlertmanagerFormat;
use crate::alert::http::Endpoint;
use crate::alert::notify::{Fanout, Notifier};
use crate::alert::sink::{JsonlSink, KafkaSink, producer};
use crate::alert::stage::AlertStage;
use crate::alert::webhook::WebhookFormat;
use crate::config::{Config, ConfigError};
use crate::detect::{DetectorSet, LoadError};
use crate::metrics::Metrics;
use crate::pipeline::{
    Checkpointing, Clock, Echo, LiveRoute, NoCommit, Pipeline, Sink, SinkError, Summary,
};
use crate::privacy::Pseudonymiser;
use crate::server::{Health, Server};
use crate::sim::{SimOptions, Simulator};
use crate::source::embedded::{EmbeddedKafka, Pace, Written};
use crate::source::files::{FileSource, InputError};
use crate::source::kafka;
use crate::state::{self, DeliveryMode, KafkaStateStore};
use std::sync::atomic::AtomicU8;

/// Why a command failed. Each variant says whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is wrong (the user's to fix).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// One or more rules are wrong (the user's to fix).
    #[error("{0}")]
    Rules(#[from] LoadError),
    /// A replay input cannot be used.
    #[error("{0}")]
    Input(#[from] InputError),
    /// Kafka refused a client or an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Output could not be delivered.
    #[error("{0}")]
    Sink(#[from] SinkError),
    /// The asset inventory cannot be used (the user's to fix).
    #[error("{0}")]
    Inventory(#[from] crate::alert::enrich::InventoryError),
    /// Local I/O (metrics port, output files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
    let context = context.into();
    move |source| AppError::Io { context, source }
}

/// Loads the detectors of `config` (from `rules` when given, else the configured folders).
pub async fn load_detectors(config: &Config, rules: &[PathBuf]) -> Result<DetectorSet, LoadError> {
    DetectorSet::load(config, &rule_paths(config, rules)).await
}

/// `rules` when given (`--rules`), else the configured rule folders.
pub fn rule_paths(config: &Config, rules: &[PathBuf]) -> Vec<PathBuf> {
    if rules.is_empty() {
        config.rule_dirs()
    } else {
        rules.to_vec()
    }
}

/// The pseudonymiser for `config`, warning when the demo key is in use.
pub fn pseudonymiser(config: &Config) -> Pseudonymiser {
    let (p, demo) = Pseudonymiser::from_env(&config.privacy.key_env);
    if demo {
        tracing::warn!(
            var = config.privacy.key_env,
            "no pseudonymisation key set; using the built-in demo key (set the variable for real data)"
        );
    }
    p
}

/// Options of a live run.
pub struct Live {
    /// Metrics registry (shared with the caller, e.g. tests).
    pub metrics: Arc<Metrics>,
    /// Readiness (shared with the caller).
    pub health: Arc<Health>,
    /// Where to serve /metrics; port 0 picks one.
    pub metrics_addr: SocketAddr,
    /// Terminal output of alerts.
    pub echo: Echo,
    /// Told the bound metrics address once listening.
    pub on_listening: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// The rule folders (or files) the detectors came from, watched for changes.
    pub rules: Vec<PathBuf>,
    /// The rule files as they were just before the detectors were loaded
    /// ([`rule_files_state`]): a change after that point triggers a reload.
    pub rules_seen: Option<RuleFiles>,
}

impl Live {
    /// Defaults for `config`: fresh metrics, its listen address, no echo.
    pub fn new(config: &Config) -> Live {
        let metrics = Arc::new(Metrics::new());
        Live {
            health: Arc::new(Health::with_gauge(metrics.ready.clone())),
            metrics,
            metrics_addr: config.metrics_addr(),
            echo: Echo::Off,
            on_listening: None,
            rules: config.rule_dirs(),
            rules_seen: None,
        }
    }
}

/// Consumes the configured topics until `shutdown`, delivering alerts to Kafka and committing
/// offsets once they are acknowledged. `force` aborts a delivery that cannot complete.
pub async fn run_live(
    config: Arc<Config>,
    detectors: DetectorSet,
    live: Live,
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
) -> Result<Summary, AppError> {
    let Live {
        metrics,
        health,
        metrics_addr,
        echo,
        on_listening,
        rules,
        rules_seen,
    } = live;
    health.set("kafka", false, "starting");
    health.set("rules", true, format!("{} rules loaded", detectors.len()));
    health.set("sink", true, "delivering");
    metrics.rules_loaded.set(detectors.len() as i64);
    let server = Server::start(
        metrics_addr,
        Arc::clone(&metrics),
        Arc::clone(&health),
        shutdown.clone(),
    )
    .await
    .map_err(io(format!("cannot serve metrics on {metrics_addr}")))?;
    tracing::info!(addr = %server.addr, "metrics on http://{}/metrics", server.addr);
    if let Some(tx) = on_listening {
        let _ = tx.send(server.addr);
    }
    let outputs = [
        config.kafka.alerts_topic.clone(),
        config.kafka.dead_letter_topic.clone(),
    ];
    if let Err(e) = kafka::ensure_topics(&config, &outputs).await {
        tracing::warn!(error = %e, "could not check output topics; continuing");
    }
    let changelog = config.state.changelog_topic(&config.kafka.group_id);
    if let Err(e) = kafka::ensure_changelog(&config, &changelog).await {
        tracing::warn!(error = %e, topic = changelog, "could not check the changelog topic; continuing");
    }
    let routes = live_routes(&config, detectors.routes().to_vec()).await;
    let internal: Vec<String> = routes.iter().map(|r| r.topic.clone()).collect();
    let consumer = Arc::new(kafka::consumer_with(
        &config,
        Arc::clone(&metrics),
        Arc::clone(&health),
        &internal,
    )?);
    // Source indices: the streams' topics, then the routes' internal topics.
    let sources = Arc::new(
        config
            .input_topics()
            .into_iter()
            .chain(internal.iter().cloned())
            .collect::<Vec<_>>(),
    );
    // Ends at shutdown, like the run.
    tokio::spawn(kafka::watch_group(
        Arc::clone(&consumer),
        Arc::clone(&config),
        sources.to_vec(),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    let instance = if config.state.instance_id.is_empty() {
        format!("{}-{}", std::process::id(), crate::pipeline::now_ms())
    } else {
        config.state.instance_id.clone()
    };
    let (producer, mode) = state::producer(&config, &changelog, &instance).await?;
    let producer = state::SharedProducer::new(producer);
    for m in [DeliveryMode::ExactlyOnce, DeliveryMode::AtLeastOnce] {
        metrics
            .delivery_mode
            .with_label_values(&[m.as_str()])
            .set(i64::from(m == mode));
    }
    health.set("delivery", true, mode.as_str());
    tracing::info!(mode = mode.as_str(), changelog, "delivery mode");
    // Suppression and the notification sinks outlive assignments: a rebalance neither
    // forgets what was folded nor restarts the buffers towards Alertmanager and webhooks.
    let alerting = Arc::new(std::sync::Mutex::new(AlertStage::new(
        &config,
        Arc::clone(&metrics),
    )?));
    let kafka_sink = KafkaSink::new(
        &config,
        producer.clone(),
        Arc::clone(&sources),
        Arc::clone(&metrics),
        Arc::clone(&health),
        force.clone(),
    )
    .with_routes(internal);
    let sink = SharedSink(Arc::new(tokio::sync::Mutex::new(notification_sinks(
        &config,
        Box::new(kafka_sink),
        &metrics,
        server.addr,
        force.clone(),
    ))));
    let mut current = Some((detectors, rules_seen));
    let mut owned: Vec<i32> = Vec::new();
    let mut total = Summary::default();
    // One run of the pipeline per assignment: a rebalance ends it, and the next one restores
    // the state of the partitions now owned and seeks them to the same checkpoint.
    loop {
        let run = run_assignment(
            &config,
            &LiveParts {
                metrics: Arc::clone(&metrics),
                health: Arc::clone(&health),
                alerting: Arc::clone(&alerting),
                sink: sink.clone(),
                routes: routes.clone(),
            },
            &consumer,
            &sources,
            (&producer, mode, &changelog),
            &mut current,
            &mut owned,
            &rules,
            echo,
            shutdown.clone(),
        )
        .await;
        let stopping = *shutdown.borrow();
        match run {
            Ok((summary, rebalanced)) => {
                total.records += summary.records;
                total.alerts += summary.alerts;
                total.dead_letters += summary.dead_letters;
                if !rebalanced {
                    break;
                }
                // What this run produced since its last checkpoint is redone by the owners.
                KafkaStateStore::abort(&producer.get(), mode, &metrics);
            }
            Err(e) if stopping => {
                KafkaStateStore::abort(&producer.get(), mode, &metrics);
                server.stop().await;
                return Err(e);
            }
            Err(e) if producer.is_wedged() => {
                // Its transaction cannot be ended by this producer: a new one with the same
                // transactional id fences it (aborting its transaction) and takes over.
                tracing::error!(error = %e, "transactional producer wedged; replacing it and resuming from the last checkpoint");
                health.set("kafka", false, format!("replacing the producer: {e}"));
                metrics.producer_replacements.inc();
                loop {
                    match state::producer(&config, &changelog, &instance).await {
                        Ok((p, _)) => {
                            producer.replace(p);
                            break;
                        }
                        Err(e) if *shutdown.borrow() => {
                            server.stop().await;
                            return Err(e.into());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the new producer could not start; retrying");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            Err(e) => {
                // A failed checkpoint or restore: start over from the last checkpoint.
                tracing::warn!(error = %e, "run interrupted; resuming from the last checkpoint");
                health.set(
                    "kafka",
                    false,
                    format!("resuming from the last checkpoint: {e}"),
                );
                KafkaStateStore::abort(&producer.get(), mode, &metrics);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    // The last checkpoint committed and opened an empty transaction: close it.
    KafkaStateStore::abort(&producer.get(), mode, &metrics);
    // Flush the producer, drain the notification buffers.
    let finished = sink.0.lock().await.finish().await;
    health.set("kafka", false, "stopping");
    server.stop().await;
    finished?;
    Ok(total)
}

/// What every run of [`run_assignment`] shares.
struct LiveParts {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Enrichment and suppression, kept across assignments.
    alerting: Arc<std::sync::Mutex<AlertStage>>,
    /// The alerts topic and the notification sinks, kept across assignments.
    sink: SharedSink,
    /// The routes fed through internal topics (fixed for the live run).
    routes: Vec<LiveRoute>,
}

/// The routes of `detectors` with their internal topics, created if missing with the
/// partition count of their stream's (first) topic (see [`crate::repartition`]).
async fn live_routes(config: &Config, routes: Vec<crate::repartition::Route>) -> Vec<LiveRoute> {
    let mut out = Vec::new();
    for route in routes {
        let topic = route.topic(config, &config.kafka.group_id);
        let source = &config.streams[route.stream].topics[0];
        let partitions = match kafka::partition_count(config, source) {
            Ok(Some(n)) => n,
            Ok(None) => config.kafka.create_partitions,
            Err(e) => {
                tracing::warn!(error = %e, topic = source, "cannot read the partition count; using create_partitions");
                config.kafka.create_partitions
            }
        };
        if let Err(e) = kafka::ensure_internal(config, &topic, partitions).await {
            tracing::warn!(error = %e, topic, "could not check the internal topic; continuing");
        }
        tracing::info!(
            route = route.name(config),
            topic,
            partitions,
            "rules grouped off their stream's key are fed through an internal topic"
        );
        out.push(LiveRoute {
            route,
            topic,
            partitions,
        });
    }
    out
}

/// One sink used by every run of the pipeline in turn (see [`run_live`]): finishing a run
/// does not finish it; the live run does, once, at the end.
#[derive(Clone)]
struct SharedSink(Arc<tokio::sync::Mutex<Box<dyn Sink>>>);

impl Sink for SharedSink {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a crate::pipeline::Processed,
    ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.0.lock().await.deliver(batch).await })
    }
}

/// One run of the pipeline over the current assignment: restores its state from the
/// changelog, seeks its partitions to the checkpoint, and processes until shutdown (a last
/// checkpoint) or the next rebalance (no checkpoint: returns true).
#[allow(clippy::too_many_arguments)]
async fn run_assignment(
    config: &Arc<Config>,
    parts: &LiveParts,
    consumer: &Arc<kafka::PalisadeConsumer>,
    sources: &Arc<Vec<String>>,
    (producer, mode, changelog): (&state::SharedProducer, DeliveryMode, &str),
    current: &mut Option<(DetectorSet, Option<RuleFiles>)>,
    owned: &mut Vec<i32>,
    rules: &[PathBuf],
    echo: Echo,
    shutdown: watch::Receiver<bool>,
) -> Result<(Summary, bool), AppError> {
    use rdkafka::consumer::Consumer;
    let LiveParts {
        metrics,
        health,
        alerting,
        sink,
        routes,
    } = parts;
    // Before the assignment is read: a rebalance from here on ends this run (see
    // `kafka::run_until_rebalance`).
    let epoch = consumer.context().rebalances();
    let assignment = consumer.assignment()?;
    let mut partitions: Vec<i32> = assignment
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    let restored = if partitions.is_empty() {
        state::Restored::default()
    } else {
        let (config, topic, partitions) = (
            Arc::clone(config),
            changelog.to_string(),
            partitions.clone(),
        );
        tracing::info!(partitions = ?partitions, "restoring state from the changelog");
        let read = tokio::task::spawn_blocking(move || {
            state::read_changelog(&config, &topic, &partitions, mode)
        });
        // The reader gives up after 2 minutes of its own; a client call that blocks past
        // its timeout must not hold the run for ever either (the run starts again).
        match tokio::time::timeout(std::time::Duration::from_secs(180), read).await {
            Ok(joined) => joined.expect("changelog reader panicked")?,
            Err(_) => {
                return Err(AppError::Kafka(
                    rdkafka::error::KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    ),
                ));
            }
        }
    };
    if restored.incomplete > 0 {
        tracing::info!(
            entries = restored.incomplete,
            "ignored the entries of a checkpoint cut short"
        );
    }
    if !partitions.is_empty() {
        // Every assigned partition starts where its state was checkpointed; without a
        // checkpoint, at the committed offset (or the earliest).
        let committed =
            consumer.committed_offsets(assignment.clone(), std::time::Duration::from_secs(10))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match restored
                .offsets
                .get(&(e.topic().to_string(), e.partition()))
            {
                Some(&next) => rdkafka::Offset::Offset(next),
                None => match e.offset() {
                    rdkafka::Offset::Offset(n) => rdkafka::Offset::Offset(n),
                    _ => rdkafka::Offset::Beginning,
                },
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        consumer.seek_partitions(tpl, std::time::Duration::from_secs(10))?;
        tracing::info!(
            partitions = ?partitions,
            entries = restored.entries.len(),
            "state restored; resuming from the checkpoint"
        );
    }
    // The detectors of the previous run (reloads included), without the state of the
    // partitions it owned: what this run owns comes from the changelog.
    let (mut detectors, rules_seen) = match current.take() {
        Some(c) => c,
        None => {
            let seen = rule_files_state(rules);
            (DetectorSet::load(config, rules).await?, Some(seen))
        }
    };
    detectors.release(owned);
    owned.clone_from(&partitions);
    metrics.rules_loaded.set(detectors.len() as i64);
    let store = KafkaStateStore::new(
        producer,
        Arc::clone(consumer),
        mode,
        changelog.to_string(),
        Arc::clone(sources),
        Arc::clone(metrics),
    )?;
    let ending = Arc::new(AtomicU8::new(0));
    let (tx, rx) = mpsc::channel(*config.pipeline.channel_batches.get_ref());
    let (stop_tx, stop_rx) = watch::channel(false);
    let forward = tokio::spawn({
        let mut shutdown = shutdown.clone();
        async move {
            crate::pipeline::stopped(&mut shutdown).await;
            let _ = stop_tx.send(true);
        }
    });
    let route_topics: Vec<(String, usize)> = routes
        .iter()
        .map(|r| (r.topic.clone(), r.route.stream))
        .collect();
    let source = tokio::spawn(kafka::run_until_rebalance(
        Arc::clone(consumer),
        Arc::clone(config),
        Arc::clone(sources),
        Arc::new(route_topics),
        Arc::clone(health),
        tx,
        stop_rx,
        Arc::clone(&ending),
        epoch,
    ));
    let (reload_tx, reload_rx) = std::sync::mpsc::sync_channel(1);
    let watcher = tokio::spawn(watch_rules(
        Arc::clone(config),
        rules.to_vec(),
        rules_seen,
        reload_tx,
        Arc::clone(metrics),
        Arc::clone(health),
        shutdown.clone(),
    ));
    let returned = Arc::new(std::sync::Mutex::new(None));
    let pipeline = Pipeline {
        pseudonymiser: pseudonymiser(config),
        config: Arc::clone(config),
        detectors,
        metrics: Arc::clone(metrics),
        sink: Box::new(sink.clone()),
        committer: Arc::new(NoCommit),
        echo,
        clock: Clock::Wall,
        reload: Some(reload_rx),
        checkpoints: Some(Checkpointing {
            interval: std::time::Duration::from_millis(config.state.checkpoint_interval_ms),
            store: Box::new(store),
            ending,
            restore: restored.entries,
            returned: Arc::clone(&returned),
        }),
        alerting: Some(Arc::clone(alerting)),
        routes: routes.clone(),
        backlog: Some(consumer.context().backlog()),
    };
    let result = pipeline.run(rx).await;
    if let Some(d) = returned.lock().unwrap_or_else(|p| p.into_inner()).take() {
        *current = Some((d, None));
    }
    watcher.abort();
    forward.abort();
    // The pipeline stopped early (an error): the source may be waiting on an idle poll.
    if result.is_err() {
        source.abort();
    }
    let rebalanced = source.await.unwrap_or(false);
    Ok((result?, rebalanced))
}

/// `primary` alone, or with the configured notification sinks (Alertmanager, webhook) behind
/// it; see [`crate::alert::notify`].
pub fn notification_sinks(
    config: &Config,
    primary: Box<dyn Sink>,
    metrics: &Arc<Metrics>,
    metrics_addr: SocketAddr,
    force: watch::Receiver<bool>,
) -> Box<dyn Sink> {
    let alerting = &config.alerting;
    let mut notifiers = Vec::new();
    if let Some(am) = &alerting.alertmanager {
        let endpoint = Endpoint::parse(am.url.get_ref(), "/api/v2/alerts")
            .expect("validated with the configuration");
        let format = AlertmanagerFormat {
            resolve_after: std::time::Duration::from_secs(am.resolve_after_secs.unwrap_or(900)),
            generator_url: am
                .generator_url
                .clone()
                .unwrap_or_else(|| format!("http://{metrics_addr}/")),
        };
        tracing::info!(url = am.url.get_ref(), "notifying Alertmanager");
        notifiers.push(Notifier::start(
            "alertmanager",
            am,
            Severity::High,
            endpoint,
            Box::new(format),
            Arc::clone(metrics),
        ));
    }
    if let Some(hook) = &alerting.webhook {
        let endpoint =
            Endpoint::parse(hook.url.get_ref(), "").expect("validated with the configuration");
        tracing::info!(url = hook.url.get_ref(), "notifying the webhook");
        notifiers.push(Notifier::start(
            "webhook",
            hook,
            Severity::Info,
            endpoint,
            Box::new(WebhookFormat),
            Arc::clone(metrics),
        ));
    }
    if notifiers.is_empty() {
        return primary;
    }
    Box::new(Fanout {
        primary,
        notifiers,
        force,
        drain: std::time::Duration::from_secs(10),
    })
}

/// Options of the simulator in the embedded run.
pub struct City {
    /// Simulator settings.
    pub sim: SimOptions,
    /// Pacing.
    pub pace: Pace,
}

/// `palisade run` with no broker: an in-process Kafka, the simulated city writing into it,
/// and the live pipeline reading from it.
pub async fn run_embedded(
    mut config: Config,
    detectors: DetectorSet,
    city: City,
    live: Live,
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
) -> Result<(Summary, Written), AppError> {
    let mut topics = config.input_topics();
    topics.push(config.kafka.alerts_topic.clone());
    topics.push(config.kafka.dead_letter_topic.clone());
    topics.push(config.state.changelog_topic(&config.kafka.group_id));
    // The mock cluster does not create topics through the admin API in time: the internal
    // topics of repartitioned rules are made here, like every other.
    for route in detectors.routes() {
        topics.push(route.topic(&config, &config.kafka.group_id));
    }
    let kafka = EmbeddedKafka::start(3, &topics, config.kafka.create_partitions)?;
    config.kafka.brokers = kafka.bootstrap_servers();
    tracing::info!(brokers = config.kafka.brokers, "embedded Kafka started");
    let sim_producer = producer(&config)?;
    let simulator = Simulator::new(city.sim);
    let sim = tokio::spawn({
        let stop = shutdown.clone();
        async move { crate::source::embedded::produce(&sim_producer, simulator, city.pace, stop).await }
    });
    let summary = run_live(Arc::new(config), detectors, live, shutdown, force).await?;
    let written = match sim.await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => panic!("simulator task panicked: {e}"),
    };
    drop(kafka);
    Ok((summary, written))
}

/// Where replay output goes.
pub struct ReplayOutput {
    /// Alerts as JSON lines.
    pub alerts: Box<dyn std::io::Write + Send>,
    /// Dead letters as JSON lines (`None`: log them).
    pub dead: Option<Box<dyn std::io::Write + Send>>,
}

/// Runs the detectors over files in event-time order. Same input, same output.
pub async fn replay(
    config: Arc<Config>,
    detectors: DetectorSet,
    inputs: &[PathBuf],
    stream: Option<&str>,
    output: ReplayOutput,
    metrics: Arc<Metrics>,
) -> Result<Summary, AppError> {
    let source = FileSource::open(Arc::clone(&config), inputs, stream)?;
    let sources = Arc::clone(&source.sources);
    let (tx, rx) = mpsc::channel(*config.pipeline.channel_batches.get_ref());
    let reader = tokio::task::spawn_blocking(move || source.run(tx));
    let sink = JsonlSink::new(&config, output.alerts, output.dead, sources);
    let pipeline = Pipeline {
        pseudonymiser: pseudonymiser(&config),
        config,
        detectors,
        metrics,
        sink: Box::new(sink),
        committer: Arc::new(NoCommit),
        echo: Echo::Off,
        clock: Clock::EventTime,
        reload: None,
        alerting: None,
        checkpoints: None,
        routes: Vec::new(),
        backlog: None,
    };
    let summary = pipeline.run(rx).await?;
    match reader.await {
        Ok(result) => result?,
        Err(e) => panic!("replay reader panicked: {e}"),
    }
    Ok(summary)
}

/// `palisade simulate --brokers`: the city into a real Kafka.
pub async fn simulate_to_kafka(
    config: &Config,
    sim: SimOptions,
    pace: Pace,
    stop: watch::Receiver<bool>,
) -> Result<Written, AppError> {
    kafka::ensure_topics(config, &config.input_topics()).await?;
    let producer = producer(config)?;
    Ok(crate::source::embedded::produce(&producer, Simulator::new(sim), pace, stop).await?)
}

/// `palisade simulate --output`: the city into a JSONL file, and with `truth` its incidents
/// (the ground truth of every scenario occurrence, silent ones included) as JSON lines.
pub fn simulate_to_file(
    path: &std::path::Path,
    truth: Option<&std::path::Path>,
    sim: SimOptions,
) -> Result<Written, AppError> {
    let create = |path: &std::path::Path| {
        std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .map_err(io(format!("cannot create {}", path.display())))
    };
    let mut out = create(path)?;
    let mut truth_out = truth.map(create).transpose()?;
    crate::source::embedded::write_jsonl(
        &mut out,
        Simulator::new(sim),
        truth_out.as_mut().map(|t| t as &mut dyn std::io::Write),
    )
    .map_err(io(format!("cannot write {}", path.display())))
}

/// Hot reload: watches the rule folders (every `[detectors] reload_interval_ms`) and listens
/// for SIGHUP; on a change, compiles the whole rule set again off the hot path and hands it to
/// the pipeline, which swaps it in between two batches. A set that fails to load changes
/// nothing: the previous rules keep running, and the failure is logged, counted
/// (`palisade_rule_reloads_total{result="failed"}`) and shown by `/readyz` until a later
/// reload succeeds.
pub async fn watch_rules(
    config: Arc<Config>,
    paths: Vec<PathBuf>,
    seen: Option<RuleFiles>,
    tx: std::sync::mpsc::SyncSender<DetectorSet>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = config.detectors.reload_interval_ms;
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; rule reload by signal is off");
            None
        }
    };
    let mut seen = seen.unwrap_or_else(|| watched_state(&config, &paths));
    loop {
        let poll = async {
            if interval == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(interval)).await
            }
        };
        let hup = async {
            match &mut hangup {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let forced = tokio::select! {
            _ = crate::pipeline::stopped(&mut shutdown) => return,
            _ = poll => false,
            _ = hup => true,
        };
        let now = watched_state(&config, &paths);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        tracing::info!(
            reason = if forced { "SIGHUP" } else { "files changed" },
            "reloading rules"
        );
        let load = {
            let config = Arc::clone(&config);
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || {
                tokio::runtime::Handle::current().block_on(DetectorSet::load(&config, &paths))
            })
        };
        match load.await {
            Ok(Ok(set)) => {
                let rules = set.len();
                for w in set.warnings() {
                    tracing::warn!("{w}");
                }
                let tx = tx.clone();
                let sent = tokio::task::spawn_blocking(move || tx.send(set).is_ok()).await;
                if !matches!(sent, Ok(true)) {
                    return; // the pipeline has stopped
                }
                metrics.rule_reloads.with_label_values(&["ok"]).inc();
                health.set("rules", true, format!("{rules} rules loaded"));
            }
            Ok(Err(e)) => {
                tracing::error!("rule reload failed; the previous rules keep running:\n{e}");
                metrics.rule_reloads.with_label_values(&["failed"]).inc();
                let first = e.errors.first().map(|e| e.to_string()).unwrap_or_default();
                health.set(
                    "rules",
                    true,
                    format!(
                        "last reload FAILED, previous rules still running: {} problem(s), first: {first}",
                        e.errors.len()
                    ),
                );
            }
            Err(e) => panic!("rule loading panicked: {e}"),
        }
    }
}

/// Rule files with their size and modification time.
pub type RuleFiles = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// [`rule_files_state`] plus the reference tables' files (`[[detectors.tables]]`): a changed
/// table reloads the rules, which load it again.
pub fn watched_state(config: &Config, paths: &[PathBuf]) -> RuleFiles {
    let mut out = rule_files_state(paths);
    for table in &config.detectors.tables {
        let path = config.table_path(table);
        if let Ok(m) = std::fs::metadata(&path) {
            out.push((path, m.len(), m.modified().ok()));
        }
    }
    out
}

/// Every rule file under `paths` with its size and modification time: what a reload would
/// read, compared from poll to poll.
pub fn rule_files_state(paths: &[PathBuf]) -> RuleFiles {
    fn walk(path: &std::path::Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else if crate::detect::is_rule_file(path)
            && let Ok(m) = std::fs::metadata(path)
        {
            out.push((path.to_path_buf(), m.len(), m.modified().ok()));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out.sort();
    out
}
