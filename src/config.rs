//! Configuration: one TOML file, parsed into typed structs and validated at load.
//!
//! In: the text of a config file (or the built-in default, `deploy/palisade.toml`).
//! Out: a [`Config`] whose every field has been checked, or a [`ConfigError`] naming the file,
//! the line and column, and what to change. Unknown keys are errors (`deny_unknown_fields`): a
//! typo must not silently fall back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

/// The built-in configuration used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../deploy/palisade.toml");
/// The name under which errors in the built-in configuration are reported.
pub const DEFAULT_CONFIG_NAME: &str = "deploy/palisade.toml (built in)";

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: String,
    /// 1-based line, 0 when the problem is not tied to a place in the file.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong and what to change.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{}: {}", self.file, l, self.message),
            (l, c) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
        }
    }
}

/// The whole configuration of one palisade process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and the topics palisade writes.
    pub kafka: KafkaConfig,
    /// Batching and channel bounds.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where detectors are loaded from.
    pub detectors: DetectorsConfig,
    /// The HTTP endpoint for /metrics, /healthz and /readyz.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How personal fields are pseudonymised.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// The telemetry streams palisade reads.
    pub streams: Vec<StreamConfig>,
    /// How Sigma rules map onto the streams.
    #[serde(default)]
    pub sigma: SigmaConfig,
    /// Enrichment, suppression and notification of alerts (see [`crate::alert::config`]).
    #[serde(default)]
    pub alerting: crate::alert::config::AlertingConfig,
    /// Durable detector state: checkpoints into a Kafka changelog, delivery guarantee.
    #[serde(default)]
    pub state: StateConfig,
    /// Directory relative paths in this file are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this configuration came from, for messages.
    #[serde(skip)]
    pub origin: String,
}

/// Kafka connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group id; instances sharing it split the partitions.
    pub group_id: String,
    /// Topic alerts are written to, keyed by entity.
    pub alerts_topic: String,
    /// Topic undecodable records are written to, with their reason.
    pub dead_letter_topic: String,
    /// Partitions used when palisade creates a missing output or simulator topic.
    #[serde(default = "default_partitions")]
    pub create_partitions: i32,
    /// How often (ms) an instance checks that its assignment is the one the group's members
    /// should have (see `source::group`) and rejoins when it is not; 0 turns the check off.
    #[serde(default = "default_group_check_ms")]
    pub group_check_ms: u64,
    /// Extra librdkafka properties for every client (security, timeouts, ...), passed as is.
    #[serde(default)]
    pub client: IndexMap<String, String>,
    /// Extra librdkafka properties for the consumer only (e.g. `session.timeout.ms`).
    #[serde(default)]
    pub consumer: IndexMap<String, String>,
    /// Extra librdkafka properties for the producers only (e.g. `compression.type`).
    #[serde(default)]
    pub producer: IndexMap<String, String>,
}

fn default_partitions() -> i32 {
    3
}

fn default_group_check_ms() -> u64 {
    15_000
}

/// Micro-batching and backpressure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A batch is cut once it holds this many records.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: Spanned<usize>,
    /// ... or this many milliseconds after its first record arrived.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Capacity, in batches, of each channel between stages.
    #[serde(default = "default_channel_batches")]
    pub channel_batches: Spanned<usize>,
}

fn default_batch_rows() -> Spanned<usize> {
    Spanned::new(0..0, 8192)
}
fn default_linger_ms() -> u64 {
    50
}
fn default_channel_batches() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_rows: default_batch_rows(),
            linger_ms: default_linger_ms(),
            channel_batches: default_channel_batches(),
        }
    }
}

/// Durable detector state and the delivery guarantee of a live run (README, "Delivery
/// guarantee").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// How often, in ms, the state changed since the last checkpoint is written to the
    /// changelog together with the input offsets it covers (and, with transactions, the
    /// alerts since the last one become visible). Also written at shutdown.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// The compacted changelog topic (one partition per input partition number); empty:
    /// `<group_id>.state`. Created with `cleanup.policy=compact` when missing.
    #[serde(default)]
    pub changelog_topic: String,
    /// Use Kafka transactions (alerts, changelog and offsets committed atomically) when the
    /// broker supports them; `false`: at-least-once with deterministic alert ids.
    #[serde(default = "default_true")]
    pub transactions: bool,
    /// This instance's name within the group, for its transactional id: an instance
    /// restarted with the same name fences its predecessor's unfinished transaction at once
    /// (instead of after the transaction timeout). Empty: unique per process.
    #[serde(default)]
    pub instance_id: String,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            changelog_topic: String::new(),
            transactions: true,
            instance_id: String::new(),
        }
    }
}

impl StateConfig {
    /// The changelog topic for consumer group `group`.
    pub fn changelog_topic(&self, group: &str) -> String {
        if self.changelog_topic.is_empty() {
            format!("{group}.state")
        } else {
            self.changelog_topic.clone()
        }
    }
}

fn default_checkpoint_interval_ms() -> u64 {
    10_000
}

fn default_true() -> bool {
    true
}

/// Detector sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Folders searched recursively for rules (`*.sql`, Sigma `*.yml` / `*.yaml`).
    pub rules: Vec<Spanned<PathBuf>>,
    /// How often a running service looks for changed rule files, in ms; 0: only on SIGHUP.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// Bounds on the state of each windowed SQL detector (a rule may lower them in its
    /// header with `-- max_keys:` / `-- max_bytes:`).
    #[serde(default)]
    pub windows: WindowLimits,
    /// Reference tables (asset inventories...) SQL rules can join with, by name.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
}

/// `[detectors.windows]`: per-detector bounds on window state. Past a bound the keys whose
/// newest event is oldest are evicted (an eighth of the bound at a time) and counted in
/// `palisade_detector_state_evicted_total{reason="window_keys_evicted"}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowLimits {
    /// Most group keys (per partition and key) one detector holds.
    #[serde(default = "default_window_max_keys")]
    pub max_keys: usize,
    /// Most bytes of window state one detector holds (keys, panes, distinct values).
    #[serde(default = "default_window_max_bytes")]
    pub max_bytes: usize,
}

fn default_window_max_keys() -> usize {
    1_000_000
}
fn default_window_max_bytes() -> usize {
    256 << 20
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            max_keys: default_window_max_keys(),
            max_bytes: default_window_max_bytes(),
        }
    }
}

/// `[[detectors.tables]]`: a reference table loaded from a file and registered once, under
/// `name`, for every SQL rule (e.g. `JOIN assets ON assets.ip = netflow.src_ip`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name in SQL (an identifier, not a stream's name).
    pub name: Spanned<String>,
    /// A CSV file with a header row, or a JSON-lines file (`.json` / `.jsonl`). Relative to
    /// this file's directory. Reloaded with the rules when it changes.
    pub path: Spanned<PathBuf>,
    /// Column name to type (as in `[streams.schema]`). CSV columns not listed are strings;
    /// JSON lines need every column listed.
    #[serde(default)]
    pub schema: IndexMap<String, Spanned<String>>,
}

fn default_reload_interval_ms() -> u64 {
    2_000
}

/// The metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: Spanned<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Spanned::new(0..0, "127.0.0.1:9464".to_string()),
        }
    }
}

/// Pseudonymisation of personal fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Environment variable holding the pseudonymisation key.
    pub key_env: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            key_env: "PALISADE_PSEUDONYM_KEY".to_string(),
        }
    }
}

/// What happens to a personal field in everything that leaves palisade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyAction {
    /// Replaced by a keyed hash: still joinable across alerts, not readable.
    Pseudonymise,
    /// Removed from evidence.
    Drop,
}

/// Wire format of a stream's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per Kafka record (or per line in replay files).
    Json,
}

/// One telemetry stream: a set of topics sharing a schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Name detectors refer to (the SQL table name).
    pub name: Spanned<String>,
    /// Kafka topics carrying this stream.
    pub topics: Vec<String>,
    /// Wire format of the records.
    pub format: Format,
    /// Field holding the event time (a `timestamp` field of the schema).
    pub event_time: Spanned<String>,
    /// Field(s) naming the entity an event is about (a host, user, asset...).
    pub entity: Spanned<Vec<String>>,
    /// The field the producers key this stream's Kafka records by (records with the same
    /// value are in one partition). A windowed rule that groups by it keeps its state per
    /// input partition; one that does not is fed through an internal topic keyed by its
    /// group key (see `crate::source::repartition`). Unset: every such rule is.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Field name to type, in order. Types: see [`parse_type`]. Without a schema the stream is
    /// *projected*: records are JSON documents of any shape, and only the dotted paths the
    /// detectors read (plus event time, entity and personal fields) are decoded, as strings.
    /// SQL detectors need a schema; Sigma rules do not.
    #[serde(default)]
    pub schema: Option<Spanned<IndexMap<String, Spanned<String>>>>,
    /// Personal fields and what to do with them.
    #[serde(default)]
    pub privacy: IndexMap<String, Spanned<PrivacyAction>>,
    /// Event-time progress of the stream: allowed lateness, idle partitions, late events.
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// The Arrow schema, built from `schema` at load; `None` for a projected stream.
    #[serde(skip)]
    pub arrow_schema: Option<SchemaRef>,
}

/// `[streams.watermark]`: how a stream's event time advances.
///
/// Each partition's watermark is the highest event time seen on it minus
/// `allowed_lateness_ms`; the stream's watermark is the lowest over its partitions, leaving out
/// partitions that have sent nothing for `idle_timeout_ms` (processing time). It never moves
/// back. A window closes (and its alerts are emitted) once the watermark passes its end; an
/// event older than the watermark when it arrives is *late*.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// How far behind the newest event of its partition an event may be and still count, ms.
    #[serde(default = "default_allowed_lateness_ms")]
    pub allowed_lateness_ms: u64,
    /// A partition with no record for this long (processing time, ms) stops holding the
    /// stream's watermark back until it sends again.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// What happens to a late event: counted (`palisade_late_events_total`) always, then
    /// `dead_letter` (default): sent to the dead-letter topic with reason `late`, not
    /// evaluated; `process`: evaluated by every detector anyway (windows that already
    /// closed do not see it; windows still open do).
    #[serde(default)]
    pub late_events: LatePolicy,
}

fn default_allowed_lateness_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    30_000
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            allowed_lateness_ms: default_allowed_lateness_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            late_events: LatePolicy::default(),
        }
    }
}

/// What happens to an event older than its stream's watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// To the dead-letter topic with reason `late`; detectors do not see it.
    #[default]
    DeadLetter,
    /// Evaluated anyway: stateless rules alert on it, open windows count it.
    Process,
}

impl StreamConfig {
    /// The declared Arrow schema of this stream, `None` when it is projected (no schema).
    pub fn arrow_schema(&self) -> Option<&SchemaRef> {
        self.arrow_schema.as_ref()
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// `[sigma]`: how Sigma rules meet palisade's streams, in the spirit of pySigma processing
/// pipelines: a rule's `logsource` picks streams (and may add conditions, e.g. the event id
/// that makes a Windows event a process creation), and per stream its field names are mapped
/// to columns (or dotted JSON paths).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaConfig {
    /// Log source → stream entries. A rule goes to the streams of the most specific entries
    /// its logsource matches (an entry matches when each of product, category and service it
    /// names equals the rule's).
    #[serde(default)]
    pub logsources: Vec<LogsourceMapping>,
    /// Per stream name: how Sigma field names become columns.
    #[serde(default)]
    pub streams: IndexMap<String, SigmaFieldMapping>,
    /// Values of `%placeholder%`s for the `expand` modifier.
    #[serde(default)]
    pub placeholders: IndexMap<String, Vec<String>>,
    /// Bounds on correlation state.
    #[serde(default)]
    pub correlation: CorrelationLimits,
}

/// One `[[sigma.logsources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsourceMapping {
    /// Matches rules with this `logsource.product` (any when absent).
    pub product: Option<String>,
    /// Matches rules with this `logsource.category` (any when absent).
    pub category: Option<String>,
    /// Matches rules with this `logsource.service` (any when absent).
    pub service: Option<String>,
    /// The stream the matching rules read.
    pub stream: Spanned<String>,
    /// Extra conditions the event must meet, ANDed with the rule's: Sigma field name → one
    /// value or a list of alternatives (exact, case-insensitive).
    #[serde(default)]
    pub conditions: IndexMap<String, OneOrMany>,
    /// Field renames for the rules of this log source only (Sigma field → column or dotted
    /// path), before the stream's `[sigma.streams.NAME]` mapping: e.g. Defender's
    /// `ThreatName` is `Event.EventData.Threat Name`.
    #[serde(default)]
    pub fields: IndexMap<String, String>,
}

impl LogsourceMapping {
    /// How many of product / category / service the entry names: more is more specific.
    pub fn specificity(&self) -> usize {
        [&self.product, &self.category, &self.service]
            .iter()
            .filter(|k| k.is_some())
            .count()
    }
}

/// A scalar or a list of scalars (strings or integers).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A list of alternatives.
    Many(Vec<Scalar>),
    /// One value.
    One(Scalar),
}

impl OneOrMany {
    /// The values as text.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v.iter().map(Scalar::text).collect(),
            OneOrMany::One(v) => vec![v.text()],
        }
    }
}

/// A string or an integer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// An integer, e.g. an event id.
    Int(i64),
    /// Text.
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// `[sigma.streams.NAME]`: Sigma field name → column of stream NAME.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaFieldMapping {
    /// Explicit renames: Sigma field → column (a dotted path reaches into structs or JSON).
    #[serde(default)]
    pub fields: IndexMap<String, String>,
    /// Every other field `F` becomes `prefix + F` (e.g. `Event.EventData.`); without a
    /// prefix, the field name is the column name.
    #[serde(default)]
    pub prefix: Option<String>,
}

impl SigmaFieldMapping {
    /// The column a Sigma field reads.
    pub fn column(&self, field: &str) -> String {
        match (self.fields.get(field), &self.prefix) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => format!("{p}{field}"),
            (None, None) => field.to_string(),
        }
    }
}

/// `[sigma.correlation]`: bounds on correlation state (evictions are counted).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationLimits {
    /// Live groups per correlation rule; the least recently updated is evicted beyond it.
    pub max_groups: usize,
    /// Events kept per group; the oldest are dropped beyond it.
    pub max_events_per_group: usize,
    /// Contributing events put in an alert; the rest are counted as truncated.
    pub max_evidence: usize,
}

impl Default for CorrelationLimits {
    fn default() -> Self {
        CorrelationLimits {
            max_groups: 100_000,
            max_events_per_group: 1_000,
            max_evidence: 10,
        }
    }
}

/// Built-in configurations for common inputs, by name: `--preset NAME`.
pub const PRESETS: &[(&str, &str)] = &[(
    "sigma-windows",
    include_str!("../deploy/presets/sigma-windows.toml"),
)];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &path.display().to_string(), &base)
    }

    /// The built-in default configuration.
    pub fn builtin() -> Config {
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
        Config::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, &base)
            .expect("the built-in configuration is valid (tested)")
    }

    /// A built-in preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Config> {
        let (_, text) = PRESETS.iter().find(|(n, _)| *n == name)?;
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/presets");
        let origin = format!("preset {name}");
        Some(Config::parse(text, &origin, &base).expect("built-in presets are valid (tested)"))
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                file: origin.to_string(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.origin = origin.to_string();
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&mut self, text: &str) -> Result<(), ConfigError> {
        let origin = self.origin.clone();
        let err = |span: Range<usize>, message: String| {
            let (line, column) = if span.end == 0 {
                (0, 0)
            } else {
                line_col(text, span.start)
            };
            ConfigError {
                file: origin.clone(),
                line,
                column,
                message,
            }
        };
        let rows = &self.pipeline.batch_rows;
        if !(1..=1_000_000).contains(rows.get_ref()) {
            return Err(err(
                rows.span(),
                "`batch_rows` must be between 1 and 1000000".into(),
            ));
        }
        let cap = &self.pipeline.channel_batches;
        if !(1..=1024).contains(cap.get_ref()) {
            return Err(err(
                cap.span(),
                "`channel_batches` must be between 1 and 1024".into(),
            ));
        }
        if self.pipeline.linger_ms == 0 || self.pipeline.linger_ms > 60_000 {
            return Err(err(
                0..0,
                "[pipeline] `linger_ms` must be between 1 and 60000".into(),
            ));
        }
        if self.metrics.listen.get_ref().parse::<SocketAddr>().is_err() {
            return Err(err(
                self.metrics.listen.span(),
                format!(
                    "`listen` = {:?} is not a socket address; write it as \"IP:PORT\", e.g. \"127.0.0.1:9464\"",
                    self.metrics.listen.get_ref()
                ),
            ));
        }
        if self.streams.is_empty() {
            return Err(err(
                0..0,
                "no [[streams]] declared; palisade needs at least one".into(),
            ));
        }
        let mut names = Vec::new();
        let mut topics = Vec::new();
        for stream in &mut self.streams {
            let name = stream.name.get_ref();
            if names.contains(name) {
                return Err(err(
                    stream.name.span(),
                    format!("stream `{name}` is declared twice"),
                ));
            }
            if !is_identifier(name) {
                return Err(err(
                    stream.name.span(),
                    format!("stream name `{name}` must be a SQL identifier (letters, digits, `_`)"),
                ));
            }
            names.push(name.clone());
            if stream.topics.is_empty() {
                return Err(err(
                    stream.name.span(),
                    format!("stream `{name}` lists no topics"),
                ));
            }
            for topic in &stream.topics {
                if topics.contains(topic) {
                    return Err(err(
                        stream.name.span(),
                        format!("topic `{topic}` belongs to two streams; a topic feeds one stream"),
                    ));
                }
                topics.push(topic.clone());
            }
            if stream.entity.get_ref().is_empty() {
                return Err(err(
                    stream.entity.span(),
                    "`entity` needs at least one field".into(),
                ));
            }
            let Some(declared) = &stream.schema else {
                // Projected: any JSON shape; the paths are resolved per record.
                if stream.format != Format::Json {
                    return Err(err(
                        stream.name.span(),
                        format!(
                            "stream `{name}` has no [streams.schema]; only JSON streams can be projected"
                        ),
                    ));
                }
                continue;
            };
            let mut fields = Vec::new();
            for (field, ty) in declared.get_ref() {
                let data_type = parse_type(ty.get_ref()).map_err(|m| {
                    err(
                        ty.span(),
                        format!("field `{field}` of stream `{name}`: {m}"),
                    )
                })?;
                fields.push(Field::new(field, data_type, true));
            }
            if fields.is_empty() {
                return Err(err(
                    declared.span(),
                    format!("stream `{name}` has an empty schema"),
                ));
            }
            let schema = Arc::new(Schema::new(fields));
            let time = stream.event_time.get_ref();
            match schema.field_with_name(time) {
                Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
                Ok(f) => {
                    return Err(err(
                        stream.event_time.span(),
                        format!(
                            "event-time field `{time}` is `{}`; declare it as \"timestamp\" in [streams.schema]",
                            f.data_type()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(err(
                        stream.event_time.span(),
                        format!(
                            "event-time field `{time}` is not in the schema of stream `{name}`"
                        ),
                    ));
                }
            }
            if let Some(key) = &stream.key
                && schema.field_with_name(key.get_ref()).is_err()
            {
                return Err(err(
                    key.span(),
                    format!(
                        "key field `{}` is not in the schema of stream `{name}`",
                        key.get_ref()
                    ),
                ));
            }
            for field in stream.entity.get_ref() {
                if schema.field_with_name(field).is_err() {
                    return Err(err(
                        stream.entity.span(),
                        format!("entity field `{field}` is not in the schema of stream `{name}`"),
                    ));
                }
            }
            for (field, action) in &stream.privacy {
                if schema.field_with_name(field).is_err() {
                    return Err(err(
                        action.span(),
                        format!("privacy field `{field}` is not in the schema of stream `{name}`"),
                    ));
                }
            }
            stream.arrow_schema = Some(schema);
        }
        for stream in &self.streams {
            let w = &stream.watermark;
            if w.allowed_lateness_ms > 7 * 86_400_000 || w.idle_timeout_ms == 0 {
                return Err(err(
                    stream.name.span(),
                    format!(
                        "[streams.watermark] of stream `{}`: `allowed_lateness_ms` must be at most \
                         7 days and `idle_timeout_ms` at least 1",
                        stream.name.get_ref()
                    ),
                ));
            }
        }
        for table in &self.detectors.tables {
            let name = table.name.get_ref();
            if !is_identifier(name) || names.contains(name) {
                return Err(err(
                    table.name.span(),
                    format!(
                        "table name `{name}` must be a SQL identifier (letters, digits, `_`) that \
                         no stream uses"
                    ),
                ));
            }
            for (field, ty) in &table.schema {
                parse_type(ty.get_ref()).map_err(|m| {
                    err(
                        ty.span(),
                        format!("column `{field}` of table `{name}`: {m}"),
                    )
                })?;
            }
        }
        let limits = &self.detectors.windows;
        if limits.max_keys == 0 || limits.max_bytes < 4096 {
            return Err(err(
                0..0,
                "[detectors.windows] `max_keys` must be at least 1 and `max_bytes` at least 4096"
                    .into(),
            ));
        }
        for entry in &self.sigma.logsources {
            let stream = entry.stream.get_ref();
            if !names.contains(stream) {
                return Err(err(
                    entry.stream.span(),
                    format!(
                        "[[sigma.logsources]] names stream `{stream}`, which is not declared; streams: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        for name in self.sigma.streams.keys() {
            if !names.contains(name) {
                return Err(err(
                    0..0,
                    format!(
                        "[sigma.streams.{name}]: no stream `{name}` is declared; streams: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        if self.state.checkpoint_interval_ms == 0 {
            return Err(err(
                0..0,
                "[state] `checkpoint_interval_ms` must be at least 1 (10000 checkpoints every 10 s)".into(),
            ));
        }
        let limits = &self.sigma.correlation;
        if limits.max_groups == 0 || limits.max_events_per_group == 0 {
            return Err(err(
                0..0,
                "[sigma.correlation] `max_groups` and `max_events_per_group` must be at least 1"
                    .into(),
            ));
        }
        self.alerting.validate(&err)?;
        Ok(())
    }

    /// The metrics listen address (validated at load).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .listen
            .get_ref()
            .parse()
            .expect("validated at load")
    }

    /// Rule folders, resolved: relative to the config file's folder if that exists there,
    /// else relative to the current directory.
    pub fn rule_dirs(&self) -> Vec<PathBuf> {
        self.detectors
            .rules
            .iter()
            .map(|p| {
                let p = p.get_ref();
                let beside = self.base_dir.join(p);
                if p.is_relative() && beside.exists() {
                    beside
                } else {
                    p.clone()
                }
            })
            .collect()
    }

    /// Path of a reference table's file: beside this configuration file when relative and
    /// there, else as written.
    pub fn table_path(&self, table: &TableConfig) -> PathBuf {
        let p = table.path.get_ref();
        let beside = self.base_dir.join(p);
        if p.is_relative() && beside.exists() {
            beside
        } else {
            p.clone()
        }
    }

    /// Index of the stream a topic belongs to.
    pub fn stream_of_topic(&self, topic: &str) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.topics.iter().any(|t| t == topic))
    }

    /// Index of the stream with this name.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name.get_ref() == name)
    }

    /// Every topic palisade consumes.
    pub fn input_topics(&self) -> Vec<String> {
        self.streams
            .iter()
            .flat_map(|s| s.topics.iter().cloned())
            .collect()
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Parses a schema type: `string`, `bool`, `int8`..`int64`, `uint8`..`uint64`, `float32`,
/// `float64`, `timestamp` (milliseconds, UTC; accepts RFC 3339 strings and epoch numbers),
/// `timestamp_us`, `timestamp_ns`, `date`, `list<T>`, `struct<name: T, ...>`.
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let mut parser = TypeParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let ty = parser.ty()?;
    parser.skip_ws();
    if parser.pos != parser.s.len() {
        return Err(format!(
            "unexpected `{}` after the type `{}`",
            &text[parser.pos..],
            &text[..parser.pos]
        ));
    }
    Ok(ty)
}

struct TypeParser<'a> {
    s: &'a [u8],
    pos: usize,
}

const TYPE_HELP: &str = "expected one of string, bool, int8, int16, int32, int64, uint8, uint16, \
     uint32, uint64, float32, float64, timestamp, timestamp_us, timestamp_ns, date, list<T>, \
     struct<name: T, ...>";

impl TypeParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected `{}` at position {}",
                c as char,
                self.pos + 1
            ))
        }
    }

    fn ty(&mut self) -> Result<DataType, String> {
        let word = self.word().to_ascii_lowercase();
        Ok(match word.as_str() {
            "string" | "utf8" | "str" => DataType::Utf8,
            "bool" | "boolean" => DataType::Boolean,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" | "int" => DataType::Int32,
            "int64" | "long" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" | "float" => DataType::Float32,
            "float64" | "double" => DataType::Float64,
            "timestamp" | "timestamp_ms" => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
            "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "timestamp_ns" => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            "date" => DataType::Date32,
            "list" => {
                self.expect(b'<')?;
                let item = self.ty()?;
                self.expect(b'>')?;
                DataType::new_list(item, true)
            }
            "struct" => {
                self.expect(b'<')?;
                let mut fields = Vec::new();
                loop {
                    let name = self.word().to_string();
                    if name.is_empty() {
                        return Err(format!(
                            "expected a field name at position {}",
                            self.pos + 1
                        ));
                    }
                    self.expect(b':')?;
                    let ty = self.ty()?;
                    fields.push(Field::new(name, ty, true));
                    self.skip_ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'>') => {
                            self.pos += 1;
                            break;
                        }
                        _ => {
                            return Err(format!(
                                "expected `,` or `>` at position {}",
                                self.pos + 1
                            ));
                        }
                    }
                }
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(format!("missing type; {TYPE_HELP}")),
            other => return Err(format!("unknown type `{other}`; {TYPE_HELP}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(text: &str, expected: &str) {
        let err = Config::parse(text, "test.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert_eq!(err, expected);
    }

    const MINIMAL: &str = r#"
[kafka]
brokers = "b:9092"
group_id = "g"
alerts_topic = "a"
dead_letter_topic = "d"

[detectors]
rules = ["rules"]

[[streams]]
name = "flows"
topics = ["t"]
format = "json"
event_time = "ts"
entity = ["src"]
[streams.schema]
ts = "timestamp"
src = "string"
"#;

    #[test]
    fn builtin_config_is_valid() {
        let config = Config::builtin();
        assert_eq!(config.streams.len(), 6);
        assert_eq!(
            config.stream_of_topic("city.scada"),
            config.stream_index("scada")
        );
        let auth = &config.streams[config.stream_index("auth").unwrap()];
        let geo = auth
            .arrow_schema()
            .unwrap()
            .field_with_name("geo")
            .unwrap()
            .data_type()
            .clone();
        assert!(matches!(geo, DataType::Struct(ref f) if f.len() == 2));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL, "test.toml", Path::new(".")).unwrap();
        assert_eq!(*config.pipeline.batch_rows.get_ref(), 8192);
        assert_eq!(config.pipeline.linger_ms, 50);
        assert_eq!(config.metrics_addr().port(), 9464);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = MINIMAL.replace("group_id = \"g\"", "group_id = \"g\"\ngroupid = \"x\"");
        let err = Config::parse(&text, "test.toml", Path::new(".")).unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.line, err.column),
            ("test.toml", 5, 1)
        );
        assert!(
            err.message.contains("unknown field `groupid`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_type_is_located_and_explained() {
        let text = MINIMAL.replace("src = \"string\"", "src = \"strin\"");
        check_err(
            &text,
            &format!(
                "test.toml:19:7: field `src` of stream `flows`: unknown type `strin`; {TYPE_HELP}"
            ),
        );
    }

    #[test]
    fn event_time_must_be_a_timestamp() {
        let text = MINIMAL.replace("ts = \"timestamp\"", "ts = \"int64\"");
        check_err(
            &text,
            "test.toml:15:14: event-time field `ts` is `Int64`; declare it as \"timestamp\" in [streams.schema]",
        );
    }

    #[test]
    fn missing_key_field_is_reported() {
        let text = MINIMAL.replace("entity = [\"src\"]", "entity = [\"src\"]\nkey = \"dst\"");
        check_err(
            &text,
            "test.toml:17:7: key field `dst` is not in the schema of stream `flows`",
        );
    }

    #[test]
    fn missing_entity_field_is_reported() {
        let text = MINIMAL.replace("entity = [\"src\"]", "entity = [\"dst\"]");
        check_err(
            &text,
            "test.toml:16:10: entity field `dst` is not in the schema of stream `flows`",
        );
    }

    #[test]
    fn bad_listen_address_is_reported() {
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n");
        let err = Config::parse(&text, "test.toml", Path::new(".")).unwrap_err();
        assert_eq!(err.line, 22);
        assert!(
            err.message.contains("not a socket address"),
            "{}",
            err.message
        );
    }

    #[test]
    fn types_parse_nested() {
        let ty = parse_type("struct<a: int64, b: list<struct<c: string>>>").unwrap();
        let DataType::Struct(fields) = ty else {
            panic!("not a struct")
        };
        assert_eq!(fields[0].data_type(), &DataType::Int64);
        assert!(matches!(fields[1].data_type(), DataType::List(_)));
        assert!(
            parse_type("struct<a int64>")
                .unwrap_err()
                .contains("expected `:`")
        );
        assert!(parse_type("int64 x").unwrap_err().contains("unexpected"));
    }
}
