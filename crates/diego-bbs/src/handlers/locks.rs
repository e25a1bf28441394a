//! Locks (leader election for other components, e.g. the auctioneer): thin wrappers over the
//! store's TTL locks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use diego_model::AcquireLockRequest;
use diego_store::LockRecord;
use serde::Deserialize;

use super::{PathParams, QueryParams};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::state::AppState;

/// Takes `key` for `owner`, or renews it if `owner` holds it; a lock held by another owner is
/// a 409 `LockCollision`.
pub async fn acquire(
    State(s): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(req): JsonBody<AcquireLockRequest>,
) -> HandlerResult<Json<LockRecord>> {
    req.validate()
        .map_err(|e| HandlerError::invalid_record("lock", e))?;
    let record = s
        .store
        .acquire_lock(&key, &req.owner, &req.value, req.ttl_seconds)
        .await?;
    Ok(Json(record))
}

/// The live holder of `key`.
pub async fn get(
    State(s): State<AppState>,
    PathParams(key): PathParams<String>,
) -> HandlerResult<Json<LockRecord>> {
    match s.store.get_lock(&key).await? {
        Some(record) => Ok(Json(record)),
        None => Err(HandlerError::not_found(format!("lock {key:?} is not held"))),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReleaseQuery {
    /// The holder releasing the lock.
    owner: String,
}

/// Releases `key` if `owner` holds it.
pub async fn release(
    State(s): State<AppState>,
    PathParams(key): PathParams<String>,
    QueryParams(q): QueryParams<ReleaseQuery>,
) -> HandlerResult<StatusCode> {
    if s.store.release_lock(&key, &q.owner).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HandlerError::not_found(format!(
            "lock {key:?} is not held by {:?}",
            q.owner
        )))
    }
}
