//! What a starting rep finds left from an earlier run of this cell. The cell agent may die
//! (kill -9, a crash, an upgrade) while its containers go on running: a backend that outlives it
//! (runc keeps containers and their processes; a remote Garden keeps everything) still has them.
//! Before the cell registers, every container labelled with this cell's id is looked up in the
//! BBS and either taken over or destroyed:
//!
//! - an LRP container whose instance the BBS still has CLAIMED or RUNNING here (same instance
//!   guid) and whose index is still desired is **adopted**: its resources are reserved again
//!   and its steps resumed — the app's processes are attached to, not restarted, so they keep
//!   their PIDs; an instance that was RUNNING skips its setup; its health monitor starts again
//!   and reports it RUNNING once healthy;
//! - a task container whose task the BBS has RUNNING here is adopted the same way;
//! - anything else (no record, another instance took the index, the LRP was deleted or scaled
//!   down, the task was cancelled) is destroyed, and the record it left, if any, removed.
//!
//! Records without a container (the container died with the agent, or the backend does not
//! outlive it) are the sync's job (`sync.rs`), which runs right after registration.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diego_client::ClientError;
use diego_model::{ActualLrpState, Presence, TaskState};
use tracing::{info, warn};

use crate::work::{lrp_run_request, prop, task_run_request, Workload};
use crate::Rep;

/// The crash reason of an instance whose container is gone (the agent restarted and the
/// container did not survive, or it vanished from the backend).
pub const LOST_CONTAINER: &str = "the instance's container is gone";

/// Diego's failure reason for a task whose container is missing.
pub const TASK_CONTAINER_MISSING: &str = "task container does not exist";

/// Why a container was not adopted.
enum NotAdopted {
    /// Nothing wants it: it is destroyed.
    Unwanted(String),
    /// The BBS could not say (unreachable): it is left alone for now — a later start, or the
    /// sync's reaper once the BBS answers, decides.
    Undecided(String),
}

impl From<String> for NotAdopted {
    fn from(why: String) -> Self {
        NotAdopted::Unwanted(why)
    }
}

impl From<&str> for NotAdopted {
    fn from(why: &str) -> Self {
        NotAdopted::Unwanted(why.to_string())
    }
}

/// Takes over or destroys every container an earlier run of this cell left (see the module
/// docs). Returns how many were adopted.
pub(crate) async fn adopt_leftovers(rep: &Arc<Rep>) -> usize {
    let mine = BTreeMap::from([(prop::CELL_ID.to_string(), rep.config.cell_id.clone())]);
    let handles = match rep.backend.list(&mine).await {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "listing containers left from an earlier run");
            return 0;
        }
    };
    let mut adopted = 0;
    for handle in handles {
        if adopt_or_destroy(rep, &handle).await {
            adopted += 1;
        }
    }
    adopted
}

/// Takes container `handle` over if the BBS still wants it here; destroys it if nothing does;
/// leaves it alone if the BBS cannot say. True when adopted.
pub(crate) async fn adopt_or_destroy(rep: &Arc<Rep>, handle: &str) -> bool {
    match adopt(rep, handle).await {
        Ok(()) => {
            info!(handle, "adopted a container that outlived the cell agent");
            true
        }
        Err(NotAdopted::Undecided(why)) => {
            rep.workloads().remove(handle);
            warn!(handle, why, "leaving a container alone until the BBS can say");
            false
        }
        Err(NotAdopted::Unwanted(why)) => {
            info!(handle, why, "destroying a container nothing wants");
            rep.workloads().remove(handle);
            if let Err(e) = rep.backend.destroy(handle).await {
                warn!(handle, error = %e, "destroying a leftover container");
            }
            false
        }
    }
}

/// Retries a BBS read for a while when the BBS is unreachable (not when it answers).
async fn bbs_read<T, F, Fut>(f: F) -> Result<T, ClientError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match f().await {
            Err(ClientError::Transport { .. }) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    f().await
}

/// Adopts `handle`, or says why not.
async fn adopt(rep: &Arc<Rep>, handle: &str) -> Result<(), NotAdopted> {
    let info = rep
        .backend
        .info(handle)
        .await
        .map_err(|e| NotAdopted::Unwanted(e.to_string()))?;
    let get = |k: &str| info.properties.get(k).cloned().unwrap_or_default();
    match get(prop::KIND).as_str() {
        "lrp" => {
            let process_guid = get(prop::PROCESS_GUID);
            let index: i32 = get(prop::INDEX).parse().map_err(|_| "no instance index")?;
            if get(prop::INSTANCE_GUID) != handle {
                return Err("its instance guid is not its handle".into());
            }
            adopt_lrp(rep, handle, &process_guid, index).await
        }
        "task" => adopt_task(rep, handle, &get(prop::TASK_GUID)).await,
        other => Err(format!("unknown container kind {other:?}").into()),
    }
}

async fn adopt_lrp(rep: &Arc<Rep>, handle: &str, process_guid: &str, index: i32) -> Result<(), NotAdopted> {
    let cell = &rep.config.cell_id;
    let rows = match bbs_read(|| rep.bbs.actual_lrp(process_guid, index)).await {
        Ok(rows) => rows,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            return Err(NotAdopted::Undecided(format!(
                "the BBS cannot say whether it is wanted: {e}"
            )))
        }
    };
    // A SUSPECT row is ours too: the BBS marked it when this cell's presence left (a graceful
    // stop removes it) and restores it once the presence is back.
    let Some(row) = rows.into_iter().find(|a| {
        matches!(a.presence, Presence::Ordinary | Presence::Suspect)
            && a.instance_guid == handle
            && a.cell_id == *cell
            && matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
    }) else {
        return Err("the BBS has no instance for it on this cell".into());
    };
    let desired = match bbs_read(|| rep.bbs.desired_lrp(process_guid)).await {
        Ok(d) if index < d.instances => d,
        Err(e) if !e.is_not_found() => {
            return Err(NotAdopted::Undecided(format!(
                "the BBS cannot say whether it is desired: {e}"
            )))
        }
        outcome => {
            // Deleted or scaled down while the agent was away: the record goes too.
            let why = match outcome {
                Ok(_) => "its index is no longer desired".to_string(),
                Err(e) => format!("its desired LRP is gone ({e})"),
            };
            if let Err(e) = rep
                .bbs
                .remove_actual_lrp(process_guid, index, Some(&row.instance_key()))
                .await
            {
                warn!(process_guid, index, error = %e, "removing the record of an undesired instance");
            }
            return Err(why.into());
        }
    };
    let request = lrp_run_request(rep, &desired, index, handle).ok_or("the desired LRP has no action")?;
    let (memory, disk) = (desired.memory_mb.max(0), desired.disk_mb.max(0));
    rep.workloads().insert(
        handle.to_string(),
        Workload::Lrp {
            process_guid: process_guid.to_string(),
            index,
            domain: desired.domain.clone(),
            instance_guid: handle.to_string(),
            memory_mb: memory,
            disk_mb: disk,
        },
    );
    let skip_setup = row.state == ActualLrpState::Running;
    rep.store
        .adopt(handle, memory as u64, disk as u64, request, skip_setup)
        .await
        .map_err(|e| e.to_string().into())
}

async fn adopt_task(rep: &Arc<Rep>, handle: &str, task_guid: &str) -> Result<(), NotAdopted> {
    if task_guid != handle {
        return Err("its task guid is not its handle".into());
    }
    let task = match bbs_read(|| rep.bbs.task(task_guid)).await {
        Ok(t) => t,
        Err(e) if !e.is_not_found() => {
            return Err(NotAdopted::Undecided(format!(
                "the BBS cannot say about the task: {e}"
            )))
        }
        Err(e) => return Err(format!("the BBS has no such task ({e})").into()),
    };
    if task.state != TaskState::Running || task.cell_id != rep.config.cell_id {
        return Err(format!("the task is {} on {:?}", task.state, task.cell_id).into());
    }
    let request = task_run_request(rep, &task).ok_or("the task has no action")?;
    let d = &task.task_definition;
    let (memory, disk) = (d.memory_mb.max(0), d.disk_mb.max(0));
    rep.workloads().insert(
        handle.to_string(),
        Workload::Task {
            task_guid: task_guid.to_string(),
            domain: task.domain.clone(),
            memory_mb: memory,
            disk_mb: disk,
            started: true,
            cancelled: false,
        },
    );
    rep.store
        .adopt(handle, memory as u64, disk as u64, request, false)
        .await
        .map_err(|e| e.to_string().into())
}
