//! The verifier: the signature claims of a request, from its `Authorization` header or its
//! presigned query string, checked against the credential scope, the clock and the body.

use std::time::SystemTime;

use hmac::Mac;
use http::header::{AUTHORIZATION, DATE};
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};

use super::canonical::{
    canonical_query, canonical_request, new_hmac, parse_query, signing_key, string_to_sign,
};
use super::date::{format_basic, parse_basic, parse_http_date, unix_seconds};
use super::{
    ALGORITHM, AuthError, CredentialStore, SERVICES, TERMINATOR, UNSIGNED_PAYLOAD, VerifiedRequest,
    X_AMZ_CONTENT_SHA256, X_AMZ_DATE, incomplete,
};

const Q_ALGORITHM: &[u8] = b"X-Amz-Algorithm";
const Q_CREDENTIAL: &[u8] = b"X-Amz-Credential";
const Q_DATE: &[u8] = b"X-Amz-Date";
const Q_SIGNED_HEADERS: &[u8] = b"X-Amz-SignedHeaders";
const Q_SIGNATURE: &[u8] = b"X-Amz-Signature";
const Q_EXPIRES: &[u8] = b"X-Amz-Expires";

/// AWS rejects header-signed requests whose date is further than this from its clock.
const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest `X-Amz-Expires` AWS accepts on a presigned request (7 days).
const MAX_PRESIGN_EXPIRES_SECS: i64 = 7 * 24 * 60 * 60;

/// Verifies the SigV4 signature of a request, in the `Authorization` header or presigned in the
/// query string. `raw_path` and `raw_query` are exactly as received on the wire (still
/// percent-encoded; the query without its `?`). The credential scope may name any region and
/// one of the [`SERVICES`]. `now` is the server clock.
pub fn verify(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    creds: &CredentialStore,
    now: SystemTime,
) -> Result<VerifiedRequest, AuthError> {
    let request = Request {
        method,
        raw_path,
        raw_query,
        headers,
        body,
    };
    verify_for_services(&request, creds, now, SERVICES)
}

/// What the credential scope of a request must name: the server's region and the signing name
/// of the API the request is for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// The first half of [`verify`], from the request head alone, so that a request that cannot be
/// authentic is refused before its body is read. Everything but the payload is checked here:
/// the claims, the scope against `scope`, the access key, the clock and, when the payload hash
/// comes in a signed `x-amz-content-sha256` header, the signature itself. [`PendingBody::finish`]
/// completes the check once the body has arrived.
pub fn verify_head(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    creds: &CredentialStore,
    now: SystemTime,
    scope: Scope<'_>,
) -> Result<PendingBody, AuthError> {
    let request = Head {
        method,
        raw_path,
        raw_query,
        headers,
    };
    verify_head_in(&request, creds, now, &[scope.service], Some(scope.region))
}

/// A request whose head passed [`verify_head`]; what is left depends on the body.
#[derive(Debug)]
pub struct PendingBody {
    verified: VerifiedRequest,
    check: BodyCheck,
}

#[derive(Debug)]
enum BodyCheck {
    /// The signature covered `UNSIGNED-PAYLOAD`: any body is authentic.
    Unsigned,
    /// The signature covered this hex SHA-256 (lower case), and was verified.
    Hash(String),
    /// The payload hash is part of the signed text but not in a header: the signature can only
    /// be checked with the body. `canonical` ends just before the payload hash.
    Signature {
        canonical: Vec<u8>,
        amz_date: String,
        scope: String,
        key: Vec<u8>,
        signature: String,
    },
}

impl PendingBody {
    /// Whether the signature itself is already verified, so that the body comes from someone
    /// holding the secret key (when false, only the access key id and the clock are known good).
    pub fn is_signature_verified(&self) -> bool {
        !matches!(self.check, BodyCheck::Signature { .. })
    }

    /// Checks `body` against what was signed.
    pub fn finish(self, body: &[u8]) -> Result<VerifiedRequest, AuthError> {
        let computed = || hex::encode(Sha256::digest(body));
        match self.check {
            BodyCheck::Unsigned => {}
            BodyCheck::Hash(expected) => {
                if !expected.eq_ignore_ascii_case(&computed()) {
                    return Err(AuthError::PayloadHashMismatch);
                }
            }
            BodyCheck::Signature {
                mut canonical,
                amz_date,
                scope,
                key,
                signature,
            } => {
                canonical.extend_from_slice(computed().as_bytes());
                check_signature(&canonical, &amz_date, &scope, &key, &signature)?;
            }
        }
        Ok(self.verified)
    }
}

/// Compares a provided signature with the one computed over `canonical`.
fn check_signature(
    canonical: &[u8],
    amz_date: &str,
    scope: &str,
    key: &[u8],
    signature: &str,
) -> Result<(), AuthError> {
    let string_to_sign = string_to_sign(amz_date, scope, canonical);
    let mismatch = || AuthError::SignatureMismatch {
        canonical_request: String::from_utf8_lossy(canonical).into_owned(),
        string_to_sign: string_to_sign.clone(),
    };
    let provided = hex::decode(signature).map_err(|_| mismatch())?;
    let mut mac = new_hmac(key);
    mac.update(string_to_sign.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&provided).map_err(|_| mismatch())
}

pub(super) struct Request<'a> {
    pub(super) method: &'a Method,
    pub(super) raw_path: &'a str,
    pub(super) raw_query: &'a str,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

/// A request without its body.
struct Head<'a> {
    method: &'a Method,
    raw_path: &'a str,
    raw_query: &'a str,
    headers: &'a HeaderMap,
}

/// The credential scope `<id>/<date>/<region>/<service>/aws4_request`.
struct Credential<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// The signature claims of a request, from either the header or the query string.
struct Claims<'a> {
    credential: Credential<'a>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    /// Signing time, seconds since the Unix epoch.
    signed_at: i64,
    /// Signing time in basic format, as it appears in the string to sign.
    amz_date: String,
    canonical_query: String,
    /// `X-Amz-Expires` of a presigned request.
    expires: Option<i64>,
}

pub(super) fn verify_for_services(
    request: &Request<'_>,
    creds: &CredentialStore,
    now: SystemTime,
    services: &[&str],
) -> Result<VerifiedRequest, AuthError> {
    let head = Head {
        method: request.method,
        raw_path: request.raw_path,
        raw_query: request.raw_query,
        headers: request.headers,
    };
    verify_head_in(&head, creds, now, services, None)?.finish(request.body)
}

/// `region`: `None` accepts any.
fn verify_head_in(
    request: &Head<'_>,
    creds: &CredentialStore,
    now: SystemTime,
    services: &[&str],
    region: Option<&str>,
) -> Result<PendingBody, AuthError> {
    let query = parse_query(request.raw_query);
    let presigned = query.iter().any(|(name, _)| name == Q_SIGNATURE);
    let mut authorization = request.headers.get_all(AUTHORIZATION).iter();
    let claims = match (authorization.next(), presigned) {
        (None, false) => return Err(AuthError::MissingAuthenticationToken),
        (Some(_), true) => {
            return Err(incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
            ));
        }
        (Some(value), false) => {
            if authorization.next().is_some() {
                return Err(incomplete("Only one Authorization header is allowed"));
            }
            header_claims(value, request.headers, &query, claim_services(services))?
        }
        (None, true) => query_claims(&query, claim_services(services))?,
    };

    if claims.credential.date != claims.amz_date.get(..8).unwrap_or_default() {
        return Err(incomplete(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            claims.credential.date,
            claims.amz_date.get(..8).unwrap_or_default(),
            claims.amz_date,
        )));
    }
    check_scope(&claims.credential, services, region)?;

    let Some(secret) = creds.secret(claims.credential.access_key_id) else {
        return Err(AuthError::UnrecognizedClient {
            access_key_id: claims.credential.access_key_id.to_owned(),
        });
    };

    check_time(&claims, unix_seconds(now))?;

    let declared = declared_payload(request.headers, &claims.signed_headers)?;
    let Credential {
        access_key_id,
        date,
        region,
        service,
    } = claims.credential;
    let verified = VerifiedRequest {
        access_key_id: access_key_id.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    };
    let scope = format!("{date}/{region}/{service}/{TERMINATOR}");
    let key = signing_key(secret, date, region, service);
    let canonical = canonical_request(
        request.method.as_str(),
        request.raw_path,
        &claims.canonical_query,
        request.headers,
        &claims.signed_headers,
        declared.as_deref().unwrap_or(""),
    );
    let check = match declared {
        None => BodyCheck::Signature {
            canonical,
            amz_date: claims.amz_date,
            scope,
            key,
            signature: claims.signature.to_owned(),
        },
        Some(hash) => {
            check_signature(&canonical, &claims.amz_date, &scope, &key, claims.signature)?;
            if hash == UNSIGNED_PAYLOAD {
                BodyCheck::Unsigned
            } else {
                BodyCheck::Hash(hash)
            }
        }
    };
    Ok(PendingBody { verified, check })
}

/// The services accepted by the claim parsers: every service Flotilla answers to, so that a
/// request for the other API gets the scope error of [`check_scope`] rather than a parse error.
fn claim_services<'a>(services: &'a [&'a str]) -> &'a [&'a str] {
    if services.iter().all(|s| SERVICES.contains(s)) {
        SERVICES
    } else {
        services
    }
}

/// The credential scope names the API's service and the server's region, as AWS requires of a
/// regional endpoint.
fn check_scope(
    credential: &Credential<'_>,
    services: &[&str],
    region: Option<&str>,
) -> Result<(), AuthError> {
    if !services.contains(&credential.service) {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to correct service: '{}'. ",
            services.join("' or '")
        )));
    }
    if let Some(expected) = region
        && credential.region != expected
    {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to a valid region. This endpoint serves '{expected}', not '{}'. ",
            credential.region
        )));
    }
    Ok(())
}

fn header_claims<'a>(
    authorization: &'a HeaderValue,
    headers: &'a HeaderMap,
    query: &[(Vec<u8>, Vec<u8>)],
    services: &[&str],
) -> Result<Claims<'a>, AuthError> {
    let value = authorization
        .to_str()
        .map_err(|_| incomplete("Authorization header is not valid ASCII"))?
        .trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported Authorization algorithm '{algorithm}'; only '{ALGORITHM}' is accepted. Authorization={value}"
        )));
    }

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((name, part_value)) = part.trim().split_once('=') else {
            continue;
        };
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(part_value.trim()).is_some() {
            return Err(incomplete(format!(
                "Authorization header has more than one '{}' parameter. Authorization={value}",
                name.trim()
            )));
        }
    }
    let mut missing = Vec::new();
    for (present, name) in [
        (credential.is_some(), "Credential"),
        (signature.is_some(), "Signature"),
        (signed_headers.is_some(), "SignedHeaders"),
    ] {
        if !present {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(incomplete(format!(
            "{} Authorization={value}",
            missing.join(" ")
        )));
    };
    if signature.is_empty() {
        return Err(incomplete(format!(
            "Authorization header requires 'Signature' parameter. Authorization={value}"
        )));
    }
    let credential = parse_credential(credential, services)?;
    let signed_headers = parse_signed_headers(signed_headers)?;

    let (date_header, date_value) = match single_header(headers, X_AMZ_DATE)? {
        Some(v) => (X_AMZ_DATE, v),
        None => match single_header(headers, DATE.as_str())? {
            Some(v) => (DATE.as_str(), v),
            None => {
                return Err(incomplete(format!(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={value}"
                )));
            }
        },
    };
    let http_date = || {
        (date_header == DATE.as_str())
            .then(|| parse_http_date(date_value))
            .flatten()
    };
    // The string to sign carries the basic-format date; a `Date` header in IMF-fixdate form is
    // converted to it.
    let (signed_at, amz_date) = match parse_basic(date_value) {
        Some(secs) => (secs, date_value.to_owned()),
        None => match http_date() {
            Some(secs) => (secs, format_basic(secs)),
            None => {
                return Err(incomplete(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{date_value}'."
                )));
            }
        },
    };
    // An unsigned date could be replaced to replay the request outside its window.
    if !signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case(date_header))
    {
        return Err(incomplete(format!(
            "'{date_header}' must be a 'SignedHeader' in the AWS Authorization."
        )));
    }

    Ok(Claims {
        credential,
        signed_headers,
        signature,
        signed_at,
        amz_date,
        canonical_query: canonical_query(query.iter()),
        expires: None,
    })
}

fn query_claims<'a>(
    query: &'a [(Vec<u8>, Vec<u8>)],
    services: &[&str],
) -> Result<Claims<'a>, AuthError> {
    let algorithm = query_param(query, Q_ALGORITHM)?;
    let credential = query_param(query, Q_CREDENTIAL)?;
    let date = query_param(query, Q_DATE)?;
    let signed_headers = query_param(query, Q_SIGNED_HEADERS)?;
    let signature = query_param(query, Q_SIGNATURE)?;
    let expires = query_param(query, Q_EXPIRES)?;
    let (
        Some(algorithm),
        Some(credential),
        Some(date),
        Some(signed_headers),
        Some(signature),
        Some(expires),
    ) = (
        algorithm,
        credential,
        date,
        signed_headers,
        signature,
        expires,
    )
    else {
        return Err(incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-SignedHeaders', 'X-Amz-Date', 'X-Amz-Expires'. Re-examine the query-string parameters.",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "X-Amz-Algorithm only supports '{ALGORITHM}', not '{algorithm}'"
        )));
    }
    if signature.is_empty() {
        return Err(incomplete("X-Amz-Signature must not be empty"));
    }
    let expires = expires
        .parse::<i64>()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_EXPIRES_SECS).contains(e))
        .ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGN_EXPIRES_SECS}, not '{expires}'"
            ))
        })?;
    let signed_at = parse_basic(date).ok_or_else(|| {
        incomplete(format!(
            "X-Amz-Date must be in ISO-8601 'basic format'. Got '{date}'."
        ))
    })?;

    Ok(Claims {
        credential: parse_credential(credential, services)?,
        signed_headers: parse_signed_headers(signed_headers)?,
        signature,
        signed_at,
        amz_date: date.to_owned(),
        canonical_query: canonical_query(query.iter().filter(|(name, _)| name != Q_SIGNATURE)),
        expires: Some(expires),
    })
}

/// The value of a query parameter that must appear at most once, as UTF-8.
fn query_param<'a>(
    query: &'a [(Vec<u8>, Vec<u8>)],
    name: &[u8],
) -> Result<Option<&'a str>, AuthError> {
    let mut values = query.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let display = String::from_utf8_lossy(name);
    if values.next().is_some() {
        return Err(incomplete(format!(
            "Query parameter '{display}' must appear only once"
        )));
    }
    std::str::from_utf8(value)
        .map(Some)
        .map_err(|_| incomplete(format!("Query parameter '{display}' is not valid UTF-8")))
}

/// The value of a header that must appear at most once.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(incomplete(format!("Only one '{name}' header is allowed")));
    }
    value
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| incomplete(format!("The '{name}' header is not valid ASCII")))
}

fn parse_credential<'a>(value: &'a str, services: &[&str]) -> Result<Credential<'a>, AuthError> {
    let parts: Vec<&str> = value.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts.as_slice() else {
        return Err(incomplete(format!(
            "Credential must have the form <access key id>/<YYYYMMDD>/<region>/<service>/{TERMINATOR}, not '{value}'."
        )));
    };
    if access_key_id.is_empty() {
        return Err(incomplete("Credential must start with an access key id."));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid date (YYYYMMDD), not '{date}'."
        )));
    }
    if region.is_empty() {
        return Err(incomplete(
            "Credential should be scoped to a valid region, not ''.",
        ));
    }
    if !services.contains(service) {
        return Err(incomplete(format!(
            "Credential should be scoped to correct service: '{}', not '{service}'.",
            services.join("' or '")
        )));
    }
    if *terminator != TERMINATOR {
        return Err(incomplete(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
        )));
    }
    Ok(Credential {
        access_key_id,
        date,
        region,
        service,
    })
}

fn parse_signed_headers(value: &str) -> Result<Vec<&str>, AuthError> {
    let names: Vec<&str> = value.split(';').collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(incomplete(format!(
            "SignedHeaders must be a ';'-separated list of header names, not '{value}'."
        )));
    }
    if !names.iter().any(|n| n.eq_ignore_ascii_case("host")) {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    Ok(names)
}

fn check_time(claims: &Claims<'_>, now: i64) -> Result<(), AuthError> {
    let signed = &claims.amz_date;
    let latest = now.saturating_add(MAX_SKEW_SECS);
    if claims.signed_at > latest {
        return Err(AuthError::Expired(format!(
            "Signature not yet current: {signed} is still later than {} ({} + 15 min.)",
            format_basic(latest),
            format_basic(now)
        )));
    }
    let earliest = match claims.expires {
        None => now.saturating_sub(MAX_SKEW_SECS),
        Some(expires) => now.saturating_sub(expires),
    };
    if claims.signed_at < earliest {
        let window = match claims.expires {
            None => "15 min.".to_owned(),
            Some(expires) => format!("{expires} sec."),
        };
        return Err(AuthError::Expired(format!(
            "Signature expired: {signed} is now earlier than {} ({} - {window})",
            format_basic(earliest),
            format_basic(now)
        )));
    }
    Ok(())
}

/// The payload hash the signer declared in `x-amz-content-sha256`, lower-cased, or
/// `UNSIGNED-PAYLOAD`; `None` when there is no such header (the hash of the body is signed).
/// A declared hash that does not match the body is rejected by [`PendingBody::finish`], or the
/// body could be swapped under a header copied from a captured request.
fn declared_payload(
    headers: &HeaderMap,
    signed_headers: &[&str],
) -> Result<Option<String>, AuthError> {
    let Some(value) = single_header(headers, X_AMZ_CONTENT_SHA256)? else {
        return Ok(None);
    };
    if value == UNSIGNED_PAYLOAD {
        // Unsigned, the header could be added by anyone to exempt a tampered body.
        if !signed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(X_AMZ_CONTENT_SHA256))
        {
            return Err(incomplete(
                "'x-amz-content-sha256: UNSIGNED-PAYLOAD' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        return Ok(Some(value.to_owned()));
    }
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(value.to_owned()));
    }
    Err(incomplete(format!(
        "Unsupported 'x-amz-content-sha256' value '{value}': expected the hex SHA-256 of the body or '{UNSIGNED_PAYLOAD}'."
    )))
}
