//! Request body extraction with errors that name the offending field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use diego_model::{ApiError, ErrorType, FieldError};
use serde::de::DeserializeOwned;

use crate::error::HandlerError;

/// A JSON body. Malformed JSON → 400 `InvalidJSON`; well-formed JSON of the wrong shape →
/// 400 `InvalidRequest` naming the field; over the size limit → 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = HandlerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HandlerError::new(
                    ErrorType::PayloadTooLarge,
                    "request body exceeds the server's size limit",
                )
            } else {
                HandlerError::new(
                    ErrorType::InvalidRequest,
                    format!("reading request body: {rejection}"),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HandlerError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                HandlerError::new(ErrorType::InvalidJson, format!("malformed JSON: {inner}"))
            }
            Category::Data => {
                let field = if path == "." { String::new() } else { path };
                let message = strip_position(&inner.to_string());
                HandlerError(ApiError {
                    kind: ErrorType::InvalidRequest,
                    message: if field.is_empty() {
                        format!("invalid request: {message}")
                    } else {
                        format!("invalid request: {field}: {message}")
                    },
                    field_errors: vec![FieldError { field, message }],
                })
            }
        }
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::DesiredLrp;

    #[test]
    fn names_the_field_of_a_type_error() {
        let err = parse_json::<DesiredLrp>(br#"{"process_guid":"a","instances":"three"}"#)
            .unwrap_err()
            .0;
        assert_eq!(err.kind, ErrorType::InvalidRequest);
        assert_eq!(err.field_errors[0].field, "instances");
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        let err = parse_json::<DesiredLrp>(b"{\"process_guid\": ").unwrap_err().0;
        assert_eq!(err.kind, ErrorType::InvalidJson);
    }
}
