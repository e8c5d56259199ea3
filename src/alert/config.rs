//! `[alerting]`: what happens to an alert after a detector raises it — enrichment from the
//! asset inventory, suppression of repeats, and the notification sinks (Alertmanager, a
//! webhook). Part of [`crate::config::Config`]; validated with it, errors located in the file.

use std::ops::Range;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::alert::Severity;
use crate::config::ConfigError;

/// The `[alerting]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Asset inventory (`.csv` or `.json`), relative to the configuration file's folder or the
    /// working directory; reloaded when it changes. Without it alerts are not enriched with
    /// assets and urgency equals severity.
    #[serde(default)]
    pub inventory: Option<Spanned<PathBuf>>,
    /// How often the inventory file is checked for changes, in ms.
    #[serde(default = "default_inventory_reload_ms")]
    pub inventory_reload_ms: u64,
    /// Fields of an alert's first evidence row looked up in the inventory (by asset id or
    /// alias), besides the alert's entity. The most critical asset found enriches the alert.
    #[serde(default = "default_asset_fields")]
    pub asset_fields: Vec<String>,
    /// Folding of repeated alerts.
    #[serde(default)]
    pub suppression: SuppressionConfig,
    /// Prometheus Alertmanager (API v2); also `palisade run --alertmanager URL`.
    #[serde(default)]
    pub alertmanager: Option<HttpSinkConfig>,
    /// A generic JSON webhook (e.g. a SOAR); also `palisade run --webhook URL`.
    #[serde(default)]
    pub webhook: Option<HttpSinkConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            inventory: None,
            inventory_reload_ms: default_inventory_reload_ms(),
            asset_fields: default_asset_fields(),
            suppression: SuppressionConfig::default(),
            alertmanager: None,
            webhook: None,
        }
    }
}

fn default_inventory_reload_ms() -> u64 {
    5_000
}

fn default_asset_fields() -> Vec<String> {
    ["asset", "dst_ip", "host", "site", "src_ip"]
        .map(String::from)
        .to_vec()
}

/// `[alerting.suppression]`: repeated alerts with the same fingerprint (rule + entity +
/// `group_by` values) within `window_secs` of the previous one fold into one; see
/// [`crate::alert::suppress`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionConfig {
    /// A repeat within this many seconds of the fingerprint's last occurrence is folded;
    /// 0 turns folding off.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// While repeats keep coming, notify again (with the occurrence count) at most this often.
    #[serde(default = "default_renotify_secs")]
    pub renotify_secs: u64,
    /// Fingerprints remembered at most; beyond it the least recently seen are forgotten
    /// (counted), so their next repeat notifies again.
    #[serde(default = "default_max_fingerprints")]
    pub max_fingerprints: usize,
    /// Per rule id: overrides of the above, and fields that distinguish alerts of one entity.
    #[serde(default)]
    pub rules: IndexMap<String, RuleSuppression>,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            window_secs: default_window_secs(),
            renotify_secs: default_renotify_secs(),
            max_fingerprints: default_max_fingerprints(),
            rules: IndexMap::new(),
        }
    }
}

fn default_window_secs() -> u64 {
    600
}
fn default_renotify_secs() -> u64 {
    3_600
}
fn default_max_fingerprints() -> usize {
    100_000
}

/// `[alerting.suppression.rules."RULE ID"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSuppression {
    /// Overrides `window_secs` for this rule (0: never fold).
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// Overrides `renotify_secs` for this rule.
    #[serde(default)]
    pub renotify_secs: Option<u64>,
    /// Evidence fields (first row) that are part of the fingerprint, e.g. `dst_ip` so a scan
    /// of another host is a new alert.
    #[serde(default)]
    pub group_by: Vec<String>,
}

/// What a notification sink does when its buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest buffered notification, count it (`palisade_sink_dropped_total`) and
    /// keep consuming: the alerts topic still has every alert.
    DropOldest,
    /// Wait for room: the pipeline stops consuming (offsets stay uncommitted) until the
    /// receiver catches up.
    Block,
}

/// `[alerting.alertmanager]` / `[alerting.webhook]`: an HTTP notification sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Base URL (`http://host:port[/path]`): Alertmanager's, to which `/api/v2/alerts` is
    /// appended, or the webhook's full URL.
    pub url: Spanned<String>,
    /// Only alerts at least this urgent are sent (default: `high` for Alertmanager, `info`
    /// for the webhook).
    #[serde(default)]
    pub min_urgency: Option<Severity>,
    /// Notifications buffered while the receiver is slow or down.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// What to do when the buffer is full.
    #[serde(default = "default_overflow")]
    pub overflow: Overflow,
    /// Alerts per request at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Timeout of one request, in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retry backoff starts at this many ms and doubles per failed attempt ...
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    /// ... up to this many ms.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A request that keeps failing is given up (counted as a failure) after this many
    /// attempts; 0 retries for as long as the buffer holds it.
    #[serde(default)]
    pub max_attempts: u32,
    /// Alertmanager only: an alert resolves (`endsAt`) this many seconds after its last
    /// notification unless renotified. Keep it above `renotify_secs` so an ongoing episode
    /// stays firing.
    #[serde(default)]
    pub resolve_after_secs: Option<u64>,
    /// Alertmanager only: the `generatorURL` of alerts (a rule's id is appended as
    /// `?rule=ID`), e.g. a link to the rule repository or a Grafana dashboard.
    #[serde(default)]
    pub generator_url: Option<String>,
}

fn default_buffer() -> usize {
    10_000
}
fn default_overflow() -> Overflow {
    Overflow::DropOldest
}
fn default_max_batch() -> usize {
    64
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_min_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}

impl HttpSinkConfig {
    /// A sink with every default, for `--alertmanager URL` / `--webhook URL`.
    pub fn with_url(url: &str) -> HttpSinkConfig {
        HttpSinkConfig {
            url: Spanned::new(0..0, url.to_string()),
            min_urgency: None,
            buffer: default_buffer(),
            overflow: default_overflow(),
            max_batch: default_max_batch(),
            timeout_ms: default_timeout_ms(),
            min_backoff_ms: default_min_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_attempts: 0,
            resolve_after_secs: None,
            generator_url: None,
        }
    }

    /// Checks the URL: `http://host:port/...` (TLS is not spoken; put a proxy in front).
    pub fn check_url(url: &str) -> Result<hyper::Uri, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "`{url}`: expected http://HOST[:PORT][/PATH] (https is not supported; use a local TLS proxy)"
            ));
        }
        Ok(uri)
    }
}

impl AlertingConfig {
    /// Validates the section; `err` locates a span of the file.
    pub(crate) fn validate(
        &self,
        err: &dyn Fn(Range<usize>, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (name, sink) in [
            ("alertmanager", &self.alertmanager),
            ("webhook", &self.webhook),
        ] {
            let Some(sink) = sink else { continue };
            HttpSinkConfig::check_url(sink.url.get_ref())
                .map_err(|m| err(sink.url.span(), format!("[alerting.{name}] url {m}")))?;
            if sink.buffer == 0 || sink.max_batch == 0 || sink.timeout_ms == 0 {
                return Err(err(
                    sink.url.span(),
                    format!(
                        "[alerting.{name}]: `buffer`, `max_batch` and `timeout_ms` must be at least 1"
                    ),
                ));
            }
            if sink.min_backoff_ms == 0 || sink.max_backoff_ms < sink.min_backoff_ms {
                return Err(err(
                    sink.url.span(),
                    format!("[alerting.{name}]: need 1 <= `min_backoff_ms` <= `max_backoff_ms`"),
                ));
            }
            if name == "webhook"
                && (sink.resolve_after_secs.is_some() || sink.generator_url.is_some())
            {
                return Err(err(
                    sink.url.span(),
                    "[alerting.webhook]: `resolve_after_secs` and `generator_url` are Alertmanager settings; move them to [alerting.alertmanager]".into(),
                ));
            }
            if sink.resolve_after_secs == Some(0) {
                return Err(err(
                    sink.url.span(),
                    "[alerting.alertmanager]: `resolve_after_secs` must be at least 1".into(),
                ));
            }
        }
        if self.suppression.max_fingerprints == 0 {
            return Err(err(
                0..0,
                "[alerting.suppression] `max_fingerprints` must be at least 1".into(),
            ));
        }
        if self.inventory_reload_ms == 0 {
            return Err(err(
                0..0,
                "[alerting] `inventory_reload_ms` must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The inventory path, resolved like rule folders: beside the configuration file if it
    /// exists there, else as given.
    pub fn inventory_path(&self, base_dir: &std::path::Path) -> Option<PathBuf> {
        let p = self.inventory.as_ref()?.get_ref();
        let beside = base_dir.join(p);
        Some(if p.is_relative() && beside.exists() {
            beside
        } else {
            p.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_CONFIG};

    fn error(extra: &str) -> String {
        let text = format!("{DEFAULT_CONFIG}\n{extra}");
        Config::parse(&text, "p.toml", std::path::Path::new("."))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_alerting_settings_fail_at_load_with_line_and_reason() {
        let line = DEFAULT_CONFIG.lines().count() + 3;
        let e = error("[alerting.alertmanager]\nurl = \"https://am:9093\"\n");
        assert!(
            e.starts_with(&format!(
                "p.toml:{line}:7: [alerting.alertmanager] url `https://am:9093`"
            )),
            "{e}"
        );
        let e = error("[alerting.webhook]\nurl = \"http://soar/x\"\nresolve_after_secs = 5\n");
        assert!(e.contains("are Alertmanager settings"), "{e}");
        let e = error("[alerting.suppression.rules.\"x\"]\nwindow = 5\n");
        assert!(e.contains("unknown field `window`"), "{e}");
        let e = error("[alerting.alertmanager]\nurl = \"http://am\"\noverflow = \"spill\"\n");
        assert!(e.contains("unknown variant `spill`"), "{e}");
    }
}
