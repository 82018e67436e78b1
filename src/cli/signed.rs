//! Requests to the server's own endpoints beside the AWS Batch API (`/events`, `/cost`, and
//! the raw DescribeJobs whose Flotilla members the SDK drops), signed with SigV4 like the SDK's.

use super::client::Ctx;
use anyhow::{Context, anyhow};
use aws_credential_types::provider::ProvideCredentials;
use http_body_util::BodyExt;

/// The headers that sign `method path?query` with `body` for the server at `ctx.endpoint`.
pub async fn headers(
    ctx: &Ctx,
    method: &http::Method,
    path_and_query: &str,
    body: &[u8],
) -> anyhow::Result<http::HeaderMap> {
    let base: hyper::Uri = ctx
        .endpoint
        .parse()
        .with_context(|| format!("--endpoint-url {}", ctx.endpoint))?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let c = ctx.credentials.provide_credentials().await?;
    let host = base.authority().map(|h| h.to_string()).unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    if let Some(token) = c.session_token() {
        headers.insert("x-amz-security-token", token.parse()?);
    }
    crate::api::sigv4::sign(
        method,
        path,
        query,
        &mut headers,
        body,
        c.access_key_id(),
        c.secret_access_key(),
        &ctx.region,
        "batch",
        std::time::SystemTime::now(),
    );
    Ok(headers)
}

/// Sends a signed request and returns the body of a 2xx answer; any other answer is an error
/// carrying the server's message.
pub async fn request(
    ctx: &Ctx,
    method: http::Method,
    path_and_query: &str,
    body: Vec<u8>,
) -> anyhow::Result<bytes::Bytes> {
    let headers = headers(ctx, &method, path_and_query, &body).await?;
    let client: crate::util::http::Client<http_body_util::Full<bytes::Bytes>> =
        crate::util::http::client()?;
    let mut req = hyper::Request::builder()
        .method(method.clone())
        .uri(format!(
            "{}{path_and_query}",
            ctx.endpoint.trim_end_matches('/')
        ));
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = client
        .request(req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?)
        .await
        .map_err(|e| anyhow!("cannot reach {}: {e}", ctx.endpoint))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(anyhow!("{method} {path_and_query}: {status}: {message}"));
    }
    Ok(bytes)
}
