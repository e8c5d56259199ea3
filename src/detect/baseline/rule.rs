//! Baseline rule files (`*.baseline.yml`): YAML with positions in, a validated
//! [`BaselineRule`] out, or every problem with its line and column.
//!
//! One rule per file, flat keys (documented in rules/README.md). Unknown keys are errors, like
//! `deny_unknown_fields` in the configuration: a misspelt threshold must not silently fall
//! back to its default.

use std::path::Path;

use super::model::Statistic;
use crate::alert::Severity;
use crate::detect::RuleError;
use crate::detect::sigma::yaml::{self, Node, NodeKind, Resolved};

/// What a baseline rule learns and scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// Per entity and per metric: z-score against an exponentially weighted baseline,
    /// physical limits, rate of change, flatline and missing heartbeat.
    Univariate(UnivariateSpec),
    /// Per entity: Mahalanobis distance over several features at once.
    Multivariate(MultivariateSpec),
    /// Per entity: a value of `field` not seen for that entity within the history window.
    NewTerms(NewTermsSpec),
    /// Per entity: distinct values of `field` per window against the entity's own baseline
    /// of that count.
    FanOut(FanOutSpec),
    /// Per entity: consecutive events at places too far apart for the time between them.
    ImpossibleTravel(TravelSpec),
    /// Per entity: a command metric switching on must be followed by its response metric
    /// rising within a deadline (pump on, then flow).
    Consistency(ConsistencySpec),
}

/// A physical-consistency rule's settings (long layout: `metric` + `value`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencySpec {
    /// The metric of the command (`pump_cmd`).
    pub command: String,
    /// The command is on above this value; the rising edge starts the deadline.
    pub command_above: f64,
    /// The metric that must respond (`flow_m3h`).
    pub response: String,
    /// The response counts above this value.
    pub response_above: f64,
    /// Deadline (ms) from the command's rising edge.
    pub within_ms: i64,
}

/// The checks of a univariate rule; each is off unless its parameter is given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnivariateSpec {
    /// Samples before z-scores are raised.
    pub warmup: u32,
    /// Weight of each new sample in the baseline after warm-up.
    pub alpha: f64,
    /// Alert when |z| exceeds this.
    pub z: Option<f64>,
    /// Floor of the standard deviation used for z.
    pub min_std: f64,
    /// Physical lower limit.
    pub min: Option<f64>,
    /// Physical upper limit.
    pub max: Option<f64>,
    /// Largest plausible change per second.
    pub max_rate: Option<f64>,
    /// Alert when the value has not changed by more than `flat_epsilon` for this long (ms).
    pub flatline_ms: Option<i64>,
    /// What counts as no change, for the flatline check.
    pub flat_epsilon: f64,
    /// Alert when an entity's series has sent nothing for this long (ms).
    pub heartbeat_ms: Option<i64>,
    /// Seasonal profile: z-scores against the baseline of the same hour of the day (24
    /// buckets) or of the week (168), for loads that follow a daily rhythm; `None`: one
    /// baseline.
    pub seasonal: Option<u16>,
    /// Robust baseline: median and MAD of the last this many samples instead of the EWMA
    /// (outliers up to half the window do not move it).
    pub robust_window: Option<u16>,
}

/// A multivariate rule's settings (see [`super::model::MultivariateParams`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariateSpec {
    /// The model's parameters; `drift` in feature order.
    pub params: super::model::MultivariateParams,
}

/// A new-terms rule's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTermsSpec {
    /// The column whose values are terms (a destination, an asset).
    pub field: String,
    /// A term not seen for this long (ms) is new again.
    pub history_ms: i64,
    /// After an entity's first event, terms are learnt silently for this long (ms).
    pub warmup_ms: i64,
    /// Terms remembered per entity; the least recently seen is forgotten beyond it.
    pub max_terms: usize,
}

/// A fan-out rule's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FanOutSpec {
    /// The column whose distinct values are counted (a destination, a port, an asset).
    pub field: String,
    /// Tumbling window length (ms), aligned to the epoch.
    pub window_ms: i64,
    /// Active windows learnt before alerting.
    pub warmup: u32,
    /// Weight of each window's count in the baseline after warm-up.
    pub alpha: f64,
    /// Alert when the window's count is this many standard deviations above the baseline.
    pub z: f64,
    /// ... and at least this multiple of the baseline mean (a steady entity has a tiny
    /// deviation, and z alone would flag one extra destination).
    pub ratio: f64,
    /// ... and at least this many distinct values.
    pub min_count: u32,
    /// Floor of the standard deviation used for z.
    pub min_std: f64,
    /// Distinct values held per entity and window; the count saturates there.
    pub max_distinct: usize,
}

/// An impossible-travel rule's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TravelSpec {
    /// The column naming the place of each event (a city, a badge site); `a.b` reads field
    /// `b` of struct column `a` (`geo.city`).
    pub location: String,
    /// Each known place and its latitude and longitude (degrees), in file order; events at
    /// places not listed are ignored (and counted by the detector).
    pub places: Vec<(String, f64, f64)>,
    /// Fastest plausible travel (km/h).
    pub max_kmh: f64,
    /// Moves shorter than this (km) never alert: places are coarse (a city's centre).
    pub min_km: f64,
}

/// A baseline rule file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRule {
    /// Unique rule id.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What it looks for.
    pub description: String,
    /// The stream it reads.
    pub stream: String,
    /// Entity column (default: the stream's first entity field).
    pub entity: Option<String>,
    /// Long layout: column naming the metric of each row.
    pub metric: Option<String>,
    /// Long layout: column holding the value.
    pub value: Option<String>,
    /// Wide layout: numeric columns, each a series (univariate) or a feature (multivariate).
    pub features: Vec<String>,
    /// `where`: the rows the rule reads, by text column and the values it may hold (any of
    /// them; every listed column must match); empty: every row.
    pub filter: Vec<(String, Vec<String>)>,
    /// While a condition persists, alert again after this long (ms); 0: every row.
    pub realert_ms: i64,
    /// Most entities held; beyond, the least recently seen are evicted (counted).
    pub max_entities: usize,
    /// An entity silent for this long (ms) is forgotten.
    pub ttl_ms: i64,
    /// Tags (ATT&CK...).
    pub tags: Vec<String>,
    /// The model.
    pub model: Model,
    /// Line and column of each top-level key, for errors found after parsing (a column the
    /// stream does not have).
    pub positions: Vec<(String, usize, usize)>,
}

impl BaselineRule {
    /// Line and column of top-level `key` (1, 1 when absent).
    pub fn position(&self, key: &str) -> (usize, usize) {
        self.positions
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, l, c)| (*l, *c))
            .unwrap_or((1, 1))
    }
}

/// True for a file holding a baseline rule.
pub fn is_baseline_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".baseline.yml") || name.ends_with(".baseline.yaml")
}

const COMMON_KEYS: &[&str] = &[
    "id",
    "title",
    "severity",
    "description",
    "stream",
    "entity",
    "model",
    "tags",
    "realert_s",
    "max_entities",
    "ttl_s",
    "where",
];
const UNIVARIATE_KEYS: &[&str] = &[
    "metric",
    "value",
    "features",
    "warmup",
    "alpha",
    "z",
    "min_std",
    "min",
    "max",
    "max_rate",
    "flatline_s",
    "flat_epsilon",
    "heartbeat_s",
    "seasonal",
    "robust_window",
];
const MULTIVARIATE_KEYS: &[&str] = &[
    "features",
    "warmup",
    "threshold",
    "clear",
    "smoothing",
    "cap",
    "adapt",
    "drift",
    "hold",
    "statistic",
    "variance",
    "calibrate",
    "row_smoothing",
];
const NEW_TERMS_KEYS: &[&str] = &["field", "history_s", "warmup_s", "max_terms"];
const CONSISTENCY_KEYS: &[&str] = &[
    "metric",
    "value",
    "command",
    "command_above",
    "response",
    "response_above",
    "within_s",
];
const TRAVEL_KEYS: &[&str] = &["location", "places", "max_kmh", "min_km"];
const FAN_OUT_KEYS: &[&str] = &[
    "field",
    "window_s",
    "warmup",
    "alpha",
    "z",
    "ratio",
    "min_count",
    "min_std",
    "max_distinct",
];

/// Parses one rule file's text.
pub fn parse(file: &Path, text: &str) -> Result<BaselineRule, Vec<RuleError>> {
    let at = |line: usize, column: usize, message: String| RuleError {
        file: file.to_path_buf(),
        line,
        column,
        message,
    };
    let docs = yaml::load(text).map_err(|e| vec![at(e.pos.line, e.pos.column, e.message)])?;
    let root = match docs.as_slice() {
        [doc] if doc.root.is_some() => doc.root.as_ref().expect("checked"),
        _ => {
            return Err(vec![at(
                1,
                0,
                "a baseline rule file holds exactly one YAML document (a map of settings)".into(),
            )]);
        }
    };
    let NodeKind::Map(entries) = &root.kind else {
        return Err(vec![at(
            root.pos.line,
            root.pos.column,
            format!("expected a map of settings, found {}", root.describe()),
        )]);
    };
    let mut p = Parser {
        file,
        errors: Vec::new(),
    };
    let model_name = match root.get("model") {
        Some(n) => p.string(n),
        None => {
            p.err(
                root,
                "missing `model`: one of univariate, multivariate, new_terms, fan_out, \
                 impossible_travel, consistency",
            );
            None
        }
    };
    let allowed: &[&str] = match model_name.as_deref() {
        Some("univariate") => UNIVARIATE_KEYS,
        Some("multivariate") => MULTIVARIATE_KEYS,
        Some("new_terms") => NEW_TERMS_KEYS,
        Some("fan_out") => FAN_OUT_KEYS,
        Some("impossible_travel") => TRAVEL_KEYS,
        Some("consistency") => CONSISTENCY_KEYS,
        Some(other) => {
            let n = root.get("model").expect("read above");
            p.err(
                n,
                format!(
                    "unknown model `{other}`; expected univariate, multivariate, new_terms, \
                     fan_out, impossible_travel or consistency"
                ),
            );
            &[]
        }
        None => &[],
    };
    for (k, _) in entries {
        let name = k.as_scalar().map(|s| s.text.as_str()).unwrap_or("");
        if !COMMON_KEYS.contains(&name) && !allowed.contains(&name) && model_name.is_some() {
            let mut keys: Vec<&str> = COMMON_KEYS.iter().chain(allowed).copied().collect();
            keys.sort_unstable();
            p.err(
                k,
                format!(
                    "unknown key `{name}` for a {} rule; expected one of {}",
                    model_name.as_deref().unwrap_or("?"),
                    keys.join(", ")
                ),
            );
        }
    }
    let id = p.required_string(root, "id");
    let stream = p.required_string(root, "stream");
    let title = p.opt_string(root, "title").unwrap_or_else(|| id.clone());
    let description = p.opt_string(root, "description").unwrap_or_default();
    let severity = match root.get("severity") {
        Some(n) => p.string(n).and_then(|s| match Severity::parse(&s) {
            Some(sev) => Some(sev),
            None => {
                p.err(
                    n,
                    format!("unknown severity `{s}`; expected info, low, medium, high or critical"),
                );
                None
            }
        }),
        None => None,
    }
    .unwrap_or(Severity::Medium);
    let tags = p.opt_strings(root, "tags").unwrap_or_default();
    let entity = p.opt_string(root, "entity");
    let realert_ms = p.secs(root, "realert_s", 0.0, 600.0);
    let max_entities = p.number(root, "max_entities", 1.0, 10_000.0) as usize;
    let ttl_ms = p.secs(root, "ttl_s", 1.0, 7.0 * 86_400.0);
    let features = p.opt_strings(root, "features").unwrap_or_default();
    let filter = match root.get("where") {
        Some(n) => p.filter(n),
        None => Vec::new(),
    };
    let (mut metric, mut value) = (None, None);
    let model = match model_name.as_deref() {
        Some("univariate") => {
            metric = p.opt_string(root, "metric");
            value = p.opt_string(root, "value");
            if metric.is_some() != value.is_some() {
                p.err(
                    root,
                    "a long-layout rule names both `metric` and `value` columns",
                );
            }
            if metric.is_some() != features.is_empty() {
                p.err(
                    root,
                    "name the series: `metric` + `value` (one row per sample) or `features` \
                     (one column per series), not both",
                );
            }
            let spec = UnivariateSpec {
                warmup: p.number(root, "warmup", 2.0, 30.0) as u32,
                alpha: p.number(root, "alpha", 0.0, 0.01),
                z: p.opt_number(root, "z", 0.0),
                min_std: p.number(root, "min_std", 0.0, 0.0),
                min: p.opt_number(root, "min", f64::MIN),
                max: p.opt_number(root, "max", f64::MIN),
                max_rate: p.opt_number(root, "max_rate", 0.0),
                flatline_ms: p
                    .opt_number(root, "flatline_s", 0.0)
                    .map(|s| (s * 1000.0) as i64),
                flat_epsilon: p.number(root, "flat_epsilon", 0.0, 0.0),
                heartbeat_ms: p
                    .opt_number(root, "heartbeat_s", 0.0)
                    .map(|s| (s * 1000.0) as i64),
                seasonal: match root.get("seasonal") {
                    None => None,
                    Some(n) => {
                        match p.string(n).as_deref() {
                            Some("hour") => Some(24),
                            Some("week_hour") => Some(168),
                            Some(other) => {
                                p.err(
                                n,
                                format!("unknown seasonal profile `{other}`; expected hour or week_hour"),
                            );
                                None
                            }
                            None => None,
                        }
                    }
                },
                robust_window: p
                    .opt_number(root, "robust_window", 3.0)
                    .map(|n| n.min(4096.0) as u16),
            };
            if let Some(n) = spec.robust_window {
                let at = root.get("robust_window").unwrap_or(root);
                if spec.seasonal.is_some() {
                    p.err(at, "`robust_window` and `seasonal` do not combine");
                }
                if u32::from(n) < spec.warmup {
                    p.err(
                        at,
                        format!(
                            "robust_window ({n}) must hold at least `warmup` ({}) samples, or \
                             the baseline never warms up",
                            spec.warmup
                        ),
                    );
                }
            }
            if spec.z.is_none()
                && spec.min.is_none()
                && spec.max.is_none()
                && spec.max_rate.is_none()
                && spec.flatline_ms.is_none()
                && spec.heartbeat_ms.is_none()
            {
                p.err(
                    root,
                    "a univariate rule needs at least one check: z, min, max, max_rate, \
                     flatline_s or heartbeat_s",
                );
            }
            if let Some(hb) = spec.heartbeat_ms
                && hb >= ttl_ms
            {
                p.err(
                    root.get("heartbeat_s").unwrap_or(root),
                    "heartbeat_s must be shorter than ttl_s, or a silent entity is forgotten \
                     before it is missed",
                );
            }
            Model::Univariate(spec)
        }
        Some("multivariate") => {
            if features.len() < 2 || features.len() > 16 {
                p.err(
                    root.get("features").unwrap_or(root),
                    format!(
                        "a multivariate rule needs 2 to 16 `features`, found {}",
                        features.len()
                    ),
                );
            }
            let mut drift = vec![0.0; features.len()];
            if let Some(d) = root.get("drift") {
                if let NodeKind::Map(entries) = &d.kind {
                    for (k, v) in entries {
                        let name = k.as_scalar().map(|s| s.text.as_str()).unwrap_or("");
                        match features.iter().position(|f| f == name) {
                            Some(j) => {
                                if let Some(x) = p.float(v, 0.0) {
                                    drift[j] = x;
                                }
                            }
                            None => p.err(k, format!("`{name}` is not one of the rule's features")),
                        }
                    }
                } else {
                    p.err(d, "`drift` maps feature names to standard deviations");
                }
            }
            let warmup = p.number(root, "warmup", 2.0, 400.0) as u32;
            let threshold = p.number(root, "threshold", 0.0, 15.0);
            let clear = p.number(root, "clear", 0.0, 0.7);
            if clear > 1.0 {
                p.err(
                    root.get("clear").unwrap_or(root),
                    "`clear` is a fraction of the threshold, at most 1",
                );
            }
            let smoothing = p.number(root, "smoothing", 0.0, 0.05);
            if smoothing <= 0.0 || smoothing > 1.0 {
                p.err(
                    root.get("smoothing").unwrap_or(root),
                    "`smoothing` is a weight in (0, 1]",
                );
            }
            let statistic = match p.opt_string(root, "statistic").as_deref() {
                None | Some("mahalanobis") => {
                    if let Some(v) = root.get("variance") {
                        p.err(v, "`variance` is a setting of `statistic: pca`");
                    }
                    Statistic::Mahalanobis
                }
                Some("pca") => {
                    let variance = p.number(root, "variance", 0.0, 0.95);
                    if variance <= 0.0 || variance > 1.0 {
                        p.err(
                            root.get("variance").unwrap_or(root),
                            "`variance` is a share of the variance in (0, 1]",
                        );
                    }
                    Statistic::Pca { variance }
                }
                Some(other) => {
                    p.err(
                        root.get("statistic").unwrap_or(root),
                        format!("unknown statistic `{other}`; expected mahalanobis or pca"),
                    );
                    Statistic::Mahalanobis
                }
            };
            // T² and Q are on different scales: PCA scores are always calibrated.
            let pca = matches!(statistic, Statistic::Pca { .. });
            let calibrate = p.number(root, "calibrate", 0.0, if pca { 0.99 } else { 0.0 });
            if calibrate >= 1.0 || (pca && calibrate == 0.0) {
                p.err(
                    root.get("calibrate").unwrap_or(root),
                    if pca {
                        "`calibrate` is a quantile in (0, 1) (PCA scores are always calibrated)"
                    } else {
                        "`calibrate` is a quantile in (0, 1), or 0 for raw distances"
                    },
                );
            }
            if calibrate > 0.0 && warmup as usize > super::codec::MAX_CALIBRATION_ROWS {
                p.err(
                    root.get("warmup").unwrap_or(root),
                    format!(
                        "calibration keeps the warm-up rows: `warmup` is at most {}",
                        super::codec::MAX_CALIBRATION_ROWS
                    ),
                );
            }
            let row_smoothing = p.number(root, "row_smoothing", 0.0, 1.0);
            if row_smoothing <= 0.0 || row_smoothing > 1.0 {
                p.err(
                    root.get("row_smoothing").unwrap_or(root),
                    "`row_smoothing` is a weight in (0, 1]",
                );
            }
            Model::Multivariate(MultivariateSpec {
                params: super::model::MultivariateParams {
                    warmup,
                    threshold,
                    clear,
                    hold: p.number(root, "hold", 0.0, 0.0).min(f64::from(u32::MAX)) as u32,
                    smoothing,
                    cap: p.number(root, "cap", 0.0, 200.0),
                    adapt: p.number(root, "adapt", 0.0, 0.0),
                    drift,
                    statistic,
                    row_smoothing,
                    calibrate,
                },
            })
        }
        Some("new_terms") => {
            let field = p.required_string(root, "field");
            Model::NewTerms(NewTermsSpec {
                field,
                history_ms: p.secs(root, "history_s", 1.0, 30.0 * 86_400.0),
                warmup_ms: p.secs(root, "warmup_s", 0.0, 86_400.0),
                max_terms: p.number(root, "max_terms", 1.0, 256.0) as usize,
            })
        }
        Some("fan_out") => {
            let field = p.required_string(root, "field");
            let spec = FanOutSpec {
                field,
                window_ms: p.secs(root, "window_s", 1.0, 300.0),
                warmup: p.number(root, "warmup", 2.0, 12.0) as u32,
                alpha: p.number(root, "alpha", 0.0, 0.05),
                z: p.number(root, "z", 0.0, 4.0),
                ratio: p.number(root, "ratio", 0.0, 2.0),
                min_count: p.number(root, "min_count", 1.0, 10.0) as u32,
                min_std: p.number(root, "min_std", 0.0, 1.0),
                max_distinct: p.number(root, "max_distinct", 1.0, 4096.0) as usize,
            };
            if spec.alpha > 1.0 {
                p.err(
                    root.get("alpha").unwrap_or(root),
                    "`alpha` is a weight in [0, 1]",
                );
            }
            if spec.max_distinct > 65_536 {
                p.err(
                    root.get("max_distinct").unwrap_or(root),
                    "`max_distinct` is at most 65536 (state per entity is bounded by it)",
                );
            }
            if spec.window_ms >= ttl_ms {
                p.err(
                    root.get("window_s").unwrap_or(root),
                    "window_s must be shorter than ttl_s, or an entity is forgotten between \
                     windows and never leaves warm-up",
                );
            }
            Model::FanOut(spec)
        }
        Some("consistency") => {
            // Long layout (`metric` + `value`: command and response are metric names) or
            // wide (neither: they are columns of the same row).
            metric = p.opt_string(root, "metric");
            value = p.opt_string(root, "value");
            if metric.is_some() != value.is_some() {
                p.err(
                    root,
                    "a long-layout rule names both `metric` and `value` columns (or neither: \
                     `command` and `response` are then columns)",
                );
            }
            if !features.is_empty() {
                p.err(
                    root.get("features").unwrap_or(root),
                    "a consistency rule reads `command` and `response` (metrics, with `metric` \
                     + `value`, or columns), not `features`",
                );
            }
            let command = p.required_string(root, "command");
            let response = p.required_string(root, "response");
            if !command.is_empty() && command == response {
                p.err(
                    root.get("response").unwrap_or(root),
                    "`response` must be another metric or column than `command`",
                );
            }
            let within_ms = p.secs(root, "within_s", 1.0, 60.0);
            if within_ms >= ttl_ms {
                p.err(
                    root.get("within_s").unwrap_or(root),
                    "within_s must be shorter than ttl_s, or a pending command is forgotten \
                     before its deadline",
                );
            }
            Model::Consistency(ConsistencySpec {
                command,
                command_above: p.number(root, "command_above", f64::MIN, 0.5),
                response,
                response_above: p.number(root, "response_above", f64::MIN, 0.0),
                within_ms,
            })
        }
        Some("impossible_travel") => {
            let location = p.required_string(root, "location");
            let mut places = Vec::new();
            match root.get("places") {
                None => p.err(
                    root,
                    "missing `places`: a map of place name to [latitude, longitude]",
                ),
                Some(m) => match &m.kind {
                    NodeKind::Map(entries) => {
                        for (k, v) in entries {
                            let Some(name) = p.string(k) else { continue };
                            let coords = match &v.kind {
                                NodeKind::Seq(items) if items.len() == 2 => {
                                    (p.float(&items[0], -90.0), p.float(&items[1], -180.0))
                                }
                                _ => {
                                    p.err(
                                        v,
                                        format!(
                                            "`{name}`: expected [latitude, longitude], found {}",
                                            v.describe()
                                        ),
                                    );
                                    continue;
                                }
                            };
                            let (Some(lat), Some(lon)) = coords else {
                                continue;
                            };
                            if lat > 90.0 || lon > 180.0 {
                                p.err(
                                    v,
                                    format!(
                                        "`{name}`: latitude is within ±90 and longitude \
                                         within ±180, found [{lat}, {lon}]"
                                    ),
                                );
                            } else if places.iter().any(|(n, _, _)| *n == name) {
                                p.err(k, format!("place `{name}` is listed twice"));
                            } else {
                                places.push((name, lat, lon));
                            }
                        }
                        if places.len() > usize::from(u16::MAX) {
                            p.err(m, "at most 65535 places");
                        }
                    }
                    _ => p.err(
                        m,
                        format!(
                            "`places` maps place names to [latitude, longitude], found {}",
                            m.describe()
                        ),
                    ),
                },
            }
            Model::ImpossibleTravel(TravelSpec {
                location,
                places,
                max_kmh: p.number(root, "max_kmh", 1.0, 900.0),
                min_km: p.number(root, "min_km", 0.0, 100.0),
            })
        }
        _ => Model::NewTerms(NewTermsSpec {
            field: String::new(),
            history_ms: 0,
            warmup_ms: 0,
            max_terms: 0,
        }),
    };
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(BaselineRule {
        id,
        title,
        severity,
        description,
        stream,
        entity,
        metric,
        value,
        features,
        filter,
        realert_ms,
        max_entities,
        ttl_ms,
        tags,
        model,
        positions: entries
            .iter()
            .filter_map(|(k, _)| {
                k.as_scalar()
                    .map(|s| (s.text.clone(), k.pos.line, k.pos.column))
            })
            .collect(),
    })
}

struct Parser<'a> {
    file: &'a Path,
    errors: Vec<RuleError>,
}

impl Parser<'_> {
    fn err(&mut self, node: &Node, message: impl Into<String>) {
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            line: node.pos.line,
            column: node.pos.column,
            message: message.into(),
        });
    }

    fn string(&mut self, n: &Node) -> Option<String> {
        match n.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Str(s)) => Some(s.to_string()),
            Some(Resolved::Int(_) | Resolved::Float(_) | Resolved::Bool(_)) => {
                Some(n.as_scalar().expect("scalar").text.clone())
            }
            _ => {
                self.err(n, format!("expected text, found {}", n.describe()));
                None
            }
        }
    }

    fn required_string(&mut self, root: &Node, key: &str) -> String {
        match root.get(key) {
            Some(n) => self.string(n).unwrap_or_default(),
            None => {
                self.err(root, format!("missing `{key}`"));
                String::new()
            }
        }
    }

    fn opt_string(&mut self, root: &Node, key: &str) -> Option<String> {
        root.get(key).and_then(|n| self.string(n))
    }

    fn opt_strings(&mut self, root: &Node, key: &str) -> Option<Vec<String>> {
        let n = root.get(key)?;
        match &n.kind {
            NodeKind::Seq(items) => Some(items.iter().filter_map(|i| self.string(i)).collect()),
            _ => {
                self.err(n, format!("`{key}` is a list, found {}", n.describe()));
                None
            }
        }
    }

    /// `where`: a map of column to one value or a list of values.
    fn filter(&mut self, n: &Node) -> Vec<(String, Vec<String>)> {
        let NodeKind::Map(entries) = &n.kind else {
            self.err(
                n,
                format!(
                    "`where` maps columns to a value or a list of values, found {}",
                    n.describe()
                ),
            );
            return Vec::new();
        };
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in entries {
            let Some(column) = self.string(k) else {
                continue;
            };
            let values: Vec<String> = match &v.kind {
                NodeKind::Seq(items) => items.iter().filter_map(|i| self.scalar(i)).collect(),
                _ => self.scalar(v).into_iter().collect(),
            };
            if values.is_empty() {
                self.err(v, format!("`where` `{column}`: give at least one value"));
                continue;
            }
            out.push((column, values));
        }
        out
    }

    /// A scalar's text (a value to compare with), refusing maps, lists and empty values.
    fn scalar(&mut self, n: &Node) -> Option<String> {
        match n.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Null) | None => {
                self.err(n, format!("expected a value, found {}", n.describe()));
                None
            }
            Some(_) => self.string(n),
        }
    }

    fn float(&mut self, n: &Node, min: f64) -> Option<f64> {
        let v = match n.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Int(i)) => i as f64,
            Some(Resolved::Float(f)) if f.is_finite() => f,
            _ => {
                self.err(n, format!("expected a number, found {}", n.describe()));
                return None;
            }
        };
        if v < min {
            self.err(n, format!("must be at least {min}, found {v}"));
            return None;
        }
        Some(v)
    }

    fn opt_number(&mut self, root: &Node, key: &str, min: f64) -> Option<f64> {
        root.get(key).and_then(|n| self.float(n, min))
    }

    fn number(&mut self, root: &Node, key: &str, min: f64, default: f64) -> f64 {
        self.opt_number(root, key, min).unwrap_or(default)
    }

    fn secs(&mut self, root: &Node, key: &str, min: f64, default: f64) -> i64 {
        (self.number(root, key, min, default) * 1000.0) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("r.baseline.yml"), text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_a_multivariate_rule_with_drift_in_feature_order() {
        let rule = parse(
            Path::new("r.baseline.yml"),
            "id: pump\nstream: pumps\nmodel: multivariate\nfeatures: [current, flow]\n\
             threshold: 12\ndrift: {flow: 0.5}\nseverity: high\n",
        )
        .unwrap();
        let Model::Multivariate(m) = &rule.model else {
            panic!("{rule:?}")
        };
        assert_eq!(m.params.drift, vec![0.0, 0.5]);
        assert_eq!(m.params.threshold, 12.0);
        assert_eq!(m.params.warmup, 400);
        assert_eq!(rule.severity, Severity::High);
    }

    #[test]
    fn parses_pca_settings_and_refuses_what_does_not_combine() {
        let rule = parse(
            Path::new("r.baseline.yml"),
            "id: pump\nstream: pumps\nmodel: multivariate\nfeatures: [current, flow]\n\
             statistic: pca\nvariance: 0.9\nrow_smoothing: 0.1\nhold: 30\n",
        )
        .unwrap();
        let Model::Multivariate(m) = &rule.model else {
            panic!("{rule:?}")
        };
        assert_eq!(m.params.statistic, Statistic::Pca { variance: 0.9 });
        assert_eq!(
            m.params.calibrate, 0.99,
            "PCA scores are calibrated by default"
        );
        assert_eq!((m.params.row_smoothing, m.params.hold), (0.1, 30));
        let base = "id: a\nstream: s\nmodel: multivariate\nfeatures: [a, b]\n";
        assert_eq!(
            errors(&format!("{base}statistic: hotelling\n")),
            vec![
                "r.baseline.yml:5:12: unknown statistic `hotelling`; expected mahalanobis or pca"
                    .to_string()
            ]
        );
        assert_eq!(
            errors(&format!("{base}variance: 0.9\n")),
            vec!["r.baseline.yml:5:11: `variance` is a setting of `statistic: pca`".to_string()]
        );
        assert_eq!(
            errors(&format!("{base}statistic: pca\ncalibrate: 0\n")),
            vec![
                "r.baseline.yml:6:12: `calibrate` is a quantile in (0, 1) (PCA scores are \
                 always calibrated)"
                    .to_string()
            ]
        );
        assert_eq!(
            errors(&format!("{base}row_smoothing: 0\n")),
            vec!["r.baseline.yml:5:16: `row_smoothing` is a weight in (0, 1]".to_string()]
        );
    }

    /// The PCA example of rules/README.md parses to what it says.
    #[test]
    fn the_guide_s_pca_example_parses() {
        let guide = include_str!("../../../rules/README.md");
        let start = guide
            .find("id: pump.behaviour")
            .expect("the example is in the guide");
        let end = start + guide[start..].find("```").unwrap();
        let text: String = guide[start..end]
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let rule = parse(Path::new("pump.baseline.yml"), &text).unwrap();
        let Model::Multivariate(m) = &rule.model else {
            panic!("{rule:?}")
        };
        assert_eq!(m.params.statistic, Statistic::Pca { variance: 0.95 });
        assert_eq!((m.params.threshold, m.params.hold), (10.0, 30));
        assert_eq!(m.params.drift, vec![0.0, 0.0, 0.0, 0.05]);
    }

    #[test]
    fn errors_carry_line_column_and_the_fix() {
        assert_eq!(
            errors("id: a\nstream: s\nmodel: univariate\nfeatures: [v]\nzz: 3\n"),
            vec![
                "r.baseline.yml:5:1: unknown key `zz` for a univariate rule; expected one of \
                 alpha, description, entity, features, flat_epsilon, flatline_s, heartbeat_s, \
                 id, max, max_entities, max_rate, metric, min, min_std, model, realert_s, \
                 robust_window, seasonal, severity, stream, tags, title, ttl_s, value, warmup, \
                 where, z"
                    .to_string(),
                "r.baseline.yml:1:1: a univariate rule needs at least one check: z, min, max, \
                 max_rate, flatline_s or heartbeat_s"
                    .to_string(),
            ]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: multivariate\nfeatures: [a, b]\nthreshold: high\n"),
            vec!["r.baseline.yml:5:12: expected a number, found `high`".to_string()]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: multivariate\nfeatures: [a, b]\ndrift: {c: 1}\n"),
            vec!["r.baseline.yml:5:9: `c` is not one of the rule's features".to_string()]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: seasonal\n"),
            vec![
                "r.baseline.yml:3:8: unknown model `seasonal`; expected univariate, \
                 multivariate, new_terms, fan_out, impossible_travel or consistency"
                    .to_string()
            ]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: fan_out\nfield: dst_ip\nwindows: 60\n"),
            vec![
                "r.baseline.yml:5:1: unknown key `windows` for a fan_out rule; expected one of \
                 alpha, description, entity, field, id, max_distinct, max_entities, min_count, \
                 min_std, model, ratio, realert_s, severity, stream, tags, title, ttl_s, \
                 warmup, where, window_s, z"
                    .to_string()
            ]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: fan_out\nfield: dst_ip\nttl_s: 60\nwindow_s: 60\n"),
            vec![
                "r.baseline.yml:6:11: window_s must be shorter than ttl_s, or an entity is \
                 forgotten between windows and never leaves warm-up"
                    .to_string()
            ]
        );
        assert_eq!(
            errors(
                "id: a\nstream: s\nmodel: impossible_travel\nlocation: city\n\
                 places:\n  Ottawa: [45.4, -75.7]\n  Moscow: [55.8]\n  Lagos: [6.5, 193]\n"
            ),
            vec![
                "r.baseline.yml:7:11: `Moscow`: expected [latitude, longitude], found a \
                 list"
                    .to_string(),
                "r.baseline.yml:8:10: `Lagos`: latitude is within ±90 and longitude within \
                 ±180, found [6.5, 193]"
                    .to_string(),
            ]
        );
        assert_eq!(
            errors(
                "id: a\nstream: s\nmodel: consistency\nmetric: m\nvalue: v\n\
                 command: pump_cmd\nresponse: pump_cmd\nwithin_s: soon\n"
            ),
            vec![
                "r.baseline.yml:7:11: `response` must be another metric or column than `command`"
                    .to_string(),
                "r.baseline.yml:8:11: expected a number, found `soon`".to_string(),
            ]
        );
        assert_eq!(
            errors("id: a\nstream: s\nmodel: fan_out\n"),
            vec!["r.baseline.yml:1:1: missing `field`".to_string()]
        );
    }
}
