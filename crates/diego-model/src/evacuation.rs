//! Evacuation (diego-spec §4.7): what an evacuating cell's report about one of its instances
//! does to the rows of that index. Pure functions from the stored rows to a [`Plan`]; the BBS
//! commits the plan in one compare-and-swap transaction.
//!
//! The invariant they keep: an instance that serves keeps serving until its replacement does.
//! A RUNNING instance on an evacuating cell is copied to an EVACUATING row (still RUNNING, same
//! address, so routing keeps it) while its ORDINARY row goes back to UNCLAIMED to be placed
//! elsewhere; the cell keeps the container until the replacement is RUNNING (its start deletes
//! the EVACUATING row) or CRASHED, or the LRP is no longer desired.
//!
//! "Ours" below means held by the caller's instance key (a non-empty key equal to the row's).

use crate::actual_lrp::{ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, ActualLrpState, Presence};
use crate::clock::Timestamp;
use crate::modification_tag::ModificationTag;

/// The writes an evacuation report leads to, and the answer for the cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Whether the cell keeps the container running (it asks again later).
    pub keep_container: bool,
    /// A new EVACUATING row.
    pub insert: Option<ActualLrp>,
    /// The ORDINARY row's next version (carrying the tag that was read).
    pub update: Option<ActualLrp>,
    /// Rows to delete (each carrying the tag that was read).
    pub delete: Vec<ActualLrp>,
}

impl Plan {
    fn keep() -> Self {
        Plan {
            keep_container: true,
            ..Default::default()
        }
    }

    /// Whether the index must be placed again: the ORDINARY row is being unclaimed.
    pub fn auction(&self) -> bool {
        self.update.is_some()
    }

    /// Whether nothing is written.
    pub fn is_noop(&self) -> bool {
        self.insert.is_none() && self.update.is_none() && self.delete.is_empty()
    }
}

/// The rows of one index an evacuation report looks at.
#[derive(Debug, Clone, Copy)]
pub struct IndexRows<'a> {
    pub ordinary: Option<&'a ActualLrp>,
    pub evacuating: Option<&'a ActualLrp>,
    /// Whether the LRP is still desired.
    pub desired: bool,
}

impl<'a> IndexRows<'a> {
    /// Picks the ORDINARY and EVACUATING rows out of every presence of an index.
    pub fn from_rows(rows: &'a [ActualLrp], desired: bool) -> Self {
        IndexRows {
            ordinary: rows.iter().find(|a| a.presence == Presence::Ordinary),
            evacuating: rows.iter().find(|a| a.presence == Presence::Evacuating),
            desired,
        }
    }
}

fn ours(a: Option<&ActualLrp>, ik: &ActualLrpInstanceKey) -> bool {
    a.is_some_and(|a| !ik.is_empty() && a.instance_key() == *ik)
}

/// The ORDINARY row (held by the caller, so CLAIMED or RUNNING) back to UNCLAIMED, to be
/// placed again.
fn unclaim(plan: &mut Plan, ordinary: &ActualLrp, now: Timestamp) {
    if let Ok(Some(next)) = ordinary.unclaim(now) {
        plan.update = Some(next);
    }
}

/// The caller's EVACUATING row, if it has one, goes.
fn drop_our_evacuating(plan: &mut Plan, rows: &IndexRows, ik: &ActualLrpInstanceKey) {
    if ours(rows.evacuating, ik) {
        plan.delete.extend(rows.evacuating.cloned());
    }
}

/// A RUNNING container of an evacuating cell. The first report moves the instance to an
/// EVACUATING row (address and routes kept, `net` as the cell reports it now) and unclaims
/// the ORDINARY row; later ones keep the container while the replacement is UNCLAIMED or
/// CLAIMED. Any other situation tells the cell to drop its container, deleting what it held.
pub fn evacuate_running(
    rows: &IndexRows,
    ik: &ActualLrpInstanceKey,
    net: &ActualLrpNetInfo,
    now: Timestamp,
    epoch: String,
) -> Plan {
    let mut plan = Plan::default();
    if !rows.desired {
        // Nothing to hand over to: whatever the caller holds goes.
        drop_our_evacuating(&mut plan, rows, ik);
        if ours(rows.ordinary, ik) {
            plan.delete.extend(rows.ordinary.cloned());
        }
        return plan;
    }
    if ours(rows.evacuating, ik) {
        return match rows.ordinary.map(|o| o.state) {
            Some(ActualLrpState::Unclaimed | ActualLrpState::Claimed) => Plan::keep(),
            // Replacement RUNNING (its start normally deleted our row already) or CRASHED,
            // or the index is gone (scaled down): our instance is no longer needed.
            _ => {
                drop_our_evacuating(&mut plan, rows, ik);
                plan
            }
        };
    }
    if rows.evacuating.is_some() {
        // Another cell already evacuates this index: one EVACUATING row per index.
        if let Some(o) = rows.ordinary.filter(|_| ours(rows.ordinary, ik)) {
            unclaim(&mut plan, o, now);
        }
        return plan;
    }
    match rows.ordinary {
        Some(o) if ours(rows.ordinary, ik) && o.state == ActualLrpState::Running => {
            let mut evacuating = o.clone();
            evacuating.presence = Presence::Evacuating;
            evacuating.address = net.address.clone();
            evacuating.ports = net.ports.clone();
            evacuating.instance_address = net.instance_address.clone();
            evacuating.modification_tag = ModificationTag::new(epoch);
            plan.insert = Some(evacuating);
            unclaim(&mut plan, o, now);
            plan.keep_container = true;
        }
        // Claimed but not yet running: place it elsewhere now.
        Some(o) if ours(rows.ordinary, ik) => unclaim(&mut plan, o, now),
        // Someone else's (or nobody's) instance: ours is not the one to keep.
        _ => {}
    }
    plan
}

/// A CLAIMED (starting) container of an evacuating cell, or one it gives up on: the caller's
/// EVACUATING row goes and its ORDINARY row is unclaimed and placed again (deleted if the LRP
/// is no longer desired). The container is dropped.
pub fn evacuate_claimed(rows: &IndexRows, ik: &ActualLrpInstanceKey, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    drop_our_evacuating(&mut plan, rows, ik);
    if let Some(o) = rows.ordinary.filter(|_| ours(rows.ordinary, ik)) {
        if rows.desired {
            unclaim(&mut plan, o, now);
        } else {
            plan.delete.push(o.clone());
        }
    }
    plan
}

/// A container of an evacuating cell stopped (the BBS asked, or the cell gave up): the rows
/// the caller holds are deleted.
pub fn evacuate_stopped(rows: &IndexRows, ik: &ActualLrpInstanceKey) -> Plan {
    let mut plan = Plan::default();
    drop_our_evacuating(&mut plan, rows, ik);
    if ours(rows.ordinary, ik) {
        plan.delete.extend(rows.ordinary.cloned());
    }
    plan
}

/// Only the caller's EVACUATING row goes (a crash of the ORDINARY row it may also hold follows
/// the restart policy, as any crash does).
pub fn remove_evacuating(rows: &IndexRows, ik: &ActualLrpInstanceKey) -> Plan {
    let mut plan = Plan::default();
    drop_our_evacuating(&mut plan, rows, ik);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actual_lrp::{ActualLrpKey, PortMapping};
    use ActualLrpState::*;

    fn a_key() -> ActualLrpInstanceKey {
        ActualLrpInstanceKey::new("ig-a", "cell-a")
    }

    fn b_key() -> ActualLrpInstanceKey {
        ActualLrpInstanceKey::new("ig-b", "cell-b")
    }

    fn net(port: u32) -> ActualLrpNetInfo {
        ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: port,
                ..Default::default()
            }],
            instance_address: String::new(),
        }
    }

    fn unclaimed() -> ActualLrp {
        ActualLrp::unclaimed(
            ActualLrpKey {
                process_guid: "web".into(),
                index: 0,
                domain: "d".into(),
            },
            10,
            "e".into(),
        )
    }

    fn ordinary(state: ActualLrpState, ik: &ActualLrpInstanceKey) -> ActualLrp {
        let a = unclaimed();
        match state {
            Unclaimed => a,
            Claimed => a.claim(ik, 20).unwrap().unwrap(),
            Running => a.start(ik, &net(61000), None, "z1", 20).unwrap().unwrap(),
            Crashed => {
                let mut c = a.start(ik, &net(61000), None, "z1", 20).unwrap().unwrap();
                c.crash_count = 5;
                c.crash(ik, "boom", &Default::default(), 30).unwrap().lrp
            }
        }
    }

    fn evacuating(ik: &ActualLrpInstanceKey) -> ActualLrp {
        let mut e = ordinary(Running, ik);
        e.presence = Presence::Evacuating;
        e
    }

    fn rows<'a>(o: Option<&'a ActualLrp>, e: Option<&'a ActualLrp>) -> IndexRows<'a> {
        IndexRows {
            ordinary: o,
            evacuating: e,
            desired: true,
        }
    }

    #[test]
    fn first_report_of_a_running_instance_moves_it_to_an_evacuating_row() {
        let o = ordinary(Running, &a_key());
        let plan = evacuate_running(&rows(Some(&o), None), &a_key(), &net(61001), 100, "e2".into());
        assert!(plan.keep_container && plan.auction());
        let e = plan.insert.unwrap();
        assert_eq!(
            (e.presence, e.state, e.cell_id.as_str(), e.ports[0].host_port),
            (Presence::Evacuating, Running, "cell-a", 61001)
        );
        assert_eq!(e.modification_tag, ModificationTag::new("e2"));
        e.validate().unwrap();
        let u = plan.update.unwrap();
        assert_eq!((u.state, u.cell_id.as_str(), u.since), (Unclaimed, "", 100));
        assert_eq!(u.modification_tag, o.modification_tag, "CAS on the tag read");
        u.validate().unwrap();
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn later_reports_keep_the_container_until_the_replacement_runs_or_crashes() {
        let e = evacuating(&a_key());
        for (state, keep) in [
            (Unclaimed, true),
            (Claimed, true),
            (Running, false),
            (Crashed, false),
        ] {
            let o = ordinary(state, &b_key());
            let plan = evacuate_running(&rows(Some(&o), Some(&e)), &a_key(), &net(61000), 100, "x".into());
            assert_eq!(plan.keep_container, keep, "replacement {state}");
            if keep {
                assert!(plan.is_noop(), "{plan:?}");
            } else {
                assert_eq!(plan.delete, vec![e.clone()], "replacement {state}");
                assert!(plan.update.is_none() && !plan.auction());
            }
        }
        // Scaled down meanwhile: no ORDINARY row left.
        let plan = evacuate_running(&rows(None, Some(&e)), &a_key(), &net(61000), 100, "x".into());
        assert!(!plan.keep_container);
        assert_eq!(plan.delete, vec![e.clone()]);
    }

    #[test]
    fn the_replacement_already_running_means_drop() {
        // Its start deleted our EVACUATING row.
        let o = ordinary(Running, &b_key());
        let plan = evacuate_running(&rows(Some(&o), None), &a_key(), &net(61000), 100, "x".into());
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn no_longer_desired_means_drop_and_delete_what_we_hold() {
        let e = evacuating(&a_key());
        let o = ordinary(Unclaimed, &a_key());
        let mut r = rows(Some(&o), Some(&e));
        r.desired = false;
        let plan = evacuate_running(&r, &a_key(), &net(61000), 100, "x".into());
        assert!(!plan.keep_container);
        assert_eq!(plan.delete, vec![e.clone()], "the UNCLAIMED row is not ours");
        let o = ordinary(Running, &a_key());
        let r = IndexRows {
            ordinary: Some(&o),
            evacuating: None,
            desired: false,
        };
        assert_eq!(
            evacuate_running(&r, &a_key(), &net(61000), 100, "x".into()).delete,
            vec![o.clone()]
        );
    }

    #[test]
    fn a_second_evacuating_cell_drops_its_container() {
        let theirs = evacuating(&b_key());
        let o = ordinary(Running, &a_key());
        let plan = evacuate_running(
            &rows(Some(&o), Some(&theirs)),
            &a_key(),
            &net(61000),
            100,
            "x".into(),
        );
        assert!(!plan.keep_container && plan.insert.is_none() && plan.delete.is_empty());
        assert_eq!(plan.update.as_ref().unwrap().state, Unclaimed);
        assert!(plan.auction());
    }

    #[test]
    fn a_claimed_instance_reported_as_running_is_placed_again() {
        let o = ordinary(Claimed, &a_key());
        let plan = evacuate_running(&rows(Some(&o), None), &a_key(), &net(61000), 100, "x".into());
        assert!(!plan.keep_container && plan.auction() && plan.insert.is_none());
    }

    #[test]
    fn claimed_stopped_and_remove_evacuating() {
        let e = evacuating(&a_key());
        let o = ordinary(Claimed, &a_key());
        let plan = evacuate_claimed(&rows(Some(&o), Some(&e)), &a_key(), 100);
        assert!(!plan.keep_container && plan.auction());
        assert_eq!(plan.delete, vec![e.clone()]);
        assert_eq!(plan.update.as_ref().unwrap().state, Unclaimed);
        // Another cell's instance is left alone.
        let theirs = ordinary(Claimed, &b_key());
        assert!(evacuate_claimed(&rows(Some(&theirs), None), &a_key(), 100).is_noop());
        let mut gone = rows(Some(&o), None);
        gone.desired = false;
        assert_eq!(evacuate_claimed(&gone, &a_key(), 100).delete, vec![o.clone()]);

        let plan = evacuate_stopped(&rows(Some(&o), Some(&e)), &a_key());
        assert_eq!(plan.delete, [e.clone(), o.clone()]);
        assert!(evacuate_stopped(&rows(Some(&theirs), None), &a_key()).is_noop());

        assert_eq!(
            remove_evacuating(&rows(Some(&o), Some(&e)), &a_key()).delete,
            vec![e.clone()]
        );
        assert!(remove_evacuating(&rows(Some(&o), Some(&e)), &b_key()).is_noop());
        assert!(
            remove_evacuating(&rows(None, Some(&e)), &ActualLrpInstanceKey::default()).is_noop(),
            "an empty key holds nothing"
        );
    }
}
