//! `palisade eval`: the baseline detector on the SKAB benchmark, read in place from
//! `../shared/data/skab` (the whole benchmark runs in about a second in the dev profile, so
//! the test scores all of it; the figure it guards is the one README.md reports), and the
//! shipped rules on the simulated city's equipment and insider scenarios (cities of a few
//! streams each, so the dev profile replays them in seconds; README.md gives the two-day
//! figure of every stream).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade::config::Config;
use palisade::detect::DetectorSet;
use palisade::eval::CityReport;
use palisade::privacy::Pseudonymiser;
use palisade::sim::{Kind, Scenario, SimOptions};

use crate::support::*;

fn skab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/skab")
}

#[test]
fn skab_scores_as_documented_and_the_last_line_says_so() {
    let out = bin()
        .args(["eval", "--dataset", "skab", "--data"])
        .arg(skab())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // 34 experiments, the events line, the overall line.
    assert_eq!(lines.len(), 36, "{text}");
    assert!(lines[0].starts_with("valve1/0 "), "{}", lines[0]);
    assert_eq!(
        *lines.last().unwrap(),
        "overall F1 0.821 FAR 8.86% MAR 18.96%"
    );
    assert_eq!(
        lines[34],
        "events detected 32/34  median time-to-detect 56 s"
    );
}

/// The detector never sees the labels: with every label inverted, it raises the same alerts,
/// so what was a true positive is now a false one, row for row.
#[test]
fn labels_never_reach_the_detector() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for group in ["anomaly-free", "valve2"] {
        std::fs::create_dir_all(data.join(group)).unwrap();
        for entry in std::fs::read_dir(skab().join("data").join(group)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let flipped: String = text
                .lines()
                .enumerate()
                .map(|(i, line)| {
                    if i == 0 || group == "anomaly-free" {
                        return format!("{line}\n");
                    }
                    // The last two fields are `anomaly` and `changepoint`.
                    let mut fields: Vec<&str> = line.split(';').collect();
                    let n = fields.len();
                    fields[n - 2] = if fields[n - 2].starts_with('1') {
                        "0.0"
                    } else {
                        "1.0"
                    };
                    format!("{}\n", fields.join(";"))
                })
                .collect();
            std::fs::write(data.join(group).join(path.file_name().unwrap()), flipped).unwrap();
        }
    }
    for g in ["valve1", "other"] {
        std::fs::create_dir_all(data.join(g)).unwrap();
    }
    let mut real = Vec::new();
    let a = palisade::eval::skab(&skab(), Some("valve2/"), &mut real).unwrap();
    let mut inverted = Vec::new();
    let b = palisade::eval::skab(dir.path(), Some("valve2/"), &mut inverted).unwrap();
    assert!(a.overall.tp > 0);
    assert_eq!(a.overall.tp, b.overall.fp);
    assert_eq!(a.overall.fp, b.overall.tp);
    assert_eq!(a.overall.fn_, b.overall.tn);
    assert_eq!(a.overall.tn, b.overall.fn_);
}

/// A pump whose flow no longer matches its current, and a meter with one wild reading:
/// `replay --preset sensors` names each file's asset and dates the alerts. The pump's flow
/// stays within its own usual range (about 4 standard deviations off: no z-score alert); only
/// the multivariate model, which knows flow follows current, sees it.
#[test]
fn sensors_preset_replays_wide_csvs_named_after_their_asset() {
    let dir = tempfile::tempdir().unwrap();
    let pump = dir.path().join("pump-7.csv");
    let mut text = String::from("timestamp,current,pressure,flow,site\n");
    let mut x: u64 = 12345;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for s in 0..900 {
        let current = 10.0 + 2.0 * (f64::from(s) / 40.0).sin() + 0.2 * noise();
        // From 15:00 the impeller is blocked: flow collapses while current stays.
        let flow = if s >= 700 { 12.0 } else { 3.0 * current } + 0.3 * noise();
        let pressure = 4.0 + 0.1 * noise();
        text.push_str(&format!(
            "2026-01-05T14:{:02}:{:02}Z,{current:.3},{pressure:.3},{flow:.3},north\n",
            (s + 2400) / 60 % 60,
            s % 60
        ));
    }
    std::fs::write(&pump, text).unwrap();
    let meter = dir.path().join("meter-1.csv");
    let mut text = String::from("timestamp;value\n");
    for s in 0..300 {
        let v = if s == 250 { 500.0 } else { 100.0 + noise() };
        text.push_str(&format!(
            "2026-01-05 10:{:02}:{:02};{v:.3}\n",
            s / 60,
            s % 60
        ));
    }
    std::fs::write(&meter, text).unwrap();

    let out = bin()
        .args(["replay", "--preset", "sensors", "--input"])
        .arg(&pump)
        .arg(&meter)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, &str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap(),
                a["entity"].as_str().unwrap(),
                a["event_time"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("sensors.multivariate", "pump-7", "2026-01-05T14:51:40.000Z"),
            ("sensors.deviation", "meter-1", "2026-01-05T10:04:10.000Z"),
        ]
    );
    let mv = &alerts[0]["evidence"][0];
    assert_eq!(mv["attribution"][0]["feature"], "flow", "{mv}");
    assert!(mv["score"].as_f64().unwrap() > mv["threshold"].as_f64().unwrap());
    // The first row is at 14:40:00, the alarm on the row the flow collapsed: the smoothed
    // row moves a tenth of the way, far beyond what the warm-up's noise ever did.
    assert_eq!(mv["baseline_age_s"], 700);
    assert_eq!(mv["statistic"], "q", "flow no longer follows current: {mv}");
}

const MONDAY: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
const HOUR: i64 = 3_600_000;

fn of_kind(kind: Kind) -> impl Iterator<Item = Scenario> {
    Scenario::ALL.into_iter().filter(move |s| s.kind() == kind)
}

/// `palisade eval --dataset city` in-process, with the shipped rules.
fn city(scenarios: &[Scenario], streams: &[&str], start_ms: i64, hours: f64) -> CityReport {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = Arc::new(Config::builtin());
        let rules = DetectorSet::load(&config, &config.rule_dirs())
            .await
            .unwrap();
        let sim = SimOptions {
            seed: 5,
            start_ms,
            duration_ms: Some((hours * HOUR as f64) as i64),
            scenarios: scenarios.to_vec(),
            streams: Some(streams.iter().map(|s| s.to_string()).collect()),
        };
        let mut out = Vec::new();
        palisade::eval::city(config, rules, Pseudonymiser::new(b"eval"), sim, &mut out)
            .await
            .unwrap()
    })
}

/// Every incident of every scenario of the run detected, by the rules the scenario names, and
/// not one alert the scenarios do not explain.
fn assert_all_detected_and_nothing_else(r: &CityReport, scenarios: &[Scenario]) {
    assert_eq!(
        r.scenarios.iter().map(|s| s.scenario).collect::<Vec<_>>(),
        scenarios
    );
    for s in &r.scenarios {
        assert!(s.incidents > 0, "{:?} never happened", s.scenario);
        assert_eq!(s.detected, s.incidents, "{s:?}");
        for rule in s.scenario.rule_ids() {
            assert!(s.alerts.contains_key(*rule), "{rule} did not fire: {s:?}");
        }
    }
    assert_eq!(r.false_alarms, Default::default(), "false alarms");
    assert_eq!((r.mar(), r.far(), r.f1()), (0.0, 0.0, 1.0));
    assert_eq!(r.dead_letters, 0);
}

/// The insiders who sign in: travelling, on a new system, off shift. A day and a half of the
/// auth stream, from midnight: an operator's hours are known after their first day at work.
#[test]
fn city_insider_logins_are_all_detected_and_the_benign_logins_raise_nothing() {
    let logins = [
        Scenario::ImpossibleTravel,
        Scenario::NewSystemLogin,
        Scenario::OffHoursLogin,
    ];
    assert_eq!(
        of_kind(Kind::Insider)
            .filter(|s| s.stream() == "auth")
            .count(),
        3
    );
    let r = city(&logins, &["auth"], MONDAY, 31.0);
    assert_all_detected_and_nothing_else(&r, &logins);
    assert!(r.records > 100_000, "{}", r.records);
}

/// The camera grab: office staff are at work from 07:00, so the city starts at 06:00.
#[test]
fn city_camera_grab_is_detected_and_the_benign_network_raises_nothing() {
    let r = city(
        &[Scenario::CameraGrab],
        &["netflow"],
        MONDAY + 6 * HOUR,
        1.75,
    );
    assert_all_detected_and_nothing_else(&r, &[Scenario::CameraGrab]);
}

/// Equipment, through the command line: the sensors and the pump stations for four and a half
/// hours (their baselines learn for two), each scenario once; the report's lines say so.
#[test]
fn city_equipment_scenarios_are_all_detected_and_the_report_says_so() {
    let equipment: Vec<Scenario> = of_kind(Kind::Equipment).collect();
    let names: Vec<&str> = equipment.iter().map(|s| s.name()).collect();
    let out = bin()
        .args(["eval", "--dataset", "city", "--streams", "sensors,pumps"])
        .args(["--duration", "4h30m", "--scenarios", &names.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Header, one line per scenario, records, false alarms, incidents, overall.
    assert_eq!(lines.len(), 1 + equipment.len() + 4, "{text}");
    for (s, line) in equipment.iter().zip(&lines[1..]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[0], cols[1]), (s.name(), "equipment"), "{line}");
        let (detected, of) = cols[2].split_once('/').unwrap();
        assert!(detected == of && of != "0", "{line}");
        for rule in s.rule_ids() {
            assert!(line.contains(rule), "{line}");
        }
    }
    assert!(
        lines[lines.len() - 3].starts_with("false alarms 0 "),
        "{text}"
    );
    assert_eq!(
        lines[lines.len() - 1],
        "overall F1 1.000 FAR 0.00% MAR 0.00%"
    );
}
