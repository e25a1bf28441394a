//! One HTTP listener for every cell: the rep API (diego-spec §3.5) under `/cells/{cell_id}`,
//! so cell `sim-0007`'s rep URL is `http://ADDR/cells/sim-0007`. Handlers stay thin: find the
//! cell, change its holdings, hand the BBS calls to the lifecycle.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_client::routes::rep;
use diego_model::auction::{CellState, Work};
use diego_model::{ApiError, ErrorType};
use tracing::debug;

use crate::cell::SimCell;
use crate::lifecycle::{Counters, Lifecycle};

/// Every cell's routes live under this prefix.
pub const CELL_PREFIX: &str = "/cells/{cell_id}";

/// A work batch for one cell can name thousands of instances.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(crate) struct App {
    pub cells: HashMap<String, Arc<SimCell>>,
    pub lifecycle: Arc<Lifecycle>,
}

type AppState = State<Arc<App>>;

impl App {
    fn cell(&self, cell_id: &str) -> Result<&Arc<SimCell>, RepError> {
        self.cells
            .get(cell_id)
            .ok_or_else(|| RepError::NoSuchCell(cell_id.to_string()))
    }
}

/// What a handler can refuse, rendered as Diego's error body.
#[derive(Debug)]
enum RepError {
    /// No simulated cell by this id behind this listener.
    NoSuchCell(String),
    /// `Work` addressed to another cell than the one it was posted to.
    WrongCell { addressed_to: String, posted_to: String },
}

impl IntoResponse for RepError {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            RepError::NoSuchCell(id) => (
                StatusCode::NOT_FOUND,
                ErrorType::ResourceNotFound,
                format!("no simulated cell {id:?} here"),
            ),
            RepError::WrongCell {
                addressed_to,
                posted_to,
            } => (
                StatusCode::CONFLICT,
                ErrorType::ResourceConflict,
                format!(
                    "work for cell {addressed_to:?} was sent to cell {posted_to:?}; none of it was taken"
                ),
            ),
        };
        (status, Json(ApiError::new(kind, message))).into_response()
    }
}

/// `CELL_PREFIX` + a rep route, e.g. `/cells/{cell_id}/state`.
fn cell_route(route: &str) -> String {
    format!("{CELL_PREFIX}{route}")
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(&cell_route(rep::STATE), get(state))
        .route(&cell_route(rep::WORK), post(work))
        .route(&cell_route(rep::STOP_LRP_INSTANCE), post(stop_lrp_instance))
        .route(&cell_route(rep::CANCEL_TASK), post(cancel_task))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn state(State(app): AppState, Path(cell_id): Path<String>) -> Result<Json<CellState>, RepError> {
    Ok(Json(app.cell(&cell_id)?.state()))
}

/// Admits what fits at once (so the next `/state` shows it) and answers what did not; the
/// claims and starts follow in the background.
async fn work(
    State(app): AppState,
    Path(cell_id): Path<String>,
    Json(work): Json<Work>,
) -> Result<Json<Work>, RepError> {
    let cell = app.cell(&cell_id)?;
    if work.cell_id != cell.id {
        // Diego's rep refuses the whole batch; the auctioneer then counts all of it as failed.
        return Err(RepError::WrongCell {
            addressed_to: work.cell_id,
            posted_to: cell_id,
        });
    }
    let admitted = cell.holdings().admit(work, || uuid::Uuid::new_v4().to_string());
    let c = &app.lifecycle.counters;
    Counters::add(&c.lrps_admitted, admitted.lrps.len() as u64);
    Counters::add(&c.tasks_admitted, admitted.tasks.len() as u64);
    let refused = admitted.failed.lrps.len() + admitted.failed.tasks.len();
    Counters::add(&c.work_refused, refused as u64);
    if refused > 0 {
        debug!(cell_id = %cell.id, refused, "work did not fit");
    }
    for lrp in admitted.lrps {
        app.lifecycle.place_lrp(cell.clone(), lrp);
    }
    for task_guid in admitted.tasks {
        app.lifecycle.run_task(cell.clone(), task_guid);
    }
    Ok(Json(admitted.failed))
}

/// The BBS scaled down, retired or deleted: drop the instance and remove its record. Accepted
/// also when the cell does not hold it — the BBS only wants it gone.
async fn stop_lrp_instance(
    State(app): AppState,
    Path((cell_id, process_guid, instance_guid)): Path<(String, String, String)>,
) -> Result<StatusCode, RepError> {
    let cell = app.cell(&cell_id)?;
    let stopped = cell.holdings().stop_lrp(&process_guid, &instance_guid);
    if let Some(index) = stopped {
        debug!(cell_id, process_guid, index, "stopping instance");
        Counters::add(&app.lifecycle.counters.lrps_stopped, 1);
        app.lifecycle
            .remove_stopped(cell_id, process_guid, index, instance_guid);
    }
    Ok(StatusCode::ACCEPTED)
}

/// The BBS cancelled a task this cell runs: drop it (the BBS already completed it).
async fn cancel_task(
    State(app): AppState,
    Path((cell_id, task_guid)): Path<(String, String)>,
) -> Result<StatusCode, RepError> {
    let cell = app.cell(&cell_id)?;
    if cell.holdings().release_task(&task_guid) {
        debug!(cell_id, task_guid, "cancelled task");
        Counters::add(&app.lifecycle.counters.tasks_cancelled, 1);
    }
    Ok(StatusCode::ACCEPTED)
}
