//! BBS configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the BBS keeps its state.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded default: a SQLite database in this directory.
    Sqlite { data_dir: PathBuf },
    /// In memory; lost on exit. For tests and throwaway runs.
    Memory,
    /// An etcd v3 cluster (`--store etcd://host:port[,host:port…][/prefix]`); several BBS
    /// processes may share one.
    Etcd(diego_store::etcd::EtcdOptions),
}

#[derive(Debug, Clone)]
pub struct BbsConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    /// Largest accepted request body, in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// How many changes the event history retains for resuming subscribers.
    pub event_retention: usize,
    /// Placement retries before a rejected task fails.
    pub max_task_retries: u32,
    /// Where start requests go.
    pub auction: crate::auction_requests::AuctionConfig,
    /// The BBS lock several BBS processes on one store compete for.
    pub lock: crate::active::LockConfig,
    /// How often and by which durations convergence runs.
    pub convergence: crate::converger::ConvergenceConfig,
    /// The URL other roles reach this BBS at, stored in the lock (default `http://<bound
    /// address>`).
    pub advertise_url: Option<String>,
    /// What the HTTP server bounds: how long it waits for a request, how many connections it
    /// holds (see [`diego_runtime::ServeLimits`]).
    pub serve_limits: diego_runtime::ServeLimits,
    /// Mutual TLS for the API and for the BBS's requests to auctioneers and reps; `None`
    /// speaks plain HTTP. Task completion callbacks go to the submitter's URL, which is not
    /// a role of the cluster, and stay plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

/// 1 MiB: room for the largest valid record (10 KiB annotation, 128 KiB routes, a big
/// action tree) with a wide margin.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_EVENT_RETENTION: usize = 100_000;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8889";

impl BbsConfig {
    pub fn new(listen: SocketAddr, store: StoreConfig) -> Self {
        Self {
            listen,
            store,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            event_retention: DEFAULT_EVENT_RETENTION,
            max_task_retries: diego_model::task::DEFAULT_MAX_TASK_RETRIES,
            auction: Default::default(),
            lock: Default::default(),
            convergence: Default::default(),
            advertise_url: None,
            serve_limits: Default::default(),
            tls: None,
        }
    }
}
