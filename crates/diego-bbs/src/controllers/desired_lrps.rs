//! Desired LRP lifecycle: desire, update (scale, routes, annotation, metric tags), delete.
//!
//! Desiring an LRP and creating its UNCLAIMED instances is one atomic transaction, as is a
//! scale-up (the desired record and the instances it adds), so a crash of the BBS can never
//! leave an LRP without its instances. A delete or scale-down commits the desired record
//! alone and then removes the instances it no longer wants ([`remove_extras`]), so that no
//! write to an instance can make the user's request lose; a crash in between leaves extra
//! instances, which convergence retires. Instances that a cell holds (CLAIMED or
//! RUNNING) are never deleted from here: their cell is asked to stop them (see
//! [`super::actual_lrps::retire_held`]), and the cell removes the record once it has.

use std::collections::HashSet;

use diego_model::{
    ActualLrp, ActualLrpKey, ActualLrpState, DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate,
    ModificationTag, Presence,
};
use diego_store::{ActualLrpFilter, DesiredLrpFilter, Record, StoreError, Txn, Write};

use super::actual_lrps::retire_held;
use super::{is_retryable, read_decide_cas, ControllerError, ControllerResult, CAS_ATTEMPTS};
use crate::state::{new_guid, Bbs};

fn not_found(guid: &str) -> ControllerError {
    ControllerError::NotFound(format!("desired LRP {guid:?} not found"))
}

fn no_record() -> ControllerError {
    StoreError::unavailable("the store returned no desired LRP for a committed write").into()
}

pub async fn desire(bbs: &Bbs, mut lrp: DesiredLrp) -> ControllerResult<DesiredLrp> {
    lrp.validate().map_err(|errors| ControllerError::Invalid {
        what: format!("desired LRP {:?}", lrp.process_guid),
        errors,
    })?;
    let now = bbs.now();
    lrp.created_at = now;
    lrp.modification_tag = ModificationTag::new(new_guid());
    let mut txn = Txn::new();
    txn.push(Write::insert(Record::DesiredLrp(lrp.clone())));
    for index in 0..lrp.instances {
        txn.push(Write::insert(Record::ActualLrp(unclaimed(&lrp, index, now))));
    }
    match bbs.store.commit(txn).await {
        Ok(c) => {
            tracing::info!(process_guid = %lrp.process_guid, instances = lrp.instances, "desired LRP");
            match c.records.into_iter().next().flatten() {
                // The active BBS auctions the new instances from the change feed.
                Some(Record::DesiredLrp(d)) => Ok(d),
                _ => Err(no_record()),
            }
        }
        Err(StoreError::Exists { write: 0, .. }) => Err(ControllerError::Exists(format!(
            "desired LRP {:?} already exists",
            lrp.process_guid
        ))),
        // An instance row left behind by an earlier LRP of the same guid whose cell has not
        // removed it yet.
        Err(StoreError::Exists { key, .. }) => Err(ControllerError::Conflict(format!(
            "{key} of a previous LRP with this guid still exists; retry once its cell has stopped it"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn unclaimed(lrp: &DesiredLrp, index: i32, now: i64) -> ActualLrp {
    let key = ActualLrpKey {
        process_guid: lrp.process_guid.clone(),
        index,
        domain: lrp.domain.clone(),
    };
    ActualLrp::unclaimed(key, now, new_guid())
}

pub async fn get(bbs: &Bbs, guid: &str) -> ControllerResult<DesiredLrp> {
    bbs.store
        .get_desired_lrp(guid)
        .await?
        .ok_or_else(|| not_found(guid))
}

pub async fn list(bbs: &Bbs, filter: &DesiredLrpFilter) -> ControllerResult<Vec<DesiredLrp>> {
    Ok(bbs.store.list_desired_lrps(filter).await?)
}

pub async fn scheduling_infos(
    bbs: &Bbs,
    filter: &DesiredLrpFilter,
) -> ControllerResult<Vec<DesiredLrpSchedulingInfo>> {
    Ok(bbs.store.list_scheduling_infos(filter).await?)
}

async fn ordinary_instances(bbs: &Bbs, guid: &str) -> ControllerResult<Vec<ActualLrp>> {
    let filter = ActualLrpFilter {
        process_guid: Some(guid.to_string()),
        presence: Some(Presence::Ordinary),
        ..Default::default()
    };
    Ok(bbs.store.list_actual_lrps(&filter).await?)
}

fn is_held(a: &ActualLrp) -> bool {
    matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
}

pub async fn update(bbs: &Bbs, guid: &str, update: &DesiredLrpUpdate) -> ControllerResult<DesiredLrp> {
    update.validate().map_err(|errors| ControllerError::Invalid {
        what: format!("update of desired LRP {guid:?}"),
        errors,
    })?;
    let updated = read_decide_cas(
        || format!("desired LRP {guid:?}"),
        || async {
            let current = get(bbs, guid).await?;
            if let Some(expected) = &update.modification_tag {
                if *expected != current.modification_tag {
                    return Err(ControllerError::Conflict(format!(
                        "desired LRP {guid:?} was modified: expected modification tag {}:{}, it is {}:{}",
                        expected.epoch,
                        expected.index,
                        current.modification_tag.epoch,
                        current.modification_tag.index
                    )));
                }
            }
            let next = current.apply_update(update);
            let held: std::collections::HashSet<i32> = ordinary_instances(bbs, guid)
                .await?
                .iter()
                .map(|a| a.index)
                .collect();
            let now = bbs.now();
            let mut txn = Txn::one(Write::update(Record::DesiredLrp(next.clone())));
            // Scale up: every missing index below the new count gets an UNCLAIMED instance
            // (a set, not a scan per index: an LRP may have MAX_INSTANCES of them).
            for index in 0..next.instances {
                if !held.contains(&index) {
                    txn.push(Write::insert(Record::ActualLrp(unclaimed(&next, index, now))));
                }
            }
            let c = bbs.store.commit(txn).await?;
            match c.records.into_iter().next().flatten() {
                Some(Record::DesiredLrp(d)) => Ok(d),
                _ => Err(no_record()),
            }
        },
    )
    .await?;
    // Scale down: the extras go after the desired record changed (see `remove_extras`).
    let stopping = match update.instances {
        Some(_) => remove_extras(bbs, guid).await?,
        None => 0,
    };
    tracing::info!(
        process_guid = guid,
        instances = updated.instances,
        stopping,
        "updated desired LRP"
    );
    Ok(updated)
}

pub async fn delete(bbs: &Bbs, guid: &str) -> ControllerResult<()> {
    read_decide_cas(
        || format!("desired LRP {guid:?}"),
        || async {
            let current = get(bbs, guid).await?;
            bbs.store
                .commit(Txn::one(Write::delete(&Record::DesiredLrp(current))))
                .await?;
            Ok(())
        },
    )
    .await?;
    let stopping = remove_extras(bbs, guid).await?;
    tracing::info!(process_guid = guid, stopping, "deleted desired LRP");
    Ok(())
}

/// Instance rows deleted per transaction when an LRP is deleted or scaled down.
const REMOVE_CHUNK: usize = 1_000;

/// Removes the instances of `guid` that its desired record no longer wants (all of them once
/// it is deleted, those at or above its count after a scale-down): rows nobody holds are
/// deleted, held ones are stopped by their cells. Returns how many cells were asked to stop.
///
/// This runs after the desired record's own commit, which compares only that record's tag:
/// background writes to instance rows (an auction round's placement failures on 100,000
/// instances, claims, crashes) can make a chunk here lose its race, but never the user's
/// delete or scale. A lost chunk is read and decided again; whatever is still left after
/// `CAS_ATTEMPTS` rounds is an extra instance that convergence retires.
async fn remove_extras(bbs: &Bbs, guid: &str) -> ControllerResult<usize> {
    let mut asked: HashSet<(i32, String)> = HashSet::new();
    for _ in 0..CAS_ATTEMPTS {
        let wanted = match bbs.store.get_desired_lrp(guid).await? {
            Some(d) => d.instances,
            None => 0,
        };
        let extras: Vec<ActualLrp> = ordinary_instances(bbs, guid)
            .await?
            .into_iter()
            .filter(|a| a.index >= wanted)
            .collect();
        let (held, unheld): (Vec<ActualLrp>, Vec<ActualLrp>) = extras.into_iter().partition(is_held);
        for a in held {
            if asked.insert((a.index, a.instance_guid.clone())) {
                retire_held(bbs, &a).await?;
            }
        }
        let mut lost = false;
        for chunk in unheld.chunks(REMOVE_CHUNK) {
            let mut txn = Txn::new();
            for a in chunk {
                txn.push(Write::delete(&Record::ActualLrp(a.clone())));
            }
            match bbs.store.commit(txn).await {
                Ok(_) => {}
                Err(e) if is_retryable(&e) => lost = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !lost {
            return Ok(asked.len());
        }
    }
    tracing::warn!(
        process_guid = guid,
        "instances kept changing while being removed; convergence retires what is left"
    );
    Ok(asked.len())
}

pub fn filter(domain: Option<String>, process_guid: Option<String>) -> DesiredLrpFilter {
    DesiredLrpFilter {
        domain,
        process_guids: process_guid.into_iter().collect(),
    }
}
