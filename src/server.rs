//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//!
//! The only module that knows HTTP. `/healthz` answers 200 while the process serves at all;
//! `/readyz` answers 200 only while the pipeline consumes and its sinks deliver, 503 with the
//! reason otherwise, so an orchestrator can take a stuck instance out of rotation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Readiness as the pipeline sees it.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    detail: Mutex<String>,
}

impl Health {
    /// Marks ready (or not) with a reason shown by `/readyz`.
    pub fn set(&self, ready: bool, detail: impl Into<String>) {
        self.ready.store(ready, Ordering::SeqCst);
        *self.detail.lock().expect("health lock never poisoned") = detail.into();
    }

    /// Whether the pipeline is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The reason given with the last change.
    pub fn detail(&self) -> String {
        self.detail
            .lock()
            .expect("health lock never poisoned")
            .clone()
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
