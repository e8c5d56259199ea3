//! The live pipeline through librdkafka's in-process mock cluster: records in, alerts and
//! dead letters out, and offsets committed only once the outputs are acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use palisade::app::{self, Live};
use palisade::config::Config;
use palisade::pipeline::{Clock, Echo, Pipeline, Processed, Sink, SinkError};
use palisade::source::embedded::EmbeddedKafka;
use palisade::source::kafka::{self, KafkaCommitter};
use tokio::sync::{mpsc, watch};

use crate::support::*;

const SCADA: &str = "city.scada";

/// A mock cluster with the default topics (2 partitions each) and a config pointing at it.
fn cluster() -> (EmbeddedKafka, Config) {
    logs();
    let config = config_for("unused");
    let mut topics = config.input_topics();
    topics.push(config.kafka.alerts_topic.clone());
    topics.push(config.kafka.dead_letter_topic.clone());
    let kafka = EmbeddedKafka::start(1, &topics, 2).unwrap();
    let mut config = config;
    config.kafka.brokers = kafka.bootstrap_servers();
    // These tests count detections one by one; suppression has its own tests (alerting.rs).
    config.alerting.suppression.window_secs = 0;
    (kafka, config)
}

fn live(config: &Config) -> Live {
    let mut live = Live::new(config);
    live.metrics_addr = "127.0.0.1:0".parse().unwrap();
    live.echo = Echo::Off;
    live
}

/// 20 benign reads, 3 setpoint writes from unknown hosts, 2 records that cannot be decoded.
fn input() -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    for i in 0..20 {
        records.push((
            format!("ews-0{}", i % 2),
            scada_event(i, &format!("ews-0{}", i % 2), "read").into_bytes(),
        ));
    }
    for (i, host) in ["laptop-7", "kiosk-3", "laptop-7"].iter().enumerate() {
        records.push((
            host.to_string(),
            scada_event(100 + i as u32, host, "setpoint_write").into_bytes(),
        ));
    }
    records.push((
        "bad".into(),
        b"{\"ts\": \"2026-01-05T03:00:00Z\", \"value\": ".to_vec(),
    ));
    records.push((
        "bad".into(),
        br#"{"ts":"2026-01-05T03:00:00Z","value":"very high"}"#.to_vec(),
    ));
    records
}

#[test]
fn records_become_alerts_and_bad_records_dead_letters() {
    block_on_bounded(records_become_alerts_and_bad_records_dead_letters_body());
}

async fn records_become_alerts_and_bad_records_dead_letters_body() {
    let (_kafka, config) = cluster();
    let brokers = config.kafka.brokers.clone();
    let group = config.kafka.group_id.clone();
    produce(&brokers, SCADA, &input()).await;
    let rules = rules_dir(&[("rogue.sql", ROGUE_RULE)]);
    let config = Arc::new(config);
    let detectors = app::load_detectors(&config, &[rules.path().to_path_buf()])
        .await
        .unwrap();
    let live = live(&config);
    let metrics = Arc::clone(&live.metrics);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let live = Live {
        on_listening: Some(addr_tx),
        ..live
    };
    let (stop_tx, stop) = watch::channel(false);
    let (_force_tx, force) = watch::channel(false);
    let run = tokio::spawn(app::run_live(
        Arc::clone(&config),
        detectors,
        live,
        stop,
        force,
    ));
    let addr = addr_rx.await.unwrap().to_string();

    let alerts = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), config.kafka.alerts_topic.clone());
        move || read_topic(&b, &t, 3, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let dead = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), config.kafka.dead_letter_topic.clone());
        move || read_topic(&b, &t, 2, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&addr, "/metrics"))
        .await
        .unwrap();
    stop_tx.send(true).unwrap();
    let summary = run.await.unwrap().unwrap();

    // Alerts: one per suspicious write, keyed by entity, in the documented schema.
    assert_eq!(alerts.len(), 3);
    let mut entities: Vec<String> = alerts
        .iter()
        .map(|a| String::from_utf8(a.key.clone()).unwrap())
        .collect();
    entities.sort();
    assert_eq!(entities, ["kiosk-3", "laptop-7", "laptop-7"]);
    for a in &alerts {
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        assert_eq!(v["schema"], "palisade.alert.v1");
        assert_eq!(v["rule"]["id"], "test.rogue_setpoint");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["entity"].as_str().unwrap().as_bytes(), a.key.as_slice());
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert_eq!(v["evidence"][0]["asset"], "plc-1");
    }
    // Dead letters: original bytes, with where they came from and why.
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d.headers["palisade.source.topic"], SCADA);
        assert_eq!(d.headers["palisade.stream"], "scada");
        assert!(d.headers["palisade.source.offset"].parse::<i64>().is_ok());
        assert!(!d.headers["palisade.reason"].is_empty());
    }
    let mut kinds: Vec<&str> = dead
        .iter()
        .map(|d| d.headers["palisade.failure"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["malformed", "schema"]);
    assert!(
        dead.iter()
            .any(|d| d.value == br#"{"ts":"2026-01-05T03:00:00Z","value":"very high"}"#)
    );

    assert_eq!(
        (summary.records, summary.alerts, summary.dead_letters),
        (25, 3, 2)
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("palisade_records_total{stream=\"scada\"} 25"),
        "{body}"
    );
    assert!(
        body.contains("palisade_decode_failures_total{reason=\"schema\",stream=\"scada\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(
            "palisade_alerts_total{rule=\"test.rogue_setpoint\",severity=\"critical\"} 3"
        ),
        "{body}"
    );
    assert_eq!(metrics.latency.count(), 3);
    // Everything was processed, so everything is committed.
    let (committed, end) =
        tokio::task::spawn_blocking(move || committed_and_end(&brokers, &group, SCADA))
            .await
            .unwrap();
    assert_eq!((committed, end), (25, 25));
}

/// A sink that tells the test what it was handed and never acknowledges it.
struct Stuck(mpsc::UnboundedSender<usize>);

impl Sink for Stuck {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        let _ = self.0.send(batch.alerts.len());
        Box::pin(futures::future::pending())
    }
}

#[test]
fn offsets_wait_for_alert_acknowledgement_so_a_crash_loses_nothing() {
    block_on_bounded(offsets_wait_for_alert_acknowledgement_so_a_crash_loses_nothing_body());
}

async fn offsets_wait_for_alert_acknowledgement_so_a_crash_loses_nothing_body() {
    let (_kafka, config) = cluster();
    let brokers = config.kafka.brokers.clone();
    let group = config.kafka.group_id.clone();
    // Suspicious writes only: every batch carries alerts.
    let records: Vec<_> = input().into_iter().skip(20).take(3).collect();
    produce(&brokers, SCADA, &records).await;
    let rules = rules_dir(&[("rogue.sql", ROGUE_RULE)]);
    let config = Arc::new(config);

    // First life: alerts reach a sink that never acknowledges them.
    let live1 = live(&config);
    let consumer = Arc::new(
        kafka::consumer(
            &config,
            Arc::clone(&live1.metrics),
            Arc::clone(&live1.health),
        )
        .unwrap(),
    );
    let sources = Arc::new(config.input_topics());
    let (stop_tx, stop) = watch::channel(false);
    let (raw_tx, raw_rx) = mpsc::channel(4);
    let source = tokio::spawn(kafka::run(
        Arc::clone(&consumer),
        Arc::clone(&config),
        Arc::clone(&sources),
        Arc::clone(&live1.health),
        raw_tx,
        stop,
    ));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let committer = Arc::new(KafkaCommitter {
        consumer: Arc::clone(&consumer),
        sources,
    });
    let pipeline = Pipeline {
        config: Arc::clone(&config),
        detectors: app::load_detectors(&config, &[rules.path().to_path_buf()])
            .await
            .unwrap(),
        metrics: Arc::clone(&live1.metrics),
        sink: Box::new(Stuck(seen_tx)),
        committer: Arc::clone(&committer) as _,
        echo: Echo::Off,
        clock: Clock::Wall,
        pseudonymiser: app::pseudonymiser(&config),
        reload: None,
        alerting: None,
        checkpoints: None,
        routes: Vec::new(),
        backlog: None,
    };
    let run = tokio::spawn(pipeline.run(raw_rx));
    // Wait until the sink holds a batch with alerts (the rest queue up behind it).
    let handed = tokio::time::timeout(Duration::from_secs(60), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(handed > 0);
    // The worst moment for the auto-commit timer to fire: commit whatever is stored now.
    committer.commit_now();
    let (committed, _) = tokio::task::spawn_blocking({
        let (b, g) = (brokers.clone(), group.clone());
        move || committed_and_end(&b, &g, SCADA)
    })
    .await
    .unwrap();
    assert_eq!(
        committed, 0,
        "offsets of unacknowledged alerts must not be committed"
    );
    // Crash: no flush, no final commit.
    run.abort();
    source.abort();
    let _ = stop_tx;
    drop(committer);
    drop(consumer);

    // Second life, same group: the alerts are produced after all.
    let (stop_tx, stop) = watch::channel(false);
    let (_force_tx, force) = watch::channel(false);
    let detectors = app::load_detectors(&config, &[rules.path().to_path_buf()])
        .await
        .unwrap();
    let run = tokio::spawn(app::run_live(
        Arc::clone(&config),
        detectors,
        live(&config),
        stop,
        force,
    ));
    let alerts = tokio::task::spawn_blocking({
        let (b, t) = (brokers.clone(), config.kafka.alerts_topic.clone());
        move || read_topic(&b, &t, 3, Duration::from_secs(60))
    })
    .await
    .unwrap();
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(alerts.len(), 3);
    let (committed, end) =
        tokio::task::spawn_blocking(move || committed_and_end(&brokers, &group, SCADA))
            .await
            .unwrap();
    assert_eq!((committed, end), (3, 3));
}

/// A sink whose every delivery fails for good (as a checkpoint that cannot be written does).
struct Failing;

impl Sink for Failing {
    fn deliver<'a>(&'a mut self, _: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::Checkpoint("the broker is gone".into())) })
    }
}

#[tokio::test]
async fn a_failed_delivery_ends_a_live_run_while_its_source_stays_open() {
    // The run must end with the error so the caller can resume from the last checkpoint;
    // the compute thread, fed only idle ticks by an open source, has to notice too.
    let config = Arc::new(config_for("unused"));
    let rules = rules_dir(&[("rogue.sql", ROGUE_RULE)]);
    let scada = config.stream_index("scada").unwrap();
    let pipeline = Pipeline {
        config: Arc::clone(&config),
        detectors: app::load_detectors(&config, &[rules.path().to_path_buf()])
            .await
            .unwrap(),
        metrics: Arc::new(palisade::metrics::Metrics::new()),
        sink: Box::new(Failing),
        committer: Arc::new(palisade::pipeline::NoCommit),
        echo: Echo::Off,
        clock: Clock::Wall,
        pseudonymiser: app::pseudonymiser(&config),
        reload: None,
        alerting: None,
        checkpoints: None,
        routes: Vec::new(),
        backlog: None,
    };
    let (raw_tx, raw_rx) = mpsc::channel(4);
    let mut batch = palisade::source::RawBatch::new(scada);
    batch.push(
        scada_event(1, "laptop-7", "setpoint_write").as_bytes(),
        palisade::source::Origin {
            source: 0,
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
        },
    );
    raw_tx.send(batch).await.unwrap();
    // `raw_tx` stays open: a live source that has nothing more to say.
    let outcome = tokio::time::timeout(Duration::from_secs(30), pipeline.run(raw_rx))
        .await
        .expect("the run ends once its delivery failed");
    assert!(
        matches!(outcome, Err(SinkError::Checkpoint(_))),
        "{outcome:?}"
    );
    drop(raw_tx);
}
