//! AWS Signature Version 4: request verification, plus a signer for tests and tools.
//!
//! The verifier rebuilds the canonical request from what arrived on the wire exactly as the
//! AWS SDK for Rust (`aws-sigv4`), botocore and the AWS CLI build it when signing for a
//! service other than S3:
//!
//! - canonical URI: the wire path, dot segments and empty segments removed (RFC 3986 5.2.4, as
//!   `aws-sigv4` does), then percent-encoded *again* with the SigV4 unreserved set, `/` kept
//!   ("double encoding": `%3A` on the wire is `%253A` in the canonical URI);
//! - canonical query: every `name=value` decoded (`+` is a space, as `aws-sigv4` reads it) and
//!   re-encoded strictly, sorted by encoded name then encoded value;
//! - canonical headers: the `SignedHeaders` in the order given, values trimmed of spaces with
//!   inner runs of spaces collapsed, repeated headers joined by `,`;
//! - payload hash: the `x-amz-content-sha256` header when present, else SHA-256 of the body.
//!
//! HTTP/2 requests carry the host in `:authority`, which hyper puts in the URI rather than the
//! header map: callers must copy it into a `host` header before calling [`verify`].
//!
//! Files: [`verify`](verify()) and its claim parsing in `verify.rs`; the canonical request, string
//! to sign and key derivation shared by both directions in `canonical.rs`; the signer in
//! `sign.rs`; the access keys in `credentials.rs`; the two date formats in `date.rs`. Tests, and
//! AWS's published vectors under `tests/data/sigv4/`, in `tests.rs`.

mod canonical;
mod credentials;
mod date;
mod sign;
mod verify;

#[cfg(test)]
mod tests;

use http::StatusCode;

pub use credentials::CredentialStore;
pub use sign::sign;
pub use verify::{PendingBody, Scope, verify, verify_head};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Signing names (the service part of the credential scope) that Flotilla answers to.
pub const SERVICES: &[&str] = &["batch", "logs"];

/// Why a request failed authentication. Every variant is answered with HTTP 403.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor an `X-Amz-Signature` query parameter.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,
    /// The signature information is malformed or incomplete; the message says what is wrong.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The access key id is not in the credential store.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient { access_key_id: String },
    /// The signature does not match. Like AWS, the message shows the canonical request and
    /// string to sign the server computed, so a client author can diff them against its own.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
    )]
    SignatureMismatch {
        canonical_request: String,
        string_to_sign: String,
    },
    /// `x-amz-content-sha256` names a body other than the one received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadHashMismatch,
    /// The credential scope names another region or the other API's service.
    #[error("{0}")]
    WrongScope(String),
    /// The signing date is too far from the server clock, or a presigned URL has expired.
    #[error("{0}")]
    Expired(String),
}

impl AuthError {
    /// The AWS error type name, for the `X-Amzn-ErrorType` header and the `__type` body field.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature(_) => "IncompleteSignatureException",
            Self::UnrecognizedClient { .. } => "UnrecognizedClientException",
            Self::SignatureMismatch { .. }
            | Self::PayloadHashMismatch
            | Self::WrongScope(_)
            | Self::Expired(_) => "InvalidSignatureException",
        }
    }

    /// Always 403 Forbidden, as AWS answers every authentication failure.
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }
}

fn incomplete(message: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(message.into())
}

/// Who signed a request that passed [`verify`], and for which scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
}
