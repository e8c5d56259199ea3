//! Event time through the real pipeline: windowed rules, late events, idle partitions.
//!
//! In-process (the library's replay and `Pipeline`), so what runs is this build's code.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use palisade::app::{ReplayOutput, replay};
use palisade::config::Config;
use palisade::detect::DetectorSet;
use palisade::metrics::Metrics;
use palisade::pipeline::{Clock, Echo, NoCommit, Pipeline, Processed, Sink, SinkError};
use palisade::privacy::Pseudonymiser;
use palisade::source::{Origin, RawBatch};
use serde_json::Value;

/// A `Write` whose bytes the test reads afterwards.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn flow(at: &str, port: u32) -> String {
    format!(
        r#"{{"ts":"2026-01-05T{at}Z","src_ip":"10.40.1.5","src_port":40000,"dst_ip":"10.10.1.3","dst_port":{port},"proto":"tcp","bytes_out":60,"bytes_in":0,"packets":1,"duration_ms":1,"action":"deny","src_zone":"bikeshare","dst_zone":"ot-water"}}"#
    )
}

/// A port scan of 30 ports in 08:53, a flow at 08:59 that moves the watermark (lateness 10 s)
/// past the scan's window, then a flow of 08:53:30 arriving late, then one more on time.
fn scan_with_a_late_flow(dir: &Path) -> std::path::PathBuf {
    let mut lines: Vec<String> = (0..30)
        .map(|i| flow(&format!("08:53:{i:02}"), 20 + i))
        .collect();
    lines.push(flow("08:59:00", 443));
    lines.push(flow("08:53:30", 99));
    lines.push(flow("08:59:01", 443));
    let path = dir.join("netflow.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

async fn run_replay(config: Config, input: &Path) -> (Vec<Value>, Vec<Value>, String) {
    let config = Arc::new(config);
    let detectors = DetectorSet::load(&config, &config.rule_dirs())
        .await
        .unwrap();
    let (alerts, dead) = (Shared::default(), Shared::default());
    let metrics = Arc::new(Metrics::new());
    replay(
        Arc::clone(&config),
        detectors,
        &[input.to_path_buf()],
        None,
        ReplayOutput {
            alerts: Box::new(alerts.clone()),
            dead: Some(Box::new(dead.clone())),
        },
        Arc::clone(&metrics),
    )
    .await
    .unwrap();
    (alerts.lines(), dead.lines(), metrics.render())
}

#[tokio::test]
async fn late_flows_are_dead_lettered_counted_and_leave_the_window_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = scan_with_a_late_flow(dir.path());
    let (alerts, dead, metrics) = run_replay(Config::builtin(), &input).await;
    let scans: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"]["id"] == "net.port_scan")
        .collect();
    assert_eq!(scans.len(), 1, "{alerts:?}");
    let evidence = &scans[0]["evidence"][0];
    assert_eq!(evidence["ports"], 30, "the late flow is not in the window");
    assert_eq!(evidence["window_start"], "2026-01-05T08:50:00");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["failure"], "late");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("late: event time 2026-01-05T08:53:30.000Z is before the stream's watermark 2026-01-05T08:58:50.000Z"),
        "{}",
        dead[0]["reason"]
    );
    assert!(
        dead[0]["payload"]
            .as_str()
            .unwrap()
            .contains("\"dst_port\":99")
    );
    assert!(
        metrics.contains("palisade_late_events_total{stream=\"netflow\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("palisade_decode_failures_total{reason=\"late\""),
        "a late event is not a decoding failure"
    );

    // With `process`, the late flow is evaluated: no dead letter; a window closed before it
    // arrived does not change (one record per batch, so the window closed on the flow of
    // 08:59), and the detector counts the flow as too late for it.
    let mut config = Config::builtin();
    let netflow = config.stream_index("netflow").unwrap();
    config.streams[netflow].watermark.late_events = palisade::config::LatePolicy::Process;
    config.pipeline.batch_rows = toml::Spanned::new(0..0, 1);
    let (alerts, dead, metrics) = run_replay(config, &input).await;
    assert!(dead.is_empty(), "{dead:?}");
    let scans: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"]["id"] == "net.port_scan")
        .collect();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0]["evidence"][0]["ports"], 30);
    assert!(metrics.contains("palisade_late_events_total{stream=\"netflow\"} 1"));
    assert!(
        metrics.contains("palisade_detector_state_evicted_total{reason=\"events_late\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn windowed_alerts_do_not_depend_on_batch_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    // Two scans straddling a batch boundary wherever it falls, in two windows.
    let mut lines: Vec<String> = (0..40)
        .map(|i| flow(&format!("08:53:{i:02}"), 20 + i))
        .collect();
    lines.extend((0..35).map(|i| flow(&format!("09:01:{i:02}"), 1000 + i)));
    let input = dir.path().join("netflow.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut seen = Vec::new();
    for rows in [1, 7, 8192] {
        let mut config = Config::builtin();
        config.pipeline.batch_rows = toml::Spanned::new(0..0, rows);
        let (alerts, _, _) = run_replay(config, &input).await;
        let ids: Vec<(String, Value)> = alerts
            .iter()
            .filter(|a| a["rule"]["id"] == "net.port_scan")
            .map(|a| (a["id"].as_str().unwrap().to_string(), a["evidence"].clone()))
            .collect();
        assert_eq!(ids.len(), 2, "batch_rows {rows}: {alerts:?}");
        seen.push(ids);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
}

/// Collects delivered alerts.
struct ToChannel(tokio::sync::mpsc::UnboundedSender<Vec<palisade::alert::Alert>>);

impl Sink for ToChannel {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        let _ = self.0.send(batch.alerts.clone());
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn an_idle_partition_stops_holding_back_the_window() {
    let mut config = Config::builtin();
    let netflow = config.stream_index("netflow").unwrap();
    let w = &mut config.streams[netflow].watermark;
    w.allowed_lateness_ms = 0;
    w.idle_timeout_ms = 300;
    let rules = crate::support::rules_dir(&[(
        "flows.sql",
        "-- id: t.flows\n-- title: Flows per source\n-- severity: low\n-- stream: netflow\n\
         -- window: tumble 1m\n\
         SELECT src_ip, count(*) AS flows FROM netflow GROUP BY src_ip",
    )]);
    let detectors = DetectorSet::load(&config, &[rules.path().to_path_buf()])
        .await
        .unwrap();
    let config = Arc::new(config);
    let (alerts_tx, mut alerts_rx) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = Pipeline {
        pseudonymiser: Pseudonymiser::new(b"t"),
        config: Arc::clone(&config),
        detectors,
        metrics: Arc::new(Metrics::new()),
        sink: Box::new(ToChannel(alerts_tx)),
        committer: Arc::new(NoCommit),
        echo: Echo::Off,
        clock: Clock::Wall,
        reload: None,
        alerting: None,
        checkpoints: None,
        routes: Vec::new(),
        backlog: None,
    };
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel(4);
    let running = tokio::spawn(pipeline.run(raw_rx));
    let batch = |partition: i32, at: &str| {
        let mut b = RawBatch::of_partition(netflow, partition);
        b.push(
            flow(at, 443).as_bytes(),
            Origin {
                source: 0,
                partition,
                offset: 0,
                timestamp_ms: 0,
            },
        );
        b
    };
    // Partition 1 stops at 08:00:10; partition 0 moves on to 08:01:30. Until partition 1 is
    // idle, the watermark stays at 08:00:10 and the window [08:00, 08:01) stays open.
    raw_tx.send(batch(1, "08:00:10")).await.unwrap();
    raw_tx.send(batch(0, "08:00:20")).await.unwrap();
    raw_tx.send(batch(0, "08:01:30")).await.unwrap();
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(20);
    let alerts = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, alerts_rx.recv())
            .await
            .ok()
            .flatten()
            .expect("the window closes once partition 1 is idle");
        if !got.is_empty() {
            break got;
        }
    };
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "emitted after {:?}, before partition 1 could be idle",
        sent.elapsed()
    );
    // State is per input partition (a key's records share one once keyed or repartitioned):
    // one window result per partition.
    assert_eq!(alerts.len(), 2);
    for a in &alerts {
        let evidence = a.evidence[0].get();
        assert!(evidence.contains("\"flows\":1"), "{evidence}");
    }
    drop(raw_tx); // the source ends: the live pipeline stops without closing more windows
    running.await.unwrap().unwrap();
}
