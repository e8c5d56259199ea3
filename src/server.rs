//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//!
//! The only module that knows HTTP. `/healthz` answers 200 while the process serves at all;
//! `/readyz` answers 200 only while the pipeline consumes and its sinks deliver, 503 with the
//! reason otherwise, so an orchestrator can take a stuck instance out of rotation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Readiness, as the sum of named checks (`kafka`, `sink`, ...): ready when every check
/// passes. Each component owns its check, so one recovering cannot hide another's failure.
#[derive(Debug, Default)]
pub struct Health {
    checks: Mutex<BTreeMap<&'static str, (bool, String)>>,
    /// Mirrors readiness as `palisade_ready`.
    gauge: Option<IntGauge>,
}

impl Health {
    /// Health exported through `gauge` as well.
    pub fn with_gauge(gauge: IntGauge) -> Health {
        Health {
            checks: Mutex::default(),
            gauge: Some(gauge),
        }
    }

    /// Sets check `name` to passing or failing, with a reason shown by `/readyz`.
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let mut checks = self.checks.lock().expect("health lock never poisoned");
        checks.insert(name, (ok, detail.into()));
        if let Some(g) = &self.gauge {
            g.set(i64::from(checks.values().all(|(ok, _)| *ok)));
        }
    }

    /// Whether every check passes (and there is at least one).
    pub fn is_ready(&self) -> bool {
        let checks = self.checks.lock().expect("health lock never poisoned");
        !checks.is_empty() && checks.values().all(|(ok, _)| *ok)
    }

    /// Whether check `name` passes.
    pub fn check(&self, name: &str) -> bool {
        self.checks
            .lock()
            .expect("health lock never poisoned")
            .get(name)
            .is_some_and(|(ok, _)| *ok)
    }

    /// One line per check: `name: ok|FAILING: detail`.
    pub fn detail(&self) -> String {
        let checks = self.checks.lock().expect("health lock never poisoned");
        checks
            .iter()
            .map(|(name, (ok, detail))| {
                format!("{name}: {} ({detail})", if *ok { "ok" } else { "FAILING" })
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running metrics server.
pub struct Server {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves until `shutdown` turns true.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            continue;
                        }
                    },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                };
                let (metrics, health) = (Arc::clone(&metrics), Arc::clone(&health));
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        respond(req, Arc::clone(&metrics), Arc::clone(&health))
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                    }
                });
            }
        });
        Ok(Server { addr, task })
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn respond(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&Method::GET, "/readyz") => {
            let status = if health.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let word = if health.is_ready() {
                "ready"
            } else {
                "not ready"
            };
            (
                status,
                "text/plain",
                format!("{word}: {}\n", health.detail()),
            )
        }
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid");
    Ok(response)
}
