//! A minimal HTTP/1.1 client for the notification sinks: `POST` a JSON body, read the status
//! and (a bounded prefix of) the response. One connection per request, built on hyper's
//! connection API, so palisade needs no HTTP client crate. Plain `http://` only.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::alert::config::HttpSinkConfig;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    authority: String,
    /// Path and query of the request.
    path: String,
}

/// A request that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("HTTP exchange with {addr} failed: {source}")]
    Protocol {
        /// The address.
        addr: String,
        /// The cause.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("no answer from {0} in time")]
    Timeout(String),
}

/// A response: status and the start of the body (for error messages).
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Up to 1 KiB of the body, lossily decoded.
    pub body: String,
}

impl Endpoint {
    /// The endpoint of `url` (checked as in the configuration), with `suffix` appended to its
    /// path (`/api/v2/alerts` for Alertmanager).
    pub fn parse(url: &str, suffix: &str) -> Result<Endpoint, String> {
        let uri = HttpSinkConfig::check_url(url)?;
        let host = uri.host().expect("checked").to_string();
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let mut path = uri.path().trim_end_matches('/').to_string();
        if suffix.is_empty() && path.is_empty() {
            path.push('/');
        }
        path.push_str(suffix);
        if let Some(q) = uri.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Endpoint {
            addr: format!("{host}:{port}"),
            authority,
            path,
        })
    }

    /// `POST`s `body` as JSON; an answer of any status is `Ok`.
    pub async fn post_json(&self, body: Vec<u8>, timeout: Duration) -> Result<Response, HttpError> {
        tokio::time::timeout(timeout, self.exchange(body))
            .await
            .map_err(|_| HttpError::Timeout(self.addr.clone()))?
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<Response, HttpError> {
        let protocol = |source| HttpError::Protocol {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|source| HttpError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        // The connection is driven by its own task; it ends when the exchange is done.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "palisade")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let response = sender.send_request(request).await.map_err(protocol)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(protocol)?;
            if let Some(data) = frame.data_ref()
                && text.len() < 1024
            {
                text.extend_from_slice(&data[..data.len().min(1024 - text.len())]);
            }
        }
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&text).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_paths() {
        let e = Endpoint::parse("http://am:9093", "/api/v2/alerts").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.path.as_str()),
            ("am:9093", "/api/v2/alerts")
        );
        let e = Endpoint::parse("http://am:9093/prefix/", "/api/v2/alerts").unwrap();
        assert_eq!(e.path, "/prefix/api/v2/alerts");
        let e = Endpoint::parse("http://soar.local/hook?token=x", "").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.path.as_str()),
            ("soar.local:80", "/hook?token=x")
        );
        assert!(
            Endpoint::parse("https://x", "")
                .unwrap_err()
                .contains("https")
        );
        assert!(Endpoint::parse("am:9093", "").is_err());
    }
}
