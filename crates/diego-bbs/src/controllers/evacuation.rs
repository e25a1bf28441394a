//! Evacuation (diego-spec §4.7): an evacuating cell reports each of its instances; the model
//! (`diego_model::evacuation`) decides from the rows of the index, and this commits the plan in
//! one compare-and-swap transaction, re-reading and re-deciding on conflict.

use diego_model::evacuation::{self, IndexRows, Plan};
use diego_model::{ActualLrpInstanceKey, ActualLrpNetInfo, ErrorType, TransitionError};
use diego_store::{Record, Txn, Write};

use super::{actual_lrps, read_decide_cas, ControllerError, ControllerResult};
use crate::state::{new_guid, Bbs};

/// Reads every presence of the index and whether the LRP is desired, plans with `decide`,
/// commits the plan, and asks for the index to be placed again when the plan says so.
async fn apply(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    what: &str,
    decide: impl Fn(&IndexRows) -> Plan,
) -> ControllerResult<Plan> {
    let plan = read_decide_cas(
        || format!("actual LRP {guid:?} index {index}"),
        || async {
            let rows = bbs.store.get_actual_lrps(guid, index).await?;
            let desired = bbs.store.get_desired_lrp(guid).await?;
            let plan = decide(&IndexRows::from_rows(&rows, desired.is_some()));
            if plan.is_noop() {
                return Ok(plan);
            }
            let mut txn = Txn::new();
            if let Some(e) = &plan.insert {
                txn.push(Write::insert(Record::ActualLrp(e.clone())));
            }
            if let Some(o) = &plan.update {
                txn.push(Write::update(Record::ActualLrp(o.clone())));
            }
            for d in &plan.delete {
                txn.push(Write::delete(&Record::ActualLrp(d.clone())));
            }
            bbs.store.commit(txn).await?;
            tracing::info!(
                process_guid = guid,
                index,
                keep_container = plan.keep_container,
                evacuating = plan.insert.is_some(),
                unclaimed = plan.update.is_some(),
                deleted = plan.delete.len(),
                "{what}"
            );
            // A replacement left UNCLAIMED is auctioned by the active BBS from the feed.
            Ok(plan)
        },
    )
    .await?;
    Ok(plan)
}

/// A RUNNING instance of an evacuating cell: `keep_container` says whether the cell keeps it.
pub async fn evacuate_running(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
    net: &ActualLrpNetInfo,
) -> ControllerResult<bool> {
    let now = bbs.now();
    let plan = apply(bbs, guid, index, "evacuating running instance", |rows| {
        evacuation::evacuate_running(rows, ik, net, now, new_guid())
    })
    .await?;
    Ok(plan.keep_container)
}

/// A CLAIMED (starting) instance of an evacuating cell: placed again elsewhere.
pub async fn evacuate_claimed(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
) -> ControllerResult<bool> {
    let now = bbs.now();
    apply(bbs, guid, index, "evacuating claimed instance", |rows| {
        evacuation::evacuate_claimed(rows, ik, now)
    })
    .await?;
    Ok(false)
}

/// A stopped instance of an evacuating cell: the rows it held go.
pub async fn evacuate_stopped(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
) -> ControllerResult<bool> {
    apply(bbs, guid, index, "removed stopped evacuating instance", |rows| {
        evacuation::evacuate_stopped(rows, ik)
    })
    .await?;
    Ok(false)
}

/// A crashed instance of an evacuating cell: its EVACUATING row goes, and an ORDINARY row it
/// still holds crashes as any crash does (the restart policy decides what follows).
pub async fn evacuate_crashed(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
    reason: &str,
) -> ControllerResult<bool> {
    apply(bbs, guid, index, "removed crashed evacuating instance", |rows| {
        evacuation::remove_evacuating(rows, ik)
    })
    .await?;
    let rows = bbs.store.get_actual_lrps(guid, index).await?;
    let holds_ordinary = IndexRows::from_rows(&rows, true)
        .ordinary
        .is_some_and(|o| o.instance_key() == *ik);
    if holds_ordinary {
        actual_lrps::crash(bbs, guid, index, ik, reason).await?;
    }
    Ok(false)
}

/// Deletes the caller's EVACUATING row. Refused when the index has none, or when it is
/// another instance's.
pub async fn remove_evacuating(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
) -> ControllerResult<()> {
    let rows = bbs.store.get_actual_lrps(guid, index).await?;
    match IndexRows::from_rows(&rows, true).evacuating {
        None => Err(ControllerError::NotFound(format!(
            "actual LRP {guid:?} index {index} has no EVACUATING instance"
        ))),
        Some(e) if e.instance_key() != *ik => Err(TransitionError::new(
            ErrorType::ActualLrpCannotBeRemoved,
            format!(
                "the EVACUATING instance of actual LRP {guid:?} index {index} is {:?} on cell {:?}, not {:?} on {:?}",
                e.instance_guid, e.cell_id, ik.instance_guid, ik.cell_id
            ),
        )
        .into()),
        Some(_) => {
            apply(bbs, guid, index, "removed evacuating instance", |rows| {
                evacuation::remove_evacuating(rows, ik)
            })
            .await?;
            Ok(())
        }
    }
}
