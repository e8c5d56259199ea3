//! The alert stage: between the detectors and the sinks, on the deliver task.
//!
//! In: a batch's alerts as the detectors raised them. Out: the alerts to deliver, each with a
//! fingerprint, ATT&CK references, the asset it concerns (from the inventory) and an urgency;
//! repeats folded by [`Suppressor`] are removed from the batch and counted per rule
//! (`palisade_alerts_folded_total`), their number carried by the next emitted repeat.
//!
//! Live runs only: replay and `palisade test` show the detectors' raw output, which is what a
//! rule author backtests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::alert::attack::Attack;
use crate::alert::enrich::{Asset, Inventory, InventoryError, urgency};
use crate::alert::suppress::{Suppressor, Verdict};
use crate::alert::{Alert, parse_time_ms};
use crate::config::Config;
use crate::metrics::Metrics;

/// The inventory file and when it was last read.
struct InventoryFile {
    path: PathBuf,
    /// (modification time, length) when last read.
    seen: Option<(Option<SystemTime>, u64)>,
    checked: Instant,
    interval: Duration,
}

/// Enrichment and suppression.
pub struct AlertStage {
    inventory: Inventory,
    file: Option<InventoryFile>,
    asset_fields: Vec<String>,
    suppressor: Suppressor,
    metrics: Arc<Metrics>,
    evicted_reported: u64,
}

impl AlertStage {
    /// The stage for `config`; reads the inventory now, so a bad one fails at start.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<AlertStage, InventoryError> {
        let alerting = &config.alerting;
        let mut stage = AlertStage {
            inventory: Inventory::default(),
            file: None,
            asset_fields: alerting.asset_fields.clone(),
            suppressor: Suppressor::new(&alerting.suppression),
            metrics,
            evicted_reported: 0,
        };
        if let Some(path) = alerting.inventory_path(&config.base_dir) {
            let seen = file_state(&path);
            stage.inventory = Inventory::load(&path)?;
            stage
                .metrics
                .inventory_assets
                .set(stage.inventory.len() as i64);
            tracing::info!(
                assets = stage.inventory.len(),
                file = %path.display(),
                "asset inventory loaded"
            );
            stage.file = Some(InventoryFile {
                path,
                seen,
                checked: Instant::now(),
                interval: Duration::from_millis(alerting.inventory_reload_ms),
            });
        }
        Ok(stage)
    }

    /// Re-reads the inventory if its file changed; a bad file keeps the previous inventory.
    fn reload_inventory(&mut self) {
        let Some(file) = &mut self.file else { return };
        if file.checked.elapsed() < file.interval {
            return;
        }
        file.checked = Instant::now();
        let now = file_state(&file.path);
        if now == file.seen {
            return;
        }
        file.seen = now;
        match Inventory::load(&file.path) {
            Ok(inv) => {
                tracing::info!(assets = inv.len(), "asset inventory reloaded");
                self.metrics.inventory_assets.set(inv.len() as i64);
                self.metrics
                    .inventory_reloads
                    .with_label_values(&["ok"])
                    .inc();
                self.inventory = inv;
            }
            Err(e) => {
                tracing::error!("asset inventory reload failed; keeping the previous one: {e}");
                self.metrics
                    .inventory_reloads
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }

    /// Enriches `alerts` and removes the folded ones.
    pub fn apply(&mut self, alerts: &mut Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        self.reload_inventory();
        let wall = crate::pipeline::now_ms();
        alerts.retain_mut(|alert| {
            let rule = alert.rule.id.as_str();
            self.metrics.rule_matches.with_label_values(&[rule]).inc();
            let at = parse_time_ms(&alert.detected_at).unwrap_or(wall);
            self.enrich(alert, at);
            match self.suppressor.offer(alert, at) {
                Verdict::Emit => {
                    let (domain, criticality) = match &alert.context.asset {
                        Some(a) => (a.domain.as_str(), a.criticality.as_str()),
                        None => ("unknown", "unknown"),
                    };
                    self.metrics
                        .alerts_emitted
                        .with_label_values(&[
                            alert.rule.id.as_str(),
                            alert.severity.as_str(),
                            alert.context.urgency.unwrap_or(alert.severity).as_str(),
                            domain,
                            criticality,
                        ])
                        .inc();
                    true
                }
                Verdict::Fold => {
                    self.metrics
                        .alerts_folded
                        .with_label_values(&[alert.rule.id.as_str()])
                        .inc();
                    false
                }
            }
        });
        self.metrics
            .suppression_fingerprints
            .set(self.suppressor.len() as i64);
        let evicted = self.suppressor.evicted;
        if evicted > self.evicted_reported {
            self.metrics
                .suppression_evicted
                .inc_by(evicted - self.evicted_reported);
            self.evicted_reported = evicted;
        }
    }

    /// Fingerprint, ATT&CK, asset and urgency of one alert detected at `at_ms`.
    pub fn enrich(&self, alert: &mut Alert, at_ms: i64) {
        let policy = self.suppressor.policy(&alert.rule.id);
        alert.context.fingerprint = Some(alert.compute_fingerprint(&policy.group_by));
        alert.context.attack = Attack::from_tags(&alert.tags);
        let asset = self.asset_of(alert);
        alert.context.urgency = Some(urgency(
            alert.severity,
            asset.map(|a| a.criticality),
            asset.is_some_and(|a| a.in_maintenance(at_ms)),
        ));
        alert.context.asset = asset.map(|a| a.reference(at_ms));
    }

    /// The most critical asset named by the entity or the configured evidence fields.
    fn asset_of(&self, alert: &Alert) -> Option<&Asset> {
        if self.inventory.is_empty() {
            return None;
        }
        let first: Option<serde_json::Map<String, serde_json::Value>> = alert
            .evidence
            .first()
            .and_then(|e| serde_json::from_str(e.get()).ok());
        let fields = self.asset_fields.iter().filter_map(|f| {
            first
                .as_ref()
                .and_then(|m| m.get(f))
                .and_then(|v| v.as_str())
        });
        std::iter::once(alert.entity.as_str())
            .chain(fields)
            .filter_map(|name| self.inventory.lookup(name))
            // Ties go to the first named (the entity, then the fields in order).
            .fold(None, |best: Option<&Asset>, a| match best {
                Some(b) if b.criticality >= a.criticality => Some(b),
                _ => Some(a),
            })
    }
}

fn file_state(path: &std::path::Path) -> Option<(Option<SystemTime>, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use crate::alert::enrich::Criticality;

    const INVENTORY: &str = "\
id,domain,zone,criticality,owner,aliases
wtp-plc-03,water,ot-water,critical,water-ops,10.10.1.3
kiosk-07,transport,bikeshare,low,mobility,10.40.1.7
parking-api,transport,dmz,low,parking,10.60.0.20
";

    fn stage(dir: &std::path::Path) -> (AlertStage, Arc<Metrics>) {
        std::fs::write(dir.join("assets.csv"), INVENTORY).unwrap();
        let text = crate::config::DEFAULT_CONFIG
            .replace(
                "inventory = \"inventory.csv\"",
                "inventory = \"assets.csv\"",
            )
            .replace("window_secs = 600", "window_secs = 60")
            .replace("renotify_secs = 3600", "renotify_secs = 600");
        let config = Config::parse(&text, "t.toml", dir).unwrap();
        let metrics = Arc::new(Metrics::new());
        (
            AlertStage::new(&config, Arc::clone(&metrics)).unwrap(),
            metrics,
        )
    }

    fn scan(from: &str, to: &str, second: u32) -> Alert {
        let evidence = format!(r#"{{"src_ip":"{from}","dst_ip":"{to}","ports":80}}"#);
        let mut a: Alert = serde_json::from_str(&format!(
            r#"{{"schema":"palisade.alert.v1","id":"x","rule":{{"id":"net.port_scan","title":"t","kind":"sql"}},
            "severity":"high","event_time":"2026-01-05T03:00:{second:02}.000Z","detected_at":"2026-01-05T03:00:{second:02}.000Z",
            "stream":"netflow","entity":"{from}","tags":["attack.discovery","attack.ics.t0846"],"description":"d","evidence":[{evidence}]}}"#
        ))
        .unwrap();
        a.context = Default::default();
        a
    }

    #[test]
    fn alerts_are_enriched_with_the_most_critical_asset_and_repeats_fold() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stage, metrics) = stage(dir.path());
        // A kiosk (low) scanning the PLC (critical): the PLC decides, the rule pages.
        let mut batch = vec![
            scan("10.40.1.7", "10.10.1.3", 0),
            scan("10.40.1.7", "10.10.1.3", 5),
            scan("10.60.0.20", "10.99.9.9", 6),
        ];
        stage.apply(&mut batch);
        assert_eq!(batch.len(), 2, "the repeat folds");
        let plc = &batch[0].context;
        let asset = plc.asset.as_ref().unwrap();
        assert_eq!(
            (asset.id.as_str(), asset.domain.as_str()),
            ("wtp-plc-03", "water")
        );
        assert_eq!(asset.criticality, Criticality::Critical);
        assert_eq!(plc.urgency, Some(Severity::Critical));
        assert_eq!(plc.occurrences, Some(1));
        let attack = plc.attack.as_ref().unwrap();
        assert_eq!(attack.techniques[0].id, "T0846");
        assert_eq!(attack.tactics[0].id, "discovery");
        // The parking back end is low: the same high rule only logs.
        assert_eq!(batch[1].context.urgency, Some(Severity::Medium));
        assert_ne!(batch[0].context.fingerprint, batch[1].context.fingerprint);
        let text = metrics.render();
        assert!(
            text.contains(r#"palisade_alerts_folded_total{rule="net.port_scan"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_rule_matches_total{rule="net.port_scan"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"criticality="critical",domain="water",rule="net.port_scan",severity="high",urgency="critical"} 1"#),
            "{text}"
        );
        // The JSON carries the additions; a v1 reader still parses it.
        let json = batch[0].to_json();
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back.context, batch[0].context);
        assert!(json.contains(r#""urgency":"critical""#), "{json}");
        // The documented schema names every field, and the required ones are there.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/alert.v1.schema.json")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let fields = value.as_object().unwrap();
        let props = schema["properties"].as_object().unwrap();
        for k in fields.keys() {
            assert!(
                props.contains_key(k),
                "`{k}` is not in docs/alert.v1.schema.json"
            );
        }
        for k in schema["required"].as_array().unwrap() {
            assert!(fields.contains_key(k.as_str().unwrap()), "{k} missing");
        }
        for k in [
            "fingerprint",
            "urgency",
            "asset",
            "attack",
            "occurrences",
            "first_seen",
        ] {
            assert!(fields.contains_key(k), "{k} missing from an enriched alert");
        }
    }

    #[test]
    fn the_inventory_reloads_when_its_file_changes_and_a_bad_one_is_kept_out() {
        let dir = tempfile::tempdir().unwrap();
        let (mut stage, metrics) = stage(dir.path());
        stage.file.as_mut().unwrap().interval = Duration::ZERO;
        let path = dir.path().join("assets.csv");
        std::fs::write(
            &path,
            INVENTORY.replace(
                "kiosk-07,transport,bikeshare,low",
                "kiosk-07,transport,bikeshare,critical",
            ),
        )
        .unwrap();
        let mut batch = vec![scan("10.40.1.7", "10.99.9.9", 0)];
        stage.apply(&mut batch);
        assert_eq!(batch[0].context.urgency, Some(Severity::Critical));
        std::fs::write(&path, "id,domain,criticality\nx,water,vital\n").unwrap();
        let mut batch = vec![scan("kiosk-07", "10.99.9.8", 0)];
        stage.apply(&mut batch);
        assert_eq!(batch[0].context.asset.as_ref().unwrap().id, "kiosk-07");
        let text = metrics.render();
        assert!(
            text.contains(r#"palisade_inventory_reloads_total{result="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_inventory_reloads_total{result="ok"} 1"#),
            "{text}"
        );
    }
}
