//! The auctioneer service (`diego auctioneer`, diego-spec §3.4, §6.1): a thin shell around
//! [`crate::schedule`].
//!
//! - **Intake** (`http.rs`): `POST /v1/lrps` and `POST /v1/tasks` take JSON arrays of start
//!   requests, drop invalid entries, queue the rest and answer 202 at once.
//! - **One active auctioneer** (`lock.rs`): each instance tries to hold the BBS lock
//!   [`AUCTIONEER_LOCK`] with its URL as the value (that is how the BBS finds it), renewing
//!   every third of the TTL. A standby keeps trying and takes over once the holder's lock lapses.
//!   Only the holder runs auctions; a standby keeps whatever it is sent until it is active.
//! - **Rounds** (`round.rs`): one scheduling loop. Each round drains the queue (deduplicated:
//!   `process_guid.index`, task guid), fetches every live cell's `/state` in parallel with a
//!   timeout, runs the algorithm, sends one `/work` per cell in parallel, and reports failures to
//!   the BBS — LRPs as placement errors with their explanation, in one grouped request per
//!   round, tasks as rejections. Work a rep returns is reported the same way; a `/work` call
//!   that fails is not retried (the rep may have taken it), the BBS asks again for anything
//!   left unclaimed.
//! - **Backoff** (`backoff.rs`): LRP instances no cell could take wait, doubling from 1 s to
//!   30 s, before a round tries them again, unless the cells change.
//! - **Metrics** (`metrics.rs`): `GET /metrics` counts rounds, placements and failures by
//!   reason, parked instances, round and fetch durations and the cells seen
//!   (docs/110-metrics.md).

mod backoff;
mod http;
mod lock;
mod metrics;
mod round;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_client::{BbsClient, BbsUrls};
use diego_model::auction::{LrpStartRequest, TaskStartRequest};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AuctionConfig;

/// The BBS lock the active auctioneer holds; its value is the auctioneer's URL.
pub use diego_model::locks::AUCTIONEER as AUCTIONEER_LOCK;

/// How an auctioneer runs.
#[derive(Debug, Clone)]
pub struct AuctioneerConfig {
    /// The BBS processes to talk to (failing over between them).
    pub bbs: BbsUrls,
    pub listen: SocketAddr,
    /// The URL the BBS should use to reach this auctioneer (default `http://<bound address>`).
    pub advertise_url: Option<String>,
    /// This instance's name in the lock (default: a fresh guid).
    pub owner: String,
    /// The lock's time to live; a dead holder is replaced within about this long.
    pub lock_ttl: Duration,
    /// Per-cell timeout for `/state` and `/work` (Diego: 10 s for state).
    pub cell_timeout: Duration,
    /// Most cells asked at once.
    pub cell_concurrency: usize,
    pub auction: AuctionConfig,
    /// What the HTTP server bounds: how long it waits for a request, how many connections it
    /// holds (see [`diego_runtime::ServeLimits`]).
    pub serve_limits: diego_runtime::ServeLimits,
    /// Mutual TLS for the auctioneer's API and its requests to the BBS and reps; `None`
    /// speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl AuctioneerConfig {
    pub fn new(bbs: impl Into<BbsUrls>, listen: SocketAddr) -> Self {
        AuctioneerConfig {
            bbs: bbs.into(),
            listen,
            advertise_url: None,
            owner: uuid::Uuid::new_v4().to_string(),
            lock_ttl: Duration::from_secs(15),
            cell_timeout: Duration::from_secs(5),
            cell_concurrency: 256,
            auction: AuctionConfig::default(),
            serve_limits: Default::default(),
            tls: None,
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub rounds: u64,
    /// LRP instances waiting out a placement backoff.
    pub parked_instances: u64,
    pub lrps_placed: u64,
    pub tasks_placed: u64,
    pub lrps_failed: u64,
    pub tasks_failed: u64,
}

/// `more` added to `indices`, which stay sorted and each once.
fn merge_indices(indices: &mut Vec<i32>, more: Vec<i32>) {
    indices.extend(more);
    indices.sort_unstable();
    indices.dedup();
}

/// Start requests waiting for the next round, deduplicated as they arrive.
#[derive(Default)]
struct Queue {
    /// process guid → (the latest request, its indices).
    lrps: BTreeMap<String, LrpStartRequest>,
    tasks: BTreeMap<String, TaskStartRequest>,
}

impl Queue {
    fn push_lrp(&mut self, r: LrpStartRequest) {
        match self.lrps.get_mut(&r.process_guid) {
            Some(q) => {
                merge_indices(&mut q.indices, r.indices);
                q.placement_constraint = r.placement_constraint;
                q.resource = r.resource;
                q.domain = r.domain;
            }
            None => {
                let mut r = r;
                merge_indices(&mut r.indices, Vec::new());
                self.lrps.insert(r.process_guid.clone(), r);
            }
        }
    }

    fn push_task(&mut self, r: TaskStartRequest) {
        self.tasks.insert(r.task_guid.clone(), r);
    }

    fn is_empty(&self) -> bool {
        self.lrps.is_empty() && self.tasks.is_empty()
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Locked before `queue` when both are.
    parked: Mutex<backoff::Parked>,
    /// Parked work was asked for again: see whether the cells changed.
    recheck_cells: AtomicBool,
    work: Notify,
    active: AtomicBool,
    metrics: metrics::AuctioneerMetrics,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, backoff::Parked> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Queue {
        std::mem::take(&mut *self.queue())
    }
}

/// An auctioneer serving in the background.
pub struct RunningAuctioneer {
    pub addr: SocketAddr,
    /// What it advertises in the lock.
    pub url: String,
    shared: Arc<Shared>,
    /// Finishes once `shutdown` is cancelled and everything stopped (the lock released), or
    /// with an error naming the member that stopped on its own.
    pub task: JoinHandle<Result<(), diego_runtime::SupervisorError>>,
}

impl RunningAuctioneer {
    /// Whether it holds the lock (and so runs auctions).
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> Stats {
        stats(&self.shared)
    }
}

/// Read from the same counters `/metrics` exposes.
fn stats(shared: &Shared) -> Stats {
    let (lrps_placed, tasks_placed, lrps_failed, tasks_failed) = shared.metrics.placements();
    Stats {
        rounds: shared.metrics.rounds(),
        parked_instances: shared.parked().instances() as u64,
        lrps_placed,
        tasks_placed,
        lrps_failed,
        tasks_failed,
    }
}

/// Binds `config.listen` and runs until `shutdown` is cancelled.
pub async fn start(
    config: AuctioneerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<RunningAuctioneer> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", diego_runtime::tls::scheme(config.tls.as_ref())));
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        parked: Mutex::default(),
        recheck_cells: AtomicBool::new(false),
        work: Notify::new(),
        active: AtomicBool::new(false),
        metrics: metrics::AuctioneerMetrics::new(),
    });
    let http_client = diego_runtime::http_client(config.tls.as_ref())
        .pool_max_idle_per_host(8)
        .build()
        .map_err(std::io::Error::other)?;
    let bbs = BbsClient::with_http(config.bbs.clone(), http_client.clone());

    // Stopped in reverse: the rounds first, then the lock is released, then the intake.
    let mut members = diego_runtime::Supervisor::new(shutdown);
    let app = http::router(shared.clone());
    let (serve_limits, tls) = (config.serve_limits, config.tls.clone());
    members.spawn("auctioneer http", move |stop| {
        diego_runtime::serve(listener, app, stop, serve_limits, tls)
    });
    {
        let (shared, bbs, owner, url, ttl) = (
            shared.clone(),
            bbs.clone(),
            config.owner.clone(),
            url.clone(),
            config.lock_ttl,
        );
        members.spawn("auctioneer lock", move |stop| {
            lock::hold(shared, bbs, owner, url, ttl, stop)
        });
    }
    {
        let (shared, config) = (shared.clone(), config.clone());
        members.spawn("auction rounds", move |stop| async move {
            round::run_loop(shared, bbs, http_client, config, stop).await;
            Ok::<(), std::convert::Infallible>(())
        });
    }
    tracing::info!(%addr, url, owner = %config.owner, "auctioneer listening");
    let task = tokio::spawn(members.wait());
    Ok(RunningAuctioneer {
        addr,
        url,
        shared,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_merges_indices_and_dedupes_tasks() {
        let mut q = Queue::default();
        let lrp = |indices: Vec<i32>, memory_mb| {
            let mut r = LrpStartRequest {
                process_guid: "web".into(),
                indices,
                ..Default::default()
            };
            r.resource.memory_mb = memory_mb;
            r
        };
        q.push_lrp(lrp(vec![3, 1], 64));
        q.push_lrp(lrp(vec![1, 0], 128));
        q.push_task(TaskStartRequest {
            task_guid: "t".into(),
            ..Default::default()
        });
        q.push_task(TaskStartRequest {
            task_guid: "t".into(),
            ..Default::default()
        });
        assert_eq!(q.lrps["web"].indices, [0, 1, 3]);
        assert_eq!(q.lrps["web"].resource.memory_mb, 128);
        assert_eq!(q.tasks.len(), 1);
    }
}
