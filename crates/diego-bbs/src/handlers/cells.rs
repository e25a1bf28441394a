//! Domains and cell presences: thin wrappers over the store.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use diego_model::{Domain, LapsedCell, RegisterCellRequest, UpsertDomainRequest};
use diego_store::PresenceRecord;

use super::PathParams;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

pub async fn list_domains(State(s): State<AppState>) -> HandlerResult<Json<Vec<Domain>>> {
    Ok(Json(s.store.list_domains().await?))
}

pub async fn upsert_domain(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<UpsertDomainRequest>,
) -> HandlerResult<StatusCode> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("domain", e))?;
    s.store.upsert_domain(&req.domain, req.ttl_seconds).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_cells(State(s): State<AppState>) -> HandlerResult<Json<Vec<PresenceRecord>>> {
    Ok(Json(s.store.list_presences().await?))
}

pub async fn list_lapsed_cells(State(s): State<AppState>) -> Json<Vec<LapsedCell>> {
    Json(s.converger.lapsed_cells())
}

pub async fn register_cell(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<RegisterCellRequest>,
) -> HandlerResult<StatusCode> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("cell presence", e))?;
    s.store.set_presence(&req.cell_presence, req.ttl_seconds).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_cell(
    State(s): State<AppState>,
    PathParams(cell_id): PathParams<String>,
) -> HandlerResult<StatusCode> {
    if s.store.remove_presence(&cell_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HandlerError::not_found(format!("cell {cell_id:?} not found")))
    }
}
