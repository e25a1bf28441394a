//! Diego's error model: a stable type name, a message, and per-field errors.
//!
//! Every API error body is `{"type": "...", "message": "...", "field_errors": [...]}` with
//! the type names Diego uses, so Diego users and tools recognise them.

use serde::{Deserialize, Serialize};

use crate::validation::FieldError;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorType {
    UnknownError,
    InvalidRecord,
    InvalidRequest,
    InvalidResponse,
    #[serde(rename = "InvalidJSON")]
    InvalidJson,
    InvalidStateTransition,
    ResourceConflict,
    ResourceExists,
    ResourceNotFound,
    RouterError,
    #[serde(rename = "ActualLRPCannotBeClaimed")]
    ActualLrpCannotBeClaimed,
    #[serde(rename = "ActualLRPCannotBeStarted")]
    ActualLrpCannotBeStarted,
    #[serde(rename = "ActualLRPCannotBeCrashed")]
    ActualLrpCannotBeCrashed,
    #[serde(rename = "ActualLRPCannotBeFailed")]
    ActualLrpCannotBeFailed,
    #[serde(rename = "ActualLRPCannotBeRemoved")]
    ActualLrpCannotBeRemoved,
    #[serde(rename = "ActualLRPCannotBeUnclaimed")]
    ActualLrpCannotBeUnclaimed,
    RunningOnDifferentCell,
    #[serde(rename = "GUIDGeneration")]
    GuidGeneration,
    Deserialize,
    Deadlock,
    Unrecoverable,
    LockCollision,
    Timeout,
    /// Not in Diego: the request body exceeded the server's size limit (HTTP 413).
    PayloadTooLarge,
    /// Not in Diego: the server cannot serve right now (HTTP 503).
    ServiceUnavailable,
    /// Any type this version does not know, kept so old clients can read new servers.
    #[serde(other)]
    Unknown,
}

impl ErrorType {
    /// The HTTP status a server answers with for this error type.
    pub fn http_status(self) -> u16 {
        use ErrorType::*;
        match self {
            InvalidRecord | InvalidRequest | InvalidJson | Deserialize => 400,
            ResourceNotFound => 404,
            ResourceExists
            | ResourceConflict
            | InvalidStateTransition
            | ActualLrpCannotBeClaimed
            | ActualLrpCannotBeStarted
            | ActualLrpCannotBeCrashed
            | ActualLrpCannotBeFailed
            | ActualLrpCannotBeRemoved
            | ActualLrpCannotBeUnclaimed
            | RunningOnDifferentCell
            | LockCollision => 409,
            PayloadTooLarge => 413,
            ServiceUnavailable | Deadlock => 503,
            Timeout => 504,
            UnknownError | InvalidResponse | RouterError | GuidGeneration | Unrecoverable | Unknown => 500,
        }
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The body of every error response.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
    #[serde(default)]
    pub field_errors: Vec<FieldError>,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field_errors: Vec::new(),
        }
    }

    /// A record failed validation: one message summarising every field error.
    pub fn invalid_record(what: &str, field_errors: Vec<FieldError>) -> Self {
        let list: Vec<String> = field_errors.iter().map(ToString::to_string).collect();
        Self {
            kind: ErrorType::InvalidRecord,
            message: format!("invalid {what}: {}", list.join("; ")),
            field_errors,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorType::ResourceNotFound, message)
    }
}

/// A state transition the model refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransitionError {
    pub kind: ErrorType,
    pub message: String,
}

impl TransitionError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        ApiError::new(e.kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_diego() {
        assert_eq!(ErrorType::InvalidJson.name(), "InvalidJSON");
        assert_eq!(
            ErrorType::ActualLrpCannotBeClaimed.name(),
            "ActualLRPCannotBeClaimed"
        );
        assert_eq!(ErrorType::RunningOnDifferentCell.name(), "RunningOnDifferentCell");
        let e: ApiError = serde_json::from_str(r#"{"type":"SomethingNew","message":"m"}"#).unwrap();
        assert_eq!(e.kind, ErrorType::Unknown);
    }
}
