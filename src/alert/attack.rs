//! MITRE ATT&CK references from a rule's tags, normalised across the Enterprise and ICS
//! matrices.
//!
//! Rules tag techniques and tactics the Sigma way: `attack.t1110.003`, `attack.ics.t0836`,
//! `attack.credential_access`, `attack.ics.impair_process_control`. On the alert they become
//! `{"matrix": "ics", "id": "T0836"}` and `{"matrix": "enterprise", "id": "credential-access"}`,
//! so a SOC can count alerts by technique whatever spelling the rule author used. The matrix
//! of a technique follows its number (ICS techniques are T08xx), so `attack.t0836` is ICS too;
//! a tactic without `ics.` is Enterprise unless only ICS has it. Tags that are neither (groups,
//! software, unknown tactics) stay in `tags` only.

use serde::{Deserialize, Serialize};

/// ATT&CK tactics and techniques of an alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attack {
    /// Tactics, e.g. `{"matrix": "enterprise", "id": "discovery"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tactics: Vec<AttackRef>,
    /// Techniques and sub-techniques, e.g. `{"matrix": "ics", "id": "T0836"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<AttackRef>,
}

/// One tactic or technique in one matrix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttackRef {
    /// `enterprise` or `ics`.
    pub matrix: String,
    /// `T1110.003` for a technique; the tactic's short name (`credential-access`) for a tactic.
    pub id: String,
}

/// Tactics of the Enterprise matrix (short names with `_`, as in Sigma tags).
const ENTERPRISE_TACTICS: &[&str] = &[
    "reconnaissance",
    "resource_development",
    "initial_access",
    "execution",
    "persistence",
    "privilege_escalation",
    "defense_evasion",
    "credential_access",
    "discovery",
    "lateral_movement",
    "collection",
    "command_and_control",
    "exfiltration",
    "impact",
];

/// Tactics of the ICS matrix.
const ICS_TACTICS: &[&str] = &[
    "initial_access",
    "execution",
    "persistence",
    "privilege_escalation",
    "evasion",
    "discovery",
    "lateral_movement",
    "collection",
    "command_and_control",
    "inhibit_response_function",
    "impair_process_control",
    "impact",
];

impl Attack {
    /// The ATT&CK references among `tags` (case-insensitive, `-` or `_` in tactic names),
    /// de-duplicated and sorted; `None` when there are none.
    pub fn from_tags(tags: &[String]) -> Option<Attack> {
        let mut attack = Attack::default();
        for tag in tags {
            let tag = tag.trim().to_ascii_lowercase();
            let Some(rest) = tag.strip_prefix("attack.") else {
                continue;
            };
            let (explicit_ics, name) = match rest.strip_prefix("ics.") {
                Some(n) => (true, n),
                None => (false, rest),
            };
            if let Some(id) = technique(name) {
                // The number decides: ICS techniques are T0800-T0899.
                let matrix = if id.starts_with("T08") || (explicit_ics && id.starts_with("T0")) {
                    "ics"
                } else {
                    "enterprise"
                };
                attack.techniques.push(AttackRef {
                    matrix: matrix.into(),
                    id,
                });
                continue;
            }
            let tactic = name.replace('-', "_");
            let matrix = if explicit_ics {
                ICS_TACTICS.contains(&tactic.as_str()).then_some("ics")
            } else if ENTERPRISE_TACTICS.contains(&tactic.as_str()) {
                Some("enterprise")
            } else {
                ICS_TACTICS.contains(&tactic.as_str()).then_some("ics")
            };
            if let Some(matrix) = matrix {
                attack.tactics.push(AttackRef {
                    matrix: matrix.into(),
                    id: tactic.replace('_', "-"),
                });
            }
        }
        attack.tactics.sort();
        attack.tactics.dedup();
        attack.techniques.sort();
        attack.techniques.dedup();
        (!attack.tactics.is_empty() || !attack.techniques.is_empty()).then_some(attack)
    }
}

/// `t1110.003` → `T1110.003`; `None` unless it is a technique id (T + 4 digits, optionally
/// `.` + 3 digits).
fn technique(name: &str) -> Option<String> {
    let digits = name.strip_prefix('t')?;
    let (main, sub) = match digits.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (digits, None),
    };
    let all_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(main, 4) || sub.is_some_and(|s| !all_digits(s, 3)) {
        return None;
    }
    Some(format!("T{}", digits.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tags: &[&str], tactics: &[(&str, &str)], techniques: &[(&str, &str)]) {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let got = Attack::from_tags(&tags).unwrap_or_default();
        let r = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(m, i)| (m.to_string(), i.to_string()))
                .collect()
        };
        let g = |v: &[AttackRef]| -> Vec<(String, String)> {
            v.iter()
                .map(|a| (a.matrix.to_string(), a.id.clone()))
                .collect()
        };
        assert_eq!(g(&got.tactics), r(tactics), "tactics of {tags:?}");
        assert_eq!(g(&got.techniques), r(techniques), "techniques of {tags:?}");
    }

    #[test]
    fn enterprise_and_ics_tags_normalise_to_one_shape() {
        check(
            &["attack.credential_access", "attack.t1110.003"],
            &[("enterprise", "credential-access")],
            &[("enterprise", "T1110.003")],
        );
        check(
            &[
                "attack.ics.impair_process_control",
                "attack.ics.t0836",
                "attack.T0848",
            ],
            &[("ics", "impair-process-control")],
            &[("ics", "T0836"), ("ics", "T0848")],
        );
        // A tactic only ICS has is ICS even without `ics.`; spelling with `-` is accepted.
        check(
            &["attack.inhibit-response-function", "attack.discovery"],
            &[
                ("enterprise", "discovery"),
                ("ics", "inhibit-response-function"),
            ],
            &[],
        );
    }

    #[test]
    fn other_tags_are_ignored_and_duplicates_fold() {
        check(
            &[
                "attack.g0007",
                "attack.s0002",
                "cve.2021-44228",
                "attack.t1046",
                "attack.T1046",
                "attack.t10",
                "attack.teleport",
            ],
            &[],
            &[("enterprise", "T1046")],
        );
        assert_eq!(
            Attack::from_tags(&["detection.threat_hunting".into()]),
            None
        );
    }
}
