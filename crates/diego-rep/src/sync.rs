//! The bulk sync (diego-spec §4.4, "rep bulk harmonisation"): besides reacting to every
//! container event (`harmonize.rs`), the rep compares, on a timer and once right after it
//! registers, what the BBS says runs on this cell with what does, and mends the difference —
//! whatever was lost on the way (a BBS call that failed, an agent restart, a container that
//! vanished from the backend).
//!
//! | BBS says | cell has | the rep |
//! |---|---|---|
//! | instance CLAIMED/RUNNING here | no container for that instance guid | crashes it ([`LOST_CONTAINER`]); the restart policy places it again |
//! | instance CLAIMED here | its container RUNNING | starts it again (address, ports) |
//! | no instance (ordinary or evacuating) with that guid here | a RUNNING container | stops the container |
//! | SUSPECT instance here (the cell's presence had lapsed) | its container | keeps it (convergence restores or retires the row) |
//! | EVACUATING instance here | its container | keeps it (the evacuation decides, `evacuate.rs`) |
//! | EVACUATING instance here | no container | removes the EVACUATING row |
//! | task RUNNING here | no container | fails it ([`TASK_CONTAINER_MISSING`]) |
//! | task not RUNNING here | a running container | stops the container |
//! | — | a backend container labelled with this cell the rep does not know | adopts it if the BBS wants it here, else destroys it |
//!
//! Every BBS call is guarded by the instance key or the task's state, so a sync racing the
//! harmonizer (a container completing meanwhile) at worst makes a call the BBS refuses.
//! Containers are looked at *before* the BBS is read: a container RUNNING then was claimed or
//! started before the read, so the read already shows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use diego_client::{ActualLrpQuery, TaskQuery};
use diego_executor::ContainerState;
use diego_model::api::CompleteTaskRequest;
use diego_model::{ActualLrpState, Presence, TaskState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::recover::{LOST_CONTAINER, TASK_CONTAINER_MISSING};
use crate::work::Workload;
use crate::Rep;

/// Syncs every `rep.config.sync_interval` until `shutdown`.
pub(crate) async fn run(rep: Arc<Rep>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(rep.config.sync_interval) => {}
        }
        sync(&rep).await;
    }
}

/// One pass (see the module docs), timed for `RepBulkSyncDuration`.
pub(crate) async fn sync(rep: &Arc<Rep>) {
    let started = std::time::Instant::now();
    pass(rep).await;
    rep.metrics.bulk_synced(started.elapsed());
}

async fn pass(rep: &Arc<Rep>) {
    let cell = rep.config.cell_id.clone();
    // Containers first (see the module docs): guid → (workload, state).
    let workloads: HashMap<String, Workload> = rep.workloads().clone();
    let running: HashSet<String> = rep
        .store
        .list()
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.guid)
        .collect();

    let actuals = rep
        .bbs
        .actual_lrps(&ActualLrpQuery {
            cell_id: Some(cell.clone()),
            ..Default::default()
        })
        .await;
    match actuals {
        Ok(actuals) => {
            let mut held = HashSet::new();
            for a in actuals {
                if a.presence == Presence::Evacuating {
                    // An EVACUATING copy keeps its container until its replacement runs (the
                    // evacuation's business, not the sync's).
                    crate::evacuate::sync_evacuating(rep, &a, &mut held).await;
                    continue;
                }
                if a.presence == Presence::Suspect {
                    // Our instance while the BBS doubted this cell (its presence lapsed): the
                    // container keeps running, and convergence makes the row ORDINARY again
                    // now that the cell is back (or retires it once a replacement runs).
                    held.insert(a.instance_guid.clone());
                    continue;
                }
                if a.presence != Presence::Ordinary
                    || !matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
                {
                    continue;
                }
                held.insert(a.instance_guid.clone());
                if rep.workload(&a.instance_guid).is_none() {
                    info!(process_guid = %a.process_guid, index = a.index, instance_guid = %a.instance_guid, "crashing an instance that has no container here");
                    if let Err(e) = rep
                        .bbs
                        .crash_actual_lrp(&a.process_guid, a.index, &a.instance_key(), LOST_CONTAINER)
                        .await
                    {
                        debug!(process_guid = %a.process_guid, index = a.index, error = %e, "crashing a lost instance");
                    }
                } else if a.state == ActualLrpState::Claimed && running.contains(&a.instance_guid) {
                    if let Some((host_ip, ports)) = rep.store.address(&a.instance_guid) {
                        info!(process_guid = %a.process_guid, index = a.index, "starting again an instance the BBS still has CLAIMED");
                        crate::harmonize::running(rep, &a.instance_guid, &host_ip, &ports).await;
                    }
                }
            }
            for (guid, w) in &workloads {
                if let Workload::Lrp {
                    process_guid, index, ..
                } = w
                {
                    if running.contains(guid) && !held.contains(guid) {
                        info!(
                            process_guid,
                            index, guid, "stopping an instance the BBS no longer has here"
                        );
                        let _ = rep.store.stop(guid);
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "sync: listing this cell's instances"),
    }

    let tasks = rep
        .bbs
        .tasks(&TaskQuery {
            cell_id: Some(cell.clone()),
            state: Some(TaskState::Running),
            ..Default::default()
        })
        .await;
    match tasks {
        Ok(tasks) => {
            let mut running_here = HashSet::new();
            for t in tasks {
                running_here.insert(t.task_guid.clone());
                if rep.workload(&t.task_guid).is_none() {
                    info!(task_guid = %t.task_guid, "failing a task that has no container here");
                    let req = CompleteTaskRequest {
                        cell_id: cell.clone(),
                        failed: true,
                        failure_reason: TASK_CONTAINER_MISSING.into(),
                        result: String::new(),
                    };
                    if let Err(e) = rep.bbs.complete_task(&t.task_guid, &req).await {
                        debug!(task_guid = %t.task_guid, error = %e, "failing a lost task");
                    }
                }
            }
            for (guid, w) in &workloads {
                if let Workload::Task { started: true, .. } = w {
                    if running.contains(guid) && !running_here.contains(guid) {
                        info!(task_guid = guid, "stopping a task the BBS no longer runs here");
                        crate::work::mark_cancelled(rep, guid);
                        let _ = rep.store.stop(guid);
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "sync: listing this cell's tasks"),
    }

    reap_unknown(rep).await;
}

/// Backend containers labelled with this cell that neither the rep nor the executor knows
/// (left by an earlier run and undecided then, or made behind the rep's back): adopted if the
/// BBS wants them here, else destroyed (Diego's container reaper destroys them all).
async fn reap_unknown(rep: &Arc<Rep>) {
    let mine = BTreeMap::from([(crate::work::prop::CELL_ID.to_string(), rep.config.cell_id.clone())]);
    let Ok(handles) = rep.backend.list(&mine).await else {
        return;
    };
    let self_checks = crate::selfcheck::handle_prefix(rep);
    for handle in handles {
        // Workloads are recorded before their container is created, and the executor forgets
        // a container only after destroying it; a self-check destroys its own.
        if rep.workload(&handle).is_some()
            || rep.store.get(&handle).is_some()
            || handle.starts_with(&self_checks)
        {
            continue;
        }
        crate::recover::adopt_or_destroy(rep, &handle).await;
    }
}
