//! The admin listener: `GET /routes` (the table as JSON), `GET /health`, `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use diego_model::Presence;
use serde::Serialize;

use super::proxy::Proxy;
use crate::sync::SyncStats;

pub(super) struct Admin {
    pub proxy: Arc<Proxy>,
    pub stats: Arc<SyncStats>,
    /// Set once the first listing was published.
    pub ready: Arc<AtomicBool>,
    pub bbs_url: String,
}

pub(super) fn app(admin: Arc<Admin>) -> axum::Router {
    let registry = admin.proxy.metrics.registry.clone();
    let router = axum::Router::new()
        .route("/routes", get(routes))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(admin);
    diego_runtime::metrics::record_requests(router, &registry)
}

#[derive(Serialize)]
struct EndpointView<'a> {
    address: String,
    process_guid: &'a str,
    index: i32,
    instance_guid: &'a str,
    cell_id: &'a str,
    presence: Presence,
    /// Requests in flight to it now.
    in_flight: usize,
}

async fn routes(State(admin): State<Arc<Admin>>) -> Response {
    let routes = admin.proxy.routes.load();
    let mut table: BTreeMap<&str, Vec<EndpointView<'_>>> = BTreeMap::new();
    for pool in routes.hosts.pools() {
        let Some(state) = routes.lookup_pool(&pool.hostname) else {
            continue;
        };
        let views = state
            .backends
            .iter()
            .map(|b| EndpointView {
                address: b.authority.to_string(),
                process_guid: &b.endpoint.process_guid,
                index: b.endpoint.index,
                instance_guid: &b.endpoint.instance_guid,
                cell_id: &b.endpoint.cell_id,
                presence: b.endpoint.presence,
                in_flight: b.in_flight(),
            })
            .collect();
        table.insert(&pool.hostname, views);
    }
    Json(table).into_response()
}

async fn health(State(admin): State<Arc<Admin>>) -> Response {
    if admin.ready.load(Ordering::Acquire) {
        let routes = admin.proxy.routes.load();
        Json(serde_json::json!({"status": "ok", "routes": routes.hosts.len()})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: no routing table yet (the first listing from the BBS at {} has not arrived)\n",
                admin.bbs_url
            ),
        )
            .into_response()
    }
}

async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let m = &admin.proxy.metrics;
    let scrape = m.registry.scrape().await;
    m.sync(&admin.stats);
    scrape.respond(&headers)
}
