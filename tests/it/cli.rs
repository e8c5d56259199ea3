//! The user's first command: `palisade run` against the embedded city, and config errors.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use palisade::sim::{Kind, Scenario};

use crate::support::*;

/// The rules of the attacks, whose first occurrences come within 40 simulated minutes (the
/// equipment and insider scenarios wait for their baselines to learn: hours to a day).
fn expected_rules() -> BTreeSet<&'static str> {
    Scenario::ALL
        .iter()
        .filter(|s| s.kind() == Kind::Attack)
        .flat_map(|s| s.rule_ids().iter().copied())
        .collect()
}

#[test]
fn embedded_run_shows_every_scenario_serves_metrics_and_stops_cleanly() {
    let mut child = bin()
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--format",
            "json",
            "--speed",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let addr = metrics_addr(&stderr);

    let want = expected_rules();
    // 120x: the last first-occurrence (+33 min) is due after ~17 s of real time; debug builds
    // may lag behind the city, so allow more.
    let alerts = stdout.json_until(Duration::from_secs(150), |alerts| {
        let fired: BTreeSet<&str> = alerts
            .iter()
            .filter_map(|a| a["rule"]["id"].as_str())
            .collect();
        want.iter().all(|r| fired.contains(r))
    });
    let fired: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["rule"]["id"].as_str())
        .collect();
    let missing: Vec<_> = want.difference(&fired).collect();
    assert!(
        missing.is_empty(),
        "no alert from {missing:?}; fired {fired:?}"
    );

    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for stream in ["netflow", "auth", "badge", "scada", "sensors"] {
        assert!(
            metrics.contains(&format!("palisade_records_total{{stream=\"{stream}\"}}")),
            "{stream}: {metrics}"
        );
    }
    assert!(
        metrics.contains("palisade_e2e_latency_seconds{quantile=\"0.99\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_detector_eval_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);

    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let tail = stderr.rest(Duration::from_secs(5)).join("\n");
    assert!(tail.contains("palisade: stopped;"), "{tail}");
}

#[test]
fn a_bad_config_fails_at_load_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let text =
        palisade::config::DEFAULT_CONFIG.replace("linger_ms = 50", "linger_ms = 50\nlinger = 3");
    std::fs::write(&path, text).unwrap();
    let out = bin().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = palisade::config::DEFAULT_CONFIG
        .lines()
        .position(|l| l.starts_with("linger_ms"))
        .unwrap()
        + 2;
    assert!(
        err.contains(&format!("palisade.toml:{line}:1: unknown field `linger`")),
        "{err}"
    );
}

#[test]
fn a_bad_rule_fails_at_load_with_file_and_line() {
    let rules = rules_dir(&[(
        "bad.sql",
        "-- id: x\n-- title: t\n-- severity: high\n-- stream: scada\nSELEC * FROM scada\n",
    )]);
    let out = bin()
        .args(["replay", "--rules"])
        .arg(rules.path())
        .args(["--input", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.sql:5:"), "{err}");
    let check = bin().arg("check").arg(rules.path()).output().unwrap();
    assert_eq!(check.status.code(), Some(1));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("bad.sql:5:"), "{report}");
    assert_eq!(
        report.lines().last(),
        Some("checked 1 rules: 0 ok, 1 failed")
    );
}

#[test]
fn shipped_rules_pass_check() {
    let out = bin().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with("failed"), "{text}");
    // Every shipped rule is some scenario's: the simulated city exercises them all.
    let exercised: BTreeSet<&str> = Scenario::ALL
        .iter()
        .flat_map(|s| s.rule_ids().iter().copied())
        .collect();
    assert!(
        text.contains(&format!("checked {} rules", exercised.len())),
        "{text}"
    );
}
