//! The auctioneer's HTTP API (diego-spec §3.4): start requests in, 202 out.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_client::routes::auctioneer as r;
use diego_model::auction::{LrpStartRequest, TaskStartRequest};
use diego_model::Validator;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::Shared;

/// Batches of 100,000 requests fit (about 200 bytes each).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let routes = Router::new()
        .route(r::PING, get(ping))
        .route(r::METRICS, get(metrics))
        .route(r::LRPS, post(lrps))
        .route(r::TASKS, post(tasks))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    diego_runtime::metrics::record_requests(routes, &shared.metrics.registry).with_state(shared)
}

/// `GET /metrics`, with whether this auctioneer is active and what is parked read now.
async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let scrape = s.metrics.registry.scrape().await;
    let parked = s.parked().instances();
    s.metrics.set_state(s.active.load(Ordering::SeqCst), parked);
    scrape.respond(&headers)
}

async fn ping(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "active": s.active.load(Ordering::SeqCst),
        "stats": super::stats(&s),
    }))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"type": "InvalidRequest", "message": message})),
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected a JSON array of start requests: {e}"))
}

/// Keeps the valid entries; logs the others by their first problem.
fn valid<T>(items: Vec<T>, what: &str, validate: impl Fn(&T, &mut Validator)) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| {
            let mut v = Validator::new();
            validate(item, &mut v);
            match v.errors().first() {
                None => true,
                Some(e) => {
                    warn!(field = %e.field, problem = %e.message, "dropping an invalid {what} start request");
                    false
                }
            }
        })
        .collect()
}

async fn lrps(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let requests: Vec<LrpStartRequest> = match parse(&body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let requests = valid(requests, "LRP", |r, v| r.validate(v, ""));
    if !requests.is_empty() {
        let mut parked = s.parked();
        let mut queue = s.queue();
        let mut held = false;
        for r in requests {
            held |= parked.absorb(r, &mut queue);
        }
        drop((queue, parked));
        if held {
            // Asked again for parked work: the round loop checks whether the cells changed.
            s.recheck_cells.store(true, Ordering::SeqCst);
        }
        s.work.notify_one();
    }
    StatusCode::ACCEPTED.into_response()
}

async fn tasks(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let requests: Vec<TaskStartRequest> = match parse(&body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let requests = valid(requests, "task", |r, v| r.validate(v, ""));
    if !requests.is_empty() {
        let mut queue = s.queue();
        for r in requests {
            queue.push_task(r);
        }
        drop(queue);
        s.work.notify_one();
    }
    StatusCode::ACCEPTED.into_response()
}
