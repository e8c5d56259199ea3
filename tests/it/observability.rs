//! What operators deploy beside palisade, checked with the real tools: every PromQL expression
//! of the Grafana dashboards and the on-call rules against a real Prometheus scraping the
//! embedded run (which pages a real Alertmanager); promtool, amtool and docker-compose
//! validation; the Kubernetes ConfigMaps against the files they are made from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::alerting::{Alertmanager, Receiver, get10, wait_for};
use crate::support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a tool that tests/run.sh installs; a missing tool fails the test.
fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (tests/run.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deployment_files_pass_promtool_amtool_and_docker_compose() {
    tool(
        "promtool",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
    tool(
        "promtool",
        &["check", "rules", "deploy/prometheus/alerts.yml"],
    );
    tool(
        "promtool",
        &["test", "rules", "deploy/prometheus/alerts.test.yml"],
    );
    tool(
        "amtool",
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
    );
    tool(
        "docker-compose",
        &["-f", "deploy/docker-compose.yml", "config", "--quiet"],
    );
}

/// The literal block `  KEY: |` of a ConfigMap file, unindented.
fn configmap_entry(text: &str, key: &str) -> String {
    let header = format!("  {key}: |");
    let mut lines = text.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "no `{key}` in the ConfigMap");
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            out.push('\n');
        } else if let Some(rest) = line.strip_prefix("    ") {
            out.push_str(rest);
            out.push('\n');
        } else {
            break;
        }
    }
    // A literal block keeps one final newline; the files end with one.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[test]
fn kubernetes_configmaps_carry_a_valid_config_every_shipped_rule_and_the_inventory() {
    let text = std::fs::read_to_string(repo("deploy/k8s/configmaps.yaml")).unwrap();
    let config = configmap_entry(&text, "palisade.toml");
    let parsed = palisade::config::Config::parse(&config, "configmap", Path::new("/"))
        .unwrap_or_else(|e| panic!("the ConfigMap's palisade.toml is invalid: {e}"));
    assert_eq!(parsed.metrics_addr().to_string(), "0.0.0.0:9464");
    assert!(parsed.alerting.alertmanager.is_some());
    assert_eq!(
        configmap_entry(&text, "inventory.csv"),
        std::fs::read_to_string(repo("deploy/inventory.csv")).unwrap()
    );
    let mut shipped = 0;
    for area in std::fs::read_dir(repo("rules")).unwrap() {
        let area = area.unwrap().path();
        if !area.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&area).unwrap() {
            let file = file.unwrap().path();
            if !palisade::detect::is_rule_file(&file) {
                continue;
            }
            shipped += 1;
            let name = file.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                configmap_entry(&text, name),
                std::fs::read_to_string(&file).unwrap(),
                "{name} differs from the ConfigMap; regenerate it with deploy/k8s/configmaps.sh"
            );
        }
    }
    assert!(shipped >= 8, "{shipped} rules");
}

/// Every `"expr"` of a Grafana dashboard, found by walking its JSON.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// `expr:` of every alerting rule (one line each; the count is checked against the rules).
fn rule_exprs(text: &str) -> Vec<String> {
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    let rules = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(exprs.len(), rules, "write each rule's expr on one line");
    assert!(exprs.iter().all(|e| !e.is_empty() && !e.starts_with('|')));
    exprs
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus on a free port scraping `target` every second, with the on-call rules.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: palisade\n    static_configs:\n      - targets: [\"{target}\"]\n",
                repo("deploy/prometheus/alerts.yml").display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (tests/run.sh installs it)");
        let p = Prometheus {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_for(Duration::from_secs(30), "Prometheus ready", || {
            std::net::TcpStream::connect(&p.addr).is_ok() && http_get(&p.addr, "/-/ready").0 == 200
        });
        p
    }

    /// An instant query: `Err` with Prometheus' message when it does not parse, else the
    /// number of series returned.
    fn query(&self, expr: &str) -> Result<usize, String> {
        let (status, body) = get10(
            &self.addr,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status != 200 || v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = get10(&self.addr, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metrics the embedded run does not feed (no bad records, no failing sink, no reloads, no
/// event-time stage yet); expressions reading them must parse but may return nothing.
const NOT_EXERCISED: &[&str] = &[
    "palisade_decode_failures_total",
    "palisade_dead_letters_total",
    "palisade_sink_failures_total",
    "palisade_sink_dropped_total",
    "palisade_sink_retries_total",
    "palisade_late_events_total",
    "palisade_watermark_delay_seconds",
    "palisade_detector_errors_total",
    "palisade_rule_reloads_total",
    "palisade_detector_state",
    "palisade_suppression_evicted_total",
    "palisade_alerts_folded_total",
];

#[test]
fn dashboards_and_alert_rules_evaluate_against_real_prometheus_scraping_palisade() {
    let mut dashboards = Vec::new();
    for file in std::fs::read_dir(repo("grafana/dashboards")).unwrap() {
        let file = file.unwrap().path();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let before = dashboards.len();
        dashboard_exprs(&v, &mut dashboards);
        assert!(dashboards.len() > before, "{} has no expr", file.display());
    }
    let rules = rule_exprs(&std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap());

    let am = Alertmanager::start();
    let hook = Receiver::start(0);
    let hook_url = format!("http://{}/hook", hook.addr);
    let mut child = bin()
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--format",
            "none",
            "--speed",
            "120",
            "--alertmanager",
            &am.url,
            "--webhook",
            &hook_url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let target = metrics_addr(&stderr);
    let prom = Prometheus::start(&target);

    // Every expression parses; those over metrics the simulation feeds return data once the
    // city's scenarios have played (deadline, not a sleep).
    let must_have_data: Vec<&String> = dashboards
        .iter()
        .filter(|e| !NOT_EXERCISED.iter().any(|m| e.contains(m)))
        .collect();
    let critical_firing = r#"ALERTS{alertname="PalisadeCriticalDetection", rule="scada.setpoint_unknown_host", domain="water", alertstate="firing"}"#;
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut empty: BTreeSet<&String>;
    let mut critical;
    loop {
        empty = BTreeSet::new();
        for e in dashboards.iter().chain(&rules) {
            let n = prom
                .query(e)
                .unwrap_or_else(|err| panic!("`{e}` does not evaluate: {err}"));
            if n == 0 && must_have_data.contains(&e) {
                empty.insert(e);
            }
        }
        critical = prom.query(critical_firing);
        if (empty.is_empty() && critical == Ok(1)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let rules_api = prom.get("/api/v1/rules");
    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "palisade exited with {status}");
    assert!(
        empty.is_empty(),
        "no data from {} expressions the simulation feeds:\n{}",
        empty.len(),
        empty
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Prometheus evaluates every on-call rule without error, and the critical detection of
    // the rogue setpoint on a water PLC fires.
    let groups = rules_api["data"]["groups"].as_array().unwrap();
    let loaded: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rules.len());
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
    assert_eq!(critical, Ok(1), "PalisadeCriticalDetection did not fire");
    // `--webhook` from the command line: the receiver got the city's alerts, enriched.
    let accepted = hook.accepted.lock().unwrap().clone();
    let rules: BTreeSet<&str> = accepted
        .iter()
        .flat_map(|b| b["alerts"].as_array().unwrap())
        .filter(|a| a["asset"]["domain"] == "water" && a["urgency"] == "critical")
        .filter_map(|a| a["rule"]["id"].as_str())
        .collect();
    assert!(
        rules.contains("scada.setpoint_unknown_host"),
        "webhook got {rules:?}"
    );
}

#[tokio::test]
async fn rules_mounted_from_a_kubernetes_configmap_load_once() {
    // The kubelet's layout: files in a timestamped folder, `..data` linking to it, and one
    // link per key at the top.
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("..2026_01_05_02_30_00.123");
    std::fs::create_dir(&stamp).unwrap();
    std::fs::write(stamp.join("rogue.sql"), ROGUE_RULE).unwrap();
    std::os::unix::fs::symlink(&stamp, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("..data/rogue.sql"),
        dir.path().join("rogue.sql"),
    )
    .unwrap();
    let config = palisade::config::Config::builtin();
    let set = palisade::app::load_detectors(&config, &[dir.path().to_path_buf()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 1);
}
