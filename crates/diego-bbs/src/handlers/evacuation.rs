//! Evacuation reports from cells (diego-spec §4.7): validate, call the controller, answer
//! whether the cell keeps its container.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use diego_model::api::{
    CrashActualLrpRequest, EvacuateActualLrpRequest, EvacuateRunningActualLrpRequest, EvacuationResponse,
};

use super::PathParams;
use crate::controllers::evacuation;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

fn answer(keep_container: bool) -> Json<EvacuationResponse> {
    Json(EvacuationResponse { keep_container })
}

pub async fn evacuate_running(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<EvacuateRunningActualLrpRequest>,
) -> HandlerResult<Json<EvacuationResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("evacuate running request", e))?;
    let keep = evacuation::evacuate_running(&s, &guid, index, &req.instance_key, &req.net_info).await?;
    Ok(answer(keep))
}

pub async fn evacuate_claimed(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<EvacuateActualLrpRequest>,
) -> HandlerResult<Json<EvacuationResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("evacuate claimed request", e))?;
    Ok(answer(
        evacuation::evacuate_claimed(&s, &guid, index, &req.instance_key).await?,
    ))
}

pub async fn evacuate_crashed(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<CrashActualLrpRequest>,
) -> HandlerResult<Json<EvacuationResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("evacuate crashed request", e))?;
    Ok(answer(
        evacuation::evacuate_crashed(&s, &guid, index, &req.instance_key, &req.error_message).await?,
    ))
}

pub async fn evacuate_stopped(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<EvacuateActualLrpRequest>,
) -> HandlerResult<Json<EvacuationResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("evacuate stopped request", e))?;
    Ok(answer(
        evacuation::evacuate_stopped(&s, &guid, index, &req.instance_key).await?,
    ))
}

pub async fn remove_evacuating(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<EvacuateActualLrpRequest>,
) -> HandlerResult<StatusCode> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("remove evacuating request", e))?;
    evacuation::remove_evacuating(&s, &guid, index, &req.instance_key).await?;
    Ok(StatusCode::NO_CONTENT)
}
