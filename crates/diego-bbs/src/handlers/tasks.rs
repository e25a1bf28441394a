use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use diego_model::api::{
    CompleteTaskRequest, FailTaskRequest, RejectTaskRequest, StartTaskRequest, StartTaskResponse,
};
use diego_model::{DesireTaskRequest, Task, TaskState};
use diego_store::TaskFilter;
use serde::Deserialize;

use super::{nonempty, parse_state, PathParams, QueryParams};
use crate::controllers::tasks;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct TaskQuery {
    domain: Option<String>,
    cell_id: Option<String>,
    #[schemars(with = "Option<TaskState>")]
    state: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<TaskQuery>,
) -> HandlerResult<Json<Vec<Task>>> {
    let state = parse_state(
        "state",
        q.state.as_deref(),
        TaskState::parse,
        "PENDING, RUNNING, COMPLETED, RESOLVING",
    )?;
    let filter = TaskFilter {
        domain: nonempty(q.domain),
        cell_id: nonempty(q.cell_id),
        state,
    };
    Ok(Json(tasks::list(&s, &filter).await?))
}

pub async fn desire(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<DesireTaskRequest>,
) -> HandlerResult<(StatusCode, Json<Task>)> {
    Ok((StatusCode::CREATED, Json(tasks::desire(&s, req).await?)))
}

pub async fn get(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<Json<Task>> {
    Ok(Json(tasks::get(&s, &guid).await?))
}

pub async fn start(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
    JsonBody(req): JsonBody<StartTaskRequest>,
) -> HandlerResult<Json<StartTaskResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("start request", e))?;
    let should_start = tasks::start(&s, &guid, &req.cell_id).await?;
    Ok(Json(StartTaskResponse { should_start }))
}

pub async fn complete(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
    JsonBody(req): JsonBody<CompleteTaskRequest>,
) -> HandlerResult<Json<Task>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("complete request", e))?;
    Ok(Json(tasks::complete(&s, &guid, &req).await?))
}

pub async fn reject(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
    JsonBody(req): JsonBody<RejectTaskRequest>,
) -> HandlerResult<Json<Task>> {
    Ok(Json(
        tasks::reject(&s, &guid, &req.rejection_reason, req.placement_explanation).await?,
    ))
}

pub async fn fail(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
    JsonBody(req): JsonBody<FailTaskRequest>,
) -> HandlerResult<Json<Task>> {
    Ok(Json(tasks::fail(&s, &guid, &req.failure_reason).await?))
}

pub async fn cancel(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<Json<Task>> {
    Ok(Json(tasks::cancel(&s, &guid).await?))
}

pub async fn resolving(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<Json<Task>> {
    Ok(Json(tasks::resolving(&s, &guid).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<StatusCode> {
    tasks::delete(&s, &guid).await?;
    Ok(StatusCode::NO_CONTENT)
}
