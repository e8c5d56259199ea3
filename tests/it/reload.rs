//! Hot reload of a running service: rule files change, SIGHUP, a broken file.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Polls `/metrics` until `pred` holds, failing after `timeout` with the last scrape.
fn metrics_until(addr: &str, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, body) = http_get(addr, "/metrics");
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const BADGE: &str = include_str!("../../rules/physical/badge_revoked.yml");
const SENSORS: &str = include_str!("../../rules/physical/sensor_limits.sql");

#[test]
fn a_running_service_reloads_changed_rules_and_keeps_running_on_a_broken_file() {
    let dir = rules_dir(&[("badge_revoked.yml", BADGE)]);
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
        .arg("--rules")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let addr = metrics_addr(&stderr);
    let m = metrics_until(&addr, Duration::from_secs(30), "one rule", |m| {
        sample(m, "palisade_rules_loaded") == Some(1.0)
    });
    assert_eq!(
        sample(&m, "palisade_rule_reloads_total{result=\"ok\"}"),
        None
    );

    // A new rule file: picked up by the watcher, and its alerts follow.
    std::fs::write(dir.path().join("sensor_limits.sql"), SENSORS).unwrap();
    metrics_until(&addr, Duration::from_secs(30), "the reload", |m| {
        sample(m, "palisade_rule_reloads_total{result=\"ok\"}") == Some(1.0)
            && sample(m, "palisade_rules_loaded") == Some(2.0)
    });
    let alerts = stdout.json_until(Duration::from_secs(120), |alerts| {
        alerts
            .iter()
            .any(|a| a["rule"]["id"] == "sensor.physical_limits")
    });
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"]["id"] == "sensor.physical_limits"),
        "the reloaded rule never fired"
    );

    // A broken file: the previous rules keep running; the failure is counted and shown.
    std::fs::write(
        dir.path().join("broken.yml"),
        "title: Broken\nlogsource: {product: palisade, service: badge}\ndetection:\n  sel:\n    door|nosuch: x\n  condition: sel\n",
    )
    .unwrap();
    metrics_until(&addr, Duration::from_secs(30), "the failed reload", |m| {
        sample(m, "palisade_rule_reloads_total{result=\"failed\"}") == Some(1.0)
    });
    let (status, ready) = http_get(&addr, "/readyz");
    assert_eq!(
        status, 200,
        "a bad rule file does not take the service out: {ready}"
    );
    assert!(
        ready.contains("last reload FAILED") && ready.contains("broken.yml:5:"),
        "{ready}"
    );
    let m = metrics_until(&addr, Duration::from_secs(5), "rules kept", |m| {
        sample(m, "palisade_rules_loaded") == Some(2.0)
    });
    assert_eq!(sample(&m, "palisade_ready"), Some(1.0));
    assert!(
        stderr
            .find(Duration::from_secs(5), |l| l.contains("rule reload failed"))
            .is_some(),
        "the failure is logged"
    );

    // SIGHUP reloads even without a change (the file is still broken: a second failure).
    signal(&child, "HUP");
    metrics_until(&addr, Duration::from_secs(30), "the SIGHUP reload", |m| {
        sample(m, "palisade_rule_reloads_total{result=\"failed\"}") == Some(2.0)
    });
    // Fixed: the next reload succeeds and /readyz says so.
    std::fs::remove_file(dir.path().join("broken.yml")).unwrap();
    metrics_until(&addr, Duration::from_secs(30), "the recovery", |m| {
        sample(m, "palisade_rule_reloads_total{result=\"ok\"}") == Some(2.0)
    });
    let (_, ready) = http_get(&addr, "/readyz");
    assert!(ready.contains("rules: ok (2 rules loaded)"), "{ready}");

    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}
