//! Start requests from the BBS to the auctioneer (diego-spec §3.4, §6.1).
//!
//! Controllers hand requests to an [`AuctionRequester`] after their store write committed (so a
//! request never names work that does not exist). One background worker drains everything
//! queued since its last send, merges LRP requests per process, and posts them to the active
//! auctioneer — the holder of the [`AUCTIONEER_LOCK`], whose lock value is its URL (or a fixed
//! URL from the configuration). Sending is best effort: a request lost on the way (no
//! auctioneer yet, one dying mid-batch) is re-sent by the periodic pass, which asks again for
//! every instance UNCLAIMED and every task PENDING for longer than `stale_after` — Diego's
//! convergence does the same for stale unclaimed LRPs and pending tasks (§4.2, §4.5). The same
//! pass restarts CRASHED instances whose restart backoff has passed (§5): each is unclaimed by
//! compare-and-swap, keeping its crash count, and asked for at once.

use std::collections::BTreeMap;
use std::time::Duration;

use diego_client::AuctioneerClient;
use diego_model::auction::{LrpStartRequest, TaskStartRequest};
use diego_model::{ActualLrpState, Clock, DesiredLrpSchedulingInfo, RestartPolicy, Task, TaskState};
use diego_store::{ActualLrpFilter, DesiredLrpFilter, DynStore, Record, TaskFilter, Txn, Write};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The lock the active auctioneer holds; its value is the auctioneer's URL.
pub const AUCTIONEER_LOCK: &str = "auctioneer";

/// Requests per HTTP call, so one huge batch does not become one huge body.
const CHUNK: usize = 2_000;

/// How soon unsent requests are tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Most unsent requests kept for retrying; beyond, the periodic pass picks them up.
const MAX_UNSENT: usize = 100_000;

#[derive(Debug)]
enum StartRequest {
    Lrp(LrpStartRequest),
    Task(TaskStartRequest),
}

/// Where start requests go, and how often stale work is asked for again.
#[derive(Debug, Clone)]
pub struct AuctionConfig {
    /// Send here instead of to the lock holder.
    pub auctioneer_url: Option<String>,
    /// How often the periodic pass runs (Diego's convergence interval is 30 s).
    pub resend_interval: Duration,
    /// Work waiting longer than this is asked for again (Diego: 30 s).
    pub stale_after: Duration,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        AuctionConfig {
            auctioneer_url: None,
            resend_interval: Duration::from_secs(30),
            stale_after: Duration::from_secs(30),
        }
    }
}

/// Queues start requests for the background worker; cheap to clone, never blocks.
#[derive(Clone)]
pub struct AuctionRequester {
    tx: mpsc::UnboundedSender<StartRequest>,
}

impl AuctionRequester {
    /// Starts the worker; it stops when `shutdown` is cancelled.
    pub fn start(
        store: DynStore,
        clock: Arc<dyn Clock>,
        config: AuctionConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        let worker = Worker {
            store,
            clock,
            config,
            http,
            warned_missing: false,
        };
        tokio::spawn(worker.run(rx, shutdown));
        AuctionRequester { tx }
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

struct Worker {
    store: DynStore,
    clock: Arc<dyn Clock>,
    config: AuctionConfig,
    http: reqwest::Client,
    /// Whether "no auctioneer" was already logged (until one shows up).
    warned_missing: bool,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StartRequest>, shutdown: CancellationToken) {
        let mut resend = tokio::time::interval(self.config.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        // Requests that could not be sent (no auctioneer, or it did not answer), retried soon:
        // the lock may name a dead auctioneer until its TTL lapses and a standby takes over.
        let mut unsent: Vec<StartRequest> = Vec::new();
        let mut retry_at = tokio::time::Instant::now();
        loop {
            let mut batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = resend.tick() => {
                    self.resend_stale().await;
                    continue;
                }
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
                // The periodic pass asks for these again.
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

    /// Asks again for every instance UNCLAIMED and every task PENDING for longer than
    /// `stale_after`.
    async fn resend_stale(&mut self) {
        let restarted = self.restart_crashed().await;
        let cutoff = self.clock.now() - self.config.stale_after.as_nanos() as i64;
        let unclaimed = match self
            .store
            .list_actual_lrps(&ActualLrpFilter {
                state: Some(ActualLrpState::Unclaimed),
                ..Default::default()
            })
            .await
        {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "listing unclaimed instances");
                return;
            }
        };
        let mut stale: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for a in unclaimed.iter().filter(|a| a.since <= cutoff) {
            stale.entry(a.process_guid.clone()).or_default().push(a.index);
        }
        let mut lrps = Vec::new();
        if !stale.is_empty() {
            let infos = match self
                .store
                .list_scheduling_infos(&DesiredLrpFilter {
                    process_guids: stale.keys().cloned().collect(),
                    ..Default::default()
                })
                .await
            {
                Ok(i) => i,
                Err(e) => {
                    warn!(error = %e, "listing scheduling infos");
                    return;
                }
            };
            for info in infos {
                if let Some(indices) = stale.remove(&info.process_guid) {
                    lrps.push(LrpStartRequest::for_lrp(&info, indices));
                }
            }
        }
        let tasks: Vec<TaskStartRequest> = match self
            .store
            .list_tasks(&TaskFilter {
                state: Some(TaskState::Pending),
                ..Default::default()
            })
            .await
        {
            Ok(t) => t
                .iter()
                .filter(|t| t.updated_at <= cutoff)
                .map(TaskStartRequest::for_task)
                .collect(),
            Err(e) => {
                warn!(error = %e, "listing pending tasks");
                Vec::new()
            }
        };
        lrps.extend(restarted);
        if !lrps.is_empty() || !tasks.is_empty() {
            let instances: usize = lrps.iter().map(|l| l.indices.len()).sum();
            info!(instances, tasks = tasks.len(), "re-sending stale start requests");
            // What cannot be sent now waits for the next pass.
            let _ = self.send(lrps, tasks).await;
        }
    }
}

impl Worker {
    /// CRASHED instances whose backoff has passed, unclaimed (CAS; a concurrent change wins
    /// and the instance is looked at again next pass), as start requests.
    async fn restart_crashed(&self) -> Vec<LrpStartRequest> {
        let crashed = match self
            .store
            .list_actual_lrps(&ActualLrpFilter {
                state: Some(ActualLrpState::Crashed),
                ..Default::default()
            })
            .await
        {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "listing crashed instances");
                return Vec::new();
            }
        };
        if crashed.is_empty() {
            return Vec::new();
        }
        let guids: Vec<String> = crashed.iter().map(|a| a.process_guid.clone()).collect();
        let infos: BTreeMap<String, DesiredLrpSchedulingInfo> = match self
            .store
            .list_scheduling_infos(&DesiredLrpFilter {
                process_guids: guids,
                ..Default::default()
            })
            .await
        {
            Ok(i) => i.into_iter().map(|i| (i.process_guid.clone(), i)).collect(),
            Err(e) => {
                warn!(error = %e, "listing scheduling infos");
                return Vec::new();
            }
        };
        let now = self.clock.now();
        let mut restarts: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for a in crashed {
            // An instance of an LRP no longer desired is not restarted (its removal is the
            // LRP's delete's business).
            let Some(info) = infos.get(&a.process_guid) else {
                continue;
            };
            let policy = RestartPolicy::with_override(info.restart_policy.as_ref());
            if !policy.should_restart_crashed(a.crash_count, a.since, now) {
                continue;
            }
            let Ok(Some(next)) = a.unclaim(now) else {
                continue;
            };
            match self
                .store
                .commit(Txn::one(Write::update(Record::ActualLrp(next))))
                .await
            {
                Ok(_) => {
                    info!(process_guid = %a.process_guid, index = a.index, crash_count = a.crash_count, "restarting a crashed instance after its backoff");
                    restarts.entry(a.process_guid.clone()).or_default().push(a.index);
                }
                Err(e) => {
                    debug!(process_guid = %a.process_guid, index = a.index, error = %e, "restart lost a race; next pass")
                }
            }
        }
        restarts
            .into_iter()
            .filter_map(|(guid, indices)| infos.get(&guid).map(|i| LrpStartRequest::for_lrp(i, indices)))
            .collect()
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
