//! Start requests from the active BBS to the auctioneer (diego-spec §3.4, §6.1).
//!
//! The active BBS's workers (the change-feed follower and the converger) hand requests to an
//! [`AuctionRequester`] once the work is in the store. One sender drains everything queued
//! since its last send, merges LRP requests per process, and posts them to the active
//! auctioneer — the holder of the auctioneer lock, whose lock value is its URL (or a fixed
//! URL from the configuration). Sending is best effort: a request that cannot be sent (no
//! auctioneer yet, one dying mid-batch) is retried shortly, and anything lost is asked for
//! again by convergence, which re-auctions every instance left UNCLAIMED (§4.5).

use std::collections::BTreeMap;
use std::time::Duration;

use diego_client::AuctioneerClient;
use diego_model::auction::{LrpStartRequest, TaskStartRequest};
use diego_model::{DesiredLrpSchedulingInfo, Task};
use diego_store::DynStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The lock the active auctioneer holds; its value is the auctioneer's URL.
pub use diego_model::locks::AUCTIONEER as AUCTIONEER_LOCK;

/// Requests per HTTP call, so one huge batch does not become one huge body.
const CHUNK: usize = 2_000;

/// How soon unsent requests are tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Most unsent requests kept for retrying; beyond, convergence picks them up.
const MAX_UNSENT: usize = 100_000;

#[derive(Debug)]
enum StartRequest {
    Lrp(LrpStartRequest),
    Task(TaskStartRequest),
}

/// Where start requests go.
#[derive(Debug, Clone, Default)]
pub struct AuctionConfig {
    /// Send here instead of to the lock holder.
    pub auctioneer_url: Option<String>,
}

/// Queues start requests for the background worker; cheap to clone, never blocks.
#[derive(Clone)]
pub struct AuctionRequester {
    tx: mpsc::UnboundedSender<StartRequest>,
}

impl AuctionRequester {
    /// A requester and the sender loop that drains it (run it until `shutdown`).
    pub fn new(
        store: DynStore,
        config: AuctionConfig,
        tls: Option<&diego_runtime::tls::Tls>,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = diego_runtime::http_client(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with a loaded TLS configuration builds");
        let sender = Sender {
            store,
            config,
            http,
            warned_missing: false,
        };
        (AuctionRequester { tx }, sender.run(rx, shutdown))
    }

    /// Asks for `indices` of `info` to be placed.
    pub fn lrp(&self, info: &DesiredLrpSchedulingInfo, indices: Vec<i32>) {
        if !indices.is_empty() {
            let _ = self
                .tx
                .send(StartRequest::Lrp(LrpStartRequest::for_lrp(info, indices)));
        }
    }

    /// Asks for `task` to be placed.
    pub fn task(&self, task: &Task) {
        let _ = self.tx.send(StartRequest::Task(TaskStartRequest::for_task(task)));
    }
}

struct Sender {
    store: DynStore,
    config: AuctionConfig,
    http: reqwest::Client,
    /// Whether "no auctioneer" was already logged (until one shows up).
    warned_missing: bool,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StartRequest>, shutdown: CancellationToken) {
        // Requests that could not be sent (no auctioneer, or it did not answer), retried soon:
        // the lock may name a dead auctioneer until its TTL lapses and a standby takes over.
        let mut unsent: Vec<StartRequest> = Vec::new();
        let mut retry_at = tokio::time::Instant::now();
        loop {
            let mut batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(retry_at), if !unsent.is_empty() => Vec::new(),
                r = rx.recv() => match r {
                    Some(r) => vec![r],
                    None => return,
                },
            };
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
            batch.append(&mut unsent);
            let (lrps, tasks) = merge(batch);
            let (lrps, tasks) = self.send(lrps, tasks).await;
            unsent = lrps
                .into_iter()
                .map(StartRequest::Lrp)
                .chain(tasks.into_iter().map(StartRequest::Task))
                .collect();
            if unsent.len() > MAX_UNSENT {
                // Convergence asks for these again.
                unsent.truncate(MAX_UNSENT);
            }
            retry_at = tokio::time::Instant::now() + RETRY_AFTER;
        }
    }

    /// The active auctioneer, if any.
    async fn auctioneer(&mut self) -> Option<AuctioneerClient> {
        let url = match &self.config.auctioneer_url {
            Some(url) => Some(url.clone()),
            None => match self.store.get_lock(AUCTIONEER_LOCK).await {
                Ok(holder) => holder.map(|h| h.value).filter(|v| !v.is_empty()),
                Err(e) => {
                    warn!(error = %e, "reading the auctioneer lock");
                    None
                }
            },
        };
        match url {
            Some(url) => {
                self.warned_missing = false;
                Some(AuctioneerClient::new(url, self.http.clone()))
            }
            None => {
                if !self.warned_missing {
                    warn!("no auctioneer holds the lock: start requests wait for one");
                    self.warned_missing = true;
                }
                None
            }
        }
    }

    /// Sends what it can; returns what it could not (to retry).
    async fn send(
        &mut self,
        lrps: Vec<LrpStartRequest>,
        tasks: Vec<TaskStartRequest>,
    ) -> (Vec<LrpStartRequest>, Vec<TaskStartRequest>) {
        if lrps.is_empty() && tasks.is_empty() {
            return (lrps, tasks);
        }
        let Some(auctioneer) = self.auctioneer().await else {
            return (lrps, tasks);
        };
        let instances: usize = lrps.iter().map(|l| l.indices.len()).sum();
        for (i, chunk) in lrps.chunks(CHUNK).enumerate() {
            if let Err(e) = auctioneer.request_lrp_auctions(chunk).await {
                warn!(auctioneer = auctioneer.base_url(), error = %e, "sending LRP start requests; retrying");
                return (lrps[i * CHUNK..].to_vec(), tasks);
            }
        }
        for (i, chunk) in tasks.chunks(CHUNK).enumerate() {
            if let Err(e) = auctioneer.request_task_auctions(chunk).await {
                warn!(auctioneer = auctioneer.base_url(), error = %e, "sending task start requests; retrying");
                return (Vec::new(), tasks[i * CHUNK..].to_vec());
            }
        }
        debug!(instances, tasks = tasks.len(), "sent start requests");
        (Vec::new(), Vec::new())
    }
}

/// LRP requests merged per process (indices in order, each once), tasks deduplicated.
fn merge(batch: Vec<StartRequest>) -> (Vec<LrpStartRequest>, Vec<TaskStartRequest>) {
    let mut lrps: BTreeMap<String, LrpStartRequest> = BTreeMap::new();
    let mut tasks: BTreeMap<String, TaskStartRequest> = BTreeMap::new();
    for r in batch {
        match r {
            StartRequest::Lrp(l) => match lrps.get_mut(&l.process_guid) {
                Some(existing) => {
                    existing.indices.extend(l.indices);
                    // The latest request carries the latest resources and constraint.
                    existing.placement_constraint = l.placement_constraint;
                    existing.resource = l.resource;
                }
                None => {
                    lrps.insert(l.process_guid.clone(), l);
                }
            },
            StartRequest::Task(t) => {
                tasks.insert(t.task_guid.clone(), t);
            }
        }
    }
    let lrps = lrps
        .into_values()
        .map(|mut l| {
            l.indices.sort_unstable();
            l.indices.dedup();
            l
        })
        .collect();
    (lrps, tasks.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrp(guid: &str, indices: Vec<i32>, memory_mb: i32) -> StartRequest {
        let mut r = LrpStartRequest {
            process_guid: guid.into(),
            indices,
            ..Default::default()
        };
        r.resource.memory_mb = memory_mb;
        StartRequest::Lrp(r)
    }

    #[test]
    fn merges_per_process_and_dedupes() {
        let task = |g: &str| {
            StartRequest::Task(TaskStartRequest {
                task_guid: g.into(),
                ..Default::default()
            })
        };
        let (lrps, tasks) = merge(vec![
            lrp("web", vec![2, 0], 64),
            task("t1"),
            lrp("api", vec![0], 32),
            lrp("web", vec![1, 2], 128),
            task("t1"),
        ]);
        assert_eq!(lrps.len(), 2);
        assert_eq!(lrps[0].process_guid, "api");
        assert_eq!(
            (lrps[1].indices.clone(), lrps[1].resource.memory_mb),
            (vec![0, 1, 2], 128)
        );
        assert_eq!(tasks.len(), 1);
    }
}
