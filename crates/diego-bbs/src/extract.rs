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

/// Parses a request body. A field the target type does not know is refused (400 naming it),
/// so a misspelt field (`"intances"`) is never silently ignored.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HandlerError> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let tracked = serde_path_to_error::Deserializer::new(&mut *de, &mut track);
    let parsed = serde_ignored::deserialize(tracked, |path| unknown.push(field_path(&path)));
    let parsed = parsed.and_then(|value: T| de.end().map(|()| value));
    let value = parsed.map_err(|inner| {
        let path = track.path().to_string();
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
    if unknown.is_empty() {
        return Ok(value);
    }
    let field_errors: Vec<FieldError> = unknown
        .into_iter()
        .map(|field| {
            let name = field.rsplit(['.', '[']).next().unwrap_or(&field).to_string();
            FieldError {
                message: format!("unknown field {name:?}"),
                field,
            }
        })
        .collect();
    Err(HandlerError(ApiError {
        kind: ErrorType::InvalidRequest,
        message: format!(
            "invalid request: {}",
            field_errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        field_errors,
    }))
}

/// A field's path as validators name it: `task_definition.env[0].name`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => diego_model::validation::join(&field_path(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
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

    #[test]
    fn refuses_unknown_fields_naming_each() {
        let err = parse_json::<DesiredLrp>(
            br#"{"process_guid":"a","intances":3,"action":{"run":{"path":"x","argz":[]}}}"#,
        )
        .unwrap_err()
        .0;
        assert_eq!(err.kind, ErrorType::InvalidRequest);
        let fields: Vec<_> = err.field_errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["intances", "action.run.argz"], "{err:?}");
        assert_eq!(err.field_errors[0].message, "unknown field \"intances\"");
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let err = parse_json::<DesiredLrp>(br#"{"process_guid":"a"} x"#)
            .unwrap_err()
            .0;
        assert_eq!(err.kind, ErrorType::InvalidJson);
    }
}
