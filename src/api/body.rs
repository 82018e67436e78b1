//! Reading a request body within bounds: its operation's size limit, a deadline, and a share of
//! the server-wide budget of body bytes held in memory at once.

use super::{ApiError, MAX_BODY};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The bounds on request bodies of one server. Cheap to clone: the byte budget is shared.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Time allowed from the end of the head to the last byte of the body.
    timeout: Duration,
    /// One permit per body byte the server may hold; a body reserves its declared length (or
    /// its operation's limit when chunked) before its first byte is read.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request body: {op} accepts at most {max} bytes{}", got.map(|n| format!(", got {n}")).unwrap_or_default())]
    TooLarge {
        op: String,
        max: usize,
        got: Option<u64>,
    },
    #[error("request body: not received within {0} s")]
    Timeout(u64),
    /// The budget of in-flight body bytes is spent; the client may retry.
    #[error("request body: the server is reading {0} bytes of request bodies already; retry later")]
    Busy(usize),
    #[error("request body: {0}")]
    Read(String),
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let (status, error_type) = match &e {
            ReadError::TooLarge { max, .. } if *max >= MAX_BODY => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ClientException")
            }
            ReadError::TooLarge { .. } | ReadError::Read(_) => {
                (StatusCode::BAD_REQUEST, "ClientException")
            }
            ReadError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "ClientException"),
            // The code the SDKs treat as throttling, so they back off and retry.
            ReadError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException"),
        };
        ApiError::new(status, error_type, e.to_string())
    }
}

impl BodyLimits {
    pub fn new(timeout: Duration, budget_bytes: usize) -> Self {
        BodyLimits {
            timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        }
    }

    /// Reads `body` whole, at most `max` bytes, within the deadline and the byte budget.
    pub(super) async fn read(
        &self,
        op: &str,
        headers: &HeaderMap,
        body: Body,
        max: usize,
    ) -> Result<Bytes, ReadError> {
        let too_large = |got| ReadError::TooLarge {
            op: op.to_string(),
            max,
            got,
        };
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared
            && n > max as u64
        {
            return Err(too_large(Some(n)));
        }
        let reserve = declared.map_or(max, |n| n as usize).min(self.budget_bytes);
        // Held until the body is dropped by the caller's scope: the bytes stay in memory until
        // the request is answered, but the reservation only needs to cover the read.
        let _permit = u32::try_from(reserve)
            .ok()
            .and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok())
            .ok_or(ReadError::Busy(self.budget_bytes))?;
        match tokio::time::timeout(self.timeout, Limited::new(body, max).collect()).await {
            Err(_) => Err(ReadError::Timeout(self.timeout.as_secs())),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(None)),
            Ok(Err(e)) => Err(ReadError::Read(e.to_string())),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }
}
