use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use diego_model::api::{
    ClaimActualLrpRequest, CrashActualLrpRequest, FailActualLrpRequest, PlacementFailuresRequest,
    PlacementFailuresResponse, RemoveActualLrpRequest, StartActualLrpRequest,
};
use diego_model::{ActualLrp, ActualLrpState, Presence};
use diego_store::ActualLrpFilter;
use serde::Deserialize;

use super::{nonempty, parse_state, PathParams, QueryParams};
use crate::controllers::actual_lrps;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ActualQuery {
    domain: Option<String>,
    cell_id: Option<String>,
    process_guid: Option<String>,
    #[schemars(range(min = 0))]
    index: Option<i32>,
    #[schemars(with = "Option<ActualLrpState>")]
    state: Option<String>,
    #[schemars(with = "Option<Presence>")]
    presence: Option<String>,
}

/// Answers with the store's JSON listing as is: a large listing is never decoded into
/// records and encoded again.
pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ActualQuery>,
) -> HandlerResult<impl IntoResponse> {
    let state = parse_state(
        "state",
        q.state.as_deref(),
        ActualLrpState::parse,
        "UNCLAIMED, CLAIMED, RUNNING, CRASHED",
    )?;
    let presence = parse_state(
        "presence",
        q.presence.as_deref(),
        Presence::parse,
        "ORDINARY, EVACUATING, SUSPECT",
    )?;
    let filter = ActualLrpFilter {
        domain: nonempty(q.domain),
        cell_id: nonempty(q.cell_id),
        process_guid: nonempty(q.process_guid),
        index: q.index,
        state,
        presence,
    };
    let json = actual_lrps::list_json(&s, &filter).await?;
    Ok(([(CONTENT_TYPE, "application/json")], json))
}

pub async fn get(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
) -> HandlerResult<Json<Vec<ActualLrp>>> {
    Ok(Json(actual_lrps::get_all(&s, &guid, index).await?))
}

pub async fn claim(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<ClaimActualLrpRequest>,
) -> HandlerResult<Json<ActualLrp>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("claim request", e))?;
    Ok(Json(
        actual_lrps::claim(&s, &guid, index, &req.instance_key).await?,
    ))
}

pub async fn start(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<StartActualLrpRequest>,
) -> HandlerResult<Json<ActualLrp>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("start request", e))?;
    Ok(Json(actual_lrps::start(&s, &guid, index, &req).await?))
}

pub async fn crash(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<CrashActualLrpRequest>,
) -> HandlerResult<Json<ActualLrp>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("crash request", e))?;
    Ok(Json(
        actual_lrps::crash(&s, &guid, index, &req.instance_key, &req.error_message).await?,
    ))
}

pub async fn fail(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<FailActualLrpRequest>,
) -> HandlerResult<Json<ActualLrp>> {
    if req.error_message.is_empty() {
        return Err(HandlerError::invalid_record(
            "fail request",
            vec![diego_model::FieldError {
                field: "error_message".into(),
                message: "is required".into(),
            }],
        ));
    }
    Ok(Json(
        actual_lrps::fail(&s, &guid, index, &req.error_message, req.placement_explanation).await?,
    ))
}

pub async fn placement_failures(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<PlacementFailuresRequest>,
) -> HandlerResult<Json<PlacementFailuresResponse>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("placement failures", e))?;
    Ok(Json(actual_lrps::record_placement_failures(&s, &req).await?))
}

pub async fn remove(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
    JsonBody(req): JsonBody<RemoveActualLrpRequest>,
) -> HandlerResult<StatusCode> {
    actual_lrps::remove(&s, &guid, index, req.instance_key.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn retire(
    State(s): State<AppState>,
    PathParams((guid, index)): PathParams<(String, i32)>,
) -> HandlerResult<StatusCode> {
    actual_lrps::retire(&s, &guid, index).await?;
    Ok(StatusCode::NO_CONTENT)
}
