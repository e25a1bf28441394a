//! The file server (`diego file-server`): blobs in a [`BlobStore`], served over HTTP (see
//! [`crate::routes`] for the routes).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use diego_runtime::ServeLimits;
use tokio_util::sync::CancellationToken;

use crate::blobs::{BlobStore, GcReport, PutError, Totals};
use crate::digest::Digest;
use crate::lifecycle::Bundles;
use crate::metrics::Metrics;
use crate::routes;

/// Where `diego file-server` listens unless told otherwise (and `diego dev`'s file server).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8892";

/// The largest upload accepted unless configured otherwise: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the blobs live.
    pub data_dir: PathBuf,
    /// Bytes one upload may have.
    pub max_upload_bytes: u64,
    pub limits: ServeLimits,
    /// Mutual TLS for the listener; `None` speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
    /// Each subdirectory is served as the lifecycle bundle `NAME.tgz` (see [`crate::lifecycle`]).
    pub lifecycle_dir: Option<PathBuf>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            limits: ServeLimits::default(),
            tls: None,
            lifecycle_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the blob store in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("packing the lifecycle bundles of {dir}: {source}")]
    Lifecycle {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// What the store held at start.
    pub held: Totals,
    /// Ends after shutdown, once connections are done.
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

struct Shared {
    store: BlobStore,
    max_upload_bytes: u64,
    metrics: Metrics,
    registry: Arc<diego_runtime::metrics::Metrics>,
    bundles: Bundles,
}

type AppState = Arc<Shared>;

/// Opens the store, binds and serves until `shutdown`.
pub async fn start(config: ServerConfig, shutdown: CancellationToken) -> Result<RunningServer, ServerError> {
    let dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let store = BlobStore::open(&dir)?;
        let held = store.totals()?;
        Ok::<_, std::io::Error>((store, held))
    })
    .await
    .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?;
    let (store, held) = opened.map_err(|source| ServerError::Open {
        dir: config.data_dir.clone(),
        source,
    })?;
    let bundles = match config.lifecycle_dir.clone() {
        Some(dir) => {
            let packing = dir.clone();
            tokio::task::spawn_blocking(move || Bundles::pack(&packing))
                .await
                .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?
                .map_err(|source| ServerError::Lifecycle { dir, source })?
        }
        None => Bundles::default(),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let metrics = Metrics::default();
    metrics.blobs.set(held.blobs as i64);
    metrics.blob_bytes.set(held.bytes as i64);
    let shared = Arc::new(Shared {
        store,
        max_upload_bytes: config.max_upload_bytes,
        registry: metrics.build(),
        metrics,
        bundles,
    });
    let app = router(shared);
    let (limits, tls) = (config.limits, config.tls);
    let task = tokio::spawn(async move {
        diego_runtime::serve(listener, app, shutdown, limits, tls)
            .await
            .map_err(ServerError::Serve)
    });
    Ok(RunningServer {
        addr,
        url: format!("http://{addr}"),
        held,
        task,
    })
}

fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route(routes::BLOBS, post(upload_unnamed))
        .route(routes::BLOB, get(download).put(upload))
        .route(routes::LIFECYCLE, get(bundles))
        .route(routes::LIFECYCLE_BUNDLE, get(bundle))
        .route(routes::GC, post(collect))
        .route(routes::HEALTH, get(health))
        .route(
            routes::METRICS,
            diego_runtime::metrics::endpoint(state.registry.clone()),
        )
        .fallback(diego_runtime::no_such_route)
        // Uploads are limited by the store as they stream (`max_upload_bytes`).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            with_limit,
        ));
    diego_runtime::metrics::record_requests(routes, &state.registry).with_state(state)
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    diego_runtime::error_response(status, kind, &message)
}

fn internal(e: &std::io::Error) -> Response {
    tracing::error!(error = %e, "fileserver: the blob store failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UnknownError",
        format!("the blob store failed: {e}"),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

/// `GET /v1/lifecycle`: the bundles served, with their digests and sizes.
async fn bundles(State(s): State<AppState>) -> Response {
    axum::Json(s.bundles.list()).into_response()
}

/// `GET|HEAD /v1/lifecycle/{name}`: one bundle, with its digest as `ETag`.
async fn bundle(State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(b) = s.bundles.get(&name) else {
        let known: Vec<String> = s.bundles.list().into_iter().map(|b| b.name).collect();
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "no lifecycle bundle {name:?} is served; there are: {}",
                if known.is_empty() {
                    "none (--lifecycle-dir is not set)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    };
    if none_match(&headers, &b.digest) {
        s.metrics.not_modified.inc();
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&b.digest))]).into_response();
    }
    s.metrics.downloads.inc();
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/gzip")),
            (header::ETAG, etag(&b.digest)),
        ],
        b.bytes.clone(),
    )
        .into_response()
}

/// `400` for a path segment that is not a digest, naming it and why.
fn not_a_digest(e: &crate::digest::DigestError) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string())
}

fn etag(d: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{d}\"")).expect("hex is a valid header value")
}

/// Whether `If-None-Match` names `d` (or is `*`).
fn none_match(headers: &HeaderMap, d: &Digest) -> bool {
    let want = d.hex();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == want)
}

async fn download(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let d = match raw.parse::<Digest>() {
        Ok(d) => d,
        Err(e) => return not_a_digest(&e),
    };
    let file = match tokio::fs::File::open(s.store.path(&d)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("no blob {d} is held"),
            )
        }
        Err(e) => return internal(&e),
    };
    if none_match(&headers, &d) {
        s.metrics.not_modified.inc();
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&d))]).into_response();
    }
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return internal(&e),
    };
    if method != axum::http::Method::HEAD {
        s.metrics.downloads.inc();
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::ETAG, etag(&d));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

async fn upload(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match raw.parse::<Digest>() {
        Ok(d) => store(&s, Some(d), &headers, body).await,
        Err(e) => not_a_digest(&e),
    }
}

/// `POST /v1/blobs`: the body is stored under the digest it hashes to (an uploader that cannot
/// know it beforehand: a staging container's droplet).
async fn upload_unnamed(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    store(&s, None, &headers, body).await
}

/// Stores `body`, as blob `named` when given (checked), else under its own digest.
async fn store(s: &Shared, named: Option<Digest>, headers: &HeaderMap, body: Body) -> Response {
    let limit = s.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        s.metrics.uploads_refused.inc();
        return too_large(declared, limit);
    }
    // Held already: nothing to read (the client can skip the upload with a HEAD first).
    if let Some(d) = named {
        match s.store.touch(&d).await {
            Ok(Some(size)) => {
                s.metrics.uploads_existing.inc();
                let stored = crate::blobs::Stored {
                    digest: d,
                    size,
                    created: false,
                };
                return (StatusCode::OK, axum::Json(stored)).into_response();
            }
            Ok(None) => {}
            Err(e) => return internal(&e),
        }
    }
    match s.store.put(named, body.into_data_stream(), limit).await {
        Ok(stored) => {
            let m = &s.metrics;
            if stored.created {
                m.uploads.inc();
                m.upload_bytes.inc_by(stored.size);
                m.blobs.inc();
                m.blob_bytes.inc_by(stored.size as i64);
            } else {
                m.uploads_existing.inc();
            }
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(stored)).into_response()
        }
        Err(e) => {
            s.metrics.uploads_refused.inc();
            match e {
                PutError::TooLarge { limit } => too_large(declared, limit),
                PutError::Mismatch { .. } => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ChecksumMismatch",
                    e.to_string(),
                ),
                PutError::Body(_) => error(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
                PutError::Io(e) => internal(&e),
            }
        }
    }
}

/// `413`, saying how large the upload is when its `Content-Length` said so.
fn too_large(declared: Option<u64>, limit: u64) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        routes::too_large_message(declared, limit),
    )
}

/// Every answer says the upload limit ([`routes::MAX_UPLOAD_HEADER`]).
async fn with_limit(State(s): State<AppState>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(routes::MAX_UPLOAD_HEADER, HeaderValue::from(s.max_upload_bytes));
    response
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    keep: Vec<Digest>,
    grace_seconds: Option<u64>,
}

async fn collect(State(s): State<AppState>, body: Result<axum::Json<GcRequest>, JsonRejection>) -> Response {
    let req = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidRequest", e.body_text()),
    };
    let grace = Duration::from_secs(req.grace_seconds.unwrap_or(routes::DEFAULT_GC_GRACE_SECONDS));
    let keep: HashSet<Digest> = req.keep.into_iter().collect();
    let shared = s.clone();
    let done = tokio::task::spawn_blocking(move || shared.store.collect(&keep, grace))
        .await
        .map_err(std::io::Error::other);
    let report: GcReport = match done.and_then(|r| r) {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    // What the collection left is what the store holds.
    let m = &s.metrics;
    m.gc_deleted.inc_by(report.deleted);
    m.blobs.set(report.kept as i64);
    m.blob_bytes.set(report.kept_bytes as i64);
    if report.deleted > 0 {
        tracing::info!(
            deleted = report.deleted,
            freed_bytes = report.freed_bytes,
            kept = report.kept,
            "fileserver: garbage collected blobs no one refers to"
        );
    }
    axum::Json(report).into_response()
}
