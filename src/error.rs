//! The library's error type for Batch operations. Each variant says whether retrying can help.

use crate::model::validate::Invalid;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The request is wrong (bad field, unknown resource, illegal state change). Permanent: the same
    /// request fails again. Answered as `ClientException` (400).
    #[error("{0}")]
    Client(String),
    /// Flotilla could not complete the request; nothing was applied. Retryable.
    /// Answered as `ServerException` (500), which the AWS SDKs retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or corrupted state. Not retryable. Answered as `ServerException` (500).
    #[error("{0}")]
    Internal(String),
}

impl BatchError {
    pub fn client(msg: impl Into<String>) -> Self {
        BatchError::Client(msg.into())
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, BatchError::Unavailable(_))
    }
}

impl From<Invalid> for BatchError {
    fn from(e: Invalid) -> Self {
        BatchError::Client(e.0)
    }
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Storage(_) | StoreError::Closed => {
                BatchError::Unavailable(e.to_string())
            }
            StoreError::Fatal(_) => BatchError::Internal(e.to_string()),
            // The request was not applied; another replica serves it now.
            StoreError::Fenced => BatchError::Unavailable(e.to_string()),
        }
    }
}

pub type BatchResult<T> = Result<T, BatchError>;
