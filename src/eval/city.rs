//! `palisade eval --dataset city`: palisade's own simulated city, its labelled scenarios
//! replayed through the shipped rules and scored by incident.
//!
//! In: the simulator's options (seed, start, duration, scenarios, streams), the configuration
//! and its rules. Out: one line per scenario (its incidents, how many were detected, time to
//! detect, the alerts and the rules that raised them), then the false alarms, the incidents
//! detected, and `overall F1 <f1> FAR <percent>% MAR <percent>%`.
//!
//! The city streams straight from the simulator into the replay pipeline (no file): records
//! are merged in event time as the simulator writes them, their labels cut off first, so the
//! detectors see exactly what `palisade replay` of `palisade simulate --output` would show them,
//! less the ground truth. Batches are cut every 10 simulated seconds (or at `batch_rows`), as a
//! live pipeline would cut them as the records arrive, so that `detected_at` (the stream time
//! when an alert is raised) measures the time to detect within 10 seconds, windows and
//! watermarks included.
//!
//! Scoring, by incident (one occurrence of a scenario, from the simulator's ground truth:
//! scenario, entity, start, end):
//! - an alert belongs to an incident when it is about the incident's entity (pseudonymised as
//!   the alert's is) and its event time falls between the incident's start and 10 minutes after
//!   its end (a sensor back from silence, a returning login); an alert that belongs to none is
//!   a **false alarm**, and false alarms of one rule about one entity less than an hour apart
//!   are one false-alarm episode;
//! - an incident is **detected** when an alert belongs to it; its **time to detect** runs from
//!   its start to the earliest `detected_at` of its alerts;
//! - with TP the incidents detected, FN those missed and FP the false-alarm episodes:
//!   `F1 = 2 TP / (2 TP + FP + FN)`, `MAR = FN / (TP + FN)` (missed incidents), and
//!   `FAR = FP / (TP + FP)`: the share of the alarms an analyst would handle (an incident's
//!   alerts count as one) that are false. (SKAB's FAR is per normal row; the city has no row
//!   labels for an alert on a silence, so its FAR is per alarm.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::EvalError;
use crate::alert::{Alert, parse_time_ms};
use crate::config::{Config, PrivacyAction};
use crate::detect::DetectorSet;
use crate::metrics::Metrics;
use crate::pipeline::{Clock, Echo, NoCommit, Pipeline, Processed, Sink, SinkError};
use crate::privacy::Pseudonymiser;
use crate::sim::{Incident, Kind, Scenario, SimOptions, Simulator};
use crate::source::{Batcher, Origin, RawBatch};

/// Simulated time between two cuts of the open batches.
const CUT_MS: i64 = 10_000;
/// How long after an incident's end its alerts still belong to it.
const GRACE_MS: i64 = 10 * 60_000;
/// An incident undetected by the end of the run that started less than this before it is not
/// scored: too little time was left to judge (detected, it is).
const SETTLE_MS: i64 = 30 * 60_000;
/// False alarms of one rule and entity closer than this are one episode.
const EPISODE_GAP_MS: i64 = 3_600_000;

/// How one scenario fared.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioScore {
    /// The scenario.
    pub scenario: Scenario,
    /// Its occurrences in the run.
    pub incidents: usize,
    /// Those an alert belongs to.
    pub detected: usize,
    /// Seconds from each detected incident's start to its first alert, in incident order.
    pub time_to_detect_s: Vec<i64>,
    /// Alerts belonging to its incidents, by rule id.
    pub alerts: BTreeMap<String, u64>,
}

/// What the city's evaluation found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CityReport {
    /// Per enabled scenario, in [`Scenario::ALL`] order.
    pub scenarios: Vec<ScenarioScore>,
    /// Records replayed (benign and labelled).
    pub records: u64,
    /// Records labelled by a scenario.
    pub labelled: u64,
    /// Records the decoders refused (a simulator that does not fit its schema: a bug).
    pub dead_letters: u64,
    /// Alerts that belong to no incident, by rule id.
    pub false_alarms: BTreeMap<String, u64>,
    /// False alarms grouped by rule and entity, a gap over an hour starting a new episode.
    pub false_episodes: usize,
    /// Incidents undetected at the end of the run that started too close to it to be scored.
    pub unscored: usize,
    /// Simulated time (ms).
    pub duration_ms: i64,
}

impl CityReport {
    /// Incidents, and those detected, over every scenario.
    pub fn incidents(&self) -> (usize, usize) {
        self.scenarios
            .iter()
            .fold((0, 0), |(n, d), s| (n + s.incidents, d + s.detected))
    }

    /// `2 TP / (2 TP + FP + FN)` over incidents and false-alarm episodes.
    pub fn f1(&self) -> f64 {
        let (n, tp) = self.incidents();
        let denominator = 2 * tp + self.false_episodes + (n - tp);
        if denominator == 0 {
            return 0.0;
        }
        2.0 * tp as f64 / denominator as f64
    }

    /// Share of alarms (incidents detected and false-alarm episodes) that are false.
    pub fn far(&self) -> f64 {
        let (_, tp) = self.incidents();
        self.false_episodes as f64 / (tp + self.false_episodes).max(1) as f64
    }

    /// Share of incidents missed.
    pub fn mar(&self) -> f64 {
        let (n, tp) = self.incidents();
        (n - tp) as f64 / n.max(1) as f64
    }
}

/// The alerts of a run, as the pipeline delivers them.
struct Collect {
    alerts: Arc<Mutex<Vec<Alert>>>,
    dead: Arc<Mutex<u64>>,
}

impl Sink for Collect {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        // Nothing here panics while holding a lock; a poisoned one still holds the alerts.
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch.alerts.iter().cloned());
        *self.dead.lock().unwrap_or_else(|p| p.into_inner()) += batch.dead.len() as u64;
        Box::pin(async { Ok(()) })
    }
}

/// Runs the simulator into `tx` as batches of each stream, labels cut off; returns the ground
/// truth, and the records and labelled records sent. Blocking: run it on a blocking thread.
fn feed(
    config: &Config,
    mut sim: Simulator,
    tx: &mpsc::Sender<RawBatch>,
) -> (Vec<Incident>, u64, u64) {
    let mut batcher = Batcher::new(
        config.streams.len(),
        *config.pipeline.batch_rows.get_ref(),
        // Only the row count and the cuts below close a batch.
        std::time::Duration::from_secs(3600),
    );
    let mut incidents = Vec::new();
    let (mut records, mut labelled) = (0u64, 0u64);
    let mut second = Vec::new();
    let mut topics: Vec<(&'static str, Option<usize>)> = Vec::new();
    let mut unlabelled = Vec::new();
    let mut next_cut = sim.now_ms() + CUT_MS;
    while sim.next_second(&mut second) {
        for r in &second {
            // The simulator's topics are few: a linear cache of their streams.
            let stream = match topics.iter().find(|(t, _)| *t == r.topic) {
                Some(&(_, s)) => s,
                None => {
                    let s = config.stream_of_topic(r.topic);
                    topics.push((r.topic, s));
                    s
                }
            };
            let Some(stream) = stream else { continue };
            let value = match r.label {
                None => &r.value[..],
                Some(label) => {
                    // The label is the object's last field: what is before it, closed.
                    labelled += 1;
                    let tail = 12 + label.len(); // ,"label":"<label>"}
                    debug_assert!(
                        r.value
                            .ends_with(format!(",\"label\":\"{label}\"}}").as_bytes())
                    );
                    unlabelled.clear();
                    unlabelled.extend_from_slice(&r.value[..r.value.len() - tail]);
                    unlabelled.push(b'}');
                    &unlabelled[..]
                }
            };
            let origin = Origin {
                source: 0,
                partition: 0,
                offset: records as i64,
                timestamp_ms: r.ts_ms,
            };
            records += 1;
            if let Some(full) = batcher.push(stream, value, origin)
                && tx.blocking_send(full).is_err()
            {
                return (incidents, records, labelled);
            }
        }
        sim.take_incidents(&mut incidents);
        if sim.now_ms() >= next_cut {
            next_cut += CUT_MS;
            for b in batcher.drain() {
                if tx.blocking_send(b).is_err() {
                    return (incidents, records, labelled);
                }
            }
        }
    }
    for b in batcher.drain() {
        if tx.blocking_send(b).is_err() {
            break;
        }
    }
    sim.take_incidents(&mut incidents);
    (incidents, records, labelled)
}

/// Simulates the city of `sim`, replays it through `detectors` and scores their alerts
/// against the scenarios' incidents; the report goes to `out`. `pseudonymiser` must be the
/// one the alerts are pseudonymised with (it names incidents' personal entities the same way).
pub async fn city(
    config: Arc<Config>,
    detectors: DetectorSet,
    pseudonymiser: Pseudonymiser,
    sim: SimOptions,
    out: &mut dyn Write,
) -> Result<CityReport, EvalError> {
    let duration_ms = sim.duration_ms.unwrap_or(0);
    let end_ms = sim.start_ms + duration_ms;
    // Scenarios of streams not simulated do not happen: they are not reported either.
    let scenarios: Vec<Scenario> = sim
        .scenarios
        .iter()
        .copied()
        .filter(|s| {
            sim.streams
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == s.stream()))
        })
        .collect();
    let (tx, rx) = mpsc::channel(*config.pipeline.channel_batches.get_ref());
    let feeder = {
        let config = Arc::clone(&config);
        let simulator = Simulator::new(sim);
        tokio::task::spawn_blocking(move || feed(&config, simulator, &tx))
    };
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(0));
    let pipeline = Pipeline {
        pseudonymiser: pseudonymiser.clone(),
        config: Arc::clone(&config),
        detectors,
        metrics: Arc::new(Metrics::new()),
        sink: Box::new(Collect {
            alerts: Arc::clone(&alerts),
            dead: Arc::clone(&dead),
        }),
        committer: Arc::new(NoCommit),
        echo: Echo::Off,
        clock: Clock::EventTime,
        reload: None,
        alerting: None,
        checkpoints: None,
        routes: Vec::new(),
        backlog: None,
    };
    pipeline
        .run(rx)
        .await
        .map_err(|e| EvalError::Pipeline(e.to_string()))?;
    let (incidents, records, labelled) = feeder
        .await
        .map_err(|e| EvalError::Pipeline(format!("the simulator stopped: {e}")))?;
    let alerts = std::mem::take(&mut *alerts.lock().unwrap_or_else(|p| p.into_inner()));
    let dead_letters = *dead.lock().unwrap_or_else(|p| p.into_inner());
    let report = score(
        &config,
        &pseudonymiser,
        &scenarios,
        &incidents,
        &alerts,
        Totals {
            records,
            labelled,
            dead_letters,
            duration_ms,
            end_ms,
        },
    );
    write_report(&report, out)?;
    Ok(report)
}

/// The run's counts that are not scores.
struct Totals {
    records: u64,
    labelled: u64,
    dead_letters: u64,
    duration_ms: i64,
    /// The end of the simulated run (ms).
    end_ms: i64,
}

/// The alert's time at `text`, or 0 (never: the pipeline writes them).
fn ms(text: &str) -> i64 {
    parse_time_ms(text).unwrap_or(0)
}

fn score(
    config: &Config,
    pseudonymiser: &Pseudonymiser,
    scenarios: &[Scenario],
    incidents: &[Incident],
    alerts: &[Alert],
    totals: Totals,
) -> CityReport {
    // Each incident's entity as alerts name it: personal fields are pseudonymised.
    let entity = |i: &Incident| {
        let personal = config
            .stream_index(i.scenario.stream())
            .and_then(|s| config.streams[s].privacy.get(i.field))
            .is_some_and(|a| *a.get_ref() == PrivacyAction::Pseudonymise);
        if personal {
            pseudonymiser.pseudonym(&i.entity)
        } else {
            i.entity.clone()
        }
    };
    let mut by_entity: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (n, i) in incidents.iter().enumerate() {
        by_entity.entry(entity(i)).or_default().push(n);
    }
    // Per incident: its first detection and its alerts by rule.
    let mut first: Vec<Option<i64>> = vec![None; incidents.len()];
    let mut rules: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); incidents.len()];
    let mut false_alarms: BTreeMap<String, u64> = BTreeMap::new();
    let mut unmatched: Vec<(&str, &str, i64)> = Vec::new();
    for a in alerts {
        let t = ms(&a.event_time);
        let candidates = by_entity.get(&a.entity).map_or(&[][..], Vec::as_slice);
        let belongs = |&&n: &&usize| {
            let i = &incidents[n];
            (i.start_ms..i.end_ms + GRACE_MS).contains(&t)
        };
        // An incident whose scenario names the rule first, then the earliest.
        let owner = candidates.iter().filter(belongs).min_by_key(|&&n| {
            let named = incidents[n]
                .scenario
                .rule_ids()
                .contains(&a.rule.id.as_str());
            (!named, incidents[n].start_ms)
        });
        match owner {
            Some(&n) => {
                let detected = ms(&a.detected_at).max(incidents[n].start_ms);
                first[n] = Some(first[n].map_or(detected, |f| f.min(detected)));
                *rules[n].entry(a.rule.id.clone()).or_default() += 1;
            }
            None => {
                *false_alarms.entry(a.rule.id.clone()).or_default() += 1;
                unmatched.push((&a.rule.id, &a.entity, t));
            }
        }
    }
    unmatched.sort_unstable();
    let episodes = unmatched
        .windows(2)
        .filter(|w| w[0].0 != w[1].0 || w[0].1 != w[1].1 || w[1].2 - w[0].2 > EPISODE_GAP_MS)
        .count()
        + usize::from(!unmatched.is_empty());
    let scored =
        |n: usize| first[n].is_some() || incidents[n].start_ms + SETTLE_MS <= totals.end_ms;
    let unscored = (0..incidents.len()).filter(|&n| !scored(n)).count();
    let scored = Scenario::ALL
        .iter()
        .filter(|s| scenarios.contains(s))
        .map(|&s| {
            let mine: Vec<usize> = (0..incidents.len())
                .filter(|&n| incidents[n].scenario == s && scored(n))
                .collect();
            let mut alerts = BTreeMap::new();
            for &n in &mine {
                for (rule, count) in &rules[n] {
                    *alerts.entry(rule.clone()).or_default() += count;
                }
            }
            ScenarioScore {
                scenario: s,
                incidents: mine.len(),
                detected: mine.iter().filter(|&&n| first[n].is_some()).count(),
                time_to_detect_s: mine
                    .iter()
                    .filter_map(|&n| first[n].map(|f| (f - incidents[n].start_ms) / 1000))
                    .collect(),
                alerts,
            }
        })
        .collect();
    CityReport {
        scenarios: scored,
        records: totals.records,
        labelled: totals.labelled,
        dead_letters: totals.dead_letters,
        false_alarms,
        false_episodes: episodes,
        unscored,
        duration_ms: totals.duration_ms,
    }
}

fn median(xs: &[i64]) -> Option<i64> {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn write_report(r: &CityReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<18} {:<9} {:>9}  {:>24}  {:>6}  rules",
        "scenario", "kind", "detected", "time-to-detect med / max", "alerts"
    )?;
    for s in &r.scenarios {
        let ttd = match (median(&s.time_to_detect_s), s.time_to_detect_s.iter().max()) {
            (Some(m), Some(x)) => format!("{m} s / {x} s"),
            _ => "-".to_string(),
        };
        let mut rules = String::new();
        for (rule, n) in &s.alerts {
            let _ = write!(
                rules,
                "{}{rule} x{n}",
                if rules.is_empty() { "" } else { ", " }
            );
        }
        writeln!(
            out,
            "{:<18} {:<9} {:>9}  {:>24}  {:>6}  {}",
            s.scenario.name(),
            match s.scenario.kind() {
                Kind::Attack => "attack",
                Kind::Equipment => "equipment",
                Kind::Insider => "insider",
            },
            format!("{}/{}", s.detected, s.incidents),
            ttd,
            s.alerts.values().sum::<u64>(),
            if rules.is_empty() { "-" } else { &rules }
        )?;
    }
    let hours = r.duration_ms as f64 / 3_600_000.0;
    let false_alarms: u64 = r.false_alarms.values().sum();
    let mut by_rule = String::new();
    for (rule, n) in &r.false_alarms {
        let _ = write!(by_rule, " {rule} x{n}");
    }
    writeln!(
        out,
        "records {} ({} labelled, {} undecodable) over {hours:.1} h; {} incidents too close to \
         the end to score",
        r.records, r.labelled, r.dead_letters, r.unscored
    )?;
    writeln!(
        out,
        "false alarms {false_alarms} in {} episodes ({:.1} per day){}",
        r.false_episodes,
        r.false_episodes as f64 * 24.0 / hours.max(f64::MIN_POSITIVE),
        if by_rule.is_empty() {
            String::new()
        } else {
            format!(":{by_rule}")
        }
    )?;
    let (n, detected) = r.incidents();
    let all: Vec<i64> = r
        .scenarios
        .iter()
        .flat_map(|s| s.time_to_detect_s.iter().copied())
        .collect();
    writeln!(
        out,
        "incidents detected {detected}/{n}  median time-to-detect {}",
        median(&all).map_or("-".to_string(), |m| format!("{m} s"))
    )?;
    writeln!(
        out,
        "overall F1 {:.3} FAR {:.2}% MAR {:.2}%",
        r.f1(),
        100.0 * r.far(),
        100.0 * r.mar()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{RuleRef, format_time_ms};
    use crate::detect::RuleMeta;

    const T0: i64 = 1_767_571_200_000;
    const MIN: i64 = 60_000;

    /// What the detectors get holds every record of the city, none with its label.
    #[test]
    fn the_feed_cuts_every_label_off() {
        let config = Config::builtin();
        let sim = Simulator::new(SimOptions {
            seed: 3,
            start_ms: T0,
            duration_ms: Some(12 * MIN),
            scenarios: vec![Scenario::PortScan, Scenario::PasswordSpray],
            streams: Some(vec!["netflow".into(), "auth".into()]),
        });
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let (incidents, records, labelled) = feed(&config, sim, &tx);
        drop(tx);
        let (mut seen, mut json) = (0u64, 0u64);
        while let Ok(batch) = rx.try_recv() {
            for i in 0..batch.len() {
                let r = batch.record(i);
                assert!(!r.windows(8).any(|w| w == b"\"label\":"));
                let v: serde_json::Value = serde_json::from_slice(r).unwrap();
                json += u64::from(v.is_object());
                seen += 1;
            }
        }
        assert_eq!((seen, json), (records, records));
        assert!(labelled > 600, "{labelled}");
        assert_eq!(
            incidents.iter().map(|i| i.scenario).collect::<Vec<_>>(),
            [Scenario::PortScan, Scenario::PasswordSpray]
        );
    }

    fn alert(rule: &str, entity: &str, at: i64) -> Alert {
        let meta = RuleMeta {
            id: rule.into(),
            title: String::new(),
            kind: "baseline",
            severity: crate::alert::Severity::High,
            description: String::new(),
            stream: "sensors".into(),
            tags: Vec::new(),
            status: None,
            falsepositives: Vec::new(),
            file: Default::default(),
        };
        Alert {
            schema: crate::alert::SCHEMA.to_string(),
            id: String::new(),
            rule: RuleRef::of(&meta),
            severity: meta.severity,
            event_time: format_time_ms(at),
            detected_at: format_time_ms(at + 5_000),
            stream: meta.stream.clone(),
            entity: entity.into(),
            tags: Vec::new(),
            description: String::new(),
            evidence: Vec::new(),
            evidence_truncated: 0,
            context: Default::default(),
        }
    }

    fn incident(s: Scenario, entity: &str, start: i64, end: i64) -> Incident {
        Incident {
            scenario: s,
            entity: entity.into(),
            field: if entity.contains('.') {
                "user"
            } else {
                "asset"
            },
            start_ms: start,
            end_ms: end,
        }
    }

    /// Alerts belong by entity and time (grace included), personal entities are compared as
    /// pseudonyms, false alarms group into episodes, and a miss too close to the end is not
    /// scored.
    #[test]
    fn scoring_follows_its_definitions() {
        let config = Config::builtin();
        let p = Pseudonymiser::new(b"k");
        let scenarios = [Scenario::SensorStuck, Scenario::OffHoursLogin];
        let incidents = [
            incident(Scenario::SensorStuck, "reservoir-01", T0, T0 + 30 * MIN),
            incident(
                Scenario::SensorStuck,
                "reservoir-02",
                T0 + 60 * MIN,
                T0 + 90 * MIN,
            ),
            incident(
                Scenario::OffHoursLogin,
                "j.tremblay",
                T0 + 100 * MIN,
                T0 + 100 * MIN + 1,
            ),
            // Starts 20 minutes before the end, undetected: not scored.
            incident(
                Scenario::SensorStuck,
                "reservoir-01",
                T0 + 160 * MIN,
                T0 + 170 * MIN,
            ),
        ];
        let stuck = "equipment.sensor_silence";
        let alerts = [
            alert(stuck, "reservoir-01", T0 + 15 * MIN),
            // Within the 10 minutes of grace after the end.
            alert("equipment.sensor_deviation", "reservoir-01", T0 + 39 * MIN),
            // After the grace: a false alarm, and with the next one an episode.
            alert("equipment.sensor_deviation", "reservoir-01", T0 + 41 * MIN),
            alert("equipment.sensor_deviation", "reservoir-01", T0 + 50 * MIN),
            // The login's alert names the pseudonym, as the rule's would.
            alert(
                "ueba.unusual_hour",
                &p.pseudonym("j.tremblay"),
                T0 + 100 * MIN,
            ),
            // Named in clear, it is about nobody: false, another episode.
            alert("ueba.unusual_hour", "j.tremblay", T0 + 100 * MIN),
        ];
        let r = score(
            &config,
            &p,
            &scenarios,
            &incidents,
            &alerts,
            Totals {
                records: 0,
                labelled: 0,
                dead_letters: 0,
                duration_ms: 180 * MIN,
                end_ms: T0 + 180 * MIN,
            },
        );
        let stuck_score = &r.scenarios[0];
        assert_eq!((stuck_score.incidents, stuck_score.detected), (2, 1));
        assert_eq!(stuck_score.time_to_detect_s, [15 * 60 + 5]);
        assert_eq!(stuck_score.alerts.values().sum::<u64>(), 2);
        assert_eq!((r.scenarios[1].incidents, r.scenarios[1].detected), (1, 1));
        assert_eq!(r.unscored, 1);
        assert_eq!(r.false_alarms.values().sum::<u64>(), 3);
        assert_eq!(r.false_episodes, 2);
        // TP 2, FN 1, FP 2.
        assert_eq!(r.incidents(), (3, 2));
        assert!((r.f1() - 4.0 / 7.0).abs() < 1e-12);
        assert!((r.far() - 0.5).abs() < 1e-12);
        assert!((r.mar() - 1.0 / 3.0).abs() < 1e-12);
    }
}
