//! Diego's error body, `{"type","message","field_errors"}`, for the roles that answer with it
//! without the BBS's typed errors (the log server, the file server).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// `status` with Diego's error body of `kind` (`InvalidRequest`, `ResourceNotFound`, …) and
/// `message`, no field errors.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": kind, "message": message, "field_errors": []}).to_string();
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The fallback of a role's routes: `404 ResourceNotFound`, "no such route".
pub async fn no_such_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "ResourceNotFound", "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_body_is_diegos_error_shape_with_the_message_escaped() {
        let r = error_response(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "digest \"x\"\n\u{1}bad",
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "InvalidRequest");
        assert_eq!(v["message"], "digest \"x\"\n\u{1}bad");
        assert_eq!(v["field_errors"], serde_json::json!([]));
    }
}
