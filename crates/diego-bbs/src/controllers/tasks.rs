//! Task lifecycle (diego-spec §4.1).

use diego_model::api::CompleteTaskRequest;
use diego_model::auction::PlacementExplanation;
use diego_model::{DesireTaskRequest, Task, TransitionError};
use diego_store::{Record, StoreError, TaskFilter, Txn, Write};

use super::{read_decide_cas, ControllerError, ControllerResult};
use crate::state::{new_guid, Bbs};

fn not_found(guid: &str) -> ControllerError {
    ControllerError::NotFound(format!("task {guid:?} not found"))
}

pub async fn desire(bbs: &Bbs, req: DesireTaskRequest) -> ControllerResult<Task> {
    req.validate().map_err(|errors| ControllerError::Invalid {
        what: format!("task {:?}", req.task_guid),
        errors,
    })?;
    let guid = req.task_guid.clone();
    let task = Task::desired(req, bbs.now(), new_guid());
    match bbs
        .store
        .commit(Txn::one(Write::insert(Record::Task(task))))
        .await
    {
        Ok(mut c) => match c.records.pop().flatten() {
            Some(Record::Task(t)) => {
                // The active BBS auctions it from the change feed.
                tracing::info!(task_guid = %t.task_guid, domain = %t.domain, "desired task");
                Ok(t)
            }
            _ => Err(StoreError::unavailable("the store returned no task for a committed insert").into()),
        },
        Err(StoreError::Exists { .. }) => {
            Err(ControllerError::Exists(format!("task {guid:?} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn get(bbs: &Bbs, guid: &str) -> ControllerResult<Task> {
    bbs.store.get_task(guid).await?.ok_or_else(|| not_found(guid))
}

pub async fn list(bbs: &Bbs, filter: &TaskFilter) -> ControllerResult<Vec<Task>> {
    Ok(bbs.store.list_tasks(filter).await?)
}

/// Reads the task, applies `f`, and commits the result with compare-and-swap
/// ([`read_decide_cas`]). `f` returning `Ok(None)` means "no change"; the current task is
/// returned. The boolean says whether a write happened.
async fn transition(
    bbs: &Bbs,
    guid: &str,
    f: impl Fn(&Task) -> Result<Option<Task>, TransitionError>,
) -> ControllerResult<(Task, bool)> {
    read_decide_cas(
        || format!("task {guid:?}"),
        || async {
            let current = get(bbs, guid).await?;
            let Some(next) = f(&current)? else {
                return Ok((current, false));
            };
            let mut c = bbs
                .store
                .commit(Txn::one(Write::update(Record::Task(next))))
                .await?;
            match c.records.pop().flatten() {
                Some(Record::Task(t)) => Ok((t, true)),
                _ => Err(StoreError::unavailable("the store returned no task for a committed update").into()),
            }
        },
    )
    .await
}

/// Returns whether the cell should start the task (false if it already runs it there).
pub async fn start(bbs: &Bbs, guid: &str, cell_id: &str) -> ControllerResult<bool> {
    let now = bbs.now();
    let (_, changed) = transition(bbs, guid, |t| t.start(cell_id, now)).await?;
    if changed {
        tracing::info!(task_guid = guid, cell_id, "started task");
    }
    Ok(changed)
}

pub async fn complete(bbs: &Bbs, guid: &str, req: &CompleteTaskRequest) -> ControllerResult<Task> {
    let now = bbs.now();
    let (t, _) = transition(bbs, guid, |t| {
        t.complete(&req.cell_id, req.failed, &req.failure_reason, &req.result, now)
            .map(Some)
    })
    .await?;
    tracing::info!(task_guid = guid, failed = t.failed, "completed task");
    Ok(t)
}

pub async fn reject(
    bbs: &Bbs,
    guid: &str,
    reason: &str,
    explanation: Option<PlacementExplanation>,
) -> ControllerResult<Task> {
    let now = bbs.now();
    let (t, _) = transition(bbs, guid, |t| {
        let max = t
            .task_definition
            .max_retries
            .unwrap_or(bbs.config.max_task_retries);
        let mut rejected = t.reject(reason, max, now)?;
        rejected.placement_explanation = explanation.clone();
        Ok(Some(rejected))
    })
    .await?;
    tracing::info!(task_guid = guid, rejection_count = t.rejection_count, state = %t.state, "rejected task");
    // Back to PENDING with retries left: convergence asks the auctioneer again once it has
    // waited (as Diego's does), not at once against the same cells.
    Ok(t)
}

pub async fn fail(bbs: &Bbs, guid: &str, reason: &str) -> ControllerResult<Task> {
    let now = bbs.now();
    let (t, _) = transition(bbs, guid, |t| t.fail(reason, now).map(Some)).await?;
    Ok(t)
}

/// Cancels the task; if a cell was running it, tells that cell's rep.
pub async fn cancel(bbs: &Bbs, guid: &str) -> ControllerResult<Task> {
    let before = get(bbs, guid).await?;
    let now = bbs.now();
    let (t, _) = transition(bbs, guid, |t| t.cancel(now).map(Some)).await?;
    if !before.cell_id.is_empty() {
        let presences = bbs.store.list_presences().await?;
        if let Some(p) = presences
            .iter()
            .find(|p| p.cell_presence.cell_id == before.cell_id)
        {
            bbs.reps.cancel_task(&p.cell_presence.rep_url, guid);
        }
    }
    tracing::info!(task_guid = guid, "cancelled task");
    Ok(t)
}

pub async fn resolving(bbs: &Bbs, guid: &str) -> ControllerResult<Task> {
    let now = bbs.now();
    let (t, _) = transition(bbs, guid, |t| t.resolving(now).map(Some)).await?;
    Ok(t)
}

pub async fn delete(bbs: &Bbs, guid: &str) -> ControllerResult<()> {
    read_decide_cas(
        || format!("task {guid:?}"),
        || async {
            let current = get(bbs, guid).await?;
            current.check_delete()?;
            bbs.store
                .commit(Txn::one(Write::delete(&Record::Task(current))))
                .await?;
            Ok(())
        },
    )
    .await?;
    tracing::info!(task_guid = guid, "deleted task");
    Ok(())
}
