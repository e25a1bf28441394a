//! Convergence in the active BBS: gather a snapshot, decide a [`plan`], apply it.
//!
//! A pass runs every `interval`, at once when this BBS becomes active, and whenever the set
//! of live cells changes (a presence appearing or lapsing) — so recovery from a lost cell
//! waits for its presence TTL, not for the next interval. Passes never overlap (one
//! [`Worker`]). Each action is one compare-and-swap on the records it names, fenced on the BBS
//! lock; one that lost a race is left for the next pass, which decides from the new state.
//! Writes that put an instance in UNCLAIMED (new, restarted, replaced) are auctioned by the
//! change-feed follower like any other; the converger itself asks only for work that is
//! already waiting (stale UNCLAIMED instances, PENDING tasks).

pub mod plan;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diego_model::{ActualLrp, ActualLrpKey, ActualLrpState, LapsedCell, Presence};
use diego_runtime::{PassError, Waker, Worker};
use diego_store::{ActualLrpFilter, DesiredLrpFilter, Expect, Record, StoreError, TaskFilter, Txn, Write};
use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use plan::{Action, ConvergeConfig, Observed, Plan, Snapshot};

use crate::auction_requests::AuctionRequester;
use crate::state::{new_guid, Bbs};

/// How convergence runs.
#[derive(Debug, Clone)]
pub struct ConvergenceConfig {
    /// Time between passes (Diego: 30 s).
    pub interval: Duration,
    pub rules: ConvergeConfig,
}

impl Default for ConvergenceConfig {
    fn default() -> Self {
        ConvergenceConfig {
            interval: Duration::from_secs(30),
            rules: ConvergeConfig::default(),
        }
    }
}

/// Actions applied at once.
const APPLY_CONCURRENCY: usize = 256;

/// The figures of the last pass, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub passes: u64,
    pub gather: Duration,
    pub plan: Duration,
    pub apply: Duration,
    /// Actions applied, by kind.
    pub applied: BTreeMap<&'static str, u64>,
    /// Actions that lost a race (or failed) and wait for the next pass.
    pub skipped: u64,
    pub observed: Observed,
    pub task_duration: Duration,
    pub lrp_duration: Duration,
}

impl PassReport {
    pub fn total(&self) -> Duration {
        self.gather + self.plan + self.apply
    }

    pub fn actions(&self) -> u64 {
        self.applied.values().sum::<u64>() + self.skipped
    }
}

/// Shared between the worker and `/metrics`.
#[derive(Default)]
pub struct ConvergerState {
    last: Mutex<PassReport>,
    /// Set when the next pass must treat all waiting work as stale: after taking the lock,
    /// or when a cell appeared (work that found no cell may fit now).
    resend_all: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Cells whose presence went while instances still name them (`GET /v1/lapsed_cells`).
    lapsed: Mutex<BTreeMap<String, LapsedCell>>,
}

/// A lapsed cell no instance names is forgotten this long after it lapsed.
pub const FORGET_LAPSED_CELL_AFTER: Duration = Duration::from_secs(5 * 60);

impl ConvergerState {
    pub fn last(&self) -> PassReport {
        lock(&self.last).clone()
    }

    /// Lapsed cells, by id.
    pub fn lapsed_cells(&self) -> Vec<LapsedCell> {
        lock(&self.lapsed).values().cloned().collect()
    }

    /// The feed showed `presence` lapse or be removed at `at`.
    pub fn cell_gone(&self, presence: &diego_model::CellPresence, at: diego_model::Timestamp) {
        let mut lapsed = lock(&self.lapsed);
        let entry = lapsed
            .entry(presence.cell_id.clone())
            .or_insert_with(|| LapsedCell {
                cell_id: presence.cell_id.clone(),
                ..Default::default()
            });
        entry.lapsed_at = at;
        entry.last_presence = Some(presence.clone());
    }

    /// The cell registered again: it is live, not lapsed.
    pub fn cell_registered(&self, cell_id: &str) {
        lock(&self.lapsed).remove(cell_id);
    }

    /// After a pass: the cells its instances name without a presence, with their counts. A
    /// cell seen for the first time here (this BBS did not see it go) lapsed `now`; one no
    /// longer named is forgotten once `FORGET_LAPSED_CELL_AFTER` has passed since it lapsed.
    fn note_pass(&self, named: &BTreeMap<String, u64>, now: diego_model::Timestamp) {
        let mut lapsed = lock(&self.lapsed);
        for (cell_id, &instances) in named {
            lapsed
                .entry(cell_id.clone())
                .or_insert_with(|| LapsedCell {
                    cell_id: cell_id.clone(),
                    lapsed_at: now,
                    ..Default::default()
                })
                .instances = instances;
        }
        let forget = FORGET_LAPSED_CELL_AFTER.as_nanos() as i64;
        lapsed.retain(|id, c| {
            if named.contains_key(id) {
                return true;
            }
            c.instances = 0;
            now - c.lapsed_at < forget
        });
    }

    /// Asks the running converger (if any) for a pass now.
    pub fn wake(&self, resend_all: bool) {
        if resend_all {
            self.resend_all.store(true, Ordering::SeqCst);
        }
        if let Some(w) = &*lock(&self.waker) {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gathers everything a pass looks at.
pub async fn gather(bbs: &Bbs) -> Result<Snapshot, StoreError> {
    let store = &bbs.store;
    let (all_tasks, all_desired, all_actual) = (
        TaskFilter::default(),
        DesiredLrpFilter::default(),
        ActualLrpFilter::default(),
    );
    let (tasks, desired, actual, presences, domains) = tokio::try_join!(
        store.list_tasks(&all_tasks),
        store.list_scheduling_infos(&all_desired),
        store.list_actual_lrps(&all_actual),
        store.list_presences(),
        store.list_domains(),
    )?;
    Ok(Snapshot {
        now: bbs.now(),
        tasks,
        desired,
        actual,
        cells: presences.into_iter().map(|p| p.cell_presence.cell_id).collect(),
        fresh_domains: domains.into_iter().map(|d| d.domain).collect(),
    })
}

/// One whole pass: gather, plan, apply. Returns its report.
pub async fn converge_once(
    bbs: &Arc<Bbs>,
    requester: &AuctionRequester,
    rules: &ConvergeConfig,
) -> Result<PassReport, StoreError> {
    let t0 = Instant::now();
    let snapshot = gather(bbs).await?;
    let gathered = t0.elapsed();
    let t1 = Instant::now();
    let rules = *rules;
    let (snapshot, plan) = tokio::task::spawn_blocking(move || {
        let p = plan::plan(&snapshot, &rules);
        (snapshot, p)
    })
    .await
    .map_err(|e| StoreError::unavailable(format!("planning panicked: {e}")))?;
    let planned = t1.elapsed();
    let t2 = Instant::now();
    let mut report = apply(bbs, requester, &snapshot, plan).await?;
    report.gather = gathered;
    report.plan = planned;
    report.apply = t2.elapsed();
    Ok(report)
}

/// Applies `plan` (made from `snapshot`).
pub async fn apply(
    bbs: &Arc<Bbs>,
    requester: &AuctionRequester,
    snapshot: &Snapshot,
    plan: Plan,
) -> Result<PassReport, StoreError> {
    let now = bbs.now();
    let mut report = PassReport {
        observed: plan.observed.clone(),
        ..Default::default()
    };
    // Tasks first, then LRPs, each phase timed on its own (Diego's
    // ConvergenceTaskDuration and ConvergenceLRPDuration cover the apply phases here).
    let t_tasks = Instant::now();
    let mut writes = Vec::new();
    for action in plan.tasks {
        match action {
            Action::AuctionTask(t) => {
                requester.task(&t);
                *report.applied.entry("auction_task").or_default() += 1;
            }
            Action::ResendCallback(t) => {
                bbs.callbacks.completed(&t);
                *report.applied.entry("resend_callback").or_default() += 1;
            }
            other => writes.push(other),
        }
    }
    apply_all(bbs, snapshot, writes, now, &mut report).await?;
    report.task_duration = t_tasks.elapsed();

    let t_lrps = Instant::now();
    // Work already waiting goes to the auctioneer in one request per process.
    let mut auctions: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
    let mut writes = Vec::new();
    for action in plan.lrps {
        match action {
            Action::AuctionInstance { info_index, lrp } => {
                auctions.entry(info_index).or_default().push(lrp.index);
                *report.applied.entry("auction_instance").or_default() += 1;
            }
            other => writes.push(other),
        }
    }
    for (i, indices) in auctions {
        requester.lrp(&snapshot.desired[i], indices);
    }
    apply_all(bbs, snapshot, writes, now, &mut report).await?;
    report.lrp_duration = t_lrps.elapsed();
    Ok(report)
}

/// Applies `actions` a bounded number at a time, counting what applied and what did not.
/// A lost lock ends the pass.
async fn apply_all(
    bbs: &Arc<Bbs>,
    snapshot: &Snapshot,
    actions: Vec<Action>,
    now: diego_model::Timestamp,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    let mut outcomes = stream::iter(actions)
        .map(|action| async move {
            let kind = action.kind();
            (kind, apply_one(bbs, snapshot, action, now).await)
        })
        .buffer_unordered(APPLY_CONCURRENCY);
    while let Some((kind, r)) = outcomes.next().await {
        match r {
            Ok(()) => *report.applied.entry(kind).or_default() += 1,
            Err(e @ StoreError::LockLost { .. }) => return Err(e),
            Err(e) => {
                report.skipped += 1;
                debug!(action = kind, error = %e, "convergence action not applied; the next pass decides again");
            }
        }
    }
    Ok(())
}

/// The writes of one action, as compare-and-swaps on what the snapshot read.
async fn apply_one(
    bbs: &Arc<Bbs>,
    snapshot: &Snapshot,
    action: Action,
    now: diego_model::Timestamp,
) -> Result<(), StoreError> {
    let invalid = |e: diego_model::TransitionError| StoreError::Invalid(e.to_string());
    let role = &bbs.role;
    match action {
        Action::FailTask { task, reason } => {
            let next = task.fail(reason, now).map_err(invalid)?;
            let c = role.commit(Txn::one(Write::update(Record::Task(next)))).await?;
            if let Some(Some(Record::Task(t))) = c.records.first() {
                info!(task_guid = %t.task_guid, reason, "convergence failed a task");
            }
        }
        Action::DemoteTask(task) => {
            let next = task.demote(now).map_err(invalid)?;
            role.commit(Txn::one(Write::update(Record::Task(next)))).await?;
        }
        Action::DeleteTask(task) => {
            role.commit(Txn::one(Write::delete(&Record::Task(task)))).await?;
        }
        Action::CreateInstance { info_index, index } => {
            let d = &snapshot.desired[info_index];
            let key = ActualLrpKey {
                process_guid: d.process_guid.clone(),
                index,
                domain: d.domain.clone(),
            };
            let a = ActualLrp::unclaimed(key, now, new_guid());
            role.commit(Txn::one(Write::insert(Record::ActualLrp(a)))).await?;
            info!(process_guid = %d.process_guid, index, "convergence created a missing instance");
        }
        Action::RetireInstance(a) => {
            if matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
                && snapshot.cells.contains(&a.cell_id)
            {
                // Its cell stops it and removes the record.
                let presences = bbs.store.list_presences().await?;
                if let Some(p) = presences.iter().find(|p| p.cell_presence.cell_id == a.cell_id) {
                    bbs.reps
                        .stop_lrp_instance(&p.cell_presence.rep_url, &a.process_guid, &a.instance_guid);
                }
            } else {
                role.commit(Txn::one(Write::delete(&Record::ActualLrp(a.clone()))))
                    .await?;
            }
            info!(process_guid = %a.process_guid, index = a.index, "convergence retired an instance");
        }
        Action::SuspectInstance { lrp, .. } => {
            let Some(replacement) = lrp.unclaim(now).map_err(invalid)? else {
                return Ok(());
            };
            let mut suspect = lrp.clone();
            suspect.presence = Presence::Suspect;
            role.commit(Txn::of(vec![
                Write::update(Record::ActualLrp(replacement)),
                Write::insert(Record::ActualLrp(suspect)),
            ]))
            .await?;
            info!(process_guid = %lrp.process_guid, index = lrp.index, cell_id = %lrp.cell_id, "cell presence lapsed: instance is SUSPECT, replacement requested");
        }
        Action::UnclaimInstance { lrp, .. } | Action::RestartCrashed { lrp, .. } => {
            let Some(next) = lrp.unclaim(now).map_err(invalid)? else {
                return Ok(());
            };
            role.commit(Txn::one(Write::update(Record::ActualLrp(next))))
                .await?;
        }
        Action::RemoveSuspect(a) | Action::RemoveEvacuating(a) => {
            role.commit(Txn::one(Write::delete(&Record::ActualLrp(a))))
                .await?;
        }
        Action::RestoreSuspect { suspect, replacement } => {
            let mut restored = suspect.clone();
            restored.presence = Presence::Ordinary;
            let put = match &replacement {
                Some(r) => {
                    restored.modification_tag = r.modification_tag.clone();
                    Write::Put {
                        record: Record::ActualLrp(restored),
                        expect: Expect::Tag(r.modification_tag.clone()),
                    }
                }
                None => Write::insert(Record::ActualLrp(restored)),
            };
            role.commit(Txn::of(vec![
                put,
                Write::delete(&Record::ActualLrp(suspect.clone())),
            ]))
            .await?;
            if let Some(r) = replacement.filter(|r| !r.cell_id.is_empty()) {
                if let Some(p) = bbs
                    .store
                    .list_presences()
                    .await?
                    .iter()
                    .find(|p| p.cell_presence.cell_id == r.cell_id)
                {
                    bbs.reps
                        .stop_lrp_instance(&p.cell_presence.rep_url, &r.process_guid, &r.instance_guid);
                }
            }
            info!(process_guid = %suspect.process_guid, index = suspect.index, "cell came back: SUSPECT instance restored");
        }
        Action::AuctionTask(_) | Action::ResendCallback(_) | Action::AuctionInstance { .. } => {}
    }
    Ok(())
}

/// Runs passes until `shutdown` (this BBS losing the lock cancels it).
pub async fn run(
    bbs: Arc<Bbs>,
    requester: AuctionRequester,
    config: ConvergenceConfig,
    shutdown: CancellationToken,
) -> Result<(), PassError> {
    let worker = Worker::new("converger").every(config.interval);
    let state = bbs.converger.clone();
    *lock(&state.waker) = Some(worker.waker());
    state.resend_all.store(true, Ordering::SeqCst);
    let result = worker
        .run(shutdown.clone(), || {
            let (bbs, requester, state) = (&bbs, &requester, &state);
            let mut rules = config.rules;
            async move {
                if state.resend_all.swap(false, Ordering::SeqCst) {
                    rules.stale_unclaimed_ms = 0;
                    rules.resend_pending_task_ms = 0;
                }
                match converge_once(bbs, requester, &rules).await {
                    Ok(mut report) => {
                        state.note_pass(&report.observed.lapsed_cells, bbs.now());
                        let mut last = lock(&state.last);
                        report.passes = last.passes + 1;
                        if report.actions() > 0 {
                            info!(
                                actions = report.actions(),
                                skipped = report.skipped,
                                took_ms = report.total().as_millis() as u64,
                                applied = ?report.applied,
                                "convergence pass"
                            );
                        }
                        *last = report;
                        Ok(())
                    }
                    // Deposed too: the active-role loop stops this worker.
                    Err(e) => Err(PassError::retry(e)),
                }
            }
        })
        .await;
    *lock(&state.waker) = None;
    // A passive BBS knows no lapsed cells: the next active one finds them again.
    lock(&state.lapsed).clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn lapsed_cells_are_kept_while_named_and_forgotten_after_a_while() {
        let state = ConvergerState::default();
        let presence = diego_model::CellPresence {
            cell_id: "a".into(),
            zone: "z1".into(),
            ..Default::default()
        };
        state.cell_gone(&presence, 10 * S);
        // A pass sees 3 rows naming it, and one naming a cell this BBS never saw go.
        state.note_pass(&BTreeMap::from([("a".into(), 3), ("b".into(), 1)]), 11 * S);
        let l = state.lapsed_cells();
        assert_eq!(
            l.iter()
                .map(|c| (c.cell_id.as_str(), c.instances, c.lapsed_at))
                .collect::<Vec<_>>(),
            [("a", 3, 10 * S), ("b", 1, 11 * S)]
        );
        assert_eq!(l[0].last_presence.as_ref(), Some(&presence));
        // Nothing names them any more: kept (0 instances) until five minutes after lapsing.
        state.note_pass(&BTreeMap::new(), 12 * S);
        assert_eq!(
            state
                .lapsed_cells()
                .iter()
                .map(|c| c.instances)
                .collect::<Vec<_>>(),
            [0, 0]
        );
        state.note_pass(&BTreeMap::new(), 10 * S + 300 * S);
        assert_eq!(state.lapsed_cells().len(), 1, "a is forgotten, b lapsed later");
        state.cell_registered("b");
        assert!(
            state.lapsed_cells().is_empty(),
            "a cell that registers again is live"
        );
    }
}
