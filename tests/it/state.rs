//! Durable state and scale-out, through the command line against librdkafka's mock cluster
//! (in this process, speaking the Kafka protocol on loopback): the city written by
//! `palisade simulate --brokers`, processed by one or three `palisade run` instances of one
//! consumer group (one of them killed with SIGKILL midway), puts on the alerts topic the
//! alert ids that `palisade replay` gives on the same city.
//!
//! The mock cluster accepts transactions but does not hide aborted ones from `read_committed`
//! readers (its Fetch answers no aborted transactions and the end offset as the last stable
//! one), so what these tests check is the de-duplication guarantee: the *set* of alert ids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};

use crate::support::*;

/// A correlation over the auth stream (keyed by user): its windows span checkpoints,
/// restarts and rebalances, so it fires at the same events only if its state survives them.
const LOGIN_RULE: &str = "title: Successful login
id: 7a1c0b7e-0000-4000-8000-000000000001
name: login_ok
status: test
logsource:
    product: palisade
    service: auth
detection:
    selection:
        result: success
    condition: selection
level: informational
";
const LOGIN_BURST: &str = "title: Several logins of one user within half an hour
id: 7a1c0b7e-0000-4000-8000-000000000002
name: login_burst
status: test
correlation:
    type: event_count
    rules:
        - login_ok
    group-by:
        - user
    timespan: 30m
    condition:
        gte: 3
level: low
";

const SEED: &str = "11";
const DURATION: &str = "40m";

/// Shipped rules that group by a field other than their stream's Kafka key (the simulator
/// keys `auth` by user; the spray groups by source address). Without repartitioning their
/// windows would be per input partition: a spray spread over three partitions would fire
/// three partial alerts live and one whole alert in a replay. They are kept out of the
/// SIGKILL tests: the mock cluster shows `read_committed` readers the records of aborted
/// transactions, so a killed instance's repartitioned records are read twice and the
/// spray's `count(*)` (part of the alert id) differs (seen: one extra alert id with three
/// instances, one killed).
const OFF_KEY_RULES: &[&str] = &["auth/password_spray.sql"];

/// Which rules an instance runs besides the login correlation.
#[derive(Clone, Copy)]
enum RuleSet {
    /// The shipped rules grouped by their stream's key.
    Keyed,
    /// Only [`OFF_KEY_RULES`].
    OffKey,
}

/// The shipped rules of `set` plus the login correlation.
fn rules(dir: &Path, set: RuleSet) -> std::path::PathBuf {
    let rules = dir.join("rules");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in walk(&shipped) {
        let rel = entry
            .strip_prefix(&shipped)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let off_key = OFF_KEY_RULES.contains(&rel.as_str());
        match set {
            RuleSet::Keyed if off_key => continue,
            RuleSet::OffKey if !off_key => continue,
            _ => {}
        }
        let to = rules.join(entry.strip_prefix(&shipped).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    std::fs::write(rules.join("login_ok.yml"), LOGIN_RULE).unwrap();
    std::fs::write(rules.join("login_burst.yml"), LOGIN_BURST).unwrap();
    rules
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.to_string_lossy().ends_with(".tests.yml") {
            out.push(p);
        }
    }
    out
}

/// The alerts of `palisade replay` over `palisade simulate --output` (same seed), by id.
fn replay_ids(dir: &Path) -> BTreeMap<String, String> {
    let city = dir.join("city.jsonl");
    let alerts = dir.join("alerts.jsonl");
    let out = bin()
        .args([
            "simulate",
            "--seed",
            SEED,
            "--duration",
            DURATION,
            "--output",
        ])
        .arg(&city)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["replay", "--input"])
        .arg(&city)
        .arg("--output")
        .arg(&alerts)
        .arg("--config")
        .arg(config_file(dir, "replay"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&alerts).unwrap();
    let bursts = text.lines().filter(|l| l.contains(LOGIN_BURST_ID)).count();
    assert!(
        bursts >= 3,
        "the login correlation fires in the city: {bursts}"
    );
    text.lines()
        .filter_map(|l| Some((alert_id(l.as_bytes())?, l.to_string())))
        .collect()
}

const LOGIN_BURST_ID: &str = "7a1c0b7e-0000-4000-8000-000000000002";

/// The alert's id. (With `PALISADE_TEST_VERBOSE` set,
/// also its rule, entity and event time, to tell what differs when the test fails.)
fn alert_id(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let rule = v["rule"]["id"].as_str()?;
    let id = v["id"].as_str().unwrap().to_string();
    let id = if std::env::var_os("PALISADE_TEST_VERBOSE").is_some() {
        format!(
            "{id} {rule} {} {} {}",
            v["entity"], v["event_time"], v["evidence"]
        )
    } else {
        id
    };
    Some(id)
}

/// A configuration file: the built-in one with the shipped rules and quick checkpoints, and
/// no suppression (a replay folds nothing, so live alerts are compared one for one);
/// `instance` names the transactional id.
fn config_file(dir: &Path, instance: &str) -> std::path::PathBuf {
    let rules = dir.join("rules");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let text = std::fs::read_to_string(deploy.join("palisade.toml"))
        .unwrap()
        .replace(
            r#"rules = ["../rules"]"#,
            &format!("rules = [{:?}]", rules.display().to_string()),
        )
        .replace(
            r#"inventory = "inventory.csv""#,
            &format!(
                "inventory = {:?}",
                deploy.join("inventory.csv").display().to_string()
            ),
        )
        .replace("window_secs = 600", "window_secs = 0");
    let text =
        format!("{text}\n[state]\ncheckpoint_interval_ms = 300\ninstance_id = \"{instance}\"\n");
    let path = dir.join(format!("{instance}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One `palisade run` of group `group`.
fn instance(dir: &Path, brokers: &str, group: &str, name: &str) -> (Child, Lines) {
    let mut child = bin()
        .args(["run", "--config"])
        .arg(config_file(dir, name))
        .args([
            "--brokers",
            brokers,
            "--group",
            group,
            "--format",
            "none",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    (child, stderr)
}

/// What [`alert_ids_until`] read off the alerts topic.
struct Read {
    ids: BTreeSet<String>,
    records: usize,
    /// Each id's alert as it was written, to show which rule an unexpected id came from.
    alerts: BTreeMap<String, String>,
}

/// Reads the alerts topic (`read_committed`) until `done` holds for the ids seen or the
/// deadline passes.
fn alert_ids_until(
    brokers: &str,
    timeout: Duration,
    mut done: impl FnMut(&BTreeSet<String>) -> bool,
) -> Read {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("palisade.alerts", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut ids = BTreeSet::new();
    let mut alerts = BTreeMap::new();
    let mut records = 0;
    while Instant::now() < deadline && !done(&ids) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            records += 1;
            let payload = m.payload().unwrap_or_default();
            if let Some(id) = alert_id(payload) {
                ids.insert(id.clone());
                alerts.insert(id, String::from_utf8_lossy(payload).into_owned());
            }
        }
    }
    Read {
        ids,
        records,
        alerts,
    }
}

/// The cluster, with the topics palisade reads and writes (3 partitions each).
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    let config = palisade::config::Config::builtin();
    for topic in config.input_topics() {
        cluster.create_topic(&topic, 3, 1).unwrap();
    }
    for topic in ["palisade.alerts", "palisade.dead-letter"] {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    cluster
}

/// Writes the city, runs `n` instances, kills the first with SIGKILL each time the share of
/// the expected alerts on the topic reaches one of `kills` (then starts it again under the
/// same name when `restart`), and compares the alert ids on the topic with the replay's.
fn live_equals_replay(n: usize, kills: &[f64], restart: bool, set: RuleSet) {
    let cluster = cluster();
    let group = format!("state-{}", free_port());
    // The mock cluster does not answer topic creation by the admin API in time: the
    // changelog and the internal topic of the spray's route (auth re-keyed by src_ip) are
    // created here, as an operator would.
    for topic in [
        format!("{group}.state"),
        format!("{group}.repartition.auth.src_ip"),
    ] {
        cluster.create_topic(&topic, 3, 1).unwrap();
    }
    let logs = live_equals_replay_on(&cluster.bootstrap_servers(), &group, n, kills, restart, set);
    // The mock cluster completes transactions.
    assert!(logs.contains(r#"mode="exactly_once""#), "{logs}");
}

/// [`live_equals_replay`] on the broker at `brokers`, with consumer group `group`.
/// Returns the logs of the instances that were not killed.
fn live_equals_replay_on(
    brokers: &str,
    group: &str,
    n: usize,
    kills: &[f64],
    restart: bool,
    set: RuleSet,
) -> String {
    let (brokers, group) = (brokers.to_string(), group.to_string());
    let dir = tempfile::tempdir().unwrap();
    rules(dir.path(), set);
    let replayed = replay_ids(dir.path());
    let expected: BTreeSet<String> = replayed.keys().cloned().collect();
    assert!(expected.len() > 5, "the city raises alerts: {expected:?}");
    let out = bin()
        .args([
            "simulate",
            "--brokers",
            &brokers,
            "--seed",
            SEED,
            "--duration",
            DURATION,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut instances: Vec<(Child, Lines)> = (0..n)
        .map(|i| instance(dir.path(), &brokers, &group, &format!("i{i}")))
        .collect();
    let mut killed = false;
    for share in kills {
        let want = (expected.len() as f64 * share) as usize;
        let some = alert_ids_until(&brokers, Duration::from_secs(120), |ids| {
            ids.len() >= want.max(1)
        });
        assert!(!some.ids.is_empty(), "alerts before the kill");
        instances[0].0.kill().unwrap(); // SIGKILL
        instances[0].0.wait().unwrap();
        killed = true;
        if restart {
            instances[0] = instance(dir.path(), &brokers, &group, "i0");
            killed = false;
        }
    }
    let read = alert_ids_until(&brokers, Duration::from_secs(180), |ids| {
        expected.is_subset(ids)
    });
    // Extra alerts would show by now.
    let read = if read.ids == expected {
        alert_ids_until(&brokers, Duration::from_secs(3), |_| false)
    } else {
        read
    };
    let (ids, records) = (&read.ids, read.records);
    let mut logs = String::new();
    for (i, (child, stderr)) in instances.iter_mut().enumerate() {
        if killed && i == 0 {
            logs.push_str(&stderr.rest(Duration::from_secs(1)).join("\n"));
            continue;
        }
        let addr = metrics_addr(stderr);
        let diag: String = http_get(&addr, "/metrics")
            .1
            .lines()
            .filter(|l| l.contains("evicted_total") || l.contains("late_events_total"))
            .map(|l| format!("i{i} {l}\n"))
            .collect();
        signal(child, "TERM");
        let status = child.wait().unwrap();
        let log = diag + &stderr.rest(Duration::from_secs(5)).join("\n");
        assert!(status.success(), "instance {i} exited with {status}: {log}");
        logs.push_str(&log);
    }
    let extra: Vec<&String> = ids
        .difference(&expected)
        .map(|id| &read.alerts[id])
        .collect();
    assert_eq!(
        extra,
        Vec::<&String>::new(),
        "alerts replay does not give ({records} records read)\n{logs}"
    );
    let missing: Vec<&String> = expected.difference(ids).map(|id| &replayed[id]).collect();
    assert_eq!(
        missing,
        Vec::<&String>::new(),
        "alerts missing from the topic ({records} records read)\n{logs}"
    );
    logs
}

#[test]
fn one_instance_gives_the_alerts_of_replay() {
    live_equals_replay(1, &[], false, RuleSet::Keyed);
}

#[test]
fn a_window_grouped_off_the_partition_key_gives_the_alerts_of_replay() {
    // The spray's source address writes to all three partitions of `auth` (keyed by user).
    live_equals_replay(1, &[], false, RuleSet::OffKey);
}

#[test]
fn three_instances_give_the_alerts_of_replay_even_when_one_is_killed() {
    live_equals_replay(3, &[0.3], false, RuleSet::Keyed);
}

#[test]
fn on_tansu_three_instances_give_the_alerts_of_replay_even_when_one_is_killed() {
    // tansu 0.6 does not complete transactions: the at-least-once path, whose duplicates
    // carry the same ids (the comparison is of id sets). Two tansu behaviours made this test
    // fail before palisade handled them: its coordinator at times drops the killed member
    // without rebalancing the survivors, so the killed member's partitions had no reader
    // (the group check rejoins: `source::group`); and the failed transaction probe left an
    // open transaction on changelog partition 0 that pinned its last stable offset at 0, so
    // a `read_committed` restore saw none of that partition's state (at least once, the
    // changelog is read `read_uncommitted`). And it showed what the mock cluster had not: a
    // survivor taking over a partition its previous owner had read to the end got no record
    // of it, so its watermark never moved and the windows restored with it never closed
    // (checkpoints now carry each partition's event-time progress). `PALISADE_TEST_RUST_LOG`
    // and `PALISADE_TEST_VERBOSE` show what differs when it fails.
    let broker = Tansu::start();
    let group = format!("tansu-state-{}", free_port());
    let logs = live_equals_replay_on(&broker.addr, &group, 3, &[0.3], false, RuleSet::Keyed);
    assert!(logs.contains(r#"mode="at_least_once""#), "{logs}");
}

#[test]
fn killed_and_restarted_at_several_points_every_alert_is_produced() {
    // Shares of the expected alerts at which the instance is killed: early, midway, late.
    live_equals_replay(1, &[0.1, 0.45, 0.8], true, RuleSet::Keyed);
}

/// Reads the alerts topic until `want` distinct ids arrived (or `timeout`); all ids.
fn all_ids_until(brokers: &str, want: usize, timeout: Duration) -> BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("palisade.alerts", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut ids = BTreeSet::new();
    while ids.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            ids.insert(v["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// Waits for `cond` with a deadline.
async fn until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_broker_outage_and_request_errors_pause_the_pipeline_and_lose_nothing() {
    block_on_bounded(a_broker_outage_and_request_errors_pause_the_pipeline_and_lose_nothing_body());
}

async fn a_broker_outage_and_request_errors_pause_the_pipeline_and_lose_nothing_body() {
    use palisade::app::{Live, run_live};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::sync::Arc;

    logs();
    let cluster = MockCluster::new(3).unwrap();
    for topic in ["city.scada", "palisade.alerts", "palisade.dead-letter"] {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let mut config = config_for(&brokers);
    config.state.checkpoint_interval_ms = 200;
    let rules = rules_dir(&[("rogue.sql", ROGUE_RULE)]);
    let detectors = palisade::detect::DetectorSet::load(&config, &[rules.path().to_path_buf()])
        .await
        .unwrap();
    let mut live = Live::new(&config);
    live.metrics_addr = "127.0.0.1:0".parse().unwrap();
    live.rules = vec![rules.path().to_path_buf()];
    let health = Arc::clone(&live.health);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_force_tx, force) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(run_live(Arc::new(config), detectors, live, stop, force));

    // Every fifth event is a rogue setpoint write: one alert each.
    let events = |range: std::ops::Range<u32>| -> Vec<(String, Vec<u8>)> {
        range
            .map(|s| {
                let host = if s % 5 == 0 {
                    format!("laptop-{s}")
                } else {
                    "ews-1".into()
                };
                (
                    host.clone(),
                    scada_event(s, &host, "setpoint_write").into_bytes(),
                )
            })
            .collect()
    };
    produce(&brokers, "city.scada", &events(0..100)).await;
    let b = brokers.clone();
    let first = tokio::task::spawn_blocking(move || all_ids_until(&b, 20, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(first.len(), 20, "alerts of the first half");
    until("ready", Duration::from_secs(30), || health.is_ready()).await;

    // Every broker goes away: the pipeline reports not ready.
    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    until(
        "not ready during the outage",
        Duration::from_secs(60),
        || !health.is_ready(),
    )
    .await;
    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    // Back, but answering some requests with retriable errors: produce, transaction commit,
    // and offset commit in the transaction.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3];
    cluster.request_errors(RDKafkaApiKey::Produce, &errors);
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 2],
    );
    cluster.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 2],
    );
    produce(&brokers, "city.scada", &events(100..200)).await;
    let b = brokers.clone();
    let all = tokio::task::spawn_blocking(move || all_ids_until(&b, 40, Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(first.is_subset(&all));
    assert_eq!(
        all.len(),
        40,
        "every alert once the brokers are back: {all:?}"
    );
    until("ready again", Duration::from_secs(60), || health.is_ready()).await;
    stop_tx.send(true).unwrap();
    // It stops cleanly. (Its record count is not checked: a run the outage ended, say by
    // wedging the transactional producer, is redone from its last checkpoint and counted
    // by the run that redid it.)
    run.await.unwrap().unwrap();
}
