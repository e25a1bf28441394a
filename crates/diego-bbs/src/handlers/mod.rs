//! HTTP handlers: parse, call one controller, map the error. No business rules here.

pub mod actual_lrps;
pub mod cells;
pub mod desired_lrps;
pub mod evacuation;
pub mod events;
pub mod locks;
pub mod system;
pub mod tasks;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use diego_model::ErrorType;
use serde::de::DeserializeOwned;

use crate::error::HandlerError;

/// Path parameters, with a Diego-style error when they do not parse (e.g. a non-numeric index).
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|e| {
                HandlerError::new(
                    ErrorType::InvalidRequest,
                    format!("invalid path: {}", e.body_text()),
                )
            })
    }
}

/// Query parameters, with a Diego-style error when they do not parse.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| QueryParams(t))
            .map_err(|e| {
                HandlerError::new(
                    ErrorType::InvalidRequest,
                    format!("invalid query: {}", e.body_text()),
                )
            })
    }
}

/// Parses an optional upper-case state name from a query, naming the field on error.
pub fn parse_state<T>(
    field: &str,
    raw: Option<&str>,
    parse: fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Option<T>, HandlerError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse(s).map(Some).ok_or_else(|| {
            HandlerError(diego_model::ApiError {
                kind: ErrorType::InvalidRequest,
                message: format!("invalid query: {field} must be one of {allowed} (got {s:?})"),
                field_errors: vec![diego_model::FieldError {
                    field: field.to_string(),
                    message: format!("must be one of {allowed} (got {s:?})"),
                }],
            })
        }),
    }
}

/// Non-empty query value.
pub fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}
