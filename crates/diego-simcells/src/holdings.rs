//! One cell's bookkeeping: what it holds and what is left (diego-spec §6.4). Plain data, no
//! IO: handlers and lifecycle tasks lock it for a moment and make their BBS calls outside.
//!
//! Invariant: `used` is the sum of every held LRP and task plus one container each, so
//! `available = total - used` never needs a scan.

use std::cmp::Reverse;
use std::collections::HashMap;

use diego_model::auction::{CellLrp, CellResources, CellTask, LrpWork, TaskStartRequest, Work};

/// Where a held container is in its simulated life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Admitted by `/work`; the claim (or the task start) is not through yet.
    Reserved,
    /// Claimed and started in the BBS (for a task: started).
    Running,
}

#[derive(Debug, Clone)]
struct HeldLrp {
    instance_guid: String,
    domain: String,
    memory_mb: i32,
    disk_mb: i32,
    phase: Phase,
}

#[derive(Debug, Clone)]
struct HeldTask {
    domain: String,
    memory_mb: i32,
    disk_mb: i32,
    phase: Phase,
}

/// An LRP instance [`Holdings::admit`] reserved room for; next, the lifecycle claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedLrp {
    pub process_guid: String,
    pub index: i32,
    pub instance_guid: String,
}

/// The outcome of one `/work`: what to claim or start now, and the answer (what did not fit).
#[derive(Debug, Default)]
pub struct Admitted {
    pub lrps: Vec<AdmittedLrp>,
    pub tasks: Vec<String>,
    pub failed: Work,
}

/// What one cell holds.
#[derive(Debug)]
pub struct Holdings {
    total: CellResources,
    used: CellResources,
    /// By (process guid, index): a cell holds at most one instance of an index.
    lrps: HashMap<(String, i32), HeldLrp>,
    tasks: HashMap<String, HeldTask>,
}

impl Holdings {
    pub fn new(total: CellResources) -> Self {
        Holdings {
            total,
            used: CellResources::default(),
            lrps: HashMap::new(),
            tasks: HashMap::new(),
        }
    }

    pub fn total(&self) -> CellResources {
        self.total
    }

    pub fn available(&self) -> CellResources {
        CellResources {
            memory_mb: self.total.memory_mb - self.used.memory_mb,
            disk_mb: self.total.disk_mb - self.used.disk_mb,
            containers: self.total.containers - self.used.containers,
        }
    }

    /// Containers admitted but not yet running (Diego: RESERVED, INITIALIZING, CREATED).
    pub fn starting_container_count(&self) -> i32 {
        let lrps = self.lrps.values().filter(|l| l.phase == Phase::Reserved).count();
        let tasks = self.tasks.values().filter(|t| t.phase == Phase::Reserved).count();
        i32::try_from(lrps + tasks).unwrap_or(i32::MAX)
    }

    /// Diego's rep: LRPs by memory, largest first, then tasks likewise, each admitted when it
    /// fits what is left (memory, disk, one container). What does not fit is the answer.
    /// Work already held here (the same index of a process, the same task) is taken without
    /// a second reservation: the auction asked again for something this cell is placing.
    /// `work.cell_id` must already have been checked by the caller.
    pub fn admit(&mut self, work: Work, mut new_instance_guid: impl FnMut() -> String) -> Admitted {
        let Work {
            cell_id,
            mut lrps,
            mut tasks,
        } = work;
        let mut out = Admitted {
            failed: Work {
                cell_id,
                ..Default::default()
            },
            ..Default::default()
        };
        // Stable: equal sizes keep the auctioneer's order.
        lrps.sort_by_key(|l| Reverse(l.resource.memory_mb));
        for l in lrps {
            let key = (l.process_guid, l.index);
            if self.lrps.contains_key(&key) {
                continue;
            }
            let (memory_mb, disk_mb) = (l.resource.memory_mb.max(0), l.resource.disk_mb.max(0));
            if !self.fits(memory_mb, disk_mb) {
                let (process_guid, index) = key;
                out.failed.lrps.push(LrpWork {
                    process_guid,
                    index,
                    ..l
                });
                continue;
            }
            self.reserve(memory_mb, disk_mb);
            let instance_guid = new_instance_guid();
            out.lrps.push(AdmittedLrp {
                process_guid: key.0.clone(),
                index: key.1,
                instance_guid: instance_guid.clone(),
            });
            self.lrps.insert(
                key,
                HeldLrp {
                    instance_guid,
                    domain: l.domain,
                    memory_mb,
                    disk_mb,
                    phase: Phase::Reserved,
                },
            );
        }
        tasks.sort_by_key(|t| Reverse(t.resource.memory_mb));
        for t in tasks {
            if self.tasks.contains_key(&t.task_guid) {
                continue;
            }
            let (memory_mb, disk_mb) = (t.resource.memory_mb.max(0), t.resource.disk_mb.max(0));
            if !self.fits(memory_mb, disk_mb) {
                out.failed.tasks.push(t);
                continue;
            }
            self.reserve(memory_mb, disk_mb);
            out.tasks.push(t.task_guid.clone());
            let TaskStartRequest {
                task_guid, domain, ..
            } = t;
            self.tasks.insert(
                task_guid,
                HeldTask {
                    domain,
                    memory_mb,
                    disk_mb,
                    phase: Phase::Reserved,
                },
            );
        }
        out
    }

    fn fits(&self, memory_mb: i32, disk_mb: i32) -> bool {
        let a = self.available();
        a.containers >= 1 && a.memory_mb >= memory_mb && a.disk_mb >= disk_mb
    }

    fn reserve(&mut self, memory_mb: i32, disk_mb: i32) {
        self.used.memory_mb += memory_mb;
        self.used.disk_mb += disk_mb;
        self.used.containers += 1;
    }

    fn free(&mut self, memory_mb: i32, disk_mb: i32) {
        self.used.memory_mb -= memory_mb;
        self.used.disk_mb -= disk_mb;
        self.used.containers -= 1;
    }

    /// Whether this cell still holds exactly this instance (a stop may have dropped it).
    pub fn holds_lrp(&self, process_guid: &str, index: i32, instance_guid: &str) -> bool {
        self.lrps
            .get(&(process_guid.to_string(), index))
            .is_some_and(|l| l.instance_guid == instance_guid)
    }

    /// Marks the instance started; false if the cell no longer holds it.
    pub fn lrp_running(&mut self, process_guid: &str, index: i32, instance_guid: &str) -> bool {
        match self.lrps.get_mut(&(process_guid.to_string(), index)) {
            Some(l) if l.instance_guid == instance_guid => {
                l.phase = Phase::Running;
                true
            }
            _ => false,
        }
    }

    /// Drops the instance if it is still this one; true if something was dropped.
    pub fn release_lrp(&mut self, process_guid: &str, index: i32, instance_guid: &str) -> bool {
        let key = (process_guid.to_string(), index);
        match self.lrps.get(&key) {
            Some(l) if l.instance_guid == instance_guid => {
                let (m, d) = (l.memory_mb, l.disk_mb);
                self.lrps.remove(&key);
                self.free(m, d);
                true
            }
            _ => false,
        }
    }

    /// The BBS asked to stop `instance_guid` of `process_guid`: drops it and returns its
    /// index, or `None` when this cell does not hold it.
    pub fn stop_lrp(&mut self, process_guid: &str, instance_guid: &str) -> Option<i32> {
        // At most `containers` entries (Diego's default 250): a scan is cheap, and stops are
        // rare next to claims, which get the keyed lookup.
        let index = self
            .lrps
            .iter()
            .find(|((p, _), l)| p == process_guid && l.instance_guid == instance_guid)
            .map(|((_, i), _)| *i)?;
        self.release_lrp(process_guid, index, instance_guid);
        Some(index)
    }

    pub fn holds_task(&self, task_guid: &str) -> bool {
        self.tasks.contains_key(task_guid)
    }

    /// Marks the task started; false if the cell no longer holds it (cancelled).
    pub fn task_running(&mut self, task_guid: &str) -> bool {
        match self.tasks.get_mut(task_guid) {
            Some(t) => {
                t.phase = Phase::Running;
                true
            }
            None => false,
        }
    }

    /// Drops the task; true if it was held.
    pub fn release_task(&mut self, task_guid: &str) -> bool {
        match self.tasks.remove(task_guid) {
            Some(t) => {
                self.free(t.memory_mb, t.disk_mb);
                true
            }
            None => false,
        }
    }

    /// The held LRP instances as `/state` lists them, sorted by process and index.
    pub fn cell_lrps(&self) -> Vec<CellLrp> {
        let mut out: Vec<CellLrp> = self
            .lrps
            .iter()
            .map(|((process_guid, index), l)| CellLrp {
                process_guid: process_guid.clone(),
                index: *index,
                domain: l.domain.clone(),
                instance_guid: l.instance_guid.clone(),
                memory_mb: l.memory_mb,
                disk_mb: l.disk_mb,
            })
            .collect();
        out.sort_by(|a, b| (&a.process_guid, a.index).cmp(&(&b.process_guid, b.index)));
        out
    }

    /// The held tasks as `/state` lists them, sorted by guid.
    pub fn cell_tasks(&self) -> Vec<CellTask> {
        let mut out: Vec<CellTask> = self
            .tasks
            .iter()
            .map(|(task_guid, t)| CellTask {
                task_guid: task_guid.clone(),
                domain: t.domain.clone(),
                memory_mb: t.memory_mb,
                disk_mb: t.disk_mb,
            })
            .collect();
        out.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
        out
    }
}

#[cfg(test)]
mod tests {
    use diego_model::auction::PlacementConstraint;
    use diego_model::common::Resources;

    use super::*;

    fn cell(memory_mb: i32, disk_mb: i32, containers: i32) -> Holdings {
        Holdings::new(CellResources {
            memory_mb,
            disk_mb,
            containers,
        })
    }

    fn lrp(guid: &str, index: i32, memory_mb: i32, disk_mb: i32) -> LrpWork {
        LrpWork {
            process_guid: guid.into(),
            domain: "d".into(),
            index,
            placement_constraint: PlacementConstraint {
                rootfs: "preloaded:busybox".into(),
                ..Default::default()
            },
            resource: Resources {
                memory_mb,
                disk_mb,
                max_pids: 0,
            },
        }
    }

    fn task(guid: &str, memory_mb: i32) -> TaskStartRequest {
        TaskStartRequest {
            task_guid: guid.into(),
            domain: "d".into(),
            resource: Resources {
                memory_mb,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn guids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("ig-{n}")
        }
    }

    fn work(lrps: Vec<LrpWork>, tasks: Vec<TaskStartRequest>) -> Work {
        Work {
            cell_id: "c".into(),
            lrps,
            tasks,
        }
    }

    #[test]
    fn admits_largest_first_and_answers_what_does_not_fit() {
        let mut h = cell(1000, 10_000, 10);
        // In the given order 300 + 300 would fit and then 800 would not; largest first takes
        // the 800 and then neither 300 fits.
        let out = h.admit(
            work(
                vec![lrp("a", 0, 300, 10), lrp("b", 0, 800, 10), lrp("a", 1, 300, 10)],
                vec![],
            ),
            guids(),
        );
        let admitted: Vec<_> = out
            .lrps
            .iter()
            .map(|l| (l.process_guid.as_str(), l.index))
            .collect();
        assert_eq!(admitted, [("b", 0)]);
        let failed: Vec<_> = out
            .failed
            .lrps
            .iter()
            .map(|l| (l.process_guid.as_str(), l.index))
            .collect();
        assert_eq!(failed, [("a", 0), ("a", 1)]);
        assert_eq!(out.failed.cell_id, "c");
        assert_eq!(out.failed.lrps[0].resource.memory_mb, 300);
        assert_eq!(
            h.available(),
            CellResources {
                memory_mb: 200,
                disk_mb: 9_990,
                containers: 9
            }
        );
        assert_eq!(h.starting_container_count(), 1);
    }

    #[test]
    fn disk_and_container_slots_limit_too() {
        let mut h = cell(10_000, 100, 2);
        let out = h.admit(
            work(
                vec![lrp("a", 0, 10, 60), lrp("a", 1, 10, 60), lrp("a", 2, 10, 10)],
                vec![task("t1", 10), task("t2", 10)],
            ),
            guids(),
        );
        // a/0 takes 60 of 100 MB disk; a/1 needs 60 more: no; a/2 fits; the cell is then full.
        assert_eq!(out.lrps.len(), 2);
        assert_eq!(out.failed.lrps.len(), 1);
        assert_eq!(out.failed.lrps[0].index, 1);
        assert!(out.tasks.is_empty());
        assert_eq!(out.failed.tasks.len(), 2);
        assert_eq!(h.available().containers, 0);
    }

    #[test]
    fn tasks_come_after_lrps_largest_first() {
        let mut h = cell(1000, 1000, 10);
        let out = h.admit(
            work(
                vec![lrp("a", 0, 500, 0)],
                vec![task("small", 100), task("big", 500)],
            ),
            guids(),
        );
        assert_eq!(out.lrps.len(), 1);
        assert_eq!(out.tasks, ["big"]);
        assert_eq!(out.failed.tasks[0].task_guid, "small");
        assert!(h.holds_task("big"));
        assert_eq!(h.cell_tasks()[0].memory_mb, 500);
    }

    #[test]
    fn work_already_held_is_taken_without_a_second_reservation() {
        let mut h = cell(1000, 1000, 10);
        let first = h.admit(work(vec![lrp("a", 0, 100, 0)], vec![task("t", 100)]), guids());
        assert_eq!(first.lrps.len(), 1);
        let again = h.admit(work(vec![lrp("a", 0, 100, 0)], vec![task("t", 100)]), guids());
        assert!(again.lrps.is_empty() && again.tasks.is_empty() && again.failed.is_empty());
        assert_eq!(h.available().memory_mb, 800);
        assert_eq!(h.cell_lrps().len(), 1);
    }

    #[test]
    fn release_only_drops_the_same_instance() {
        let mut h = cell(1000, 1000, 10);
        let out = h.admit(work(vec![lrp("a", 0, 100, 0)], vec![]), guids());
        let ig = out.lrps[0].instance_guid.clone();
        assert!(!h.release_lrp("a", 0, "someone-else"));
        assert!(h.holds_lrp("a", 0, &ig));
        assert!(h.lrp_running("a", 0, &ig));
        assert_eq!(h.starting_container_count(), 0);
        assert!(h.release_lrp("a", 0, &ig));
        assert!(!h.release_lrp("a", 0, &ig));
        assert!(!h.lrp_running("a", 0, &ig));
        assert_eq!(h.available(), h.total());
    }

    #[test]
    fn stop_finds_the_instance_by_guid() {
        let mut h = cell(1000, 1000, 10);
        let out = h.admit(
            work(vec![lrp("a", 0, 100, 0), lrp("a", 3, 100, 0)], vec![]),
            guids(),
        );
        let three = out.lrps.iter().find(|l| l.index == 3).unwrap();
        assert_eq!(h.stop_lrp("a", &three.instance_guid), Some(3));
        assert_eq!(h.stop_lrp("a", &three.instance_guid), None);
        assert_eq!(h.stop_lrp("b", &out.lrps[0].instance_guid), None);
        let left: Vec<i32> = h.cell_lrps().iter().map(|l| l.index).collect();
        assert_eq!(left, [0]);
        assert_eq!(h.available().memory_mb, 900);
    }

    #[test]
    fn tasks_run_and_are_released() {
        let mut h = cell(1000, 1000, 10);
        h.admit(work(vec![], vec![task("t", 100)]), guids());
        assert_eq!(h.starting_container_count(), 1);
        assert!(h.task_running("t"));
        assert_eq!(h.starting_container_count(), 0);
        assert!(h.release_task("t"));
        assert!(!h.release_task("t"));
        assert!(!h.task_running("t"));
        assert_eq!(h.available(), h.total());
    }
}
