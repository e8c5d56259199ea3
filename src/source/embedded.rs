//! The embedded city: an in-process Kafka cluster (librdkafka's mock cluster) and the writer
//! that feeds it, or any real Kafka, or a file, from the simulator.
//!
//! The mock cluster speaks the real Kafka protocol on loopback, so `palisade run` with no
//! arguments exercises exactly the consumer, producer and commit paths a deployment does.

use std::io::Write;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::sim::{SimRecord, Simulator};

/// An in-process Kafka cluster. Not `Send`: keep it on the task that created it.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers with `topics` created (`partitions` each).
    pub fn start(
        brokers: i32,
        topics: &[String],
        partitions: i32,
    ) -> Result<EmbeddedKafka, KafkaError> {
        let cluster = MockCluster::new(brokers)?;
        for topic in topics {
            cluster.create_topic(topic, partitions, 1)?;
        }
        Ok(EmbeddedKafka { cluster })
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The mock cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the broker takes it.
    Unpaced,
    /// `x` simulated seconds per real second.
    Speed(f64),
}

/// Totals of a simulator run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Records written.
    pub records: u64,
    /// Of which carry an attack label.
    pub labelled: u64,
}

/// Writes the simulated city into Kafka until its duration ends or `stop` turns true.
/// Every record is acknowledged by the broker before the next simulated second starts.
pub async fn produce(
    producer: &FutureProducer,
    mut sim: Simulator,
    pace: Pace,
    mut stop: watch::Receiver<bool>,
) -> Result<Written, KafkaError> {
    let mut records = Vec::new();
    let mut incidents = Vec::new();
    let mut written = Written::default();
    let start = tokio::time::Instant::now();
    let mut second = 0u64;
    while sim.next_second(&mut records) {
        second += 1;
        // Into Kafka only the labelled records go: the ground truth is not kept (an endless
        // run would pile it up).
        sim.take_incidents(&mut incidents);
        incidents.clear();
        let sends = records.iter().map(|r| {
            producer.send(
                FutureRecord::to(r.topic)
                    .key(r.key.as_bytes())
                    .payload(&r.value),
                Timeout::Never,
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        written.records += records.len() as u64;
        written.labelled += records.iter().filter(|r| r.label.is_some()).count() as u64;
        if let Pace::Speed(x) = pace {
            let due = start + Duration::from_secs_f64(second as f64 / x);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        } else if *stop.borrow() {
            break;
        }
    }
    Ok(written)
}

/// A simulated record in the replay envelope format.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    topic: &'a str,
    key: &'a str,
    timestamp: i64,
    value: &'a RawValue,
}

/// Writes the simulated city as JSONL envelopes (the format `replay` reads).
pub fn write_jsonl(
    out: &mut dyn Write,
    mut sim: Simulator,
    mut truth: Option<&mut dyn Write>,
) -> std::io::Result<Written> {
    let mut records: Vec<SimRecord> = Vec::new();
    let mut incidents = Vec::new();
    let mut written = Written::default();
    while sim.next_second(&mut records) {
        for r in &records {
            let text = std::str::from_utf8(&r.value).map_err(std::io::Error::other)?;
            let value: &RawValue = serde_json::from_str(text).map_err(std::io::Error::other)?;
            let line = EnvelopeOut {
                topic: r.topic,
                key: &r.key,
                timestamp: r.ts_ms,
                value,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            written.records += 1;
            written.labelled += u64::from(r.label.is_some());
        }
        if let Some(truth) = truth.as_deref_mut() {
            sim.take_incidents(&mut incidents);
            for i in incidents.drain(..) {
                let line = serde_json::json!({
                    "scenario": i.scenario.name(),
                    "entity": i.entity,
                    "field": i.field,
                    "start": crate::alert::format_time_ms(i.start_ms),
                    "end": crate::alert::format_time_ms(i.end_ms),
                });
                serde_json::to_writer(&mut *truth, &line)?;
                truth.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    if let Some(truth) = truth {
        truth.flush()?;
    }
    Ok(written)
}
