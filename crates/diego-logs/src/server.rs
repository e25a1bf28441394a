//! The log server (`diego logs-server`): accepts batches of lines from cells, keeps a bounded
//! history per log guid ([`LogStore`], made durable by the [`Journal`] with a data dir), and
//! serves recent lines and follow streams (see [`crate::routes`] for the routes).
//!
//! Followers read from a broadcast per log guid, fed under the store's lock so they see lines
//! in seq order. A follower that falls behind the broadcast catches up from the store; lines
//! evicted before it got there are reported to it as a `dropped` frame and counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use diego_runtime::ServeLimits;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, JournalError, Loaded};
use crate::line::LogLine;
use crate::metrics::Metrics;
use crate::query::{LogQuery, DEFAULT_RECENT_LIMIT};
use crate::routes;
use crate::store::{LogStore, StoredLine, DEFAULT_RETENTION_LINES};

/// Where `diego logs-server` listens unless told otherwise (and `diego dev`'s log server).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8891";

/// Largest batch body accepted.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Lines a follower's broadcast holds before it has to catch up from the store.
const FOLLOW_BUFFER: usize = 16_384;

/// Lines per `lines` frame at most.
const FRAME_LINES: usize = 1_000;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Lines kept per log guid.
    pub retention_lines: usize,
    /// Where the journal lives; `None` keeps the history in memory only.
    pub data_dir: Option<PathBuf>,
    pub limits: ServeLimits,
    /// Mutual TLS for the listener (cells shipping lines, clients reading them); `None`
    /// speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            retention_lines: DEFAULT_RETENTION_LINES,
            data_dir: None,
            limits: ServeLimits::default(),
            tls: None,
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
    #[error("opening the log journal {0}")]
    Journal(#[from] JournalError),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// What the journal held at start (with a data dir).
    pub loaded: Option<Loaded>,
    /// Ends after shutdown, once connections are done and the journal is written.
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

struct Shared {
    store: Arc<Mutex<LogStore>>,
    /// Follow broadcasts per log guid; locked only while the store is (store first).
    hub: Mutex<HashMap<String, broadcast::Sender<Arc<StoredLine>>>>,
    journal: Mutex<Option<Journal>>,
    metrics: Metrics,
    registry: Arc<diego_runtime::metrics::Metrics>,
    shutdown: CancellationToken,
}

type AppState = Arc<Shared>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the journal (with a data dir), binds and serves until `shutdown`.
pub async fn start(config: ServerConfig, shutdown: CancellationToken) -> Result<RunningServer, ServerError> {
    let store = Arc::new(Mutex::new(LogStore::new(config.retention_lines)));
    let (journal, loaded) = match &config.data_dir {
        Some(dir) => {
            let (dir, store) = (dir.clone(), store.clone());
            let (j, l) = tokio::task::spawn_blocking(move || Journal::open(&dir, store))
                .await
                .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
            (Some(j), Some(l))
        }
        None => (None, None),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let metrics = Metrics::default();
    {
        let s = lock(&store);
        metrics.lines_held.set(s.held() as i64);
        metrics.log_guids.set(s.log_guids() as i64);
    }
    let shared = Arc::new(Shared {
        store,
        hub: Mutex::default(),
        journal: Mutex::new(journal),
        registry: metrics.build(),
        metrics,
        shutdown: shutdown.clone(),
    });
    let app = router(shared.clone());
    let (limits, tls) = (config.limits, config.tls);
    let task = tokio::spawn(async move {
        let served = diego_runtime::serve(listener, app, shutdown, limits, tls).await;
        let journal = lock(&shared.journal).take();
        if let Some(j) = journal {
            let _ = tokio::task::spawn_blocking(move || j.close()).await;
        }
        served.map_err(ServerError::Serve)
    });
    Ok(RunningServer {
        addr,
        url: format!("http://{addr}"),
        loaded,
        task,
    })
}

fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route(routes::LINES, post(post_lines))
        .route(routes::LOGS, get(recent))
        .route(routes::FOLLOW, get(follow))
        .route(routes::HEALTH, get(health))
        .route(
            routes::METRICS,
            diego_runtime::metrics::endpoint(state.registry.clone()),
        )
        .fallback(diego_runtime::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES));
    diego_runtime::metrics::record_requests(routes, &state.registry).with_state(state)
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    diego_runtime::error_response(status, kind, &message)
}

fn invalid(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// Parses a batch: one JSON line per line of the body, blank lines ignored.
pub fn parse_batch(body: &[u8]) -> Result<Vec<LogLine>, String> {
    let mut lines = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: LogLine = serde_json::from_slice(raw).map_err(|e| format!("batch line {}: {e}", i + 1))?;
        if line.log_guid.is_empty() {
            return Err(format!("batch line {}: log_guid must not be empty", i + 1));
        }
        if line.source_type.is_empty() {
            return Err(format!("batch line {}: source_type must not be empty", i + 1));
        }
        lines.push(line);
    }
    Ok(lines)
}

async fn post_lines(State(s): State<AppState>, body: Bytes) -> Response {
    let lines = match parse_batch(&body) {
        Ok(l) => l,
        Err(e) => return invalid(e),
    };
    let n = lines.len();
    s.accept(lines);
    axum::Json(serde_json::json!({ "accepted": n })).into_response()
}

impl Shared {
    /// Appends a batch, hands it to followers and to the journal, all under the store's lock
    /// so both see each log guid's lines in seq order.
    fn accept(&self, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let mut store = lock(&self.store);
        let mut stored = Vec::with_capacity(lines.len());
        let mut evicted = 0;
        for l in lines {
            let (st, ev) = store.append(l);
            evicted += ev;
            stored.push(st);
        }
        {
            let mut hub = lock(&self.hub);
            if !hub.is_empty() {
                hub.retain(|_, tx| tx.receiver_count() > 0);
                for st in &stored {
                    if let Some(tx) = hub.get(&st.line.log_guid) {
                        let _ = tx.send(st.clone());
                    }
                }
            }
        }
        let m = &self.metrics;
        m.lines_in.inc_by(stored.len() as u64);
        m.batches_in.inc();
        m.lines_evicted.inc_by(evicted as u64);
        m.lines_held.set(store.held() as i64);
        m.log_guids.set(store.log_guids() as i64);
        if let Some(j) = lock(&self.journal).as_ref() {
            j.append(stored);
        }
    }
}

fn query(q: Result<Query<LogQuery>, QueryRejection>) -> Result<LogQuery, Box<Response>> {
    let mut q = q
        .map_err(|e| Box::new(invalid(format!("query: {}", e.body_text()))))?
        .0;
    if q.source.as_deref().is_some_and(str::is_empty) {
        q.source = None;
    }
    Ok(q)
}

async fn recent(
    State(s): State<AppState>,
    Path(log_guid): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let lines = {
        let store = lock(&s.store);
        let limit = q.limit.unwrap_or(DEFAULT_RECENT_LIMIT).min(store.retention());
        store.recent(&log_guid, &q, limit)
    };
    let mut body = Vec::with_capacity(lines.len() * 160);
    for l in &lines {
        let _ = serde_json::to_writer(&mut body, &l.line);
        body.push(b'\n');
    }
    ([(header::CONTENT_TYPE, routes::NDJSON)], body).into_response()
}

async fn follow(
    State(s): State<AppState>,
    Path(log_guid): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let resume = match headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()))
    {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => return invalid("Last-Event-ID must be a line seq (a whole number)".into()),
    };
    // Subscribe and read the start under one lock: no line falls between the two.
    let (rx, start) = {
        let store = lock(&s.store);
        let rx = lock(&s.hub)
            .entry(log_guid.clone())
            .or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe();
        let start = match resume {
            Some(id) => store.after(&log_guid, id, &q, usize::MAX),
            None => {
                let n = q.recent.unwrap_or(0).min(store.retention());
                crate::store::After {
                    lines: store.recent(&log_guid, &q, n),
                    missed: 0,
                    upto: store.last_seq(&log_guid),
                }
            }
        };
        (rx, start)
    };
    let (tx, frames) = mpsc::channel::<SseEvent>(16);
    let shared = s.clone();
    tokio::spawn(async move {
        shared.metrics.followers.inc();
        let shutdown = shared.shutdown.clone();
        tokio::select! {
            () = pump(&shared, &log_guid, &q, rx, start, &tx) => {}
            () = shutdown.cancelled() => {}
        }
        shared.metrics.followers.dec();
    });
    let stream = futures_util::StreamExt::map(ReceiverStream::new(frames), Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Feeds one follower: the start, then new lines, catching up from the store after a lag.
async fn pump(
    s: &Shared,
    log_guid: &str,
    q: &LogQuery,
    mut rx: broadcast::Receiver<Arc<StoredLine>>,
    start: crate::store::After,
    tx: &mpsc::Sender<SseEvent>,
) {
    let mut last = start.upto;
    if !send_missed(s, tx, start.missed).await || !send_lines(s, tx, &start.lines, last).await {
        return;
    }
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            () = tx.closed() => return,
        };
        let mut batch = Vec::new();
        let mut lagged = false;
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(st) => {
                    if st.seq > last {
                        last = st.seq;
                        if q.matches(&st.line) {
                            batch.push(st);
                        }
                    }
                    if batch.len() < FRAME_LINES {
                        next = match rx.try_recv() {
                            Ok(st) => Some(Ok(st)),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                lagged = true;
                                None
                            }
                            Err(_) => None,
                        };
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        if !send_lines(s, tx, &batch, last).await {
            return;
        }
        if lagged {
            let caught = lock(&s.store).after(log_guid, last, q, usize::MAX);
            last = caught.upto;
            if !send_missed(s, tx, caught.missed).await || !send_lines(s, tx, &caught.lines, last).await {
                return;
            }
        }
    }
}

async fn send_missed(s: &Shared, tx: &mpsc::Sender<SseEvent>, missed: u64) -> bool {
    if missed == 0 {
        return true;
    }
    s.metrics.lines_dropped.inc_by(missed);
    let data = serde_json::json!({ "count": missed }).to_string();
    tx.send(SseEvent::default().event(routes::EVENT_DROPPED).data(data))
        .await
        .is_ok()
}

/// Sends `lines` in frames of at most [`FRAME_LINES`]; the last frame carries `upto` as its id.
async fn send_lines(s: &Shared, tx: &mpsc::Sender<SseEvent>, lines: &[Arc<StoredLine>], upto: u64) -> bool {
    let chunks = lines.len().div_ceil(FRAME_LINES);
    for (i, chunk) in lines.chunks(FRAME_LINES).enumerate() {
        let mut data = String::with_capacity(chunk.len() * 160);
        for (j, st) in chunk.iter().enumerate() {
            if j > 0 {
                data.push('\n');
            }
            data.push_str(&serde_json::to_string(&st.line).unwrap_or_default());
        }
        let id = if i + 1 == chunks {
            upto
        } else {
            chunk.last().map_or(upto, |st| st.seq)
        };
        let frame = SseEvent::default()
            .event(routes::EVENT_LINES)
            .id(id.to_string())
            .data(data);
        if tx.send(frame).await.is_err() {
            return false;
        }
        s.metrics.lines_out.inc_by(chunk.len() as u64);
    }
    true
}

async fn health(State(s): State<AppState>) -> Response {
    let store = lock(&s.store);
    axum::Json(serde_json::json!({
        "status": "ok",
        "log_guids": store.log_guids(),
        "lines_held": store.held(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_batch;

    #[test]
    fn batches_are_json_lines_and_bad_ones_are_named() {
        let ok = b"{\"log_guid\":\"g\",\"source_type\":\"APP\",\"stream\":\"stdout\",\"timestamp_ns\":1,\"message\":\"a\"}\n\n{\"log_guid\":\"g\",\"source_type\":\"CELL\",\"instance_index\":2,\"stream\":\"stderr\",\"timestamp_ns\":2,\"message\":\"b\"}\n";
        let lines = parse_batch(ok).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].instance_index, Some(2));
        #[rustfmt::skip]
        let bad: [(&[u8], &str); 4] = [
            (b"{}\n", "batch line 1: missing field `log_guid`"),
            (b"\n{\"log_guid\":\"\",\"source_type\":\"A\",\"stream\":\"stdout\",\"timestamp_ns\":1,\"message\":\"\"}", "batch line 2: log_guid must not be empty"),
            (b"{\"log_guid\":\"g\",\"source_type\":\"\",\"stream\":\"stdout\",\"timestamp_ns\":1,\"message\":\"\"}", "batch line 1: source_type must not be empty"),
            (b"{\"log_guid\":\"g\",\"source_type\":\"A\",\"stream\":\"out\",\"timestamp_ns\":1,\"message\":\"\"}", "batch line 1: unknown variant `out`"),
        ];
        for (body, want) in bad {
            let err = parse_batch(body).unwrap_err();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }
}
