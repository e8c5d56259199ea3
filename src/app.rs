//! The commands, assembled from the stages: live runs against Kafka (embedded or real),
//! replay of files, and the simulator writers. `main.rs` parses arguments and calls these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};

use crate::alert::sink::{JsonlSink, KafkaSink, producer};
use crate::config::{Config, ConfigError};
use crate::detect::{DetectorSet, LoadError};
use crate::metrics::Metrics;
use crate::pipeline::{Clock, Echo, NoCommit, Pipeline, SinkError, Summary};
use crate::privacy::Pseudonymiser;
use crate::server::{Health, Server};
use crate::sim::{SimOptions, Simulator};
use crate::source::embedded::{EmbeddedKafka, Pace, Written};
use crate::source::files::{FileSource, InputError};
use crate::source::kafka::{self, KafkaCommitter};

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
    let dirs = if rules.is_empty() {
        config.rule_dirs()
    } else {
        rules.to_vec()
    };
    DetectorSet::load(config, &dirs).await
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
    } = live;
    health.set("kafka", false, "starting");
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
    let consumer = Arc::new(kafka::consumer(
        &config,
        Arc::clone(&metrics),
        Arc::clone(&health),
    )?);
    let sources = Arc::new(config.input_topics());
    let sink = KafkaSink::new(
        &config,
        producer(&config)?,
        Arc::clone(&sources),
        Arc::clone(&metrics),
        Arc::clone(&health),
        force,
    );
    let committer = Arc::new(KafkaCommitter {
        consumer: Arc::clone(&consumer),
        sources: Arc::clone(&sources),
    });
    let (tx, rx) = mpsc::channel(*config.pipeline.channel_batches.get_ref());
    let source = tokio::spawn(kafka::run(
        Arc::clone(&consumer),
        Arc::clone(&config),
        sources,
        Arc::clone(&health),
        tx,
        shutdown,
    ));
    let pipeline = Pipeline {
        pseudonymiser: pseudonymiser(&config),
        config,
        detectors,
        metrics: Arc::clone(&metrics),
        sink: Box::new(sink),
        committer: Arc::clone(&committer) as _,
        echo,
        clock: Clock::Wall,
    };
    let result = pipeline.run(rx).await;
    health.set("kafka", false, "stopping");
    let _ = source.await;
    if result.is_ok() {
        committer.commit_now();
    }
    server.stop().await;
    Ok(result?)
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

/// `palisade simulate --output`: the city into a JSONL file.
pub fn simulate_to_file(path: &std::path::Path, sim: SimOptions) -> Result<Written, AppError> {
    let file =
        std::fs::File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    crate::source::embedded::write_jsonl(&mut out, Simulator::new(sim))
        .map_err(io(format!("cannot write {}", path.display())))
}
