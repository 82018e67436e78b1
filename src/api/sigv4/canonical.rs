//! The canonical request, the string to sign and the signing key: what signer and verifier
//! must build byte for byte alike.

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::{Digest, Sha256};

use super::{ALGORITHM, TERMINATOR};

type HmacSha256 = Hmac<Sha256>;

/// RFC 3986 unreserved characters are the only ones SigV4 leaves unencoded.
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const ENCODE_SET_PATH: &AsciiSet = &ENCODE_SET.remove(b'/');

pub(super) fn canonical_request(
    method: &str,
    raw_path: &str,
    canonical_query: &str,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(raw_path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query.as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        // Bytes, not str: a value with obs-text still has one well-defined canonical form.
        for (i, value) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, value.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Only spaces count, as in `aws-sigv4`: tabs inside a value are kept.
pub(super) fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let mut previous_space = false;
    let start = out.len();
    for &b in value {
        if b == b' ' {
            previous_space = true;
            continue;
        }
        if previous_space && out.len() > start {
            out.push(b' ');
        }
        previous_space = false;
        out.push(b);
    }
}

pub(super) fn canonical_uri(raw_path: &str) -> String {
    percent_encode(normalize_path(raw_path).as_bytes(), ENCODE_SET_PATH).to_string()
}

/// `aws-sigv4`'s `normalize_uri_path`: RFC 3986 5.2.4 dot-segment removal that also drops
/// empty segments, on the still-encoded path (so `%2E%2E` is not a dot segment).
pub(super) fn normalize_path(path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if !path.contains('.') && !path.contains("//") {
        return path;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let ends_with_slash = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|suffix| path.ends_with(suffix));
    if ends_with_slash && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Splits a wire query into decoded `(name, value)` pairs. Bytes, not strings: `%FF` is kept as
/// the byte it names and re-encodes to itself.
pub(super) fn parse_query(raw_query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn decode(s: &str) -> Vec<u8> {
        let plus_as_space = s.replace('+', " ");
        percent_decode(plus_as_space.as_bytes()).collect()
    }
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

pub(super) fn canonical_query<'a>(params: impl Iterator<Item = &'a (Vec<u8>, Vec<u8>)>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .map(|(name, value)| {
            (
                percent_encode(name, ENCODE_SET).to_string(),
                percent_encode(value, ENCODE_SET).to_string(),
            )
        })
        .collect();
    encoded.sort_unstable();
    let pairs: Vec<String> = encoded
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request))
    )
}

pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

pub(super) fn new_hmac(key: &[u8]) -> HmacSha256 {
    // HMAC hashes or pads keys of any length; new_from_slice cannot fail for it.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = new_hmac(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
