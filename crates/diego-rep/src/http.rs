//! The rep's HTTP API (diego-spec §3.5): the auction's `/state` and `/work`, and the BBS's stop
//! and cancel calls.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_client::routes::rep as r;
use diego_model::auction::{CellLrp, CellResources, CellState, CellTask, Work};
use diego_model::{ApiError, ErrorType};
use serde_json::json;
use tracing::info;

use crate::work::{admit, mark_cancelled, release, Workload};
use crate::Rep;

type AppState = State<Arc<Rep>>;

pub(crate) fn router(rep: Arc<Rep>) -> Router {
    let routes = Router::new()
        .route("/ping", get(ping))
        .route(r::METRICS, get(metrics))
        .route(r::STATE, get(state))
        .route(r::WORK, post(work))
        .route(r::CONTAINER_METRICS, get(container_metrics))
        .route(r::STOP_LRP_INSTANCE, post(stop_lrp_instance))
        .route(r::CANCEL_TASK, post(cancel_task))
        .route(r::EVACUATE, post(crate::evacuate::http_evacuate));
    diego_runtime::metrics::record_requests(routes, &rep.metrics.registry).with_state(rep)
}

/// `GET /metrics`: capacity, containers and each instance's usage (from the backend) are read
/// now, one scrape at a time. Without the backend's usage the rest is still answered.
async fn metrics(State(rep): AppState, headers: HeaderMap) -> Response {
    let scrape = rep.metrics.registry.scrape().await;
    let workloads = rep.workloads().clone();
    let guids: Vec<String> = workloads.keys().cloned().collect();
    let usage = match rep.backend.bulk_metrics(&guids).await {
        Ok(usage) => Some(crate::metrics::instance_usage(&workloads, &usage)),
        Err(e) => {
            tracing::warn!(error = %e, "no per-instance usage for /metrics");
            None
        }
    };
    rep.metrics
        .set(rep.store.total(), rep.store.remaining(), &rep.store.list(), usage);
    scrape.respond(&headers)
}

/// 503 with the reason while the cell's self-check fails.
fn unhealthy(rep: &Rep) -> Option<Response> {
    let reason = rep.unhealthy_reason()?;
    let e = ApiError::new(ErrorType::ServiceUnavailable, reason);
    Some((StatusCode::SERVICE_UNAVAILABLE, Json(e)).into_response())
}

async fn ping(State(rep): AppState) -> Response {
    if let Some(r) = unhealthy(&rep) {
        return r;
    }
    Json(json!({"cell_id": rep.config.cell_id})).into_response()
}

fn resources(c: diego_executor::ResourceCapacity) -> CellResources {
    CellResources {
        memory_mb: c.memory_mb as i32,
        disk_mb: c.disk_mb as i32,
        containers: c.containers as i32,
    }
}

/// The cell's state for the auction.
pub(crate) fn cell_state(rep: &Rep) -> CellState {
    let mut lrps = Vec::new();
    let mut tasks = Vec::new();
    for w in rep.workloads().values() {
        match w {
            Workload::Lrp {
                process_guid,
                index,
                domain,
                instance_guid,
                memory_mb,
                disk_mb,
            } => lrps.push(CellLrp {
                process_guid: process_guid.clone(),
                index: *index,
                domain: domain.clone(),
                instance_guid: instance_guid.clone(),
                memory_mb: *memory_mb,
                disk_mb: *disk_mb,
            }),
            Workload::Task {
                task_guid,
                domain,
                memory_mb,
                disk_mb,
                ..
            } => tasks.push(CellTask {
                task_guid: task_guid.clone(),
                domain: domain.clone(),
                memory_mb: *memory_mb,
                disk_mb: *disk_mb,
            }),
        }
    }
    let starting = rep
        .store
        .list()
        .iter()
        .filter(|c| crate::metrics::is_starting(c.state))
        .count();
    CellState {
        cell_id: rep.config.cell_id.clone(),
        rep_url: rep.url.clone(),
        zone: rep.config.zone.clone(),
        rootfs_providers: crate::presence::rootfs_providers(rep),
        total_resources: resources(rep.store.total()),
        available_resources: resources(rep.store.remaining()),
        lrps,
        tasks,
        starting_container_count: starting as i32,
        evacuating: rep.is_evacuating(),
        volume_drivers: Vec::new(),
        placement_tags: rep.config.placement_tags.clone(),
        optional_placement_tags: rep.config.optional_placement_tags.clone(),
    }
}

async fn state(State(rep): AppState) -> Response {
    if let Some(r) = unhealthy(&rep) {
        return r;
    }
    Json(cell_state(&rep)).into_response()
}

/// What each container uses (memory, disk, CPU since start), from the backend's cgroups.
async fn container_metrics(State(rep): AppState) -> Response {
    let guids: Vec<String> = rep.workloads().keys().cloned().collect();
    match rep.backend.bulk_metrics(&guids).await {
        Ok(metrics) => Json(
            metrics
                .into_iter()
                .map(|(guid, m)| diego_model::CellContainerMetrics {
                    guid,
                    memory_bytes: m.memory_bytes,
                    disk_bytes: m.disk_bytes,
                    cpu_usage_ns: m.cpu_usage_ns,
                    cpu_percent: if m.age_ms > 0 {
                        m.cpu_usage_ns as f64 / (m.age_ms as f64 * 1e6) * 100.0
                    } else {
                        0.0
                    },
                    age_ms: m.age_ms,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => {
            let e = ApiError::new(ErrorType::UnknownError, format!("container metrics: {e}"));
            (StatusCode::SERVICE_UNAVAILABLE, Json(e)).into_response()
        }
    }
}

async fn work(State(rep): AppState, Json(work): Json<Work>) -> Response {
    if let Some(r) = unhealthy(&rep) {
        return r;
    }
    if work.cell_id != rep.config.cell_id {
        let e = ApiError::new(
            ErrorType::ResourceConflict,
            format!(
                "work for cell {:?} was sent to cell {:?}",
                work.cell_id, rep.config.cell_id
            ),
        );
        return (StatusCode::CONFLICT, Json(e)).into_response();
    }
    if rep.is_evacuating() {
        // An evacuating cell takes nothing new.
        return Json(work).into_response();
    }
    Json(admit(&rep, work)).into_response()
}

/// The BBS asks to stop an instance (scale-down, delete): a running one is first made
/// unroutable in the BBS and given [`RepConfig::unroute_delay`](crate::RepConfig) to finish
/// what routers already sent it; then the container is stopped, and its completion removes the
/// actual LRP. Answered at once.
async fn stop_lrp_instance(
    State(rep): AppState,
    Path((process_guid, instance_guid)): Path<(String, String)>,
) -> StatusCode {
    match rep.workload(&instance_guid) {
        Some(Workload::Lrp {
            process_guid: p,
            index,
            ..
        }) if p == process_guid => {
            info!(
                process_guid,
                instance_guid, "stopping instance at the BBS's request"
            );
            let running = rep
                .store
                .get(&instance_guid)
                .is_some_and(|c| c.state == diego_executor::ContainerState::Running);
            let delay = rep.config.unroute_delay;
            if running && !delay.is_zero() {
                rep.set_stopping(&instance_guid, true);
                tokio::spawn(async move {
                    crate::harmonize::set_routable(&rep, &process_guid, index, &instance_guid, false).await;
                    tokio::time::sleep(delay).await;
                    let _ = rep.store.stop(&instance_guid);
                });
            } else {
                let _ = rep.store.stop(&instance_guid);
            }
            StatusCode::ACCEPTED
        }
        _ => StatusCode::NOT_FOUND,
    }
}

/// The BBS cancelled a task: its container goes without a completion report.
async fn cancel_task(State(rep): AppState, Path(task_guid): Path<String>) -> StatusCode {
    if !mark_cancelled(&rep, &task_guid) {
        return StatusCode::NOT_FOUND;
    }
    info!(task_guid, "cancelling task at the BBS's request");
    tokio::spawn(async move { release(&rep, &task_guid).await });
    StatusCode::ACCEPTED
}
