//! The route-emitter (`diego route-emitter`, diego-spec §8): the routing table published
//! over NATS in gorouter's protocol, for an existing Cloud Foundry routing tier.
//!
//! - [`message`]: `router.register` / `router.unregister` bodies from [`Registration`]s, and
//!   routers' greetings (`router.start`, the answer to `router.greet`).
//! - [`schedule`]: the full re-registration timer (the router's interval, jittered).
//! - [`unregistrations`]: unregistrations repeated every 30 s, 20 times, unless registered again.
//! - [`state`]: all of it as one pure state machine: what to send on a new table, a tick, a
//!   greeting or a reconnect.
//! - `nats.rs`: the IO shell around [`state::EmitterState`], on `async-nats` (which reconnects
//!   by itself; the whole table is sent again on every connect).
//!
//! [`start`] runs it with [`crate::sync`] feeding the table and an HTTP server for `/health`
//! and `/metrics`, all under one [`diego_runtime::Supervisor`].

pub mod message;
mod metrics;
mod nats;
pub mod schedule;
pub mod state;
pub mod unregistrations;

/// A registration of `web.example.com` to 127.0.0.1:`port` (instance `ig-<port>`), changed at
/// `since`, for the emitter's table tests.
#[cfg(test)]
pub(crate) fn test_registration(port: u32, since: i64) -> crate::table::Registration {
    use crate::table::{Endpoint, Registration};
    Registration {
        uris: vec!["web.example.com".into()],
        route_service_url: None,
        router_group_guid: None,
        isolation_segment: None,
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls_port: None,
            container_port: 8080,
            process_guid: "web".into(),
            index: 0,
            instance_guid: format!("ig-{port}"),
            cell_id: "cell-1".into(),
            log_guid: "log-web".into(),
            instance_address: String::new(),
            availability_zone: String::new(),
            presence: diego_model::Presence::Ordinary,
            since,
        },
    }
}

use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::ServerAddr;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use diego_client::{BbsClient, BbsUrls};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A NATS server's address, as [`parse_nats_url`] makes it.
pub use async_nats::ServerAddr as NatsServerAddr;
pub use metrics::{EmitterMetrics, PREFIX as METRICS_PREFIX};
pub use state::{Subject, Timing};

use crate::sync::{self, SyncConfig, SyncStats};
use crate::table::Registration;

/// `--listen`'s default: a loopback port beside the router's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";
/// `--nats`'s default: a NATS server on this machine.
pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";
pub const HEALTH_PATH: &str = "/health";
pub const METRICS_PATH: &str = "/metrics";

#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    /// A `--nats` URL that cannot be used.
    #[error("--nats {url:?}: {problem}")]
    InvalidNatsUrl { url: String, problem: String },
    #[error("no NATS server given (--nats nats://HOST:PORT)")]
    NoNatsServers,
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The NATS client failed in a way it does not recover from by reconnecting.
    #[error("NATS: {0}")]
    Nats(String),
}

/// A `--nats` URL: `nats://[USER:PASSWORD@]HOST:PORT` (the port defaults to 4222).
pub fn parse_nats_url(url: &str) -> Result<ServerAddr, EmitterError> {
    let invalid = |problem: String| EmitterError::InvalidNatsUrl {
        url: url.to_string(),
        problem,
    };
    if !url.starts_with("nats://") {
        return Err(invalid("must start with nats:// (nats://HOST:PORT)".into()));
    }
    let addr: ServerAddr = url.parse().map_err(|e: std::io::Error| invalid(e.to_string()))?;
    if addr.host().is_empty() {
        return Err(invalid("has no host".into()));
    }
    Ok(addr)
}

/// How a route-emitter runs.
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// The BBS processes to follow (failing over between them).
    pub bbs: BbsUrls,
    /// NATS servers of one cluster; the client connects to one and fails over to the others.
    pub nats: Vec<ServerAddr>,
    /// Where `/health` and `/metrics` are served.
    pub listen: SocketAddr,
    pub sync: SyncConfig,
    pub timing: Timing,
    pub serve_limits: diego_runtime::ServeLimits,
    /// Mutual TLS for the `/health`/`/metrics` listener and the BBS client; `None` speaks
    /// plain HTTP. NATS is configured by its own URLs.
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl EmitterConfig {
    pub fn new(bbs: impl Into<BbsUrls>, nats: Vec<ServerAddr>, listen: SocketAddr) -> Self {
        EmitterConfig {
            bbs: bbs.into(),
            nats,
            listen,
            sync: SyncConfig::default(),
            timing: Timing::default(),
            serve_limits: Default::default(),
            tls: None,
        }
    }
}

/// A route-emitter running in the background.
pub struct RunningEmitter {
    /// Where `/health` and `/metrics` are served.
    pub addr: SocketAddr,
    pub metrics: EmitterMetrics,
    pub sync_stats: Arc<SyncStats>,
    /// Finishes once `shutdown` is cancelled and everything stopped, or with an error naming
    /// the member that stopped on its own.
    pub task: JoinHandle<Result<(), diego_runtime::SupervisorError>>,
}

/// Binds `config.listen`, starts connecting to NATS (in the background: the emitter runs
/// and keeps trying while no server answers) and runs until `shutdown` is cancelled.
pub async fn start(
    config: EmitterConfig,
    shutdown: CancellationToken,
) -> Result<RunningEmitter, EmitterError> {
    if config.nats.is_empty() {
        return Err(EmitterError::NoNatsServers);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmitterError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| EmitterError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics = EmitterMetrics::new();
    let sync_stats = Arc::new(SyncStats::default());

    let (events_tx, events) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .name("diego-route-emitter")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(config.nats.clone())
        .await
        .map_err(|e| EmitterError::Nats(format!("connecting: {e}")))?;

    let (tables_tx, tables) = watch::channel::<Option<Arc<Vec<Registration>>>>(None);
    let http_client = diego_runtime::http_client(config.tls.as_ref())
        .build()
        .map_err(|e| EmitterError::Nats(format!("building the BBS client: {e}")))?;
    let bbs = BbsClient::with_http(config.bbs.clone(), http_client);

    // Stopped in reverse: the sync first, then the NATS loop (which flushes), then HTTP.
    let mut members = diego_runtime::Supervisor::new(shutdown);
    {
        let app = router(metrics.clone(), sync_stats.clone());
        let (limits, tls) = (config.serve_limits, config.tls.clone());
        members.spawn("route-emitter http", move |stop| {
            diego_runtime::serve(listener, app, stop, limits, tls)
        });
    }
    {
        let (metrics, timing) = (metrics.clone(), config.timing);
        members.spawn("route-emitter nats", move |stop| {
            nats::run(client, events, tables, timing, metrics, stop)
        });
    }
    {
        let (stats, sync_config) = (sync_stats.clone(), config.sync.clone());
        members.spawn("route-emitter sync", move |stop| async move {
            let publish = move |t: &crate::table::RoutingTable| {
                tables_tx.send_replace(Some(Arc::new(t.registrations())));
            };
            sync::run(bbs, sync_config, stats, publish, stop).await;
            Ok::<(), std::convert::Infallible>(())
        });
    }
    tracing::info!(%addr, bbs = %config.bbs, nats = ?config.nats.iter().map(|a| format!("{}:{}", a.host(), a.port())).collect::<Vec<_>>(), "route-emitter started");
    Ok(RunningEmitter {
        addr,
        metrics,
        sync_stats,
        task: tokio::spawn(members.wait()),
    })
}

#[derive(Clone)]
struct HttpState {
    metrics: EmitterMetrics,
    sync_stats: Arc<SyncStats>,
}

fn router(metrics: EmitterMetrics, sync_stats: Arc<SyncStats>) -> Router {
    let registry = metrics.registry.clone();
    let app = Router::new()
        .route(HEALTH_PATH, get(health))
        .route(METRICS_PATH, get(scrape))
        .with_state(HttpState { metrics, sync_stats });
    diego_runtime::metrics::record_requests(app, &registry)
}

/// 200 when connected to NATS and the table has been listed from the BBS, else 503; the
/// body says which.
async fn health(axum::extract::State(s): axum::extract::State<HttpState>) -> Response {
    let nats_connected = s.metrics.nats_connected.get() == 1;
    let table_synced = s.sync_stats.publishes.load(std::sync::atomic::Ordering::Relaxed) > 0;
    let status = if nats_connected && table_synced {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "nats_connected": nats_connected,
        "table_synced": table_synced,
        "registrations": s.metrics.registrations.get(),
    });
    (status, Json(body)).into_response()
}

async fn scrape(axum::extract::State(s): axum::extract::State<HttpState>, headers: HeaderMap) -> Response {
    let scrape = s.metrics.registry.scrape().await;
    s.metrics.copy_sync(&s.sync_stats);
    scrape.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls() {
        let cases = [
            ("nats://127.0.0.1:4222", Ok(("127.0.0.1", 4222))),
            ("nats://nats.example.com", Ok(("nats.example.com", 4222))),
            ("nats://user:pw@10.0.0.1:14222", Ok(("10.0.0.1", 14222))),
            (
                "127.0.0.1:4222",
                Err("--nats \"127.0.0.1:4222\": must start with nats:// (nats://HOST:PORT)"),
            ),
            (
                "http://127.0.0.1:4222",
                Err("--nats \"http://127.0.0.1:4222\": must start with nats:// (nats://HOST:PORT)"),
            ),
            (
                "nats://127.0.0.1:99999",
                Err("--nats \"nats://127.0.0.1:99999\": NATS server URL is invalid: invalid port number"),
            ),
        ];
        for (url, want) in cases {
            let got = parse_nats_url(url)
                .map(|a| (a.host().to_string(), a.port()))
                .map_err(|e| e.to_string());
            let want = want.map(|(h, p)| (h.to_string(), p)).map_err(str::to_string);
            assert_eq!(got, want, "{url}");
        }
    }
}
