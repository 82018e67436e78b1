//! The signer, for tests and tools: signs a request the way the AWS SDKs do.

use std::time::SystemTime;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};

use super::canonical::{
    canonical_query, canonical_request, hmac_sha256, parse_query, signing_key, string_to_sign,
};
use super::date::{format_basic, unix_seconds};
use super::{ALGORITHM, TERMINATOR, X_AMZ_CONTENT_SHA256, X_AMZ_DATE};

/// Headers the SDKs never sign (they are rewritten by proxies or added after signing).
const UNSIGNABLE_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "expect",
    "transfer-encoding",
    "x-amzn-trace-id",
];

/// Signs a request in the `Authorization` header at time `at`, the way the AWS SDKs do, and
/// returns the hex signature. Sets `x-amz-date` and `authorization`; every other header
/// already in `headers` is signed too (except `user-agent` and the other headers the SDKs
/// never sign), so `host` must be set by the caller. The payload hash is the
/// `x-amz-content-sha256` header when present, else SHA-256 of `body`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    service: &str,
    at: SystemTime,
) -> String {
    let amz_date = format_basic(unix_seconds(at));
    let date = amz_date.get(..8).unwrap_or_default();
    headers.remove(AUTHORIZATION);
    headers.insert(
        X_AMZ_DATE,
        HeaderValue::from_str(&amz_date).unwrap_or(HeaderValue::from_static("")),
    );

    let mut signed_headers: Vec<&str> = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| !UNSIGNABLE_HEADERS.contains(name))
        .collect();
    signed_headers.sort_unstable();

    let payload_hash = match headers.get(X_AMZ_CONTENT_SHA256).map(HeaderValue::to_str) {
        Some(Ok(value)) => value.trim().to_owned(),
        _ => hex::encode(Sha256::digest(body)),
    };
    let query = parse_query(raw_query);
    let canonical = canonical_request(
        method.as_str(),
        raw_path,
        &canonical_query(query.iter()),
        headers,
        &signed_headers,
        &payload_hash,
    );
    let scope = format!("{date}/{region}/{service}/{TERMINATOR}");
    let string_to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(secret_access_key, date, region, service);
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
        signed_headers.join(";")
    );
    // An id or region that cannot be a header value leaves the request unsigned; verify then
    // reports it as missing authentication.
    if let Ok(value) = HeaderValue::from_str(&authorization) {
        headers.insert(AUTHORIZATION, value);
    }
    signature
}
