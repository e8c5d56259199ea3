//! Notifications against real receivers: a real Alertmanager fed by the live pipeline, and a
//! webhook receiver that fails for a while.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade::alert::Alert;
use palisade::alert::config::{HttpSinkConfig, Overflow};
use palisade::alert::http::Endpoint;
use palisade::alert::notify::Notifier;
use palisade::alert::webhook::WebhookFormat;
use palisade::app::{self, Live};
use palisade::metrics::Metrics;
use palisade::pipeline::Echo;
use palisade::source::embedded::EmbeddedKafka;
use tokio::sync::watch;

use crate::support::*;

/// A real Alertmanager on a free port, stopped on drop.
pub struct Alertmanager {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` (Debian package `prometheus-alertmanager`, installed
    /// by tests/run.sh) and waits until it is ready.
    pub fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_by: [alertname]\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager must be installed (tests/run.sh installs it)");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let addr = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "Alertmanager ready", || {
            std::net::TcpStream::connect(&addr).is_ok() && http_get(&addr, "/-/ready").0 == 200
        });
        am
    }

    /// `GET` of an API path, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = get10(self.url.trim_start_matches("http://"), path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET in HTTP/1.0, so that Go servers answer without chunked encoding.
pub fn get10(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `ok` until it holds, failing after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_critical_detection_pages_through_alertmanager_repeats_group_and_it_resolves() {
    block_on_bounded(
        a_critical_detection_pages_through_alertmanager_repeats_group_and_it_resolves_body(),
    );
}

async fn a_critical_detection_pages_through_alertmanager_repeats_group_and_it_resolves_body() {
    logs();
    let am = Alertmanager::start();
    let mut config = config_for("unused");
    let mut topics = config.input_topics();
    topics.push(config.kafka.alerts_topic.clone());
    topics.push(config.kafka.dead_letter_topic.clone());
    let kafka = EmbeddedKafka::start(1, &topics, 1).unwrap();
    config.kafka.brokers = kafka.bootstrap_servers();
    let mut sink = HttpSinkConfig::with_url(&am.url);
    sink.resolve_after_secs = Some(3);
    config.alerting.alertmanager = Some(sink);
    // Every repeat goes out with its count, so Alertmanager's own de-duplication shows.
    config.alerting.suppression.renotify_secs = 0;
    let config = Arc::new(config);
    // laptop-7 writes three times, kiosk-3 once; one benign read.
    let mut records = vec![(
        "ews-01".to_string(),
        scada_event(0, "ews-01", "read").into_bytes(),
    )];
    for (i, host) in ["laptop-7", "kiosk-3", "laptop-7", "laptop-7"]
        .iter()
        .enumerate()
    {
        records.push((
            host.to_string(),
            scada_event(10 + i as u32, host, "setpoint_write").into_bytes(),
        ));
    }
    produce(&config.kafka.brokers, "city.scada", &records).await;
    let rules = rules_dir(&[("rogue.sql", ROGUE_RULE)]);
    let detectors = app::load_detectors(&config, &[rules.path().to_path_buf()])
        .await
        .unwrap();
    let mut live = Live::new(&config);
    live.metrics_addr = "127.0.0.1:0".parse().unwrap();
    live.echo = Echo::Off;
    let metrics = Arc::clone(&live.metrics);
    let (stop_tx, stop) = watch::channel(false);
    let (_force_tx, force) = watch::channel(false);
    let run = tokio::spawn(app::run_live(config, detectors, live, stop, force));

    let rogue = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "test.rogue_setpoint")
            .map(|a| {
                (
                    a["labels"]["entity"].as_str().unwrap().to_string(),
                    a.clone(),
                )
            })
            .collect()
    };
    let firing = tokio::task::spawn_blocking({
        let url = am.url.clone();
        move || {
            let am = Probe(url);
            let mut last = BTreeMap::new();
            wait_for(
                Duration::from_secs(60),
                "both alerts in Alertmanager",
                || {
                    last = rogue(&am.get("/api/v2/alerts"));
                    last.len() == 2 && last["laptop-7"]["annotations"]["occurrences"] == "3"
                },
            );
            last
        }
    })
    .await
    .unwrap();
    // Three pushes of laptop-7 are one Alertmanager alert; both entities are one group.
    let laptop = &firing["laptop-7"];
    assert_eq!(laptop["status"]["state"], "active");
    assert_eq!(laptop["labels"]["severity"], "critical");
    assert_eq!(laptop["labels"]["urgency"], "critical");
    assert_eq!(laptop["labels"]["source"], "palisade");
    assert!(laptop["labels"]["fingerprint"].as_str().unwrap().len() == 32);
    assert_ne!(
        laptop["labels"]["fingerprint"],
        firing["kiosk-3"]["labels"]["fingerprint"]
    );
    assert!(
        laptop["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with("?rule=test.rogue_setpoint"),
        "{laptop}"
    );
    let groups = am.get("/api/v2/alerts/groups");
    let group = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["labels"]["alertname"] == "test.rogue_setpoint")
        .expect("a group for the rule");
    assert_eq!(group["alerts"].as_array().unwrap().len(), 2, "{group}");

    // No more detections: after the quiet period (3 s) Alertmanager resolves both.
    tokio::task::spawn_blocking({
        let url = am.url.clone();
        move || {
            let am = Probe(url);
            wait_for(Duration::from_secs(30), "the alerts to resolve", || {
                rogue(&am.get("/api/v2/alerts")).is_empty()
            });
        }
    })
    .await
    .unwrap();
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
    let text = metrics.render();
    assert!(
        text.contains(r#"palisade_sink_delivered_total{sink="alertmanager"} 4"#),
        "{text}"
    );
    drop(kafka);
}

/// Reads Alertmanager's API from a blocking thread.
struct Probe(String);

impl Probe {
    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = get10(self.0.trim_start_matches("http://"), path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A webhook receiver on loopback: answers the first `fail` requests with 503 (the second one
/// by closing the connection instead), then 200; keeps the bodies it accepted.
pub struct Receiver {
    pub addr: String,
    pub accepted: Arc<Mutex<Vec<serde_json::Value>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    pub fn start(fail: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (acc, req) = (Arc::clone(&accepted), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let n = {
                    let mut r = req.lock().unwrap();
                    *r += 1;
                    *r
                };
                if n == 2 {
                    continue; // dropped connection, no answer
                }
                let status = if n <= fail {
                    "503 Service Unavailable"
                } else {
                    acc.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            accepted,
            requests,
        }
    }
}

fn alert(i: usize) -> Alert {
    serde_json::from_str(&format!(
        r#"{{"schema":"palisade.alert.v1","id":"id-{i}","rule":{{"id":"r","title":"t","kind":"sql"}},
        "severity":"high","event_time":"2026-01-05T03:00:00.000Z","detected_at":"2026-01-05T03:00:00.000Z",
        "stream":"scada","entity":"e{i}","tags":[],"description":"d","evidence":[{{"n":{i}}}]}}"#
    ))
    .unwrap()
}

fn sink_config(url: &str, buffer: usize) -> HttpSinkConfig {
    let mut c = HttpSinkConfig::with_url(url);
    c.buffer = buffer;
    c.max_batch = 8;
    c.min_backoff_ms = 20;
    c.max_backoff_ms = 100;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_for_a_while_gets_every_alert_once_it_recovers() {
    let receiver = Receiver::start(5);
    let url = format!("http://{}/hook", receiver.addr);
    let metrics = Arc::new(Metrics::new());
    let mut notifier = Notifier::start(
        "webhook",
        &sink_config(&url, 100),
        palisade::alert::Severity::Info,
        Endpoint::parse(&url, "").unwrap(),
        Box::new(WebhookFormat),
        Arc::clone(&metrics),
    );
    let (_force_tx, mut force) = watch::channel(false);
    let sent: Vec<Alert> = (0..40).map(alert).collect();
    for chunk in sent.chunks(10) {
        notifier.offer(chunk, &mut force).await;
    }
    notifier.close(Duration::from_secs(30), &mut force).await;

    let accepted = receiver.accepted.lock().unwrap().clone();
    let mut ids: Vec<String> = accepted
        .iter()
        .flat_map(|body| {
            assert_eq!(body["schema"], "palisade.webhook.v1");
            body["alerts"].as_array().unwrap().clone()
        })
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want: Vec<String> = sent.iter().map(|a| a.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want, "every alert arrives, once");
    assert!(*receiver.requests.lock().unwrap() > 5);
    let text = metrics.render();
    assert!(
        text.contains(r#"palisade_sink_delivered_total{sink="webhook"} 40"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_sink_retries_total{sink="webhook"}"#),
        "{text}"
    );
    assert!(!text.contains("palisade_sink_dropped_total{"), "{text}");
    assert!(!text.contains("palisade_sink_failures_total{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_counts_what_is_lost() {
    // Nothing listens: every attempt fails.
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let metrics = Arc::new(Metrics::new());
    let mut config = sink_config(&url, 4);
    config.overflow = Overflow::DropOldest;
    let mut notifier = Notifier::start(
        "webhook",
        &config,
        palisade::alert::Severity::Info,
        Endpoint::parse(&url, "").unwrap(),
        Box::new(WebhookFormat),
        Arc::clone(&metrics),
    );
    let (_force_tx, mut force) = watch::channel(false);
    let sent: Vec<Alert> = (0..10).map(alert).collect();
    notifier.offer(&sent, &mut force).await;
    let text = metrics.render();
    assert!(
        text.contains(r#"palisade_sink_dropped_total{sink="webhook"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_sink_buffered{sink="webhook"} 4"#),
        "{text}"
    );
    notifier.close(Duration::from_millis(300), &mut force).await;
    let text = metrics.render();
    assert!(
        text.contains(r#"palisade_sink_failures_total{reason="shutdown",sink="webhook"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_sink_buffered{sink="webhook"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blocking_buffer_holds_the_pipeline_until_forced() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let metrics = Arc::new(Metrics::new());
    let mut config = sink_config(&url, 2);
    config.overflow = Overflow::Block;
    let notifier = Arc::new(Notifier::start(
        "webhook",
        &config,
        palisade::alert::Severity::Info,
        Endpoint::parse(&url, "").unwrap(),
        Box::new(WebhookFormat),
        Arc::clone(&metrics),
    ));
    let (force_tx, force) = watch::channel(false);
    let offer = tokio::spawn({
        let notifier = Arc::clone(&notifier);
        let mut force = force.clone();
        async move {
            let alerts: Vec<Alert> = (0..3).map(alert).collect();
            notifier.offer(&alerts, &mut force).await
        }
    });
    // Two fit; the third waits for room that never comes (nothing listens).
    let m = Arc::clone(&metrics);
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(10), "a full buffer", || {
            m.render()
                .contains(r#"palisade_sink_buffered{sink="webhook"} 2"#)
        })
    })
    .await
    .unwrap();
    // The third alert is offered right after the second, with nowhere to go.
    assert!(
        !offer.is_finished(),
        "a blocking buffer must hold the caller"
    );
    assert!(!metrics.render().contains("palisade_sink_dropped_total{"));
    // A forced shutdown stops waiting, and what could not be kept is counted.
    force_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), offer)
        .await
        .expect("forced shutdown releases the caller")
        .unwrap();
    assert!(
        metrics
            .render()
            .contains(r#"palisade_sink_dropped_total{sink="webhook"} 1"#)
    );
}
