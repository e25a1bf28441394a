//! Diego's rep, the cell agent (diego-spec §3.5, §4.4, §6.4): it represents one cell to the
//! rest of Diego and keeps the BBS true to what the cell's containers do.
//!
//! - **Presence** (`presence.rs`): registers the cell in the BBS (capacity, zone, rootfs
//!   providers, placement tags) and renews it every third of its TTL.
//! - **The auction contract** (`http.rs`): `GET /state` reports the executor's totals and what
//!   is left, its LRP instances and tasks, and how many containers are starting; `POST /work`
//!   reserves containers for what fits (largest memory first) and answers with the rest.
//!   `POST …/stop` and `…/cancel` are the BBS asking to stop an instance or drop a task.
//! - **Work** (`work.rs`): after a reservation, an LRP instance is claimed in the BBS and its
//!   container run from the desired LRP; a task is started in the BBS and run from its
//!   definition. A refused claim or start gives the reservation back.
//! - **Harmonising** (`harmonize.rs`): every container event is turned into the BBS call Diego's
//!   rep makes — RUNNING → start the actual LRP with its address and ports; COMPLETED → remove
//!   it (stopped) or crash it (with the failure reason), complete the task (with its result
//!   file) — and then the container is deleted.
//!
//! - **Evacuation** (`evacuate.rs`): `POST /evacuate` (or SIGTERM to `diego cell`) hands the
//!   cell's instances over to other cells — each keeps serving until its replacement runs —
//!   lets tasks finish up to `evacuation_timeout`, then stops the rep and removes its presence.
//! - **Restarts** (`recover.rs`): a starting rep takes over the containers an earlier run of
//!   the cell left that the BBS still wants here (their processes keep running) and destroys
//!   the rest.
//! - **Bulk sync** (`sync.rs`): right after registering and then on a timer, the BBS's view of
//!   the cell is compared with its containers and mended (lost instances crashed, lost tasks
//!   failed, containers nobody wants stopped or destroyed).
//! - **Self-check** (`selfcheck.rs`): on a timer a small container is created, run and
//!   destroyed; while that fails the cell answers 503 and takes no work.
//! - **Metrics** (`metrics.rs`): `GET /metrics` has the cell's capacity and containers under
//!   Diego's names, the bulk sync's duration, and each LRP instance's CPU, memory and disk.
//!
//! The executor (`diego-executor`) runs the containers on any `ContainerBackend`; the rep
//! decides nothing about placement.

mod evacuate;
mod harmonize;
mod http;
mod metrics;
mod presence;
mod recover;
mod selfcheck;
mod sync;
mod work;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_client::{BbsClient, BbsUrls};
use diego_executor::download_cache::DownloadCache;
use diego_executor::{ContainerStore, ResourceCapacity, StoreConfig};
use diego_garden::DynBackend;
use diego_logs::LogSink;
use diego_runtime::{Supervisor, SupervisorError};
use futures_util::FutureExt;
use std::convert::Infallible;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use evacuate::TASK_EVACUATION_TIMED_OUT;
pub use recover::{LOST_CONTAINER, TASK_CONTAINER_MISSING};
pub use work::Workload;

/// How a cell runs.
#[derive(Debug, Clone)]
pub struct RepConfig {
    pub cell_id: String,
    pub zone: String,
    /// The BBS processes to talk to (failing over between them).
    pub bbs: BbsUrls,
    /// How long the start waits for a BBS that is not serving yet (nothing listening, or a
    /// 5xx answer) before it fails.
    pub bbs_wait: Duration,
    pub listen: SocketAddr,
    /// The URL the BBS and auctioneer use (default `http://<bound address>`).
    pub advertise_url: Option<String>,
    pub capacity: ResourceCapacity,
    /// `preloaded:NAME` root filesystems this cell has (busybox is always there).
    pub preloaded_rootfs: Vec<String>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    /// How long the cell's presence lives without renewal (3 s; Diego: 15 s). Renewed every
    /// third of it; after a crash or a partition the BBS replaces the cell's instances once it
    /// has passed.
    pub presence_ttl: Duration,
    /// Whether stopping removes the presence (true). False stops the rep as a killed agent
    /// would end: the presence is left to lapse, so a rep started again within the TTL finds
    /// its instances and tasks as it left them (the BBS never saw the cell go).
    pub remove_presence_on_stop: bool,
    /// SIGTERM → SIGKILL delay when stopping a container.
    pub graceful_shutdown: Duration,
    /// When the BBS asks to stop a running instance (scale-down, delete), how long it is
    /// unroutable (`routable: false` in the BBS) before its container is stopped, so routers
    /// stop sending it requests while it still answers them. Zero: stopped at once.
    pub unroute_delay: Duration,
    /// How often the BBS is compared with the containers (Diego: 30 s).
    pub sync_interval: Duration,
    /// How often the cell checks it can still run containers.
    pub self_check_interval: Duration,
    /// Containers created at once (the rest wait their turn).
    pub max_concurrent_creates: usize,
    /// Where downloads with a `cache_key` are cached (emptied at start); none: no cache.
    pub download_cache_dir: Option<PathBuf>,
    /// How long an evacuation waits for instances to move and tasks to finish.
    pub evacuation_timeout: Duration,
    /// How often an evacuating cell reports its instances again.
    pub evacuation_interval: Duration,
    /// What the HTTP server bounds: how long it waits for a request, how many connections it
    /// holds (see [`diego_runtime::ServeLimits`]).
    pub serve_limits: diego_runtime::ServeLimits,
    /// Mutual TLS for the rep's API and its requests to the BBS; `None` speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

/// [`RepConfig::unroute_delay`]'s default: far more than a router on the BBS's event stream
/// takes to drop a route (about a millisecond, docs/benchmarks.md), little to a scale-down.
pub const DEFAULT_UNROUTE_DELAY: Duration = Duration::from_millis(500);

impl RepConfig {
    pub fn new(cell_id: impl Into<String>, bbs: impl Into<BbsUrls>, listen: SocketAddr) -> Self {
        RepConfig {
            cell_id: cell_id.into(),
            zone: String::new(),
            bbs: bbs.into(),
            bbs_wait: diego_client::startup::DEFAULT_BBS_WAIT,
            listen,
            advertise_url: None,
            capacity: ResourceCapacity {
                memory_mb: 8192,
                disk_mb: 65536,
                containers: 250,
            },
            preloaded_rootfs: vec!["busybox".into()],
            placement_tags: Vec::new(),
            optional_placement_tags: Vec::new(),
            presence_ttl: Duration::from_secs(3),
            remove_presence_on_stop: true,
            graceful_shutdown: Duration::from_secs(10),
            unroute_delay: DEFAULT_UNROUTE_DELAY,
            sync_interval: Duration::from_secs(30),
            self_check_interval: Duration::from_secs(60),
            max_concurrent_creates: diego_executor::default_concurrent_creates(),
            download_cache_dir: None,
            evacuation_timeout: Duration::from_secs(600),
            evacuation_interval: Duration::from_secs(1),
            serve_limits: Default::default(),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("registering the cell with the BBS at {url}: {source}")]
    Register {
        url: String,
        #[source]
        source: diego_client::ClientError,
    },
}

/// The rep's shared state.
pub struct Rep {
    pub config: RepConfig,
    /// The URL this rep is reached at.
    pub url: String,
    pub bbs: BbsClient,
    pub store: Arc<ContainerStore>,
    pub backend: DynBackend,
    /// Container guid → what runs in it.
    workloads: Mutex<HashMap<String, Workload>>,
    /// Why the cell's last self-check failed (`None`: healthy).
    unhealthy: Mutex<Option<String>>,
    /// Instances the BBS asked to stop that are waiting out their unroute delay: if one exits
    /// meanwhile it was stopped, not crashed.
    stopping: Mutex<std::collections::HashSet<String>>,
    evacuation: evacuate::Evacuation,
    metrics: metrics::RepMetrics,
}

impl Rep {
    /// Why the cell is unhealthy, if it is (its last self-check failed).
    pub fn unhealthy_reason(&self) -> Option<String> {
        self.unhealthy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks (`true`) or clears instance `guid` as asked to stop.
    fn set_stopping(&self, guid: &str, stopping: bool) -> bool {
        let mut set = self.stopping.lock().unwrap_or_else(|p| p.into_inner());
        if stopping {
            set.insert(guid.to_string())
        } else {
            set.remove(guid)
        }
    }

    fn set_unhealthy(&self, reason: Option<String>) {
        *self.unhealthy.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    fn workloads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Workload>> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn workload(&self, guid: &str) -> Option<Workload> {
        self.workloads().get(guid).cloned()
    }
}

/// A rep serving in the background.
pub struct RunningRep {
    pub addr: SocketAddr,
    pub url: String,
    pub rep: Arc<Rep>,
    /// Ends once `shutdown` is cancelled (or an evacuation finished) and the presence is
    /// removed; `Err` when a member (the presence, the server, a loop) stopped on its own and
    /// took the rep down with it.
    pub task: JoinHandle<Result<(), SupervisorError>>,
}

/// Binds `config.listen`, registers the cell and serves until `shutdown` is cancelled.
pub async fn start(
    config: RepConfig,
    backend: DynBackend,
    sink: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<RunningRep, RepError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RepError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RepError::Bind {
        addr: config.listen,
        source,
    })?;
    let url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", diego_runtime::tls::scheme(config.tls.as_ref())));
    let http = diego_runtime::http_client(config.tls.as_ref())
        .build()
        .expect("an HTTP client with a loaded TLS configuration builds");
    let bbs = BbsClient::with_http(config.bbs.clone(), http);
    let download_cache = config.download_cache_dir.as_ref().and_then(|dir| {
        DownloadCache::open(dir, diego_executor::download_cache::DEFAULT_MAX_BYTES)
            .map_err(|err| {
                tracing::warn!(dir = %dir.display(), %err, "no download cache: cannot use its directory")
            })
            .ok()
    });
    let store = ContainerStore::new(
        backend.clone(),
        sink,
        StoreConfig {
            capacity: config.capacity,
            graceful_shutdown: config.graceful_shutdown,
            max_concurrent_creates: config.max_concurrent_creates,
            download_cache,
            cell_id: config.cell_id.clone(),
        },
    );
    let rep = Arc::new(Rep {
        config,
        url: url.clone(),
        bbs,
        store,
        backend,
        workloads: Mutex::default(),
        unhealthy: Mutex::default(),
        stopping: Mutex::default(),
        evacuation: Default::default(),
        metrics: metrics::RepMetrics::new(),
    });
    // The rep's own stop: the caller's shutdown, or the end of an evacuation.
    let shutdown = shutdown.child_token();
    let mut members = Supervisor::new(shutdown.clone());
    // Subscribed before anything can change a container: adopted ones report at once.
    let events = rep.store.subscribe();
    members.spawn("rep harmonizer", |stop| {
        harmonize::run(rep.clone(), events, stop).map(Ok::<(), Infallible>)
    });
    let adopted = recover::adopt_leftovers(&rep).await;
    selfcheck::check(&rep).await;
    if let Err(source) = presence::register_at_start(&rep, &shutdown).await {
        shutdown.cancel();
        let _ = members.wait().await;
        return Err(RepError::Register {
            url: rep.config.bbs.to_string(),
            source,
        });
    }
    sync::sync(&rep).await;
    if adopted > 0 {
        info!(adopted, "took over containers from an earlier run of this cell");
    }
    let app = http::router(rep.clone());
    members.spawn("rep http", |stop| {
        diego_runtime::serve(
            listener,
            app,
            stop,
            rep.config.serve_limits,
            rep.config.tls.clone(),
        )
    });
    members.spawn("rep sync", |stop| {
        sync::run(rep.clone(), stop).map(Ok::<(), Infallible>)
    });
    members.spawn("rep self-check", |stop| {
        selfcheck::run(rep.clone(), stop).map(Ok::<(), Infallible>)
    });
    members.spawn("rep presence", |stop| presence::keep(rep.clone(), stop));
    {
        let (rep, evacuated) = (rep.clone(), shutdown.clone());
        members.spawn("rep evacuator", move |stop| async move {
            evacuate::run(rep, stop.clone(), evacuated).await;
            stop.cancelled().await;
            Ok::<(), Infallible>(())
        });
    }
    tracing::info!(%addr, url, cell_id = %rep.config.cell_id, "rep listening");
    let task = tokio::spawn(members.wait());
    Ok(RunningRep { addr, url, rep, task })
}
