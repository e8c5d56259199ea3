//! End to end against a real Kafka-protocol broker (tansu), through the command line:
//! `palisade simulate --brokers` writes the city, `palisade run --brokers` detects, and the
//! alerts on the alerts topic are the ones it printed.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use palisade::sim::{Kind, Scenario};

use crate::support::*;

#[test]
fn city_through_tansu_gives_every_scenario_alert_on_the_alerts_topic() {
    let broker = Tansu::start();
    let out = bin()
        .args([
            "simulate",
            "--brokers",
            &broker.addr,
            "--seed",
            "3",
            "--duration",
            "40m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let group = format!("tansu-e2e-{}", free_port());
    let mut child = bin()
        .args([
            "run",
            "--brokers",
            &broker.addr,
            "--group",
            &group,
            "--format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    // The attacks: the 40 simulated minutes hold their first occurrences.
    let want: BTreeSet<&str> = Scenario::ALL
        .iter()
        .filter(|s| s.kind() == Kind::Attack)
        .flat_map(|s| s.rule_ids().iter().copied())
        .collect();
    let alerts = stdout.json_until(Duration::from_secs(180), |alerts| {
        let fired: BTreeSet<&str> = alerts
            .iter()
            .filter_map(|a| a["rule"]["id"].as_str())
            .collect();
        want.iter().all(|r| fired.contains(r))
    });
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = stderr.rest(Duration::from_secs(5)).join("\n");
    assert!(status.success(), "run exited with {status}: {log}");
    let printed: BTreeSet<String> = alerts
        .iter()
        .chain(&stdout.json_until(Duration::from_secs(2), |_| false))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let fired: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["rule"]["id"].as_str())
        .collect();
    assert!(
        want.iter().all(|r| fired.contains(r)),
        "missing rules; fired {fired:?}\n{log}"
    );

    // Every printed alert was acknowledged by the broker, so it is on the topic.
    let on_topic = read_topic(
        &broker.addr,
        "palisade.alerts",
        printed.len(),
        Duration::from_secs(60),
    );
    let ids: BTreeSet<String> = on_topic
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.value).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        printed.is_subset(&ids),
        "printed alerts missing from the topic: {:?}",
        printed.difference(&ids).collect::<Vec<_>>()
    );
}
