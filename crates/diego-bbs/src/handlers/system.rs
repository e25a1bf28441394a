//! Ping, OpenAPI, metrics, and JSON answers for unknown routes.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use diego_model::api::PingResponse;
use diego_model::ErrorType;

use crate::error::{HandlerError, HandlerResult};
use crate::state::AppState;

pub async fn ping(State(s): State<AppState>) -> Json<PingResponse> {
    Json(s.role.ping().await)
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// `GET /metrics`: the store's counts and the converger's last pass are read now, one
/// scrape at a time, then everything is encoded in the format the scraper asked for.
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> HandlerResult<Response> {
    let scrape = s.metrics.registry.scrape().await;
    // Counted by the store from its indexes: a scrape never reads the records themselves.
    let counts = s.store.counts().await?;
    let cells = s.store.list_presences().await?.len();
    s.metrics
        .set(&counts, cells, s.role.is_active(), s.converger.last());
    Ok(scrape.respond(&headers))
}

pub async fn not_found(uri: axum::http::Uri) -> HandlerError {
    HandlerError::new(
        ErrorType::ResourceNotFound,
        format!("no such route: {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    let body = diego_model::ApiError::new(
        ErrorType::InvalidRequest,
        format!("method {method} is not allowed on {}", uri.path()),
    );
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(body))
}
