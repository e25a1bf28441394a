//! Ping, OpenAPI, metrics, and JSON answers for unknown routes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use diego_model::api::PingResponse;
use diego_model::{ActualLrpState, ErrorType, Presence, TaskState};

use crate::error::{HandlerError, HandlerResult};
use crate::state::AppState;

pub async fn ping(State(s): State<AppState>) -> Json<PingResponse> {
    Json(s.role.ping().await)
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

pub async fn metrics(State(s): State<AppState>) -> HandlerResult<impl IntoResponse> {
    let mut out = String::with_capacity(8 * 1024);
    s.metrics.render_requests(&mut out);
    crate::metrics::render_convergence(&mut out, s.role.is_active(), &s.converger.last());

    // Counted by the store from its indexes: a scrape never reads the records themselves.
    let counts = s.store.counts().await?;
    out.push_str("# HELP bbs_tasks Tasks by state.\n# TYPE bbs_tasks gauge\n");
    for state in TaskState::ALL {
        let n = counts.tasks.get(&state).copied().unwrap_or(0);
        let _ = writeln!(out, "bbs_tasks{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP bbs_desired_lrps Desired LRPs.\n# TYPE bbs_desired_lrps gauge\nbbs_desired_lrps {}",
        counts.desired_lrps
    );
    let mut actuals: BTreeMap<(ActualLrpState, Presence), u64> = ActualLrpState::ALL
        .iter()
        .map(|st| ((*st, Presence::Ordinary), 0))
        .collect();
    actuals.extend(counts.actual_lrps);
    out.push_str("# HELP bbs_actual_lrps Actual LRPs by state and presence.\n# TYPE bbs_actual_lrps gauge\n");
    for ((state, presence), n) in actuals {
        let _ = writeln!(
            out,
            "bbs_actual_lrps{{state=\"{state}\",presence=\"{}\"}} {n}",
            presence.as_str()
        );
    }
    let cells = s.store.list_presences().await?.len();
    let _ = writeln!(
        out,
        "# HELP bbs_cells Live cell presences.\n# TYPE bbs_cells gauge\nbbs_cells {cells}"
    );
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
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
