//! Shared helpers: the binary under test, brokers, and reading topics back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The `palisade` binary built for these tests (`PALISADE_BIN` overrides it: the uplifted
/// `target/debug/palisade` is shared by every checkout that builds into one target dir).
pub fn bin() -> Command {
    let path =
        std::env::var_os("PALISADE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_palisade").into());
    let mut c = Command::new(path);
    // `PALISADE_TEST_RUST_LOG` sets the children's filter (to debug a failing test).
    let filter = std::env::var("PALISADE_TEST_RUST_LOG")
        .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".to_string());
    c.env("RUST_LOG", filter);
    c
}

/// Logs of in-process pipelines, shown for failing tests (`RUST_LOG` filters).
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built-in configuration pointed at `brokers`, with short lingers for tests.
pub fn config_for(brokers: &str) -> Config {
    let mut c = Config::builtin();
    c.kafka.brokers = brokers.to_string();
    c.pipeline.linger_ms = 20;
    c.kafka.group_id = format!("test-{}", free_port());
    c
}

/// A rule folder holding the given `(file name, text)` rules.
pub fn rules_dir(rules: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in rules {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A SCADA event; `host` not starting with `ews-` makes a setpoint write suspicious.
pub fn scada_event(second: u32, host: &str, action: &str) -> String {
    format!(
        r#"{{"ts":"2026-01-05T03:{:02}:{:02}Z","operator":"op","host":"{host}","src_ip":"10.0.0.1","asset":"plc-1","domain":"water","action":"{action}","tag":"t","value":2.0,"previous":1.0}}"#,
        second / 60,
        second % 60
    )
}

/// The rule used by the pipeline tests.
pub const ROGUE_RULE: &str = "-- id: test.rogue_setpoint
-- title: Setpoint written from an unknown host
-- severity: critical
-- stream: scada
SELECT ts, host, asset, value FROM scada WHERE action = 'setpoint_write' AND host NOT LIKE 'ews-%'
";

/// Produces `(key, value)` records to `topic`, waiting for every acknowledgement.
pub async fn produce(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(topic).key(key.as_bytes()).payload(value),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads `topic` from the beginning until `want` records arrived or `timeout` passed.
pub fn read_topic(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Committed offset (sum over partitions) of `group` on `topic`, and the sum of high watermarks.
pub fn committed_and_end(brokers: &str, group: &str, topic: &str) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut end = 0;
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
        end += consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap()
            .1;
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let sum = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
        .sum();
    (sum, end)
}

/// The metrics address `palisade run` prints on stderr at start (`metrics on http://ADDR/...`).
pub fn metrics_addr(stderr: &Lines) -> String {
    let banner = stderr
        .find(Duration::from_secs(60), |l| {
            l.contains("metrics on http://")
        })
        .expect("metrics address printed");
    banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address after http://")
        .to_string()
}

/// A plain HTTP GET on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends `signal` (e.g. "INT", "TERM") to a child process.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Lines of a child's output, read on a thread of their own so a test can wait with a
/// deadline instead of blocking on a pipe.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// Starts reading `r` line by line.
    pub fn spawn(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// Lines until one satisfies `found` (returned) or `timeout` passes (`None`).
    pub fn find(&self, timeout: Duration, mut found: impl FnMut(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if found(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// JSON lines until `done` holds for what was read, or `timeout` passes.
    pub fn json_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut values = Vec::new();
        while !done(&values) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.rx.recv_timeout(left) {
                Ok(line) => values.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")),
                ),
                Err(_) => break,
            }
        }
        values
    }

    /// Every remaining line until the writer closes (or `timeout`).
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        out
    }
}

/// The `tansu` broker binary, installed by tests/run.sh.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("tansu");
        if p.exists() {
            return p;
        }
    }
    let home = Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    assert!(
        home.exists(),
        "the tansu broker is not installed: run tests/run.sh, or `cargo install tansu --locked --features dynostore`"
    );
    home
}

/// A tansu broker on a free loopback port, stopped on drop.
pub struct Tansu {
    child: Child,
    pub addr: String,
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        // Wait for the listener: the broker is ready when it accepts a connection.
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, addr }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `test` on a two-thread runtime, then shuts the runtime down within a bound. For the
/// tests that run a live pipeline in this process against a mock cluster: when such a test
/// fails, its cluster is dropped while the pipeline's tasks still call into librdkafka, and
/// a transaction call waits for its coordinator without a limit; an ordinary
/// `#[tokio::test]` runtime would wait for that call forever when dropped, so the failure
/// would hang the suite instead of being reported.
pub fn block_on_bounded(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(test)));
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
