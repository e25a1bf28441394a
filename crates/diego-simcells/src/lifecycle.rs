//! The asynchronous half of `/work` (diego-spec §4.4): claim and start admitted LRP
//! instances, start and complete tasks, remove stopped instances.
//!
//! Every BBS call takes a permit from one semaphore shared by all cells, so 1,000 cells
//! handed 100,000 instances at once keep a bounded number of requests (and connections) open
//! instead of 100,000. The `/work` answer never waits for any of this, as on a real rep.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_client::{BbsClient, ClientError};
use diego_model::api::{CompleteTaskRequest, StartActualLrpRequest};
use diego_model::{ActualLrpInstanceKey, ActualLrpNetInfo, PortMapping};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::cell::SimCell;
use crate::holdings::AdmittedLrp;

/// The container port every simulated instance reports.
const CONTAINER_PORT: u32 = 8080;
/// Fake host ports cycle through this range (Garden's default range starts at 61001).
const HOST_PORTS: std::ops::RangeInclusive<u32> = 61001..=65534;
/// What a simulated task's `result` says.
pub const TASK_RESULT: &str = "simulated";

/// Counts since start, across all cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// LRP instances `/work` reserved room for.
    pub lrps_admitted: u64,
    /// Claims the BBS accepted: placements (desired → CLAIMED).
    pub lrps_claimed: u64,
    pub lrps_started: u64,
    /// Claims refused (held elsewhere, gone) or lost; the reservation was dropped.
    pub lrps_claim_failed: u64,
    pub lrps_start_failed: u64,
    /// Instances the BBS asked a cell to stop.
    pub lrps_stopped: u64,
    pub tasks_admitted: u64,
    pub tasks_started: u64,
    pub tasks_completed: u64,
    /// Tasks whose start or completion the BBS refused or that could not be reported.
    pub tasks_failed: u64,
    pub tasks_cancelled: u64,
    /// LRP instances and tasks answered as not taken.
    pub work_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub lrps_admitted: AtomicU64,
    pub lrps_claimed: AtomicU64,
    pub lrps_started: AtomicU64,
    pub lrps_claim_failed: AtomicU64,
    pub lrps_start_failed: AtomicU64,
    pub lrps_stopped: AtomicU64,
    pub tasks_admitted: AtomicU64,
    pub tasks_started: AtomicU64,
    pub tasks_completed: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub tasks_cancelled: AtomicU64,
    pub work_refused: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            lrps_admitted: g(&self.lrps_admitted),
            lrps_claimed: g(&self.lrps_claimed),
            lrps_started: g(&self.lrps_started),
            lrps_claim_failed: g(&self.lrps_claim_failed),
            lrps_start_failed: g(&self.lrps_start_failed),
            lrps_stopped: g(&self.lrps_stopped),
            tasks_admitted: g(&self.tasks_admitted),
            tasks_started: g(&self.tasks_started),
            tasks_completed: g(&self.tasks_completed),
            tasks_failed: g(&self.tasks_failed),
            tasks_cancelled: g(&self.tasks_cancelled),
            work_refused: g(&self.work_refused),
        }
    }
}

/// The BBS side of every cell's work.
pub(crate) struct Lifecycle {
    bbs: BbsClient,
    permits: Semaphore,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    task_run_time: Duration,
    next_host_port: AtomicU32,
    pub counters: Counters,
}

impl Lifecycle {
    pub fn new(
        bbs: BbsClient,
        max_in_flight: usize,
        task_run_time: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Lifecycle {
            bbs,
            permits: Semaphore::new(max_in_flight),
            tracker: TaskTracker::new(),
            shutdown,
            task_run_time,
            next_host_port: AtomicU32::new(0),
            counters: Counters::default(),
        }
    }

    /// Runs `work` in the background until it ends or shutdown. An instance abandoned
    /// half-way at shutdown does not matter: the cell's presence goes away with it.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                // Work handed over after shutdown must not start calling the BBS.
                biased;
                () = shutdown.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Waits for every background call to end (call after cancelling the shutdown token).
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Claims, then starts, an instance `cell` admitted.
    pub fn place_lrp(self: &Arc<Self>, cell: Arc<SimCell>, lrp: AdmittedLrp) {
        let this = self.clone();
        self.spawn(async move { this.claim_and_start(cell, lrp).await });
    }

    /// Starts, then completes, a task `cell` admitted.
    pub fn run_task(self: &Arc<Self>, cell: Arc<SimCell>, task_guid: String) {
        let this = self.clone();
        self.spawn(async move { this.start_and_complete(cell, task_guid).await });
    }

    /// Removes an instance the BBS asked `cell_id` to stop (already dropped from the cell).
    pub fn remove_stopped(
        self: &Arc<Self>,
        cell_id: String,
        process_guid: String,
        index: i32,
        instance_guid: String,
    ) {
        let this = self.clone();
        self.spawn(async move {
            let Ok(_permit) = this.permits.acquire().await else {
                return;
            };
            let key = ActualLrpInstanceKey::new(instance_guid, cell_id);
            if let Err(e) = this.bbs.remove_actual_lrp(&process_guid, index, Some(&key)).await {
                // Not found: already gone, which is what a stop wants.
                if !e.is_not_found() {
                    log_refusal(&e, &key.cell_id, &process_guid, "removing stopped instance");
                }
            }
        });
    }

    async fn claim_and_start(&self, cell: Arc<SimCell>, lrp: AdmittedLrp) {
        let AdmittedLrp {
            process_guid,
            index,
            instance_guid,
        } = lrp;
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let key = ActualLrpInstanceKey::new(instance_guid.clone(), cell.id.clone());
        if let Err(e) = self.bbs.claim_actual_lrp(&process_guid, index, &key).await {
            // Held by another cell, no longer desired, or the BBS unreachable: either way the
            // room goes back to the cell and the BBS (with its auction) decides what next.
            cell.holdings().release_lrp(&process_guid, index, &instance_guid);
            Counters::add(&self.counters.lrps_claim_failed, 1);
            log_refusal(&e, &cell.id, &process_guid, "claiming actual LRP");
            return;
        }
        Counters::add(&self.counters.lrps_claimed, 1);
        if !cell.holdings().holds_lrp(&process_guid, index, &instance_guid) {
            // The BBS asked to stop it right after the claim; that stop removes the record.
            return;
        }
        let req = StartActualLrpRequest {
            instance_key: key.clone(),
            net_info: self.net_info(),
            routable: None,
            availability_zone: cell.zone.clone(),
        };
        match self.bbs.start_actual_lrp(&process_guid, index, &req).await {
            Ok(_) => {
                if cell.holdings().lrp_running(&process_guid, index, &instance_guid) {
                    Counters::add(&self.counters.lrps_started, 1);
                }
            }
            Err(e) => {
                Counters::add(&self.counters.lrps_start_failed, 1);
                log_refusal(&e, &cell.id, &process_guid, "starting actual LRP");
                // Still ours: a CLAIMED record with nothing behind it would never start, so give
                // it back (a real rep's bulk sync does the same for a missing container).
                if cell.holdings().release_lrp(&process_guid, index, &instance_guid) {
                    let _ = self.bbs.remove_actual_lrp(&process_guid, index, Some(&key)).await;
                }
            }
        }
    }

    async fn start_and_complete(&self, cell: Arc<SimCell>, task_guid: String) {
        {
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            if !cell.holdings().holds_task(&task_guid) {
                return; // cancelled while waiting for a permit
            }
            let refused = match self.bbs.start_task(&task_guid, &cell.id).await {
                Ok(true) => None,
                // Already RUNNING here: an earlier run of a cell with this id started it; this
                // process has nothing behind it.
                Ok(false) => Some("already running on this cell".to_string()),
                Err(e) => {
                    log_refusal(&e, &cell.id, &task_guid, "starting task");
                    Some(e.to_string())
                }
            };
            if let Some(reason) = refused {
                debug!(task_guid, cell_id = %cell.id, reason, "dropping task");
                cell.holdings().release_task(&task_guid);
                Counters::add(&self.counters.tasks_failed, 1);
                return;
            }
        }
        if !cell.holdings().task_running(&task_guid) {
            return; // cancelled while starting
        }
        Counters::add(&self.counters.tasks_started, 1);
        if !self.task_run_time.is_zero() {
            tokio::time::sleep(self.task_run_time).await;
        }
        if !cell.holdings().holds_task(&task_guid) {
            return; // cancelled while running: the BBS already completed it
        }
        let req = CompleteTaskRequest {
            cell_id: cell.id.clone(),
            failed: false,
            failure_reason: String::new(),
            result: TASK_RESULT.into(),
        };
        let completed = {
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            self.bbs.complete_task(&task_guid, &req).await
        };
        cell.holdings().release_task(&task_guid);
        match completed {
            Ok(_) => Counters::add(&self.counters.tasks_completed, 1),
            Err(e) => {
                Counters::add(&self.counters.tasks_failed, 1);
                log_refusal(&e, &cell.id, &task_guid, "completing task");
            }
        }
    }

    /// A plausible address: loopback, one port mapping, a different host port each time.
    fn net_info(&self) -> ActualLrpNetInfo {
        let span = HOST_PORTS.end() - HOST_PORTS.start() + 1;
        let n = self.next_host_port.fetch_add(1, Ordering::Relaxed);
        ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: CONTAINER_PORT,
                host_port: HOST_PORTS.start() + n % span,
                ..Default::default()
            }],
            instance_address: String::new(),
        }
    }
}

/// The BBS saying no (taken, gone, wrong state) is part of the game; not reaching it is not.
fn log_refusal(e: &ClientError, cell_id: &str, guid: &str, what: &str) {
    if e.api_error().is_some() {
        debug!(cell_id, guid, error = %e, "BBS refused {what}");
    } else {
        warn!(cell_id, guid, error = %e, "{what} failed");
    }
}
