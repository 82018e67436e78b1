//! What can go wrong behind a console page, and the page that says so.

use super::html;
use crate::error::BatchError;
use crate::logs::LogError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A form or query field the console itself checks; the page names it.
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// What the Batch operation behind the page answered; its messages name the field too.
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    NotFound(String),
    /// A POST without a valid CSRF token or from another origin.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the form is larger than {0} bytes")]
    TooLarge(usize),
}

impl ConsoleError {
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ConsoleError::Field {
            field,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Field { .. } => StatusCode::BAD_REQUEST,
            ConsoleError::Batch(BatchError::Client(_)) => StatusCode::BAD_REQUEST,
            ConsoleError::Batch(BatchError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Batch(BatchError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsoleError::Log(LogError::Io(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Log(LogError::ResourceNotFound(_)) => StatusCode::NOT_FOUND,
            ConsoleError::Log(LogError::InvalidParameter(_)) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        html::error_page(status, &self.to_string())
    }
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;
