//! The load generator's HTTP client: SigV4-signed restJson1 requests over HTTP/1.1 keep-alive,
//! one connection per concurrent client, signed with [`crate::api::sigv4::sign`] exactly as the
//! AWS SDKs sign.
//!
//! The official SDK client ([`sdk_client`]) does the same on the wire; on two cores its
//! per-request CPU (the orchestrator, interceptors, retries, endpoint resolution) competes with
//! the server it is measuring, so the bench uses this lean client by default and the SDK one
//! with `--client sdk` (docs/performance.md has both figures).

use std::time::SystemTime;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::server::{ACCESS_KEY, SECRET_KEY};

const REGION: &str = "us-east-1";

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

/// One keep-alive connection. Not shared: each concurrent client owns one, as N separate
/// clients would.
pub struct Conn {
    endpoint: Endpoint,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(endpoint: &Endpoint) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(&endpoint.addr)
            .await
            .with_context(|| format!("connecting to {}", endpoint.addr))?;
        // Requests are small and answered at once; Nagle would add delayed-ACK stalls.
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "bench connection closed");
            }
        });
        Ok(Conn {
            endpoint: endpoint.clone(),
            host: HeaderValue::from_str(&endpoint.addr)?,
            sender,
        })
    }

    /// `POST /v1/<op lower case>` with a JSON body, signed. Returns the HTTP status and body.
    pub async fn post(&mut self, op: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let path = format!("/v1/{}", op.to_ascii_lowercase());
        self.send(Method::POST, &path, "", body).await
    }

    /// A signed `GET path?query` of one of the server's own endpoints (`/cost`), failing on a
    /// non-2xx answer.
    pub async fn get(&mut self, path: &str, query: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send(Method::GET, path, query, Bytes::new()).await?;
        if !(200..300).contains(&status) {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut headers = HeaderMap::new();
        headers.insert("host", self.host.clone());
        if method == Method::POST {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        crate::api::sigv4::sign(
            &method,
            path,
            query,
            &mut headers,
            &body,
            ACCESS_KEY,
            SECRET_KEY,
            REGION,
            "batch",
            SystemTime::now(),
        );
        let uri = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))?;
        *req.headers_mut() = headers;
        if self.sender.ready().await.is_err() {
            // The server closed an idle connection; a new one is what a client would open.
            *self = Conn::open(&self.endpoint.clone()).await?;
        }
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// [`Conn::post`] of a JSON value, failing on a non-2xx answer with the server's message.
    pub async fn call(&mut self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, bytes) = self
            .post(op, Bytes::from(serde_json::to_vec(body)?))
            .await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            bail!(
                "{op}: HTTP {status}: {}",
                value["message"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(value)
    }
}

/// The official AWS SDK client, for `--client sdk`. No retries: a retried request would hide a
/// failure and blur its latency.
pub fn sdk_client(endpoint: &Endpoint) -> aws_sdk_batch::Client {
    use aws_sdk_batch::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_batch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(format!("http://{}", endpoint.addr))
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "flotilla-bench",
        ))
        .retry_config(aws_sdk_batch::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_batch::Client::from_conf(conf)
}

/// Sum of the counter samples named `name` whose labels contain every `label="value"` in
/// `labels`, from Prometheus/OpenMetrics text.
pub fn counter_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A persistent `/metrics` reader on one connection (the e2e sampler scrapes every 500 ms).
pub struct MetricsConn {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl MetricsConn {
    pub fn new(endpoint: &Endpoint) -> Self {
        MetricsConn {
            endpoint: endpoint.clone(),
            sender: None,
        }
    }

    pub async fn scrape(&mut self) -> anyhow::Result<String> {
        if self.sender.as_mut().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.endpoint.addr).await?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            bail!("no connection");
        };
        sender.ready().await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri("/metrics")
            .header("host", &self.endpoint.addr)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("/metrics: HTTP {status}");
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_label() {
        let text = "# TYPE flotilla_job_state_transitions counter\n\
            flotilla_job_state_transitions_total{from=\"RUNNING\",to=\"SUCCEEDED\"} 7\n\
            flotilla_job_state_transitions_total{from=\"RUNNING\",to=\"FAILED\"} 2\n\
            flotilla_job_state_transitions_total{from=\"STARTING\",to=\"FAILED\"} 1\n";
        let n = "flotilla_job_state_transitions_total";
        assert_eq!(counter_sum(text, n, &[("to", "SUCCEEDED")]), 7.0);
        assert_eq!(counter_sum(text, n, &[("to", "FAILED")]), 3.0);
        assert_eq!(counter_sum(text, n, &[]), 10.0);
        assert_eq!(counter_sum(text, "other", &[]), 0.0);
    }
}
