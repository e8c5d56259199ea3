//! Suppression: repeats of an alert fold into one notification carrying a count.
//!
//! Semantics, per fingerprint (rule + entity + the rule's `group_by` fields), in detection
//! time (`detected_at`: the wall clock live, stream time in replay):
//!
//! - An alert whose fingerprint was not seen within the rule's `window` starts an *episode*:
//!   it is emitted with `occurrences: 1` and `first_seen` = `last_seen` = its time.
//! - A repeat within `window` of the previous occurrence is *folded*: not emitted, but counted
//!   (`palisade_alerts_folded_total{rule}`) and added to the episode's `occurrences`.
//! - While repeats keep coming, one is emitted again once `renotify` has passed since the last
//!   emission, carrying the episode's `occurrences`, `first_seen` and `last_seen`.
//! - A gap longer than `window` ends the episode; the next occurrence starts a new one.
//! - `window` 0 turns folding off for a rule: every alert is emitted.
//!
//! Nothing disappears silently: every alert is either emitted or folded (and counted), and an
//! emitted alert tells how many it stands for. State is bounded (`max_fingerprints`): when
//! full, ended episodes are dropped first, then the least recently seen, counted as evicted;
//! forgetting one only means its next repeat is emitted rather than folded.

use std::collections::HashMap;

use crate::alert::config::SuppressionConfig;
use crate::alert::{Alert, format_time_ms};

/// One rule's suppression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Fold repeats within this many ms of the previous occurrence (0: never fold).
    pub window_ms: i64,
    /// Emit again at most this often while repeats continue.
    pub renotify_ms: i64,
    /// Evidence fields that are part of the fingerprint.
    pub group_by: Vec<String>,
}

/// An ongoing episode of one fingerprint.
#[derive(Debug, Clone)]
struct Episode {
    first_seen: i64,
    last_seen: i64,
    notified: i64,
    occurrences: u64,
    window_ms: i64,
}

/// What became of an offered alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Emit it (first of an episode, or a re-notification).
    Emit,
    /// Folded into its episode.
    Fold,
}

/// The suppression state of a process.
#[derive(Debug)]
pub struct Suppressor {
    default: Policy,
    rules: HashMap<String, Policy>,
    episodes: HashMap<String, Episode>,
    max: usize,
    /// Episodes forgotten to stay within `max` (before they ended).
    pub evicted: u64,
}

impl Suppressor {
    /// From `[alerting.suppression]`.
    pub fn new(config: &SuppressionConfig) -> Suppressor {
        let secs = |s: u64| (s as i64).saturating_mul(1000);
        let default = Policy {
            window_ms: secs(config.window_secs),
            renotify_ms: secs(config.renotify_secs),
            group_by: Vec::new(),
        };
        let rules = config
            .rules
            .iter()
            .map(|(id, r)| {
                let p = Policy {
                    window_ms: r.window_secs.map_or(default.window_ms, secs),
                    renotify_ms: r.renotify_secs.map_or(default.renotify_ms, secs),
                    group_by: r.group_by.clone(),
                };
                (id.clone(), p)
            })
            .collect();
        Suppressor {
            default,
            rules,
            episodes: HashMap::new(),
            max: config.max_fingerprints.max(1),
            evicted: 0,
        }
    }

    /// The policy of a rule.
    pub fn policy(&self, rule: &str) -> &Policy {
        self.rules.get(rule).unwrap_or(&self.default)
    }

    /// Fingerprints held.
    pub fn len(&self) -> usize {
        self.episodes.len()
    }

    /// Whether no fingerprint is held.
    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// Decides about `alert` (its fingerprint set) detected at `now_ms`; on [`Verdict::Emit`]
    /// sets its occurrence count, first and last seen.
    pub fn offer(&mut self, alert: &mut Alert, now_ms: i64) -> Verdict {
        let policy = self.rules.get(&alert.rule.id).unwrap_or(&self.default);
        let (window_ms, renotify_ms) = (policy.window_ms, policy.renotify_ms);
        let fingerprint = alert.context.fingerprint.clone().unwrap_or_default();
        let fresh = Episode {
            first_seen: now_ms,
            last_seen: now_ms,
            notified: now_ms,
            occurrences: 1,
            window_ms,
        };
        if window_ms == 0 {
            self.episodes.remove(&fingerprint);
            annotate(alert, &fresh);
            Verdict::Emit
        } else if let Some(ep) = self.episodes.get_mut(&fingerprint)
            && now_ms - ep.last_seen <= window_ms
        {
            ep.occurrences += 1;
            ep.last_seen = ep.last_seen.max(now_ms);
            if now_ms - ep.notified >= renotify_ms {
                ep.notified = now_ms;
                annotate(alert, ep);
                Verdict::Emit
            } else {
                Verdict::Fold
            }
        } else {
            annotate(alert, &fresh);
            self.make_room(now_ms, &fingerprint);
            self.episodes.insert(fingerprint, fresh);
            Verdict::Emit
        }
    }

    /// Keeps the state under `max` before inserting `incoming`.
    fn make_room(&mut self, now_ms: i64, incoming: &str) {
        if self.episodes.len() < self.max || self.episodes.contains_key(incoming) {
            return;
        }
        // Ended episodes first: forgetting them changes nothing.
        self.episodes
            .retain(|_, ep| now_ms - ep.last_seen <= ep.window_ms);
        while self.episodes.len() >= self.max {
            let oldest = self
                .episodes
                .iter()
                .min_by_key(|(_, ep)| ep.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.episodes.remove(&k);
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }
}

fn annotate(alert: &mut Alert, ep: &Episode) {
    alert.context.occurrences = Some(ep.occurrences);
    alert.context.first_seen = Some(format_time_ms(ep.first_seen));
    alert.context.last_seen = Some(format_time_ms(ep.last_seen));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::RuleSuppression;
    use crate::alert::{Context, RuleRef, Severity};

    fn alert(rule: &str, entity: &str) -> Alert {
        let mut a = Alert {
            schema: crate::alert::SCHEMA.into(),
            id: String::new(),
            rule: RuleRef {
                id: rule.into(),
                title: "t".into(),
                kind: "sql".into(),
                status: None,
                falsepositives: vec![],
            },
            severity: Severity::High,
            event_time: String::new(),
            detected_at: String::new(),
            stream: "s".into(),
            entity: entity.into(),
            tags: vec![],
            description: String::new(),
            evidence: vec![],
            evidence_truncated: 0,
            context: Context::default(),
        };
        a.context.fingerprint = Some(a.compute_fingerprint(&[]));
        a
    }

    fn config(window: u64, renotify: u64) -> SuppressionConfig {
        SuppressionConfig {
            window_secs: window,
            renotify_secs: renotify,
            ..Default::default()
        }
    }

    /// Offers `rule`/`entity` alerts at the given seconds; returns (second, occurrences,
    /// first_seen second) of the emitted ones.
    fn run(s: &mut Suppressor, at: &[(i64, &str)]) -> Vec<(i64, u64, i64)> {
        let mut out = Vec::new();
        for &(sec, entity) in at {
            let mut a = alert("r", entity);
            if s.offer(&mut a, sec * 1000) == Verdict::Emit {
                let first = crate::alert::parse_time_ms(a.context.first_seen.as_deref().unwrap())
                    .unwrap()
                    / 1000;
                out.push((sec, a.context.occurrences.unwrap(), first));
            }
        }
        out
    }

    #[test]
    fn repeats_fold_renotify_with_counts_and_a_gap_starts_a_new_episode() {
        let mut s = Suppressor::new(&config(60, 300));
        let at: Vec<(i64, &str)> = (0..=400).step_by(30).map(|t| (t, "e")).collect();
        // Every 30 s: the first emits, repeats fold until 300 s after it, then one emission
        // carries the whole count so far.
        assert_eq!(run(&mut s, &at), vec![(0, 1, 0), (300, 11, 0)]);
        // 61 s of quiet (> window) ends the episode.
        assert_eq!(run(&mut s, &[(461, "e"), (470, "e")]), vec![(461, 1, 461)]);
    }

    #[test]
    fn fingerprints_keep_entities_apart_and_window_zero_never_folds() {
        let mut s = Suppressor::new(&config(60, 300));
        assert_eq!(
            run(&mut s, &[(0, "a"), (1, "b"), (2, "a"), (3, "b")]),
            vec![(0, 1, 0), (1, 1, 1)]
        );
        let mut c = config(60, 300);
        c.rules.insert(
            "r".into(),
            RuleSuppression {
                window_secs: Some(0),
                ..Default::default()
            },
        );
        let mut s = Suppressor::new(&c);
        assert_eq!(run(&mut s, &[(0, "a"), (1, "a")]).len(), 2);
    }

    #[test]
    fn state_is_bounded_and_eviction_is_counted() {
        let mut c = config(60, 300);
        c.max_fingerprints = 2;
        let mut s = Suppressor::new(&c);
        run(&mut s, &[(0, "a"), (1, "b"), (2, "c")]);
        assert_eq!((s.len(), s.evicted), (2, 1));
        // `a` was the least recently seen: forgotten, so its repeat emits again.
        assert_eq!(run(&mut s, &[(3, "a")]), vec![(3, 1, 3)]);
        // Ended episodes go first and are not counted as evictions.
        run(&mut s, &[(200, "d")]);
        assert_eq!((s.len(), s.evicted), (1, 2));
    }

    #[test]
    fn group_by_fields_split_fingerprints() {
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.into()).unwrap();
        let mut a = alert("r", "kiosk");
        a.evidence = vec![raw(r#"{"dst_ip":"10.0.0.1","ports":40}"#)];
        let mut b = a.clone();
        b.evidence = vec![raw(r#"{"dst_ip":"10.0.0.2","ports":40}"#)];
        let mut c = a.clone();
        c.evidence = vec![raw(r#"{"dst_ip":"10.0.0.1","ports":99}"#)];
        let by = ["dst_ip".to_string()];
        assert_ne!(a.compute_fingerprint(&by), b.compute_fingerprint(&by));
        assert_eq!(a.compute_fingerprint(&by), c.compute_fingerprint(&by));
        assert_eq!(a.compute_fingerprint(&[]), b.compute_fingerprint(&[]));
        assert_ne!(
            a.compute_fingerprint(&[]),
            alert("r2", "kiosk").compute_fingerprint(&[])
        );
    }
}
