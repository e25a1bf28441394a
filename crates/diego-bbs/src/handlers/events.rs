use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use diego_model::ErrorType;
use serde::Deserialize;

use super::QueryParams;
use crate::error::{HandlerError, HandlerResult};
use crate::events::{stream, Topic};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct EventsQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    last_event_id: Option<u64>,
}

/// Where to resume: `Last-Event-ID` header, else `?last_event_id=`, else now.
fn resume_point(headers: &HeaderMap, q: &EventsQuery) -> HandlerResult<Option<u64>> {
    match headers.get("last-event-id") {
        Some(v) => {
            let s = v.to_str().unwrap_or_default().trim();
            if s.is_empty() {
                return Ok(q.last_event_id);
            }
            s.parse::<u64>().map(Some).map_err(|_| {
                HandlerError::new(
                    ErrorType::InvalidRequest,
                    format!("Last-Event-ID must be an event id (got {s:?})"),
                )
            })
        }
        None => Ok(q.last_event_id),
    }
}

pub async fn lrps(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<EventsQuery>,
) -> HandlerResult<impl IntoResponse> {
    let after = resume_point(&headers, &q)?;
    Ok(stream(s.store.clone(), Topic::Lrps, after, s.shutdown.clone()))
}

pub async fn tasks(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<EventsQuery>,
) -> HandlerResult<impl IntoResponse> {
    let after = resume_point(&headers, &q)?;
    Ok(stream(s.store.clone(), Topic::Tasks, after, s.shutdown.clone()))
}
