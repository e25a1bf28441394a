//! The active BBS's reactions to the change feed: whoever made a change (this BBS's API,
//! another BBS sharing the store, convergence), the active BBS asks the auctioneer to place
//! every instance that became UNCLAIMED and every task that became PENDING, and resolves
//! every task that became COMPLETED with a callback; and a cell presence registering,
//! lapsing or being removed wakes a convergence pass at once. One place, so nothing is auctioned
//! twice or missed, and a passive BBS's API writes are placed like its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use diego_model::{ActualLrpState, Presence, TaskState};
use diego_runtime::PassError;
use diego_store::{Change, DesiredLrpFilter, Record};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auction_requests::AuctionRequester;
use crate::state::Bbs;

/// Changes read per page.
const PAGE: usize = 5_000;

/// What a change asks of the active BBS.
#[derive(Debug, PartialEq)]
enum Reaction<'a> {
    None,
    /// Place this index.
    AuctionLrp(&'a str, i32),
    /// Place this task.
    AuctionTask(&'a diego_model::Task),
    /// Deliver this task's completion callback.
    Resolve(&'a diego_model::Task),
    /// A cell registered: converge now, re-sending waiting work (it may fit now).
    CellAppeared(&'a diego_model::CellPresence),
    /// A cell's presence lapsed or was removed (at this time): converge now to recover its
    /// instances.
    CellGone(&'a diego_model::CellPresence, diego_model::Timestamp),
}

fn react(change: &Change) -> Reaction<'_> {
    match (&change.before, &change.after) {
        (before, Some(Record::ActualLrp(a)))
            if a.presence == Presence::Ordinary && a.state == ActualLrpState::Unclaimed =>
        {
            let was_unclaimed = matches!(
                before,
                Some(Record::ActualLrp(b)) if b.state == ActualLrpState::Unclaimed
            );
            if was_unclaimed {
                Reaction::None
            } else {
                Reaction::AuctionLrp(&a.process_guid, a.index)
            }
        }
        (None, Some(Record::Task(t))) if t.state == TaskState::Pending => Reaction::AuctionTask(t),
        (Some(Record::Task(b)), Some(Record::Task(t)))
            if t.state == TaskState::Completed && b.state != TaskState::Completed =>
        {
            Reaction::Resolve(t)
        }
        (None, Some(Record::Task(t))) if t.state == TaskState::Completed => Reaction::Resolve(t),
        (None, Some(Record::CellPresence(p))) => Reaction::CellAppeared(p),
        (Some(Record::CellPresence(p)), None) => Reaction::CellGone(p, change.at),
        _ => Reaction::None,
    }
}

/// Follows the feed from revision `from` until `shutdown`.
pub async fn run(
    bbs: Arc<Bbs>,
    requester: AuctionRequester,
    mut from: u64,
    shutdown: CancellationToken,
) -> Result<(), PassError> {
    let mut head = bbs.store.watch_head();
    loop {
        let page = match bbs.store.changes_since(from, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "reading the change feed");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                }
            }
        };
        if page.oldest > from.saturating_add(1) && page.head > from {
            // Changes were pruned before they were read: convergence finds their work.
            warn!(
                from,
                oldest = page.oldest,
                "the change feed moved past this BBS; converging to catch up"
            );
            bbs.converger.wake(true);
        }
        let mut lrps: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for change in &page.changes {
            match react(change) {
                Reaction::None => {}
                Reaction::AuctionLrp(guid, index) => lrps.entry(guid).or_default().push(index),
                Reaction::AuctionTask(t) => requester.task(t),
                Reaction::Resolve(t) => bbs.callbacks.completed(t),
                Reaction::CellAppeared(p) => {
                    info!(cell_id = %p.cell_id, "a cell registered: converging now");
                    bbs.converger.cell_registered(&p.cell_id);
                    bbs.converger.wake(true);
                }
                Reaction::CellGone(p, at) => {
                    info!(cell_id = %p.cell_id, "a cell's presence is gone: converging now");
                    bbs.converger.cell_gone(p, at);
                    bbs.converger.wake(false);
                }
            }
        }
        if !lrps.is_empty() {
            let filter = DesiredLrpFilter {
                process_guids: lrps.keys().map(|g| g.to_string()).collect(),
                ..Default::default()
            };
            match bbs.store.list_scheduling_infos(&filter).await {
                Ok(infos) => {
                    for info in infos {
                        if let Some(indices) = lrps.remove(info.process_guid.as_str()) {
                            requester.lrp(&info, indices);
                        }
                    }
                }
                // Convergence asks again for instances left UNCLAIMED.
                Err(e) => warn!(error = %e, "reading scheduling infos for start requests"),
            }
        }
        let full = page.changes.len() >= PAGE;
        from = page.changes.last().map_or(page.head.max(from), |c| c.revision);
        debug!(from, "followed the change feed");
        if full {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = head.wait_for(|&h| h > from) => if r.is_err() { return Ok(()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::{ActualLrp, ActualLrpKey, DesireTaskRequest, Task};

    fn change(before: Option<Record>, after: Option<Record>) -> Change {
        Change {
            revision: 1,
            at: 0,
            before,
            after,
        }
    }

    fn lrp(state: ActualLrpState, presence: Presence) -> Record {
        let key = ActualLrpKey {
            process_guid: "web".into(),
            index: 2,
            domain: "d".into(),
        };
        let mut a = ActualLrp::unclaimed(key, 0, "e".into());
        a.state = state;
        a.presence = presence;
        Record::ActualLrp(a)
    }

    fn task(state: TaskState) -> Record {
        let req = DesireTaskRequest {
            task_guid: "t".into(),
            domain: "d".into(),
            ..Default::default()
        };
        let mut t = Task::desired(req, 0, "e".into());
        t.state = state;
        Record::Task(t)
    }

    #[test]
    fn reactions() {
        use ActualLrpState::*;
        let kind = |c: &Change| match react(c) {
            Reaction::None => "none",
            Reaction::AuctionLrp(..) => "auction_lrp",
            Reaction::AuctionTask(_) => "auction_task",
            Reaction::Resolve(_) => "resolve",
            Reaction::CellAppeared(_) => "converge_resend",
            Reaction::CellGone(..) => "converge",
        };
        let cell = |id: &str| {
            Record::CellPresence(diego_model::CellPresence {
                cell_id: id.into(),
                ..Default::default()
            })
        };
        let o = Presence::Ordinary;
        let cases = [
            (
                change(None, Some(cell("c1"))),
                "converge_resend",
                "a cell registered: waiting work may fit",
            ),
            (change(Some(cell("c1")), None), "converge", "a cell lapsed"),
            (
                change(Some(cell("c1")), Some(cell("c1"))),
                "none",
                "a cell's capacity changed",
            ),
            (
                change(None, Some(lrp(Unclaimed, o))),
                "auction_lrp",
                "a new instance",
            ),
            (
                change(Some(lrp(Running, o)), Some(lrp(Unclaimed, o))),
                "auction_lrp",
                "a crash restarting at once, an unclaim",
            ),
            (
                change(Some(lrp(Crashed, o)), Some(lrp(Unclaimed, o))),
                "auction_lrp",
                "a restart after backoff",
            ),
            (
                change(Some(lrp(Unclaimed, o)), Some(lrp(Unclaimed, o))),
                "none",
                "a placement failure",
            ),
            (
                change(Some(lrp(Unclaimed, o)), Some(lrp(Claimed, o))),
                "none",
                "a claim",
            ),
            (
                change(None, Some(lrp(Running, Presence::Suspect))),
                "none",
                "a suspect row",
            ),
            (change(Some(lrp(Running, o)), None), "none", "a removal"),
            (
                change(None, Some(task(TaskState::Pending))),
                "auction_task",
                "a new task",
            ),
            (
                change(Some(task(TaskState::Running)), Some(task(TaskState::Pending))),
                "none",
                "a rejection waits for convergence",
            ),
            (
                change(Some(task(TaskState::Running)), Some(task(TaskState::Completed))),
                "resolve",
                "a completion",
            ),
            (
                change(Some(task(TaskState::Resolving)), Some(task(TaskState::Completed))),
                "resolve",
                "a demoted resolution",
            ),
            (
                change(Some(task(TaskState::Completed)), Some(task(TaskState::Resolving))),
                "none",
                "a resolution",
            ),
        ];
        for (c, want, what) in cases {
            assert_eq!(kind(&c), want, "{what}");
        }
    }
}
