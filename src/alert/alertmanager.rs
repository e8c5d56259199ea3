//! Prometheus Alertmanager, API v2: `POST /api/v2/alerts`.
//!
//! Each palisade alert becomes one Alertmanager alert whose labels identify it — `alertname`
//! (the rule id), `fingerprint`, `entity`, `severity`, `urgency`, `stream`, and the asset's
//! `asset`, `domain`, `zone` and `criticality` when known — so routing, grouping, silences and
//! inhibition work on them the Alertmanager way. Repeats of one fingerprint carry the same
//! labels, so Alertmanager sees one alert, kept firing by each renotification: `endsAt` is
//! `resolve_after` past the moment it is sent, after which Alertmanager resolves it.
//! Annotations carry the title, description, first evidence row, ATT&CK ids, occurrence
//! count, first and last seen, and the alert id.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::alert::notify::Format;
use crate::alert::{Alert, format_time_ms};

/// Alertmanager's request body.
pub struct AlertmanagerFormat {
    /// `endsAt` is this long after sending.
    pub resolve_after: Duration,
    /// `generatorURL` base; `?rule=ID` is appended.
    pub generator_url: String,
}

impl AlertmanagerFormat {
    /// One alert in Alertmanager's shape, sent at `now_ms`.
    pub fn alert(&self, a: &Alert, now_ms: i64) -> Value {
        let mut labels = Map::new();
        let mut label = |k: &str, v: &str| {
            if !v.is_empty() {
                labels.insert(k.into(), Value::String(v.into()));
            }
        };
        label("alertname", &a.rule.id);
        label("source", "palisade");
        label("severity", a.severity.as_str());
        label("urgency", a.context.urgency.unwrap_or(a.severity).as_str());
        label("stream", &a.stream);
        label("entity", &a.entity);
        label(
            "fingerprint",
            a.context.fingerprint.as_deref().unwrap_or(""),
        );
        if let Some(asset) = &a.context.asset {
            label("asset", &asset.id);
            label("domain", &asset.domain);
            label("zone", &asset.zone);
            label("criticality", asset.criticality.as_str());
        }
        let mut notes = Map::new();
        let mut note = |k: &str, v: String| {
            if !v.is_empty() {
                notes.insert(k.into(), Value::String(v));
            }
        };
        note("summary", a.rule.title.clone());
        note("description", a.description.clone());
        note("alert_id", a.id.clone());
        note(
            "evidence",
            a.evidence
                .first()
                .map(|e| e.get().to_string())
                .unwrap_or_default(),
        );
        if let Some(attack) = &a.context.attack {
            let ids: Vec<&str> = attack
                .techniques
                .iter()
                .chain(&attack.tactics)
                .map(|r| r.id.as_str())
                .collect();
            note("attack", ids.join(", "));
        }
        if let Some(owner) = a.context.asset.as_ref().map(|x| x.owner.clone()) {
            note("owner", owner);
        }
        note(
            "occurrences",
            a.context
                .occurrences
                .map(|n| n.to_string())
                .unwrap_or_default(),
        );
        note(
            "first_seen",
            a.context.first_seen.clone().unwrap_or_default(),
        );
        note("last_seen", a.context.last_seen.clone().unwrap_or_default());
        let starts = a
            .context
            .first_seen
            .clone()
            .unwrap_or_else(|| a.detected_at.clone());
        let sep = if self.generator_url.contains('?') {
            '&'
        } else {
            '?'
        };
        json!({
            "labels": labels,
            "annotations": notes,
            "startsAt": starts,
            "endsAt": format_time_ms(now_ms + self.resolve_after.as_millis() as i64),
            "generatorURL": format!("{}{sep}rule={}", self.generator_url, a.rule.id),
        })
    }
}

impl Format for AlertmanagerFormat {
    fn body(&self, alerts: &[Alert]) -> Vec<u8> {
        let now = crate::pipeline::now_ms();
        let list: Vec<Value> = alerts.iter().map(|a| self.alert(a, now)).collect();
        serde_json::to_vec(&list).expect("JSON values serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_identify_and_annotations_explain() {
        let mut a: Alert = serde_json::from_str(
            r#"{"schema":"palisade.alert.v1","id":"abc","rule":{"id":"scada.x","title":"Setpoint","kind":"sql"},
            "severity":"critical","event_time":"2026-01-05T03:00:00.000Z","detected_at":"2026-01-05T03:00:01.000Z",
            "stream":"scada","entity":"laptop-7","tags":[],"description":"d","evidence":[{"host":"laptop-7"}],
            "fingerprint":"f00","urgency":"critical","occurrences":3,"first_seen":"2026-01-05T02:59:00.000Z"}"#,
        )
        .unwrap();
        a.tags.push("attack.ics.t0836".into());
        a.context.attack = crate::alert::attack::Attack::from_tags(&a.tags);
        let f = AlertmanagerFormat {
            resolve_after: Duration::from_secs(60),
            generator_url: "http://palisade:9464/".into(),
        };
        let now = crate::alert::parse_time_ms("2026-01-05T03:00:05Z").unwrap();
        let v = f.alert(&a, now);
        assert_eq!(v["labels"]["alertname"], "scada.x");
        assert_eq!(v["labels"]["fingerprint"], "f00");
        assert_eq!(v["labels"]["urgency"], "critical");
        assert!(
            v["labels"].get("domain").is_none(),
            "no asset, no domain label"
        );
        assert_eq!(v["annotations"]["occurrences"], "3");
        assert_eq!(v["annotations"]["attack"], "T0836");
        assert_eq!(v["annotations"]["evidence"], r#"{"host":"laptop-7"}"#);
        assert_eq!(v["startsAt"], "2026-01-05T02:59:00.000Z");
        assert_eq!(v["endsAt"], "2026-01-05T03:01:05.000Z");
        assert_eq!(v["generatorURL"], "http://palisade:9464/?rule=scada.x");
    }
}
