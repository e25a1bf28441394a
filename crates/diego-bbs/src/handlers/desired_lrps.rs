use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use diego_model::{DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate};
use serde::Deserialize;

use super::{nonempty, PathParams, QueryParams};
use crate::controllers::desired_lrps;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct DesiredQuery {
    domain: Option<String>,
    process_guid: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<DesiredQuery>,
) -> HandlerResult<Json<Vec<DesiredLrp>>> {
    let filter = desired_lrps::filter(nonempty(q.domain), nonempty(q.process_guid));
    Ok(Json(desired_lrps::list(&s, &filter).await?))
}

pub async fn desire(
    State(s): State<AppState>,
    JsonBody(lrp): JsonBody<DesiredLrp>,
) -> HandlerResult<(StatusCode, Json<DesiredLrp>)> {
    Ok((StatusCode::CREATED, Json(desired_lrps::desire(&s, lrp).await?)))
}

pub async fn get(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<Json<DesiredLrp>> {
    Ok(Json(desired_lrps::get(&s, &guid).await?))
}

pub async fn update(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
    JsonBody(update): JsonBody<DesiredLrpUpdate>,
) -> HandlerResult<Json<DesiredLrp>> {
    Ok(Json(desired_lrps::update(&s, &guid, &update).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<StatusCode> {
    desired_lrps::delete(&s, &guid).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn scheduling_infos(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<DesiredQuery>,
) -> HandlerResult<Json<Vec<DesiredLrpSchedulingInfo>>> {
    let filter = desired_lrps::filter(nonempty(q.domain), nonempty(q.process_guid));
    Ok(Json(desired_lrps::scheduling_infos(&s, &filter).await?))
}

pub async fn scheduling_info(
    State(s): State<AppState>,
    PathParams(guid): PathParams<String>,
) -> HandlerResult<Json<DesiredLrpSchedulingInfo>> {
    let filter = desired_lrps::filter(None, Some(guid.clone()));
    desired_lrps::scheduling_infos(&s, &filter)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| HandlerError::not_found(format!("desired LRP {guid:?} not found")))
}
