//! `palisade simulate --output` then `palisade replay`: the analyst's backtest path.

use std::collections::BTreeSet;

use palisade::sim::{Kind, Scenario};

use crate::support::*;

/// Runs a command, returning stdout; panics with stderr if it fails.
fn run_ok(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn simulate(dir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    run_ok(bin().args(["simulate", "--output"]).arg(&path).args(args));
    path
}

#[test]
fn replay_is_deterministic_and_catches_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let city = simulate(
        dir.path(),
        "city.jsonl",
        &["--seed", "11", "--duration", "40m"],
    );
    let first = run_ok(bin().args(["replay", "--input"]).arg(&city));
    let second = run_ok(bin().args(["replay", "--input"]).arg(&city));
    assert!(!first.is_empty());
    assert_eq!(
        first, second,
        "the same file twice must give byte-identical alerts"
    );

    let alerts: Vec<serde_json::Value> = first
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let fired: BTreeSet<&str> = alerts
        .iter()
        .map(|a| a["rule"]["id"].as_str().unwrap())
        .collect();
    // The attacks: the 40 simulated minutes hold their first occurrences.
    for scenario in Scenario::ALL.iter().filter(|s| s.kind() == Kind::Attack) {
        for rule in scenario.rule_ids() {
            assert!(
                fired.contains(rule),
                "scenario {} not caught by {rule}; fired: {fired:?}",
                scenario.name()
            );
        }
    }
    for a in &alerts {
        for key in ["id", "event_time", "entity", "severity"] {
            assert!(a[key].is_string(), "alert lacks {key}: {a}");
        }
        assert!(a["rule"]["title"].is_string());
    }
    // Personal fields never leave in clear: auth alerts name users only by pseudonym.
    let text = String::from_utf8(first).unwrap();
    assert!(
        !text.contains("vendor.acme"),
        "a user name leaked into the alerts"
    );
}

#[test]
fn benign_city_raises_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    for (name, start) in [
        ("night.jsonl", "2026-01-05T01:00:00Z"),
        ("day.jsonl", "2026-01-05T11:00:00Z"),
    ] {
        let city = simulate(
            dir.path(),
            name,
            &[
                "--seed",
                "5",
                "--duration",
                "2h",
                "--scenarios",
                "none",
                "--start",
                start,
            ],
        );
        let alerts = run_ok(bin().args(["replay", "--input"]).arg(&city));
        assert!(
            alerts.is_empty(),
            "false positives on the benign city ({name}):\n{}",
            String::from_utf8_lossy(&alerts)
        );
    }
}

#[test]
fn plain_jsonl_and_csv_inputs_are_routed_by_file_name_and_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let scada = dir.path().join("scada.jsonl");
    std::fs::write(
        &scada,
        format!(
            "{}\n\n{}\nnot json at all\n",
            scada_event(10, "ews-01", "setpoint_write"),
            scada_event(30, "laptop-9", "setpoint_write")
        ),
    )
    .unwrap();
    let sensors = dir.path().join("sensors.csv");
    std::fs::write(
        &sensors,
        "ts,asset,domain,metric,value,unit\n2026-01-05T03:00:20Z,wtp-cl2-01,water,chlorine_mg_l,42.5,mg/L\n",
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let out = run_ok(
        bin()
            .args(["replay", "--dead-letter"])
            .arg(&dead)
            .arg("--input")
            .arg(&scada)
            .arg(&sensors),
    );
    let alerts: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap(),
                a["entity"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        got.contains(&("scada.setpoint_unknown_host", "laptop-9")),
        "{got:?}"
    );
    assert!(
        got.contains(&("sensor.physical_limits", "wtp-cl2-01")),
        "{got:?}"
    );
    assert!(!got.iter().any(|(_, e)| *e == "ews-01"), "{got:?}");
    let dead = std::fs::read_to_string(dead).unwrap();
    let dead: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(dead["line"], 4);
    assert_eq!(dead["payload"], "not json at all");
    assert_eq!(dead["failure"], "malformed");
}

#[test]
fn unknown_stream_for_a_file_is_an_actionable_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mystery.jsonl");
    std::fs::write(&file, "{\"a\":1}\n").unwrap();
    let out = bin()
        .args(["replay", "--input"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mystery.jsonl") && err.contains("--stream"),
        "{err}"
    );
}
