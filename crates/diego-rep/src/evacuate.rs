//! Evacuation (diego-spec §4.7): the cell hands its work over before it stops.
//!
//! `POST /evacuate` (or `diego cell` receiving SIGTERM) flips the cell to evacuating: `/state`
//! says so (the auctioneer places nothing here any more) and `/work` refuses everything. Then,
//! every `evacuation_interval` until nothing is left:
//!
//! | container | what the cell does |
//! |---|---|
//! | RUNNING LRP instance | `evacuate_running`: the BBS keeps it serving as EVACUATING while a replacement is placed elsewhere; once the replacement runs (or crashed, or the LRP is gone) the answer is "drop": the container is stopped and deleted |
//! | starting LRP instance | `evacuate_claimed` (placed again elsewhere), container dropped |
//! | completed LRP instance | `evacuate_crashed` / `evacuate_stopped` (instead of crash / remove) |
//! | task | left to finish |
//!
//! A container the evacuation drops is *marked*: the harmonizer then neither starts it in the
//! BBS nor reports its completion (the replacement owns the ORDINARY row now; crashing or
//! removing it would hit the replacement). At `evacuation_timeout` what is left is given up:
//! instances are placed again elsewhere, tasks fail, containers stop. When the cell holds no
//! work any more, the rep stops and its presence is removed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use diego_client::ActualLrpQuery;
use diego_executor::{ContainerState, RunResult};
use diego_model::api::CompleteTaskRequest;
use diego_model::{ActualLrp, ActualLrpState, Presence};
use futures_util::future::join_all;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::work::Workload;
use crate::Rep;

/// Why a task fails when the cell's evacuation times out before it finished.
pub const TASK_EVACUATION_TIMED_OUT: &str = "task was stopped: its cell's evacuation timed out";

/// The evacuation state of a rep.
#[derive(Default)]
pub(crate) struct Evacuation {
    /// Cancelled when evacuation begins.
    requested: CancellationToken,
    /// Containers the evacuation stops itself: the harmonizer reports nothing for them.
    dropped: Mutex<HashSet<String>>,
    /// Set when the rep stopped because its evacuation finished.
    drained: AtomicBool,
    /// RUNNING containers whose start the BBS had not recorded yet, given one more pass.
    awaiting_start: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Evacuation {
    fn dropped(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.dropped)
    }
}

impl Rep {
    /// Starts evacuating (again is a no-op).
    pub fn evacuate(&self) {
        if !self.evacuation.requested.is_cancelled() {
            info!(cell_id = %self.config.cell_id, "evacuation requested");
            self.evacuation.requested.cancel();
        }
    }

    pub fn is_evacuating(&self) -> bool {
        self.evacuation.requested.is_cancelled()
    }

    /// Whether the rep stopped because its evacuation finished (not because it was shut down).
    pub fn drained(&self) -> bool {
        self.evacuation.drained.load(Ordering::SeqCst)
    }
}

/// `POST /evacuate`.
pub(crate) async fn http_evacuate(State(rep): State<Arc<Rep>>) -> StatusCode {
    rep.evacuate();
    StatusCode::ACCEPTED
}

/// For the harmonizer: a container the evacuation is dropping is not started in the BBS.
pub(crate) fn skip_running(rep: &Rep, guid: &str) -> bool {
    rep.evacuation.dropped().contains(guid)
}

/// For the harmonizer: `true` when the evacuation reports this completed container itself
/// (or, for one it dropped, nothing at all); the caller then only deletes it.
pub(crate) async fn completed(rep: &Rep, guid: &str, result: &RunResult) -> bool {
    if rep.evacuation.dropped().remove(guid) {
        return true;
    }
    if !rep.is_evacuating() {
        return false;
    }
    let Some(w) = rep.workload(guid) else {
        return false;
    };
    let Workload::Lrp {
        process_guid, index, ..
    } = &w
    else {
        return false;
    };
    let ik = w.instance_key(&rep.config.cell_id).unwrap_or_default();
    let reported = if result.stopped {
        rep.bbs
            .evacuate_stopped_actual_lrp(process_guid, *index, &ik)
            .await
    } else {
        let reason = if result.failure_reason.is_empty() {
            "the instance exited"
        } else {
            &result.failure_reason
        };
        info!(process_guid, index, reason, "instance crashed while evacuating");
        rep.bbs
            .evacuate_crashed_actual_lrp(process_guid, *index, &ik, reason)
            .await
    };
    if let Err(e) = reported {
        warn!(process_guid, index, error = %e, "reporting a completed instance while evacuating");
    }
    true
}

/// For the bulk sync: an EVACUATING row of this cell. Its container is the evacuation's to
/// keep or drop (so it counts as held); a row whose container is gone (an agent restarted
/// mid-evacuation) serves nothing and is removed.
pub(crate) async fn sync_evacuating(rep: &Rep, a: &ActualLrp, held: &mut HashSet<String>) {
    if rep.workload(&a.instance_guid).is_some() {
        held.insert(a.instance_guid.clone());
        return;
    }
    info!(process_guid = %a.process_guid, index = a.index, "removing an EVACUATING instance that has no container here");
    if let Err(e) = rep
        .bbs
        .remove_evacuating_actual_lrp(&a.process_guid, a.index, &a.instance_key())
        .await
    {
        debug!(process_guid = %a.process_guid, index = a.index, error = %e, "removing a lost EVACUATING instance");
    }
}

/// Waits for evacuation to be requested (or `stop`), then hands the work over; cancels
/// `evacuated` (which stops the rep and removes its presence) when nothing is left or the
/// timeout passed.
pub(crate) async fn run(rep: Arc<Rep>, stop: CancellationToken, evacuated: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = rep.evacuation.requested.cancelled() => {}
    }
    let timeout = rep.config.evacuation_timeout;
    info!(cell_id = %rep.config.cell_id, ?timeout, "evacuating");
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(rep.config.evacuation_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass(&rep).await;
        let (lrps, tasks) = left(&rep);
        info!(lrps, tasks, "evacuation pass");
        if holds_nothing(&rep) {
            break;
        }
        if Instant::now() >= deadline {
            give_up(&rep).await;
            // Stopping takes up to the graceful shutdown period; then the cell goes anyway.
            let wait = rep.config.graceful_shutdown + Duration::from_secs(15);
            let until = Instant::now() + wait;
            while !holds_nothing(&rep) && Instant::now() < until && !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (lrps, tasks) = left(&rep);
            if lrps + tasks > 0 {
                warn!(
                    lrps,
                    tasks, "containers still stopping after the evacuation timeout; leaving"
                );
            }
            break;
        }
    }
    rep.evacuation.drained.store(true, Ordering::SeqCst);
    info!(cell_id = %rep.config.cell_id, "evacuated; the cell stops");
    evacuated.cancel();
}

/// No workload and no container, not even one still being destroyed: the cell is drained.
fn holds_nothing(rep: &Rep) -> bool {
    left(rep) == (0, 0) && rep.store.list().is_empty()
}

/// LRP instances and tasks the cell still holds.
fn left(rep: &Rep) -> (usize, usize) {
    let w = rep.workloads();
    let lrps = w.values().filter(|w| matches!(w, Workload::Lrp { .. })).count();
    (lrps, w.len() - lrps)
}

/// One look at every LRP container.
async fn pass(rep: &Rep) {
    let rows = match rep
        .bbs
        .actual_lrps(&ActualLrpQuery {
            cell_id: Some(rep.config.cell_id.clone()),
            ..Default::default()
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "listing the cell's actual LRPs; evacuating again on the next pass");
            return;
        }
    };
    let mut reports = Vec::new();
    for c in rep.store.list() {
        if c.state == ContainerState::Completed || rep.evacuation.dropped().contains(&c.guid) {
            // The harmonizer reports completed ones; dropped ones are on their way out.
            continue;
        }
        let Some(w @ Workload::Lrp { .. }) = rep.workload(&c.guid) else {
            continue;
        };
        // What the BBS has for this container: its EVACUATING row once there is one.
        let row = rows
            .iter()
            .filter(|a| a.instance_guid == c.guid)
            .min_by_key(|a| a.presence != Presence::Evacuating)
            .cloned();
        reports.push(report(rep, c.guid, w, c.state, row));
    }
    join_all(reports).await;
}

/// Evacuates one LRP container; stops it when the BBS says it need not be kept.
async fn report(rep: &Rep, guid: String, w: Workload, state: ContainerState, row: Option<ActualLrp>) {
    let Workload::Lrp {
        process_guid, index, ..
    } = &w
    else {
        return;
    };
    let ik = w.instance_key(&rep.config.cell_id).unwrap_or_default();
    let row_state = row.as_ref().map(|r| r.state);
    if state == ContainerState::Running
        && row_state == Some(ActualLrpState::Claimed)
        && lock(&rep.evacuation.awaiting_start).insert(guid.clone())
    {
        // Just became RUNNING: the harmonizer's start is on its way; evacuate it as a
        // running instance on the next pass rather than drop one that serves (once: a start
        // that never lands does not hold the evacuation up).
        return;
    }
    let serving = state == ContainerState::Running && row_state == Some(ActualLrpState::Running);
    let answer = match &row {
        Some(r) if serving => {
            rep.bbs
                .evacuate_running_actual_lrp(process_guid, *index, &ik, &r.net_info())
                .await
        }
        // Starting, or unknown to the BBS: placed elsewhere at once.
        _ => {
            rep.bbs
                .evacuate_claimed_actual_lrp(process_guid, *index, &ik)
                .await
        }
    };
    match answer {
        Ok(true) => {}
        Ok(false) => {
            info!(
                process_guid,
                index, guid, "instance handed over; stopping its container"
            );
            drop_container(rep, &guid);
        }
        Err(e) => {
            warn!(process_guid, index, error = %e, "evacuating an instance; trying again on the next pass")
        }
    }
}

/// Stops a container the harmonizer must not report on; `false` if the executor has no such
/// container (nothing will complete, so nothing needs the mark).
fn drop_container(rep: &Rep, guid: &str) -> bool {
    rep.evacuation.dropped().insert(guid.to_string());
    if rep.store.stop(guid).is_err() {
        rep.evacuation.dropped().remove(guid);
        return false;
    }
    true
}

/// The evacuation timed out: instances still here are placed again elsewhere, tasks fail,
/// and every container stops.
async fn give_up(rep: &Rep) {
    let workloads: Vec<(String, Workload)> = rep
        .workloads()
        .iter()
        .map(|(g, w)| (g.clone(), w.clone()))
        .collect();
    warn!(
        cell_id = %rep.config.cell_id,
        left = workloads.len(),
        "evacuation timed out; stopping what is left"
    );
    for (guid, w) in workloads {
        if rep.evacuation.dropped().contains(&guid) {
            continue;
        }
        match &w {
            Workload::Lrp {
                process_guid, index, ..
            } => {
                warn!(
                    process_guid,
                    index, "cell reached its evacuation timeout for this instance"
                );
                let ik = w.instance_key(&rep.config.cell_id).unwrap_or_default();
                if let Err(e) = rep
                    .bbs
                    .evacuate_claimed_actual_lrp(process_guid, *index, &ik)
                    .await
                {
                    warn!(process_guid, index, error = %e, "placing a stranded instance again");
                }
            }
            Workload::Task {
                task_guid,
                started,
                cancelled,
                ..
            } => {
                if *started && !*cancelled {
                    let req = CompleteTaskRequest {
                        cell_id: rep.config.cell_id.clone(),
                        failed: true,
                        failure_reason: TASK_EVACUATION_TIMED_OUT.into(),
                        result: String::new(),
                    };
                    if let Err(e) = rep.bbs.complete_task(task_guid, &req).await {
                        warn!(task_guid, error = %e, "failing a task at the evacuation timeout");
                    }
                }
            }
        }
        if !drop_container(rep, &guid) {
            crate::work::release(rep, &guid).await;
        }
    }
}
