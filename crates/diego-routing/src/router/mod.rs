//! The HTTP router (diego-spec §8): a reverse proxy on hyper that sends each request to an
//! instance of the app its `Host` names, from a routing table the sync keeps current.
//!
//! - [`balance`]: round robin or least connections, and the sticky instance (pure).
//! - [`headers`]: hop-by-hop stripping, `X-Forwarded-*`, request ids (pure).
//! - [`answer`]: the router's own 400/404/502/503/504 answers (pure).
//! - [`retry`]: only a failed connect is tried again, on another instance (pure).
//! - [`sticky`]: gorouter's `__VCAP_ID__` cookie (pure).
//! - `proxy`: the request path; `routes`: what it reads, swapped in whole on every publish;
//!   `admin`: `/routes`, `/health`, `/metrics`; [`access`]: the per-request record and hook.
//!
//! Both listeners run on [`diego_runtime::serve`]: the proxy needs upgrades, streaming in
//! both directions and the client's address, which `serve` provides; the proxy is a
//! [`diego_runtime::Handler`] of its own rather than an axum router, whose routing and
//! extractors it would not use. The proxy listener is served by one thread per core, each
//! running `serve` on its own single-threaded runtime with its own backend connections
//! (`pool`).

pub mod access;
mod admin;
pub mod answer;
pub mod balance;
pub mod headers;
mod metrics;
mod pool;
mod proxy;
pub mod retry;
mod routes;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use diego_client::{BbsClient, BbsUrls};
use diego_runtime::{ServeLimits, Supervisor, SupervisorError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use access::{ship_to, AccessHook, AccessRecord, BackendInfo};
pub use balance::Balance;
pub use headers::Cidr;

use crate::sync::{self, SyncConfig, SyncStats};

/// gorouter's `endpoint_timeout`: the longest wait for a backend's response head.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for a connection to a backend (gorouter's `endpoint_dial_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight get to finish after the router is told to stop.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle kept-alive connections kept per backend.
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 64;
/// How long an idle backend connection is kept: under the 5 s keep-alive timeout of common
/// app servers (Node's default), so the router drops a connection before the app does.
pub const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Default proxy listener of `diego router` and `diego dev`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener of `diego router`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

#[derive(Clone)]
pub struct RouterConfig {
    /// The BBS processes to follow (failing over between them).
    pub bbs: BbsUrls,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub balance: Balance,
    /// Longest wait for a backend's response head; past it the client gets 504.
    pub backend_timeout: Duration,
    /// Longest wait for a connection to a backend; a connect that times out is retried.
    pub connect_timeout: Duration,
    /// How long in-flight requests and tunnels get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Attempts per request, the first included (only connect failures are retried); 1 to
    /// [`retry::MAX_ATTEMPTS`].
    pub max_attempts: usize,
    pub max_idle_per_backend: usize,
    /// Threads serving the proxy listener, each with its own runtime and backend connections;
    /// 0 is one per core.
    pub proxy_threads: usize,
    /// Clients whose `X-Forwarded-Proto` is believed (load balancers in front).
    pub trusted_proxies: Vec<Cidr>,
    pub sync: SyncConfig,
    pub serve_limits: ServeLimits,
    /// Called with every access record (RTR log lines); `None` by default.
    pub access_hook: Option<AccessHook>,
    /// Mutual TLS for the admin listener and the BBS client; `None` speaks plain HTTP. The
    /// proxy listener (app traffic) and the connections to app containers stay plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("bbs", &self.bbs)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("balance", &self.balance)
            .field("backend_timeout", &self.backend_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("access_hook", &self.access_hook.is_some())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RouterConfig {
    pub fn new(bbs: impl Into<BbsUrls>, listen: SocketAddr, admin_listen: SocketAddr) -> Self {
        RouterConfig {
            bbs: bbs.into(),
            listen,
            admin_listen,
            balance: Balance::default(),
            backend_timeout: DEFAULT_BACKEND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_attempts: retry::DEFAULT_MAX_ATTEMPTS,
            max_idle_per_backend: DEFAULT_MAX_IDLE_PER_BACKEND,
            proxy_threads: 0,
            trusted_proxies: Vec::new(),
            sync: SyncConfig::default(),
            serve_limits: ServeLimits::default(),
            access_hook: None,
            tls: None,
        }
    }
}

/// A started router.
pub struct RunningRouter {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    ready: Arc<AtomicBool>,
    /// Finishes once `shutdown` is cancelled and the proxy drained, or with an error naming
    /// the member that stopped on its own.
    pub task: JoinHandle<Result<(), SupervisorError>>,
}

impl RunningRouter {
    /// Whether the first routing table was published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Binds both listeners and starts the sync, the admin server and the proxy. On `shutdown`
/// the proxy stops accepting and drains (up to `drain_timeout`), then the admin server and
/// the sync stop.
pub async fn start(config: RouterConfig, shutdown: CancellationToken) -> std::io::Result<RunningRouter> {
    let listener = bind_shared(config.listen)?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
    let (addr, admin_addr) = (listener.local_addr()?, admin_listener.local_addr()?);

    let proxy = Arc::new(proxy::Proxy {
        routes: ArcSwap::from_pointee(routes::Routes::default()),
        metrics: metrics::RouterMetrics::new(),
        settings: proxy::Settings {
            balance: config.balance,
            backend_timeout: config.backend_timeout,
            max_attempts: config.max_attempts.clamp(1, retry::MAX_ATTEMPTS),
            trusted_proxies: config.trusted_proxies.clone(),
        },
        hook: config.access_hook.clone(),
        tunnels: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
    });
    let ready = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SyncStats::default());

    // Stopped in reverse: the proxy drains first, then the admin listener, then the sync.
    let mut members = Supervisor::new(shutdown);
    {
        let (proxy, ready, stats) = (proxy.clone(), ready.clone(), stats.clone());
        let bbs = BbsClient::with_tls(config.bbs.clone(), config.tls.as_ref());
        let sync_config = config.sync.clone();
        members.spawn("router sync", move |stop| async move {
            let publish = move |table: &crate::table::RoutingTable| {
                let hosts = table.hosts();
                proxy.metrics.table(hosts.len(), hosts.endpoint_count());
                let next = routes::Routes::build(hosts, &proxy.routes.load());
                proxy.routes.store(Arc::new(next));
                ready.store(true, Ordering::Release);
            };
            sync::run(bbs, sync_config, stats, publish, stop).await;
            Ok::<(), std::convert::Infallible>(())
        });
    }
    {
        let admin = Arc::new(admin::Admin {
            proxy: proxy.clone(),
            stats,
            ready: ready.clone(),
            bbs_url: config.bbs.to_string(),
        });
        let (limits, tls) = (config.serve_limits, config.tls.clone());
        members.spawn("router admin", move |stop| {
            diego_runtime::serve(admin_listener, admin::app(admin), stop, limits, tls)
        });
    }
    {
        let (config, drain) = (config.clone(), config.drain_timeout);
        let listener = listener.into_std()?;
        members.spawn("router proxy", move |stop| {
            serve_and_drain(listener, config, proxy, stop, drain)
        });
    }
    tracing::info!(%addr, %admin_addr, bbs = %config.bbs, balance = config.balance.as_str(), "router listening");
    let task = tokio::spawn(members.wait());
    Ok(RunningRouter {
        addr,
        admin_addr,
        ready,
        task,
    })
}

/// Pending connections each proxy socket holds.
const LISTEN_BACKLOG: u32 = 4096;

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// The proxy's first listening socket, open to more sockets of this process on the same port
/// (one per thread). A plain bind first: it fails when anything else holds the port, even
/// another router whose sockets share theirs, so two routers never split one port.
fn bind_shared(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let socket = reuseport_socket(addr)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Proxy threads when [`RouterConfig::proxy_threads`] is 0: one per core.
fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// One proxy thread: a single-threaded runtime serving its own socket on the proxy's port with
/// its own backend client, so a request and its backend connection are driven on one thread,
/// without handing work between threads (nginx's workers do the same).
fn lane(
    index: usize,
    listener: std::net::TcpListener,
    config: &RouterConfig,
    proxy: Arc<proxy::Proxy>,
    stop: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let pool = pool::Pool::new(pool::PoolSettings {
        connect_timeout: config.connect_timeout.min(config.backend_timeout),
        idle_timeout: BACKEND_IDLE_TIMEOUT,
        max_idle_per_backend: config.max_idle_per_backend,
    });
    let limits = config.serve_limits;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("router-proxy-{index}"))
        .spawn(move || {
            let served = (|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let lane = Arc::new(proxy::Lane { proxy, pool });
                    // Closes the connections of backends no longer asked for.
                    let sweeping = lane.clone();
                    let sweeper = tokio::spawn(async move {
                        let mut every = tokio::time::interval(BACKEND_IDLE_TIMEOUT);
                        loop {
                            every.tick().await;
                            sweeping.pool.sweep();
                        }
                    });
                    // App traffic: plain HTTP whatever the role's TLS.
                    let served =
                        diego_runtime::serve(listener, proxy::LaneHandler(lane), stop, limits, None).await;
                    sweeper.abort();
                    served
                })
            })();
            let _ = done.send(served);
        })?;
    Ok(finished)
}

/// Serves the proxy on its threads until `stop`; then they stop accepting, and the requests
/// and tunnels in flight get up to `drain` to finish before the router gives up on them.
async fn serve_and_drain(
    listener: std::net::TcpListener,
    config: RouterConfig,
    proxy: Arc<proxy::Proxy>,
    stop: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let threads = match config.proxy_threads {
        0 => default_proxy_threads(),
        n => n,
    };
    // Each thread accepts on a socket of its own (SO_REUSEPORT), so the kernel spreads the
    // connections evenly over them rather than waking whichever thread wins the race.
    let addr = listener.local_addr()?;
    let mut sockets = vec![listener];
    for _ in 1..threads {
        let socket = reuseport_socket(addr)?;
        socket.bind(addr)?;
        sockets.push(socket.listen(LISTEN_BACKLOG)?.into_std()?);
    }
    let mut lanes = Vec::with_capacity(threads);
    for (i, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(true)?;
        lanes.push(lane(i, socket, &config, proxy.clone(), stop.clone())?);
    }
    let all = futures_util::future::join_all(lanes);
    tokio::pin!(all);
    tokio::select! {
        ended = &mut all => {
            // A thread ended before the stop: its error is the router's.
            return first_error(ended);
        }
        () = stop.cancelled() => {}
    }
    let deadline = tokio::time::Instant::now() + drain;
    let served = tokio::time::timeout_at(deadline, &mut all).await;
    proxy.tunnels.close();
    let tunneled = tokio::time::timeout_at(deadline, proxy.tunnels.wait()).await;
    proxy.hard_stop.cancel();
    match (served, tunneled) {
        (Ok(ended), Ok(())) => {
            tracing::info!("routing: the proxy drained");
            first_error(ended)
        }
        _ => {
            tracing::warn!(
                ?drain,
                tunnels = proxy.tunnels.len(),
                "routing: the drain timeout passed with requests in flight; giving up on them"
            );
            Ok(())
        }
    }
}

fn first_error(
    ended: Vec<Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>>,
) -> std::io::Result<()> {
    for e in ended {
        match e {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("a proxy thread panicked")),
        }
    }
    Ok(())
}
