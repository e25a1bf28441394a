//! Actual LRP lifecycle: what cells and the auctioneer do to instances (diego-spec §4.3–4.4).

use std::collections::HashMap;

use diego_model::api::{PlacementFailuresRequest, PlacementFailuresResponse, StartActualLrpRequest};
use diego_model::auction::PlacementExplanation;
use diego_model::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpState, Presence, RestartPolicy, TransitionError,
};
use diego_store::{ActualLrpFilter, Record, StoreError, Txn, Write};

use super::{is_retryable, read_decide_cas, ControllerError, ControllerResult};
use crate::state::Bbs;

fn not_found(guid: &str, index: i32) -> ControllerError {
    ControllerError::NotFound(format!("actual LRP {guid:?} index {index} not found"))
}

fn what(guid: &str, index: i32) -> String {
    format!("actual LRP {guid:?} index {index}")
}

/// The listing as one JSON array (see `Store::list_actual_lrps_json`).
pub async fn list_json(bbs: &Bbs, filter: &ActualLrpFilter) -> ControllerResult<String> {
    Ok(bbs.store.list_actual_lrps_json(filter).await?)
}

/// Every presence of one index.
pub async fn get_all(bbs: &Bbs, guid: &str, index: i32) -> ControllerResult<Vec<ActualLrp>> {
    let all = bbs.store.get_actual_lrps(guid, index).await?;
    if all.is_empty() {
        return Err(not_found(guid, index));
    }
    Ok(all)
}

async fn ordinary(bbs: &Bbs, guid: &str, index: i32) -> ControllerResult<(ActualLrp, Vec<ActualLrp>)> {
    let mut all = bbs.store.get_actual_lrps(guid, index).await?;
    let pos = all
        .iter()
        .position(|a| a.presence == Presence::Ordinary)
        .ok_or_else(|| not_found(guid, index))?;
    let ordinary = all.remove(pos);
    Ok((ordinary, all))
}

/// Read the ORDINARY instance, decide with `f`, commit with CAS (plus any extra writes `f`
/// asks for), retrying on conflict. `Ok(None)` from `f` means no change.
async fn transition(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    f: impl Fn(&ActualLrp, &[ActualLrp]) -> Result<Option<(ActualLrp, Vec<Write>)>, TransitionError>,
) -> ControllerResult<(ActualLrp, Option<ActualLrp>)> {
    read_decide_cas(
        || what(guid, index),
        || async {
            let (current, others) = ordinary(bbs, guid, index).await?;
            let Some((next, extra)) = f(&current, &others)? else {
                return Ok((current, None));
            };
            let mut txn = Txn::one(Write::update(Record::ActualLrp(next)));
            txn.writes.extend(extra);
            let c = bbs.store.commit(txn).await?;
            match c.records.into_iter().next().flatten() {
                Some(Record::ActualLrp(a)) => Ok((a, Some(current))),
                _ => Err(
                    StoreError::unavailable("the store returned no actual LRP for a committed update").into(),
                ),
            }
        },
    )
    .await
}

pub async fn claim(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
) -> ControllerResult<ActualLrp> {
    let now = bbs.now();
    let (a, before) = transition(bbs, guid, index, |a, _| {
        Ok(a.claim(ik, now)?.map(|n| (n, Vec::new())))
    })
    .await?;
    if before.is_some() {
        tracing::info!(process_guid = guid, index, cell_id = %ik.cell_id, "claimed actual LRP");
    }
    Ok(a)
}

/// RUNNING on the caller's cell. The replacement taking over also retires any SUSPECT or
/// EVACUATING row of the index, in the same transaction.
pub async fn start(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    req: &StartActualLrpRequest,
) -> ControllerResult<ActualLrp> {
    let now = bbs.now();
    let (a, before) = transition(bbs, guid, index, |a, others| {
        let next = a.start(
            &req.instance_key,
            &req.net_info,
            req.routable,
            &req.availability_zone,
            now,
        )?;
        Ok(next.map(|n| {
            let extra = others
                .iter()
                .map(|o| Write::delete(&Record::ActualLrp(o.clone())))
                .collect();
            (n, extra)
        }))
    })
    .await?;
    if before.is_some() {
        tracing::info!(process_guid = guid, index, cell_id = %req.instance_key.cell_id, "started actual LRP");
    }
    Ok(a)
}

/// Crash per the restart policy: straight back to UNCLAIMED for the first few crashes,
/// otherwise CRASHED until the backoff passes.
pub async fn crash(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: &ActualLrpInstanceKey,
    reason: &str,
) -> ControllerResult<ActualLrp> {
    let desired = bbs.store.get_desired_lrp(guid).await?;
    let policy = RestartPolicy::with_override(desired.as_ref().and_then(|d| d.crash_policy.as_ref()));
    let now = bbs.now();
    let (a, _) = transition(bbs, guid, index, |a, _| {
        Ok(Some((a.crash(ik, reason, &policy, now)?.lrp, Vec::new())))
    })
    .await?;
    tracing::info!(
        process_guid = guid,
        index,
        crash_count = a.crash_count,
        state = %a.state,
        reason,
        "crashed actual LRP"
    );
    // A crash racing the LRP's delete or scale-down (its retire ran while the instance was
    // still held, and asked a cell whose process had already exited) would leave a row to
    // restart that nothing wants. Read again after the commit: the delete or scale-down
    // changes the desired LRP before it retires, so either it saw this row or this sees it.
    let wanted = bbs
        .store
        .get_desired_lrp(guid)
        .await?
        .is_some_and(|d| index < d.instances);
    if !wanted
        && a.presence == Presence::Ordinary
        && matches!(a.state, ActualLrpState::Unclaimed | ActualLrpState::Crashed)
    {
        match retire(bbs, guid, index).await {
            Ok(()) | Err(ControllerError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(process_guid = guid, index, error = %e, "could not retire a crashed instance no longer desired")
            }
        }
    }
    // An immediate restart (back to UNCLAIMED) is auctioned by the active BBS from the feed.
    Ok(a)
}

/// The auction could not place the instance.
pub async fn fail(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    placement_error: &str,
    explanation: Option<PlacementExplanation>,
) -> ControllerResult<ActualLrp> {
    let now = bbs.now();
    let (a, _) = transition(bbs, guid, index, |a, _| {
        let mut failed = a.fail(placement_error, now)?;
        failed.placement_explanation = explanation.clone();
        Ok(Some((failed, Vec::new())))
    })
    .await?;
    Ok(a)
}

/// Instances per placement-failure transaction: small enough that a lost race costs little.
const FAILURE_CHUNK: usize = 500;

/// Records an auction round's placement failures (diego-spec §6.1), best effort and without
/// ever contending with a user's write:
/// - an instance that already carries this error and explanation is not written again, so a
///   round that fails like the one before writes nothing (no store traffic, no feed entries);
/// - an LRP deleted meanwhile, or an index beyond its count, is skipped;
/// - the writes go in small compare-and-swap transactions, each tried once: one that loses a
///   race (a delete, a scale, a claim) is dropped, not retried, and the next round reports
///   whatever is still unplaced.
pub async fn record_placement_failures(
    bbs: &Bbs,
    request: &PlacementFailuresRequest,
) -> ControllerResult<PlacementFailuresResponse> {
    let mut out = PlacementFailuresResponse::default();
    let now = bbs.now();
    for f in &request.lrps {
        let named = f.indices.len() as u64;
        let Some(desired) = bbs.store.get_desired_lrp(&f.process_guid).await? else {
            out.skipped += named;
            continue;
        };
        let rows = bbs
            .store
            .list_actual_lrps(&ActualLrpFilter {
                process_guid: Some(f.process_guid.clone()),
                presence: Some(Presence::Ordinary),
                ..Default::default()
            })
            .await?;
        let by_index: HashMap<i32, &ActualLrp> = rows.iter().map(|a| (a.index, a)).collect();
        let mut changed = Vec::new();
        for &index in &f.indices {
            let row = i32::try_from(index)
                .ok()
                .filter(|i| *i < desired.instances)
                .and_then(|i| by_index.get(&i));
            let Some(row) = row else {
                out.skipped += 1;
                continue;
            };
            let Ok(mut failed) = row.fail(&f.placement_error, now) else {
                out.skipped += 1;
                continue;
            };
            failed.placement_explanation = f.placement_explanation.clone();
            if failed.placement_error == row.placement_error
                && failed.placement_explanation == row.placement_explanation
            {
                out.unchanged += 1;
            } else {
                changed.push(failed);
            }
        }
        for chunk in changed.chunks(FAILURE_CHUNK) {
            let mut txn = Txn::new();
            for a in chunk {
                txn.push(Write::update(Record::ActualLrp(a.clone())));
            }
            match bbs.store.commit(txn).await {
                Ok(_) => out.recorded += chunk.len() as u64,
                Err(e) if is_retryable(&e) => out.skipped += chunk.len() as u64,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}

/// Deletes the ORDINARY row (its cell stopped the container, or has none).
pub async fn remove(
    bbs: &Bbs,
    guid: &str,
    index: i32,
    ik: Option<&ActualLrpInstanceKey>,
) -> ControllerResult<()> {
    read_decide_cas(
        || what(guid, index),
        || async {
            let (current, _) = ordinary(bbs, guid, index).await?;
            current.check_remove(ik)?;
            bbs.store
                .commit(Txn::one(Write::delete(&Record::ActualLrp(current))))
                .await?;
            Ok(())
        },
    )
    .await?;
    tracing::info!(process_guid = guid, index, "removed actual LRP");
    Ok(())
}

/// Stops an instance without changing what is desired: unheld instances are deleted; held
/// ones are stopped by their cell.
pub async fn retire(bbs: &Bbs, guid: &str, index: i32) -> ControllerResult<()> {
    read_decide_cas(
        || what(guid, index),
        || async {
            let (current, _) = ordinary(bbs, guid, index).await?;
            if matches!(current.state, ActualLrpState::Claimed | ActualLrpState::Running) {
                return retire_held(bbs, &current).await;
            }
            bbs.store
                .commit(Txn::one(Write::delete(&Record::ActualLrp(current))))
                .await?;
            Ok(())
        },
    )
    .await
}

/// A CLAIMED or RUNNING instance: ask its cell to stop it; if the cell is gone, nothing can,
/// so the record is deleted here.
pub async fn retire_held(bbs: &Bbs, a: &ActualLrp) -> ControllerResult<()> {
    let presences = bbs.store.list_presences().await?;
    match presences.iter().find(|p| p.cell_presence.cell_id == a.cell_id) {
        Some(p) => {
            tracing::info!(process_guid = %a.process_guid, index = a.index, cell_id = %a.cell_id, "asking cell to stop instance");
            bbs.reps
                .stop_lrp_instance(&p.cell_presence.rep_url, &a.process_guid, &a.instance_guid);
            Ok(())
        }
        None => {
            match bbs
                .store
                .commit(Txn::one(Write::delete(&Record::ActualLrp(a.clone()))))
                .await
            {
                Ok(_) => {
                    tracing::info!(process_guid = %a.process_guid, index = a.index, cell_id = %a.cell_id, "deleted instance of absent cell");
                }
                // Changed meanwhile (its cell reported in): the cell's own sync takes over.
                Err(e) if is_retryable(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
    }
}
