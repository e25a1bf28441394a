//! Desired LRP lifecycle: desire, update (scale, routes, annotation, metric tags), delete.
//!
//! Desiring an LRP and creating its UNCLAIMED instances is one atomic transaction, as is a
//! scale (the desired record and the instances it adds or removes), so a crash of the BBS
//! can never leave an LRP without its instances. Instances that a cell holds (CLAIMED or
//! RUNNING) are never deleted from here: their cell is asked to stop them (see
//! [`super::actual_lrps::retire_held`]), and the cell removes the record once it has.

use diego_model::{
    ActualLrp, ActualLrpKey, ActualLrpState, DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate,
    ModificationTag, Presence,
};
use diego_store::{ActualLrpFilter, DesiredLrpFilter, Record, StoreError, Txn, Write};

use super::actual_lrps::retire_held;
use super::{read_decide_cas, ControllerError, ControllerResult};
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
    let (updated, to_stop) = read_decide_cas(
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
            let actuals = ordinary_instances(bbs, guid).await?;
            let now = bbs.now();
            let mut txn = Txn::one(Write::update(Record::DesiredLrp(next.clone())));
            // Scale up: every missing index below the new count gets an UNCLAIMED instance.
            for index in 0..next.instances {
                if !actuals.iter().any(|a| a.index == index) {
                    txn.push(Write::insert(Record::ActualLrp(unclaimed(&next, index, now))));
                }
            }
            // Scale down: extras nobody holds go now; held ones are stopped by their cells.
            let mut to_stop = Vec::new();
            for a in actuals.iter().filter(|a| a.index >= next.instances) {
                if is_held(a) {
                    to_stop.push(a.clone());
                } else {
                    txn.push(Write::delete(&Record::ActualLrp(a.clone())));
                }
            }
            let c = bbs.store.commit(txn).await?;
            match c.records.into_iter().next().flatten() {
                Some(Record::DesiredLrp(d)) => Ok((d, to_stop)),
                _ => Err(no_record()),
            }
        },
    )
    .await?;
    tracing::info!(
        process_guid = guid,
        instances = updated.instances,
        stopping = to_stop.len(),
        "updated desired LRP"
    );
    for a in &to_stop {
        retire_held(bbs, a).await?;
    }
    Ok(updated)
}

pub async fn delete(bbs: &Bbs, guid: &str) -> ControllerResult<()> {
    let to_stop = read_decide_cas(
        || format!("desired LRP {guid:?}"),
        || async {
            let current = get(bbs, guid).await?;
            let actuals = ordinary_instances(bbs, guid).await?;
            let mut txn = Txn::one(Write::delete(&Record::DesiredLrp(current)));
            let mut to_stop = Vec::new();
            for a in actuals {
                if is_held(&a) {
                    to_stop.push(a);
                } else {
                    txn.push(Write::delete(&Record::ActualLrp(a)));
                }
            }
            bbs.store.commit(txn).await?;
            Ok(to_stop)
        },
    )
    .await?;
    tracing::info!(
        process_guid = guid,
        stopping = to_stop.len(),
        "deleted desired LRP"
    );
    for a in &to_stop {
        retire_held(bbs, a).await?;
    }
    Ok(())
}

pub fn filter(domain: Option<String>, process_guid: Option<String>) -> DesiredLrpFilter {
    DesiredLrpFilter {
        domain,
        process_guids: process_guid.into_iter().collect(),
    }
}
