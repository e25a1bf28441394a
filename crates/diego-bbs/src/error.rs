//! Mapping every failure to Diego's error body and the right HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use diego_model::{ApiError, ErrorType, TransitionError};
use diego_store::StoreError;

/// An error a handler returns; renders as `{"type","message","field_errors"}`.
#[derive(Debug)]
pub struct HandlerError(pub ApiError);

pub type HandlerResult<T> = Result<T, HandlerError>;

impl HandlerError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self(ApiError::new(kind, message))
    }

    pub fn invalid_record(what: &str, errors: Vec<diego_model::FieldError>) -> Self {
        Self(ApiError::invalid_record(what, errors))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self(ApiError::not_found(message))
    }
}

impl From<ApiError> for HandlerError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<TransitionError> for HandlerError {
    fn from(e: TransitionError) -> Self {
        Self(e.into())
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::Exists { .. } => ErrorType::ResourceExists,
            StoreError::NotFound { .. } => ErrorType::ResourceNotFound,
            StoreError::Conflict { .. } => ErrorType::ResourceConflict,
            StoreError::LockCollision { .. } | StoreError::LockLost { .. } => ErrorType::LockCollision,
            StoreError::Invalid(_) => ErrorType::InvalidRequest,
            StoreError::Unavailable { .. } => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store unavailable");
                ErrorType::ServiceUnavailable
            }
        };
        Self(ApiError::new(kind, e.to_string()))
    }
}

impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}
