//! The alert: what a detector says about an entity, and how it is written out.
//!
//! JSON schema `palisade.alert.v1` (documented in README.md#alerts). An alert's `id` is a
//! hash of what the detector saw (rule, entity, event time, evidence) and nothing about when
//! or where it ran, so a replay or a redelivery of the same input gives the same id and
//! consumers can de-duplicate on it.
//!
//! After the detector, the alert stage ([`stage`]) adds what the service knows beyond the
//! rule ([`Context`]: the fingerprint, the asset from the inventory, the urgency, ATT&CK
//! references, occurrence counts). Those fields are optional additions, so the schema stays
//! `palisade.alert.v1`: a v1 consumer ignores them, and alerts from replay or `palisade test`
//! simply do not carry them. An incompatible change would be `palisade.alert.v2`.

pub mod alertmanager;
pub mod attack;
pub mod config;
pub mod enrich;
pub mod http;
pub mod notify;
pub mod sink;
pub mod stage;
pub mod suppress;
pub mod webhook;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The schema tag carried by every alert.
pub const SCHEMA: &str = "palisade.alert.v1";

/// How bad a detection is, in Sigma's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording, not acting on.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical: page someone.
    Critical,
}

impl Severity {
    /// Lower-case name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a severity; Sigma's `informational` is accepted for `info`.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "info" | "informational" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// The rule an alert comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// The rule's id.
    pub id: String,
    /// The rule's title.
    pub title: String,
    /// Detector kind: `sql`, `sigma`, `sigma-correlation`.
    pub kind: String,
    /// The rule's maturity (Sigma `status`), when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Known false positives, to help whoever triages the alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub falsepositives: Vec<String>,
}

impl RuleRef {
    /// The alert-side description of a loaded rule.
    pub fn of(meta: &crate::detect::RuleMeta) -> RuleRef {
        RuleRef {
            id: meta.id.clone(),
            title: meta.title.clone(),
            kind: meta.kind.to_string(),
            status: meta.status.clone(),
            falsepositives: meta.falsepositives.clone(),
        }
    }
}

/// One alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Deterministic id: same input, same id.
    pub id: String,
    /// The rule that fired.
    pub rule: RuleRef,
    /// Severity from the rule.
    pub severity: Severity,
    /// Event time of the detection (RFC 3339, UTC, milliseconds).
    pub event_time: String,
    /// When palisade detected it (wall clock live; the stream's event time in replay).
    pub detected_at: String,
    /// Stream the evidence came from.
    pub stream: String,
    /// The entity the alert is about (pseudonymised if personal).
    pub entity: String,
    /// Tags from the rule (ATT&CK techniques...).
    pub tags: Vec<String>,
    /// What the rule looks for, from its header.
    pub description: String,
    /// The rows that make the case, personal fields pseudonymised.
    pub evidence: Vec<Box<RawValue>>,
    /// Evidence rows left out to respect the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evidence_truncated: usize,
    /// What the alert stage added (all optional; empty as raised by a detector).
    #[serde(flatten)]
    pub context: Context,
}

/// Fields the alert stage adds to a detection (see [`stage`]). Every field is optional and
/// left out of the JSON when unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Stable grouping key: rule + entity (+ the rule's `group_by` evidence fields). Equal
    /// for every repeat of "the same" alert, unlike `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Severity weighed by the asset's criticality: what decides paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Severity>,
    /// The asset involved, from the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<enrich::AssetRef>,
    /// ATT&CK tactics and techniques from the rule's tags, normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<attack::Attack>,
    /// Occurrences of this fingerprint in the current episode, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrences: Option<u64>,
    /// Detection time of the episode's first occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Detection time of the episode's latest occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Alert {
    /// Computes the deterministic id from the fields that describe the detection.
    pub fn compute_id(
        rule_id: &str,
        entity: &str,
        event_time_ms: i64,
        evidence: &[Box<RawValue>],
    ) -> String {
        let mut h = Sha256::new();
        h.update(rule_id.as_bytes());
        h.update([0]);
        h.update(entity.as_bytes());
        h.update([0]);
        h.update(event_time_ms.to_le_bytes());
        for row in evidence {
            h.update([0]);
            h.update(row.get().as_bytes());
        }
        hex16(&h.finalize())
    }

    /// The fingerprint: rule, entity and the values of `group_by` fields in the first
    /// evidence row (missing fields count as empty), hashed. Unlike `id` it ignores time and
    /// the rest of the evidence, so every repeat of a detection shares it.
    pub fn compute_fingerprint(&self, group_by: &[String]) -> String {
        let mut h = Sha256::new();
        h.update(self.rule.id.as_bytes());
        h.update([0]);
        h.update(self.entity.as_bytes());
        if !group_by.is_empty() {
            let first: Option<serde_json::Map<String, serde_json::Value>> = self
                .evidence
                .first()
                .and_then(|e| serde_json::from_str(e.get()).ok());
            for field in group_by {
                h.update([0]);
                h.update(field.as_bytes());
                h.update([1]);
                match first.as_ref().and_then(|m| m.get(field)) {
                    Some(serde_json::Value::String(s)) => h.update(s.as_bytes()),
                    Some(v) => h.update(v.to_string().as_bytes()),
                    None => {}
                }
            }
        }
        hex16(&h.finalize())
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("alerts always serialize")
    }

    /// A one-line, human-readable rendering for terminals.
    pub fn to_human(&self) -> String {
        let first = self.evidence.first().map(|e| e.get()).unwrap_or("{}");
        let mut evidence = String::from(first);
        if evidence.len() > 160 {
            let cut = (0..=157)
                .rev()
                .find(|&i| evidence.is_char_boundary(i))
                .unwrap_or(0);
            evidence.truncate(cut);
            evidence.push_str("...");
        }
        format!(
            "{time}  {sev:<8} {rule:<28} {entity:<18} {title}\n          evidence {evidence}",
            time = self.event_time,
            sev = self.severity.as_str().to_uppercase(),
            rule = self.rule.id,
            entity = self.entity,
            title = self.rule.title,
        )
    }
}

/// The first 16 bytes of a digest in hex.
fn hex16(digest: &[u8]) -> String {
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Milliseconds of an RFC 3339 time as [`format_time_ms`] writes it.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-01-05T02:33:00.123Z`.
pub fn format_time_ms(ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn id_is_deterministic_and_sensitive_to_every_input() {
        let ev = vec![raw("{\"a\":1}")];
        let id = Alert::compute_id("r", "e", 5, &ev);
        assert_eq!(id, Alert::compute_id("r", "e", 5, &ev));
        assert_eq!(id.len(), 32);
        assert_ne!(id, Alert::compute_id("r2", "e", 5, &ev));
        assert_ne!(id, Alert::compute_id("r", "e2", 5, &ev));
        assert_ne!(id, Alert::compute_id("r", "e", 6, &ev));
        assert_ne!(id, Alert::compute_id("r", "e", 5, &[raw("{\"a\":2}")]));
        // Field boundaries matter: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            Alert::compute_id("ab", "c", 5, &ev),
            Alert::compute_id("a", "bc", 5, &ev)
        );
    }

    #[test]
    fn time_format_is_rfc3339_millis() {
        assert_eq!(
            format_time_ms(1_767_580_380_123),
            "2026-01-05T02:33:00.123Z"
        );
    }

    #[test]
    fn severity_parses_sigma_levels() {
        assert_eq!(Severity::parse("informational"), Some(Severity::Info));
        assert_eq!(Severity::parse(" High "), Some(Severity::High));
        assert_eq!(Severity::parse("urgent"), None);
        assert!(Severity::Critical > Severity::High);
    }
}
