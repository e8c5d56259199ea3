//! Notification sinks (Alertmanager, webhook) beside the alerts topic, each with a bounded
//! buffer, retries with exponential backoff, and counted overflow.
//!
//! [`Fanout`] is the pipeline's sink when notifications are configured: it delivers a batch to
//! the primary sink (the alerts topic, acknowledged by the broker) and then hands its alerts
//! to each [`Notifier`]'s buffer. A notifier's own task sends the buffer in requests of up to
//! `max_batch` alerts and retries failures (connection refused, timeouts, 5xx, 408, 429) with
//! backoff from `min_backoff_ms` doubling to `max_backoff_ms`; a 4xx answer is a refusal that
//! retrying cannot fix, so those alerts are counted as failed (`reason="rejected"`) and logged
//! with the receiver's answer. `max_attempts` (0: unlimited) bounds the retries of one request.
//!
//! The alerts topic is the record; notifications are its pager-facing copy. When a buffer is
//! full, `overflow = "drop_oldest"` (default) drops the oldest buffered notification and
//! counts it (`palisade_sink_dropped_total`, an on-call alert rule in `deploy/`) so a receiver
//! that is down for long cannot stop detection; `overflow = "block"` instead holds the
//! pipeline (no consumption, no commit) until there is room. At shutdown the buffers get
//! `drain` time to empty; what is left is counted (`reason="shutdown"`) and logged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::alert::config::{HttpSinkConfig, Overflow};
use crate::alert::http::Endpoint;
use crate::alert::{Alert, Severity};
use crate::metrics::Metrics;
use crate::pipeline::{Processed, Sink, SinkError};

/// How a sink renders a request.
pub trait Format: Send + Sync + 'static {
    /// The request body for `alerts` (never empty).
    fn body(&self, alerts: &[Alert]) -> Vec<u8>;
}

/// The buffer shared by the pipeline side and the sending task.
struct Queue {
    items: VecDeque<Alert>,
    /// Alerts taken by the task and not yet settled (count against the capacity).
    in_flight: usize,
    closed: bool,
}

struct Shared {
    name: &'static str,
    queue: Mutex<Queue>,
    /// Items were added or the queue was closed.
    wake: Notify,
    /// Room was made.
    room: Notify,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("notifier lock never poisoned")
    }

    fn gauge(&self, q: &Queue) {
        self.metrics
            .sink_buffered
            .with_label_values(&[self.name])
            .set((q.items.len() + q.in_flight) as i64);
    }
}

/// One notification sink: a bounded buffer and the task that empties it.
pub struct Notifier {
    shared: Arc<Shared>,
    min_urgency: Severity,
    overflow: Overflow,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    /// Starts the sink `name` sending to `endpoint` in `format`.
    pub fn start(
        name: &'static str,
        config: &HttpSinkConfig,
        default_min_urgency: Severity,
        endpoint: Endpoint,
        format: Box<dyn Format>,
        metrics: Arc<Metrics>,
    ) -> Notifier {
        let shared = Arc::new(Shared {
            name,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                in_flight: 0,
                closed: false,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            capacity: config.buffer,
            metrics,
        });
        let sender = Sender {
            shared: Arc::clone(&shared),
            endpoint,
            format,
            max_batch: config.max_batch,
            timeout: Duration::from_millis(config.timeout_ms),
            min_backoff: Duration::from_millis(config.min_backoff_ms),
            max_backoff: Duration::from_millis(config.max_backoff_ms),
            max_attempts: config.max_attempts,
        };
        Notifier {
            shared,
            min_urgency: config.min_urgency.unwrap_or(default_min_urgency),
            overflow: config.overflow,
            task: Some(tokio::spawn(sender.run())),
        }
    }

    /// Buffers the alerts urgent enough for this sink. With `overflow = "block"` waits for
    /// room (until `force`); otherwise makes room by dropping the oldest, counted.
    pub async fn offer(&self, alerts: &[Alert], force: &mut watch::Receiver<bool>) {
        let s = &self.shared;
        for alert in alerts {
            if alert.context.urgency.unwrap_or(alert.severity) < self.min_urgency {
                continue;
            }
            loop {
                let room = s.room.notified();
                {
                    let mut q = s.lock();
                    if q.items.len() + q.in_flight < s.capacity {
                        q.items.push_back(alert.clone());
                        s.gauge(&q);
                        break;
                    }
                    if self.overflow == Overflow::DropOldest || *force.borrow() {
                        // The oldest waiting one goes; if every slot is in flight, this one.
                        let dropped = q.items.pop_front();
                        if dropped.is_some() {
                            q.items.push_back(alert.clone());
                        }
                        s.metrics.sink_dropped.with_label_values(&[s.name]).inc();
                        tracing::warn!(
                            sink = s.name,
                            capacity = s.capacity,
                            "notification buffer full; dropped the oldest (the alerts topic keeps it)"
                        );
                        break;
                    }
                }
                tokio::select! {
                    _ = room => {}
                    _ = force.wait_for(|f| *f) => {}
                }
            }
        }
        s.wake.notify_one();
    }

    /// Closes the buffer and waits up to `drain` for it to empty (less if `force` turns
    /// true); what remains is counted as failed and logged.
    pub async fn close(&mut self, drain: Duration, force: &mut watch::Receiver<bool>) {
        let s = &self.shared;
        s.lock().closed = true;
        s.wake.notify_one();
        let Some(mut task) = self.task.take() else {
            return;
        };
        let finished = tokio::select! {
            r = &mut task => r.is_ok(),
            _ = tokio::time::sleep(drain) => false,
            _ = force.wait_for(|f| *f) => false,
        };
        if !finished {
            task.abort();
            let _ = task.await;
        }
        let mut q = s.lock();
        let left = q.items.len() + q.in_flight;
        if left > 0 {
            s.metrics
                .sink_failures
                .with_label_values(&[s.name, "shutdown"])
                .inc_by(left as u64);
            tracing::error!(
                sink = s.name,
                undelivered = left,
                "stopping with notifications undelivered (they are on the alerts topic)"
            );
        }
        q.items.clear();
        q.in_flight = 0;
        s.gauge(&q);
    }
}

/// The task side of a notifier.
struct Sender {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    format: Box<dyn Format>,
    max_batch: usize,
    timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_attempts: u32,
}

impl Sender {
    async fn run(self) {
        let s = &self.shared;
        loop {
            let next: Option<Vec<Alert>> = {
                let mut q = s.lock();
                if q.items.is_empty() {
                    if q.closed {
                        return;
                    }
                    None
                } else {
                    let n = q.items.len().min(self.max_batch);
                    q.in_flight = n;
                    Some(q.items.drain(..n).collect())
                }
            };
            let Some(chunk) = next else {
                s.wake.notified().await;
                continue;
            };
            self.send(&chunk).await;
            {
                let mut q = s.lock();
                q.in_flight = 0;
                s.gauge(&q);
            }
            s.room.notify_one();
        }
    }

    /// Sends one request until it is acknowledged, refused, or out of attempts.
    async fn send(&self, chunk: &[Alert]) {
        let s = &self.shared;
        let n = chunk.len() as u64;
        let body = self.format.body(chunk);
        let mut attempt = 0u32;
        loop {
            let error = match self.endpoint.post_json(body.clone(), self.timeout).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    s.metrics
                        .sink_delivered
                        .with_label_values(&[s.name])
                        .inc_by(n);
                    if attempt > 0 {
                        tracing::info!(
                            sink = s.name,
                            attempt,
                            "notifications delivered after retries"
                        );
                    }
                    return;
                }
                Ok(r) if (400..500).contains(&r.status) && r.status != 408 && r.status != 429 => {
                    s.metrics
                        .sink_failures
                        .with_label_values(&[s.name, "rejected"])
                        .inc_by(n);
                    tracing::error!(
                        sink = s.name,
                        status = r.status,
                        answer = r.body,
                        alerts = n,
                        "receiver refused notifications; not retrying"
                    );
                    return;
                }
                Ok(r) => format!("status {}: {}", r.status, r.body),
                Err(e) => e.to_string(),
            };
            attempt += 1;
            s.metrics
                .sink_retries
                .with_label_values(&[s.name])
                .inc_by(n);
            if self.max_attempts > 0 && attempt >= self.max_attempts {
                s.metrics
                    .sink_failures
                    .with_label_values(&[s.name, "attempts"])
                    .inc_by(n);
                tracing::error!(sink = s.name, attempt, %error, alerts = n, "giving up on notifications");
                return;
            }
            let backoff = self
                .min_backoff
                .saturating_mul(1 << attempt.min(16))
                .min(self.max_backoff);
            tracing::warn!(sink = s.name, attempt, %error, ?backoff, "notification failed; retrying");
            tokio::time::sleep(backoff).await;
        }
    }
}

/// The primary sink, then the notifiers.
pub struct Fanout {
    /// The alerts topic (or any sink whose acknowledgement gates commits).
    pub primary: Box<dyn Sink>,
    /// Notification sinks.
    pub notifiers: Vec<Notifier>,
    /// Forced shutdown: stop waiting for room or for buffers to drain.
    pub force: watch::Receiver<bool>,
    /// How long buffers may take to empty at shutdown.
    pub drain: Duration,
}

impl Sink for Fanout {
    fn deliver<'a>(&'a mut self, batch: &'a Processed) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.primary.deliver(batch).await?;
            for n in &self.notifiers {
                n.offer(&batch.alerts, &mut self.force).await;
            }
            Ok(())
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let result = self.primary.finish().await;
            for n in &mut self.notifiers {
                n.close(self.drain, &mut self.force).await;
            }
            result
        })
    }
}
