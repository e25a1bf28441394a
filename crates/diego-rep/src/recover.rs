//! What a starting rep finds left from an earlier run of this cell, and how it makes the BBS
//! true again. This rep does not take running containers over yet (a restart of the cell
//! agent replaces its instances rather than keeping them), so at start:
//!
//! - containers in the backend labelled with this cell's id are destroyed (the executor does not
//!   know them: Diego's reaper does the same with unknown containers);
//! - actual LRPs the BBS has CLAIMED or RUNNING on this cell are crashed (their containers are
//!   gone), so the restart policy places them again;
//! - tasks the BBS has RUNNING on this cell are completed as failed with Diego's
//!   "task container does not exist".

use std::collections::BTreeMap;

use diego_client::{ActualLrpQuery, TaskQuery};
use diego_model::api::CompleteTaskRequest;
use diego_model::{ActualLrpState, TaskState};
use tracing::{info, warn};

use crate::Rep;

/// The crash reason of an instance whose container a restart of its cell lost.
pub const LOST_CONTAINER: &str = "the cell restarted and the instance's container is gone";

/// Diego's failure reason for a task whose container is missing.
pub const TASK_CONTAINER_MISSING: &str = "task container does not exist";

/// Destroys the containers an earlier run left (before the cell registers, so nothing new is
/// placed on it meanwhile).
pub(crate) async fn destroy_leftovers(rep: &Rep) {
    let cell = rep.config.cell_id.clone();
    let mut mine = BTreeMap::new();
    mine.insert("diego.cell_id".to_string(), cell.clone());
    match rep.backend.list(&mine).await {
        Ok(handles) => {
            for handle in handles {
                info!(handle, "destroying a container left from an earlier run");
                if let Err(e) = rep.backend.destroy(&handle).await {
                    warn!(handle, error = %e, "destroying a leftover container");
                }
            }
        }
        Err(e) => warn!(error = %e, "listing leftover containers"),
    }
}

/// Crashes the instances and fails the tasks the BBS still has on this cell (after the cell
/// registered, so the crashed instances can be placed again at once, here or elsewhere).
pub(crate) async fn reconcile_bbs(rep: &Rep) {
    let cell = rep.config.cell_id.clone();
    let actuals = rep
        .bbs
        .actual_lrps(&ActualLrpQuery {
            cell_id: Some(cell.clone()),
            ..Default::default()
        })
        .await;
    for a in actuals.unwrap_or_default() {
        if matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running) {
            info!(process_guid = %a.process_guid, index = a.index, "crashing an instance whose container a restart lost");
            if let Err(e) = rep
                .bbs
                .crash_actual_lrp(&a.process_guid, a.index, &a.instance_key(), LOST_CONTAINER)
                .await
            {
                warn!(process_guid = %a.process_guid, index = a.index, error = %e, "crashing a lost instance");
            }
        }
    }
    let tasks = rep
        .bbs
        .tasks(&TaskQuery {
            cell_id: Some(cell.clone()),
            state: Some(TaskState::Running),
            ..Default::default()
        })
        .await;
    for t in tasks.unwrap_or_default() {
        let req = CompleteTaskRequest {
            cell_id: cell.clone(),
            failed: true,
            failure_reason: TASK_CONTAINER_MISSING.into(),
            result: String::new(),
        };
        if let Err(e) = rep.bbs.complete_task(&t.task_guid, &req).await {
            warn!(task_guid = %t.task_guid, error = %e, "failing a lost task");
        }
    }
}
