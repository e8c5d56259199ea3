//! Sinks: where acknowledged-or-retried output goes.
//!
//! - [`KafkaSink`]: alerts to the alerts topic (keyed by entity), dead letters to the
//!   dead-letter topic (original bytes as the value; source, offset and reason as headers).
//!   Resolves only when the broker has acknowledged every message (`acks=all`, idempotent
//!   producer); failed messages are retried with backoff until they succeed or shutdown is
//!   forced, and the pipeline reports not-ready meanwhile.
//!   With repartitioning, it also produces the records and watermark markers of the routes'
//!   internal topics (see [`crate::repartition`]), each to its partition, in batch order.
//! - [`JsonlSink`]: alerts as JSON lines to a file or stdout, dead letters as JSON lines to a
//!   file or the log (replay).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::decode::DeadLetter;
use crate::metrics::Metrics;
use crate::pipeline::{Processed, Sink, SinkError};
use crate::server::Health;
use crate::source::kafka::client_config;

/// Creates the producer for alerts and dead letters.
pub fn producer(config: &Config) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut c = client_config(config);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Surface a broker that stays away, so the retry loop (and /readyz) can see it.
        .set("message.timeout.ms", "30000");
    for (k, v) in &config.kafka.producer {
        c.set(k, v);
    }
    c.create()
}

/// Alerts and dead letters to Kafka.
pub struct KafkaSink {
    producer: crate::state::SharedProducer,
    alerts_topic: String,
    dead_letter_topic: String,
    /// Topic names by source index, for dead-letter headers.
    sources: Arc<Vec<String>>,
    streams: Vec<String>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Turns true when shutdown is forced: stop retrying.
    force: watch::Receiver<bool>,
    /// The routes' internal topics, by route index.
    route_topics: Vec<String>,
}

impl KafkaSink {
    /// A sink writing to the configured topics.
    pub fn new(
        config: &Config,
        producer: crate::state::SharedProducer,
        sources: Arc<Vec<String>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        force: watch::Receiver<bool>,
    ) -> KafkaSink {
        KafkaSink {
            producer,
            alerts_topic: config.kafka.alerts_topic.clone(),
            dead_letter_topic: config.kafka.dead_letter_topic.clone(),
            sources,
            streams: config
                .streams
                .iter()
                .map(|s| s.name.get_ref().clone())
                .collect(),
            metrics,
            health,
            force,
            route_topics: Vec::new(),
        }
    }

    /// Also produces to the routes' internal topics (`topics`, by route index).
    pub fn with_routes(mut self, topics: Vec<String>) -> KafkaSink {
        self.route_topics = topics;
        self
    }
}

/// One message to produce.
struct Outgoing<'a> {
    topic: &'a str,
    /// An explicit partition (internal topics), else the key's.
    partition: Option<i32>,
    key: &'a [u8],
    value: std::borrow::Cow<'a, [u8]>,
    headers: Option<OwnedHeaders>,
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut pending: Vec<Outgoing<'a>> =
                Vec::with_capacity(batch.alerts.len() + batch.dead.len());
            for alert in &batch.alerts {
                pending.push(Outgoing {
                    partition: None,
                    topic: &self.alerts_topic,
                    key: alert.entity.as_bytes(),
                    value: alert.to_json().into_bytes().into(),
                    headers: None,
                });
            }
            let stream = self.streams[batch.stream].as_str();
            for dead in &batch.dead {
                pending.push(Outgoing {
                    partition: None,
                    topic: &self.dead_letter_topic,
                    key: &[],
                    value: dead.payload.as_slice().into(),
                    headers: Some(dead_letter_headers(dead, &self.sources, stream)),
                });
            }
            for s in &batch.shuffled {
                let headers = s.mark.map(|(source, progress)| {
                    OwnedHeaders::new().insert(Header {
                        key: crate::repartition::MARK_HEADER,
                        value: Some(&crate::repartition::encode_mark(source, progress)),
                    })
                });
                pending.push(Outgoing {
                    topic: &self.route_topics[s.route],
                    partition: Some(s.partition),
                    key: &s.key,
                    value: s.payload.as_slice().into(),
                    headers,
                });
            }
            let mut attempt = 0u32;
            loop {
                let producer = self.producer.get();
                let sends = pending.iter().map(|m| {
                    let mut record = FutureRecord::to(m.topic)
                        .payload(m.value.as_ref())
                        .key(m.key);
                    if let Some(h) = &m.headers {
                        record = record.headers(h.clone());
                    }
                    if let Some(p) = m.partition {
                        record = record.partition(p);
                    }
                    producer.send(record, Timeout::Never)
                });
                let results = join_all(sends).await;
                let mut last_error = None;
                let mut failed = Vec::new();
                for (m, r) in pending.into_iter().zip(results) {
                    if let Err((e, _)) = r {
                        last_error = Some(e);
                        failed.push(m);
                    }
                }
                pending = failed;
                if pending.is_empty() {
                    if attempt > 0 {
                        self.health.set("sink", true, "delivering; recovered");
                    }
                    return Ok(());
                }
                attempt += 1;
                self.metrics
                    .sink_retries
                    .with_label_values(&["kafka"])
                    .inc_by(pending.len() as u64);
                let error = last_error.map(|e| e.to_string()).unwrap_or_default();
                self.health.set(
                    "sink",
                    false,
                    format!("{} messages unacknowledged: {error}", pending.len()),
                );
                tracing::warn!(attempt, unacknowledged = pending.len(), %error, "delivery failed; retrying");
                let backoff = Duration::from_millis(100 * 2u64.pow(attempt.min(7)));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.force.wait_for(|f| *f) => return Err(SinkError::Aborted(pending.len())),
                }
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // Every send was awaited already; flush is a formality that bounds shutdown.
            let producer = self.producer.get();
            let _ = tokio::task::spawn_blocking(move || {
                rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10))
            })
            .await;
            Ok(())
        })
    }
}

fn dead_letter_headers(dead: &DeadLetter, sources: &[String], stream: &str) -> OwnedHeaders {
    let source = sources
        .get(dead.origin.source as usize)
        .map(String::as_str)
        .unwrap_or("");
    OwnedHeaders::new()
        .insert(Header {
            key: "palisade.reason",
            value: Some(dead.reason.as_str()),
        })
        .insert(Header {
            key: "palisade.failure",
            value: Some(dead.kind.as_str()),
        })
        .insert(Header {
            key: "palisade.stream",
            value: Some(stream),
        })
        .insert(Header {
            key: "palisade.source.topic",
            value: Some(source),
        })
        .insert(Header {
            key: "palisade.source.partition",
            value: Some(&dead.origin.partition.to_string()),
        })
        .insert(Header {
            key: "palisade.source.offset",
            value: Some(&dead.origin.offset.to_string()),
        })
}

/// A dead letter as a JSON line (replay).
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    stream: &'a str,
    source: &'a str,
    line: i64,
    failure: &'a str,
    reason: &'a str,
    payload: std::borrow::Cow<'a, str>,
}

/// Alerts as JSON lines; dead letters as JSON lines or log warnings.
pub struct JsonlSink {
    alerts: Box<dyn Write + Send>,
    dead: Option<Box<dyn Write + Send>>,
    sources: Arc<Vec<String>>,
    streams: Vec<String>,
}

impl JsonlSink {
    /// Writes alerts to `alerts`, dead letters to `dead` (or the log when `None`).
    pub fn new(
        config: &Config,
        alerts: Box<dyn Write + Send>,
        dead: Option<Box<dyn Write + Send>>,
        sources: Arc<Vec<String>>,
    ) -> JsonlSink {
        JsonlSink {
            alerts,
            dead,
            sources,
            streams: config
                .streams
                .iter()
                .map(|s| s.name.get_ref().clone())
                .collect(),
        }
    }
}

impl Sink for JsonlSink {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for alert in &batch.alerts {
                serde_json::to_writer(&mut self.alerts, alert).map_err(std::io::Error::from)?;
                self.alerts.write_all(b"\n")?;
            }
            for dead in &batch.dead {
                let line = DeadLetterLine {
                    stream: &self.streams[batch.stream],
                    source: self
                        .sources
                        .get(dead.origin.source as usize)
                        .map(String::as_str)
                        .unwrap_or(""),
                    line: dead.origin.offset,
                    failure: dead.kind.as_str(),
                    reason: &dead.reason,
                    payload: String::from_utf8_lossy(&dead.payload),
                };
                match &mut self.dead {
                    Some(w) => {
                        serde_json::to_writer(&mut *w, &line).map_err(std::io::Error::from)?;
                        w.write_all(b"\n")?;
                    }
                    None => tracing::warn!(
                        source = line.source,
                        line = line.line,
                        reason = line.reason,
                        "record skipped: cannot be decoded"
                    ),
                }
            }
            Ok(())
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.alerts.flush()?;
            if let Some(w) = &mut self.dead {
                w.flush()?;
            }
            Ok(())
        })
    }
}
