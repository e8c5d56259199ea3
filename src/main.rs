//! The `palisade` command line. Parses arguments, sets up logging, loads the configuration and
//! calls into `palisade::app`. The only place `anyhow` is used: errors are printed with their
//! whole chain (`{:#}`) and the process exits 2 (1 for `check` with failing rules and for `test`
//! with failing cases).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use palisade::alert::config::HttpSinkConfig;
use palisade::app::{self, City, Live, ReplayOutput};
use palisade::config::Config;
use palisade::metrics::Metrics;
use palisade::pipeline::Echo;
use palisade::sim::{Scenario, SimOptions, Simulator};
use palisade::source::embedded::Pace;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Detects attacks on smart-city infrastructure from its telemetry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detection pipeline. With no --config or --brokers: against an embedded Kafka
    /// fed by a simulated city.
    Run(RunArgs),
    /// Write the simulated city into Kafka or a JSONL file.
    Simulate(SimulateArgs),
    /// Run the detectors over JSONL/CSV files in event-time order; alerts as JSON lines.
    Replay(ReplayArgs),
    /// Load rules exactly as the service does and report every problem.
    Check(CheckArgs),
    /// Run rule test cases (`*.tests.yml` beside the rules): events in, expected alerts out.
    Test(TestArgs),
    /// Score the detectors on a labelled data set (labels never reach them): SKAB through the
    /// multivariate baseline, or the simulated city through the rules; per experiment or
    /// scenario, then `overall F1 <f1> FAR <percent> MAR <percent>`.
    Eval(EvalArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataset {
    /// Skoltech Anomaly Benchmark (water-pump test bed), outlier-detection protocol.
    Skab,
    /// palisade's simulated city: its attack, equipment and insider scenarios through the
    /// configured rules, scored by incident.
    City,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The labelled data set.
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// SKAB: where it is (the folder holding `data/`, e.g. ../shared/data/skab).
    #[arg(long, required_if_eq("dataset", "skab"))]
    data: Option<PathBuf>,
    /// SKAB: only experiments whose name starts with this (e.g. `valve1/`).
    #[arg(long)]
    only: Option<String>,
    /// City: the simulator's seed.
    #[arg(long, default_value_t = 5)]
    seed: u64,
    /// City: simulated start, RFC 3339.
    #[arg(long, default_value = "2026-01-05T00:00:00Z")]
    start: String,
    /// City: simulated time, e.g. 6h, 2d (a login off shift needs a day of history first).
    #[arg(long, default_value = "2d", value_parser = parse_duration_ms)]
    duration: i64,
    /// City: scenarios to inject: `all`, `none`, or a comma-separated list of names.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// City: streams to simulate and replay (comma-separated); default all.
    #[arg(long, value_delimiter = ',', value_parser = parse_stream)]
    streams: Vec<String>,
    /// City: configuration file (default: the built-in one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// City: rule folders (default: the configured ones).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file (default: the built-in one, deploy/palisade.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A built-in configuration instead of --config: `sigma-windows` (SigmaHQ Windows rules
    /// over evtx-dump JSON).
    #[arg(long, conflicts_with = "config", value_parser = ["sigma-windows"])]
    preset: Option<String>,
    /// Kafka bootstrap servers; implies a real Kafka instead of the embedded one.
    #[arg(long)]
    brokers: Option<String>,
    /// Consumer group id.
    #[arg(long)]
    group: Option<String>,
    /// Where to serve /metrics, /healthz and /readyz (port 0 picks a free port).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// How alerts are printed on stdout.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Rule folders (default: the configured ones).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Send alerts to this Prometheus Alertmanager (base URL, e.g. http://127.0.0.1:9093);
    /// overrides [alerting.alertmanager] url.
    #[arg(long, value_name = "URL")]
    alertmanager: Option<String>,
    /// POST alerts as JSON to this webhook URL; overrides [alerting.webhook] url.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Embedded run: simulator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Embedded run: simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Readable lines.
    Human,
    /// One JSON alert per line.
    Json,
    /// Nothing on stdout.
    None,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Write into this Kafka.
    #[arg(long, conflicts_with = "output", required_unless_present = "output")]
    brokers: Option<String>,
    /// Write JSONL envelopes into this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// With --output: write the ground truth here, one JSON line per scenario occurrence
    /// (scenario, entity, start, end), silent ones (a sensor that stops) included.
    #[arg(long, requires = "output")]
    incidents: Option<PathBuf>,
    /// Seed: the same seed gives the same city.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated time to generate, e.g. 90s, 45m, 6h, 1d.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    duration: i64,
    /// Simulated seconds per real second (Kafka only); default: as fast as possible.
    #[arg(long)]
    speed: Option<f64>,
    /// Simulated start, RFC 3339.
    #[arg(long, default_value = "2026-01-05T02:30:00Z")]
    start: String,
    /// Attack scenarios to inject: `all`, `none`, or a comma-separated list of names.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Streams to generate (comma-separated: netflow, auth, badge, scada, sensors, pumps);
    /// default all. The others are not generated, and their scenarios do not happen.
    #[arg(long, value_delimiter = ',', value_parser = parse_stream)]
    streams: Vec<String>,
    /// Configuration (topics and Kafka client settings).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Configuration file (default: the built-in one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A built-in configuration instead of --config: `sigma-windows` (SigmaHQ Windows rules
    /// over evtx-dump JSON), or `sensors`: wide telemetry CSVs (a `timestamp` column and
    /// numeric sensor columns, one asset per file, named after the file) through the baseline
    /// detectors with default settings.
    #[arg(long, conflicts_with = "config", value_parser = ["sigma-windows", "sensors"])]
    preset: Option<String>,
    /// Input files: JSONL (envelopes or plain events) or CSV.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Write alerts here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Stream of plain JSONL and CSV inputs (default: from the file name).
    #[arg(long)]
    stream: Option<String>,
    /// Write undecodable records here as JSON lines (default: log them).
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Rule folders (default: the configured ones).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Backtest with the rules that load, reporting the others (e.g. a third-party folder
    /// with rules that need configuration); without it any bad rule stops the replay.
    #[arg(long)]
    skip_bad_rules: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Rule folders or files (default: the configured ones).
    paths: Vec<PathBuf>,
    /// Configuration file (default: the built-in one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A built-in configuration instead of --config: `sigma-windows` (SigmaHQ Windows rules
    /// over evtx-dump JSON).
    #[arg(long, conflicts_with = "config", value_parser = ["sigma-windows"])]
    preset: Option<String>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// Test files, or folders searched for `*.tests.yml` (default: the configured rule folders).
    paths: Vec<PathBuf>,
    /// Configuration file (default: the built-in one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A built-in configuration instead of --config: `sigma-windows` (SigmaHQ Windows rules
    /// over evtx-dump JSON).
    #[arg(long, conflicts_with = "config", value_parser = ["sigma-windows"])]
    preset: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Simulate(args) => simulate(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Check(args) => check(args).await,
        Command::Test(args) => test(args).await,
        Command::Eval(args) => eval(args).await,
    }
}

fn load_config(path: Option<&PathBuf>, preset: Option<&str>) -> anyhow::Result<Config> {
    Ok(match (path, preset) {
        (Some(p), _) => Config::load(p)?,
        (None, Some(name)) => {
            Config::preset(name).ok_or_else(|| anyhow::anyhow!("unknown preset `{name}`"))?
        }
        (None, None) => Config::builtin(),
    })
}

/// Shutdown on the first SIGINT/SIGTERM; forced (stop retrying deliveries) on the second.
fn signals() -> (watch::Receiver<bool>, watch::Receiver<bool>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        for round in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!(
                    "shutting down: flushing and committing (signal again to abandon undelivered alerts)"
                );
                let _ = stop_tx.send(true);
            } else {
                tracing::warn!(
                    "forced shutdown: undelivered alerts keep their offsets uncommitted"
                );
                let _ = force_tx.send(true);
                break;
            }
        }
    });
    (stop_rx, force_rx)
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let embedded = args.config.is_none() && args.brokers.is_none();
    let mut config = load_config(args.config.as_ref(), args.preset.as_deref())?;
    if let Some(brokers) = &args.brokers {
        config.kafka.brokers = brokers.clone();
    }
    if let Some(group) = &args.group {
        config.kafka.group_id = group.clone();
    }
    for (flag, url, sink) in [
        (
            "--alertmanager",
            &args.alertmanager,
            &mut config.alerting.alertmanager,
        ),
        ("--webhook", &args.webhook, &mut config.alerting.webhook),
    ] {
        let Some(url) = url else { continue };
        HttpSinkConfig::check_url(url).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
        match sink {
            Some(s) => s.url = toml::Spanned::new(0..0, url.clone()),
            None => *sink = Some(HttpSinkConfig::with_url(url)),
        }
    }
    let mut live = Live::new(&config);
    live.rules = app::rule_paths(&config, &args.rules);
    live.rules_seen = Some(app::watched_state(&config, &live.rules));
    let detectors = app::load_detectors(&config, &args.rules).await?;
    tracing::info!(rules = detectors.len(), "detectors loaded");
    if let Some(addr) = args.metrics_addr {
        live.metrics_addr = addr;
    }
    live.echo = match args.format {
        Some(Format::Json) => Echo::Json,
        Some(Format::None) => Echo::Off,
        Some(Format::Human) => Echo::Human,
        None if std::io::stdout().is_terminal() || embedded => Echo::Human,
        None => Echo::Json,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    live.on_listening = Some(tx);
    tokio::spawn(async move {
        if let Ok(addr) = rx.await {
            eprintln!("palisade: metrics on http://{addr}/metrics (health: /healthz, /readyz)");
        }
    });
    let (stop, force) = signals();
    if embedded {
        if args.speed <= 0.0 {
            bail!("--speed must be positive");
        }
        let start_ms = palisade::pipeline::now_ms();
        let city = City {
            sim: SimOptions {
                seed: args.seed,
                start_ms,
                duration_ms: None,
                scenarios: Scenario::ALL.to_vec(),
                streams: None,
            },
            pace: Pace::Speed(args.speed),
        };
        eprintln!(
            "palisade: embedded Kafka + simulated city (seed {}, {}x); every scenario shows within a minute. Ctrl-C stops.",
            args.seed, args.speed
        );
        let (summary, written) =
            app::run_embedded(config, detectors, city, live, stop, force).await?;
        eprintln!(
            "palisade: stopped; city wrote {} records ({} attack events); {} records processed, {} alerts, {} dead letters",
            written.records,
            written.labelled,
            summary.records,
            summary.alerts,
            summary.dead_letters
        );
    } else {
        let summary = app::run_live(Arc::new(config), detectors, live, stop, force).await?;
        eprintln!(
            "palisade: stopped; {} records processed, {} alerts, {} dead letters",
            summary.records, summary.alerts, summary.dead_letters
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_scenarios(text: &str) -> anyhow::Result<Vec<Scenario>> {
    match text.trim() {
        "all" => Ok(Scenario::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        list => list
            .split(',')
            .map(|name| {
                Scenario::from_name(name.trim()).with_context(|| {
                    let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "unknown scenario `{}`; known: {}",
                        name.trim(),
                        known.join(", ")
                    )
                })
            })
            .collect(),
    }
}

/// One of the simulator's streams.
fn parse_stream(text: &str) -> Result<String, String> {
    let s = text.trim();
    if Simulator::STREAMS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown stream `{s}`; the simulator writes {}",
            Simulator::STREAMS.join(", ")
        ))
    }
}

/// Parses `90s`, `45m`, `6h`, `1d`, `1h30m` (or plain seconds) into milliseconds.
fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .map_err(|_| format!("`{text}`: expected a number before `{c}`"))?;
        number.clear();
        total += n * match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(format!("`{text}`: unknown unit `{c}`; use s, m, h or d")),
        };
    }
    if !number.is_empty() {
        total += number.parse::<i64>().map_err(|e| e.to_string())? * 1_000;
    }
    if total <= 0 {
        return Err(format!("`{text}`: the duration must be positive"));
    }
    Ok(total)
}

/// The simulator's options from the flags `simulate` and `eval --dataset city` share.
fn sim_options(
    seed: u64,
    start: &str,
    duration_ms: i64,
    scenarios: &str,
    streams: &[String],
) -> anyhow::Result<SimOptions> {
    let start_ms = chrono::DateTime::parse_from_rfc3339(start)
        .with_context(|| format!("--start `{start}` is not an RFC 3339 time"))?
        .timestamp_millis();
    Ok(SimOptions {
        seed,
        start_ms,
        duration_ms: Some(duration_ms),
        scenarios: parse_scenarios(scenarios)?,
        streams: (!streams.is_empty()).then(|| streams.to_vec()),
    })
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let sim = sim_options(
        args.seed,
        &args.start,
        args.duration,
        &args.scenarios,
        &args.streams,
    )?;
    let written = if let Some(path) = &args.output {
        app::simulate_to_file(path, args.incidents.as_deref(), sim)?
    } else {
        let mut config = load_config(args.config.as_ref(), None)?;
        config.kafka.brokers = args
            .brokers
            .clone()
            .expect("clap requires --brokers without --output");
        let pace = match args.speed {
            Some(x) if x > 0.0 => Pace::Speed(x),
            Some(_) => bail!("--speed must be positive"),
            None => Pace::Unpaced,
        };
        let (stop, _force) = signals();
        app::simulate_to_kafka(&config, sim, pace, stop).await?
    };
    eprintln!(
        "palisade: wrote {} records ({} attack events)",
        written.records, written.labelled
    );
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.preset.as_deref() == Some("sensors") {
        return replay_sensors(&args);
    }
    let config = Arc::new(load_config(args.config.as_ref(), args.preset.as_deref())?);
    let detectors = if args.skip_bad_rules {
        let paths = app::rule_paths(&config, &args.rules);
        let (set, errors) = palisade::detect::DetectorSet::load_partial(&config, &paths).await;
        for e in &errors {
            eprintln!("palisade: skipped: {e}");
        }
        let summary = set.summary();
        eprintln!(
            "palisade: {} rules loaded, {} skipped",
            summary.ok, summary.failed
        );
        set
    } else {
        app::load_detectors(&config, &args.rules).await?
    };
    if detectors.is_empty() {
        bail!("no rules loaded: pass --rules DIR (or set [detectors] rules in the configuration)");
    }
    let alerts: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let dead: Option<Box<dyn std::io::Write + Send>> = match &args.dead_letter {
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let summary = app::replay(
        config,
        detectors,
        &args.input,
        args.stream.as_deref(),
        ReplayOutput { alerts, dead },
        metrics,
    )
    .await?;
    eprintln!(
        "palisade: replayed {} records: {} alerts, {} dead letters",
        summary.records, summary.alerts, summary.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}

/// `replay --preset sensors`: not a stream configuration but files of one asset each, so it
/// has its own reader (the file's name is the entity) and its own default rules.
fn replay_sensors(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    if !args.rules.is_empty() || args.stream.is_some() || args.skip_bad_rules {
        bail!(
            "--preset sensors runs its built-in baseline rules over each file; --rules, --stream \
             and --skip-bad-rules do not apply (declare a stream and *.baseline.yml rules instead)"
        );
    }
    let mut alerts: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let summary = palisade::telemetry::replay(&args.input, &mut alerts)?;
    alerts.flush().context("cannot write the alerts")?;
    eprintln!(
        "palisade: replayed {} rows: {} alerts",
        summary.rows, summary.alerts
    );
    Ok(ExitCode::SUCCESS)
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_ref(), args.preset.as_deref())?;
    let paths = app::rule_paths(&config, &args.paths);
    let (errors, warnings, summary) =
        match palisade::detect::DetectorSet::load(&config, &paths).await {
            Ok(set) => (Vec::new(), set.warnings().to_vec(), set.summary()),
            Err(e) => (e.errors, e.warnings, e.summary),
        };
    for err in &errors {
        println!("error: {err}");
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    if !warnings.is_empty() {
        println!(
            "{} warning(s): rules that load but some of whose conditions can never see data",
            warnings.len()
        );
    }
    println!(
        "checked {} rules: {} ok, {} failed",
        summary.ok + summary.failed,
        summary.ok,
        summary.failed
    );
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.dataset {
        Dataset::Skab => {
            let data = args.data.as_ref().context("--data is required for SKAB")?;
            palisade::eval::skab(data, args.only.as_deref(), &mut out)?;
        }
        Dataset::City => {
            let sim = sim_options(
                args.seed,
                &args.start,
                args.duration,
                &args.scenarios,
                &args.streams,
            )?;
            let config = Arc::new(load_config(args.config.as_ref(), None)?);
            let detectors = app::load_detectors(&config, &args.rules).await?;
            let pseudonymiser = app::pseudonymiser(&config);
            palisade::eval::city(config, detectors, pseudonymiser, sim, &mut out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_ref(), args.preset.as_deref())?;
    let paths = app::rule_paths(&config, &args.paths);
    let mut out = std::io::stdout();
    let outcome = palisade::ruletest::run(&config, &paths, &mut out)
        .await
        .context("cannot write the report")?;
    Ok(ExitCode::from(outcome.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_any_unit_mix() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert!(
            parse_duration_ms("3w")
                .unwrap_err()
                .contains("unknown unit `w`")
        );
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("m").is_err());
    }

    #[test]
    fn scenario_lists_parse_and_reject_unknown_names() {
        assert_eq!(parse_scenarios("all").unwrap().len(), Scenario::ALL.len());
        assert!(parse_scenarios("none").unwrap().is_empty());
        assert_eq!(
            parse_scenarios("port_scan, sensor_tamper").unwrap(),
            vec![Scenario::PortScan, Scenario::SensorTamper]
        );
        let err = parse_scenarios("port_scan,teleport")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown scenario `teleport`") && err.contains("password_spray"),
            "{err}"
        );
    }
}
