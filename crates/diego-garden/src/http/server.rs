//! Serves any [`ContainerBackend`] over HTTP (route table in [`super::routes`]).
//!
//! Handlers only parse, call one backend method and map its error: every rule lives in the
//! backend, so a remote backend behaves exactly like the local one behind it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use diego_runtime::ServeLimits;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::routes::{self, SignalRequest};
use super::wire;
use crate::{
    Capacity, ContainerInfo, ContainerMetrics, DynBackend, GardenError, ProcessSpec, ProcessStream,
    Properties,
};

#[derive(Clone)]
struct AppState {
    backend: DynBackend,
    /// Ends open event streams on shutdown, so graceful shutdown does not wait for processes
    /// that run forever. Their clients see the stream end before `Exited` and may re-attach.
    shutdown: CancellationToken,
}

/// The container API over `backend`. Event streams stay open until their process exits.
pub fn router(backend: DynBackend) -> Router {
    router_with_shutdown(backend, CancellationToken::new())
}

/// Like [`router`], but open event streams end when `shutdown` is cancelled.
pub fn router_with_shutdown(backend: DynBackend, shutdown: CancellationToken) -> Router {
    Router::new()
        .route(routes::PING, get(ping))
        .route(routes::CAPACITY, get(capacity))
        .route(routes::CONTAINERS, post(create).get(list))
        .route(routes::CONTAINER, delete(destroy))
        .route(routes::CONTAINER_INFO, get(info))
        .route(routes::CONTAINER_STOP, post(stop))
        .route(routes::PROCESSES, post(run))
        .route(routes::PROCESS_ATTACH, get(attach))
        .route(routes::PROCESS_SIGNAL, post(signal))
        .route(routes::FILES, get(stream_out).put(stream_in))
        .route(routes::METRICS, post(bulk_metrics))
        .fallback(no_route)
        .with_state(AppState { backend, shutdown })
}

/// Serves the container API on `listener` within `limits` (through the one server loop every
/// role uses) until `shutdown` is cancelled, then ends open event streams and waits for
/// in-flight requests. With `tls`, clients need a certificate of its CA (mutual TLS).
pub async fn serve(
    listener: TcpListener,
    backend: DynBackend,
    shutdown: CancellationToken,
    limits: ServeLimits,
    tls: Option<diego_runtime::tls::Tls>,
) -> std::io::Result<()> {
    let app = router_with_shutdown(backend, shutdown.clone());
    diego_runtime::serve(listener, app, shutdown, limits, tls).await
}

/// A [`GardenError`] as a response: its JSON (`{"type":"NotFound","message":…}`) with a
/// status the client maps back.
pub struct ApiError(pub GardenError);

impl From<GardenError> for ApiError {
    fn from(e: GardenError) -> Self {
        ApiError(e)
    }
}

/// The HTTP status of each error kind.
pub fn status_of(e: &GardenError) -> StatusCode {
    match e {
        GardenError::NotFound(_) => StatusCode::NOT_FOUND,
        GardenError::Exists(_) => StatusCode::CONFLICT,
        GardenError::Invalid(_) => StatusCode::BAD_REQUEST,
        GardenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::warn!(err = %self.0, "garden request failed");
        } else {
            tracing::debug!(err = %self.0, "garden request refused");
        }
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A malformed request is `Invalid`, in the same JSON shape as every other error (axum's own
/// rejections are plain text).
fn invalid(what: &str, err: impl std::fmt::Display) -> ApiError {
    ApiError(GardenError::Invalid(format!("{what}: {err}")))
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| invalid("request body", e))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(t)| t).map_err(|e| invalid("path", e))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t).map_err(|e| invalid("query", e))
}

async fn no_route() -> ApiError {
    ApiError(GardenError::NotFound("no such route".into()))
}

async fn ping(State(s): State<AppState>) -> ApiResult<StatusCode> {
    s.backend.ping().await?;
    Ok(StatusCode::OK)
}

async fn capacity(State(s): State<AppState>) -> ApiResult<Json<Capacity>> {
    Ok(Json(s.backend.capacity().await?))
}

async fn create(State(s): State<AppState>, body: Bytes) -> ApiResult<(StatusCode, Json<ContainerInfo>)> {
    let info = s.backend.create(parse_json(&body)?).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list(
    State(s): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Vec<String>>> {
    let mut filter = Properties::new();
    for (k, v) in query(q)? {
        match k.strip_prefix(routes::PROPERTY_PREFIX) {
            Some(name) => filter.insert(name.to_string(), v),
            None => {
                return Err(invalid(
                    "query",
                    format!(
                        "unknown parameter {k:?} (filter with {}KEY=VALUE)",
                        routes::PROPERTY_PREFIX
                    ),
                ))
            }
        };
    }
    Ok(Json(s.backend.list(&filter).await?))
}

async fn info(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ContainerInfo>> {
    Ok(Json(s.backend.info(&path(p)?).await?))
}

#[derive(Deserialize)]
struct StopQuery {
    #[serde(default)]
    kill: bool,
}

async fn stop(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<StopQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    s.backend.stop(&path(p)?, query(q)?.kill).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destroy(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<StatusCode> {
    s.backend.destroy(&path(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The process id travels in a header, so it must be a valid header value.
fn process_id_header(id: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(id).map_err(|_| invalid("process id", format!("{id:?} must be printable ASCII")))
}

fn events_response(p: ProcessStream, id: HeaderValue, shutdown: CancellationToken) -> Response {
    let frames = p
        .events
        .map(|e| Ok::<_, Infallible>(wire::encode(&e)))
        .take_until(shutdown.cancelled_owned());
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(routes::EVENTS_CONTENT_TYPE),
            ),
            (header::HeaderName::from_static(routes::PROCESS_ID_HEADER), id),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

async fn run(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let handle = path(p)?;
    let spec: ProcessSpec = parse_json(&body)?;
    // Checked before starting it: a process whose id cannot be reported must not run.
    process_id_header(&spec.id)?;
    let process = s.backend.run(&handle, spec).await?;
    let id = process_id_header(&process.id)?;
    Ok(events_response(process, id, s.shutdown))
}

async fn attach(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (handle, id) = path(p)?;
    let process = s.backend.attach(&handle, &id).await?;
    let id = process_id_header(&process.id)?;
    Ok(events_response(process, id, s.shutdown))
}

async fn signal(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (handle, id) = path(p)?;
    let SignalRequest { signal } = parse_json(&body)?;
    s.backend.signal(&handle, &id, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct FilesQuery {
    path: String,
}

async fn stream_in(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<FilesQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<StatusCode> {
    let handle = path(p)?;
    let dst = query(q)?.path;
    let tar = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| GardenError::Unavailable(format!("reading the tar stream: {e}"))));
    s.backend.stream_in(&handle, &dst, Box::pin(tar)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A backend error in the middle of the tar aborts the response, which the client reports as
/// `Unavailable` (the status line has already gone out).
async fn stream_out(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<FilesQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let handle = path(p)?;
    let src = query(q)?.path;
    let tar = s.backend.stream_out(&handle, &src).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        )],
        Body::from_stream(tar),
    )
        .into_response())
}

async fn bulk_metrics(
    State(s): State<AppState>,
    body: Bytes,
) -> ApiResult<Json<BTreeMap<String, ContainerMetrics>>> {
    let handles: Vec<String> = parse_json(&body)?;
    Ok(Json(s.backend.bulk_metrics(&handles).await?))
}
