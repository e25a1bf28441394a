//! One auction round (diego-spec §6.1, §6.2; auction `scheduler.go`): order the batch, place
//! each unit of work on the best cell, subtract what it takes, explain what did not fit.
//!
//! Which cell is best is asked of a [`Placer`]: the index (`index.rs`) or the full scan
//! (`naive.rs`). Everything else — ordering, deduplication, zone groups, the in-flight cap,
//! resource accounting, error strings and explanations — is this one driver, so the two can
//! differ only in the winner they pick, and the property tests check that they never do.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::explain::{InflightLimit, PlacementExplanation, Rejection, Tally};
use crate::filter::{PlacementError, TagMismatch, Verdict};
use crate::state::{Candidate, State};
use crate::types::{
    AuctionConfig, AuctionRequest, AuctionResults, CellState, LrpFailure, LrpPlacement, TaskFailure,
    TaskPlacement,
};

/// Finds the winning cell; the driver does the bookkeeping.
pub(crate) trait Placer {
    fn build(st: &State) -> Self;
    /// Best compatible cell for an LRP instance of `process` within the zones flagged in `zones`.
    fn best_lrp(
        &mut self,
        st: &State,
        process: u32,
        memory: i64,
        disk: i64,
        compatible: &[bool],
        zones: &[bool],
    ) -> Option<Candidate>;
    /// Best compatible cell for a task, all zones.
    fn best_task(&mut self, st: &State, memory: i64, disk: i64, compatible: &[bool]) -> Option<Candidate>;
    /// The cell's state changed.
    fn placed(&mut self, st: &State, cell: u32);
    /// No work from here on in the round needs less memory or disk than this.
    fn floor(&mut self, _memory: i64, _disk: i64) {}
}

#[derive(Debug, Clone, Copy)]
struct LrpItem {
    lrp: u32,
    index: u32,
}

/// Explanations depend on the work's constraint and size and on the cells' state; placements
/// bump `version`, so repeated failures between two placements are explained once.
#[derive(Default)]
struct Diagnoses {
    version: u64,
    /// (constraint, is LRP, memory, disk) → (version, error, explanation).
    cache: HashMap<DiagnosisKey, (u64, PlacementError, PlacementExplanation)>,
}

type DiagnosisKey = (usize, bool, i64, i64);

impl Diagnoses {
    fn get(
        &mut self,
        st: &State,
        judged: usize,
        lrp: bool,
        memory: i64,
        disk: i64,
    ) -> (PlacementError, PlacementExplanation) {
        let key = (judged, lrp, memory, disk);
        if let Some((v, e, x)) = self.cache.get(&key) {
            if *v == self.version {
                return (e.clone(), x.clone());
            }
        }
        let (e, x) = diagnose(st, judged, lrp, memory, disk);
        self.cache.insert(key, (self.version, e.clone(), x.clone()));
        (e, x)
    }
}

/// Walk every cell once: the explanation, and Diego's error (filter error, or the resource
/// problems shared by every cell that passes the filters).
fn diagnose(
    st: &State,
    judged: usize,
    lrp: bool,
    memory: i64,
    disk: i64,
) -> (PlacementError, PlacementExplanation) {
    let j = &st.judged[judged];
    let mut tally = Tally::default();
    for _ in 0..st.evacuating {
        tally.reject(Rejection::Evacuating);
    }
    let (mut lack_m, mut lack_d, mut lack_c) = (true, true, true);
    for c in 0..st.len() {
        match &j.verdicts[st.class[c] as usize] {
            Verdict::Rootfs => tally.reject(Rejection::Rootfs),
            Verdict::VolumeDriver(d) => tally.reject(Rejection::VolumeDriver(d)),
            Verdict::Tag(TagMismatch::Missing(t)) => tally.reject(Rejection::MissingTag(t)),
            Verdict::Tag(TagMismatch::Unrequested(t)) => tally.reject(Rejection::UnrequestedTag(t)),
            Verdict::Pass => {
                let need_m = if lrp { memory + st.proxy[c] } else { memory };
                let (no_m, no_d, no_c) = (st.avail_m[c] < need_m, st.avail_d[c] < disk, st.avail_c[c] < 1);
                lack_m &= no_m;
                lack_d &= no_d;
                lack_c &= no_c;
                if no_m {
                    tally.reject(Rejection::Memory(need_m, st.avail_m[c]));
                } else if no_d {
                    tally.reject(Rejection::Disk(disk, st.avail_d[c]));
                } else if no_c {
                    tally.reject(Rejection::Containers(1, st.avail_c[c]));
                } else {
                    tally.fit();
                }
            }
        }
    }
    let error = j
        .filter_error
        .clone()
        .unwrap_or(PlacementError::InsufficientResources {
            disk: lack_d,
            memory: lack_m,
            containers: lack_c,
        });
    (error, tally.finish(&j.constraint.rootfs, None))
}

/// Run one auction round with the given placer.
pub(crate) fn run<P: Placer>(
    cells: &[CellState],
    request: &AuctionRequest,
    config: &AuctionConfig,
) -> AuctionResults {
    let mut st = State::new(cells, request, *config);
    let mut results = AuctionResults::default();

    // Expand LRP starts into one auction per index, deduplicated by process_guid.index (the
    // batch's dedupe), then Diego's order: index ascending, memory descending. The sort is
    // stable, so equal items keep the request's order (Go's sort is not; any order is Diego's).
    let mut seen: HashSet<(&str, u32)> = HashSet::new();
    let mut lrp_judged = Vec::with_capacity(request.lrps.len());
    let mut lrp_process = Vec::with_capacity(request.lrps.len());
    let mut items: Vec<LrpItem> = Vec::new();
    for (i, l) in request.lrps.iter().enumerate() {
        lrp_judged.push(st.judge(&l.rootfs, &l.volume_drivers, &l.placement_tags));
        lrp_process.push(st.procs.ids[l.process_guid.as_str()]);
        for &index in &l.indices {
            if seen.insert((l.process_guid.as_str(), index)) {
                items.push(LrpItem { lrp: i as u32, index });
            }
        }
    }
    items.sort_by_key(|it| {
        (
            it.index,
            Reverse(request.lrps[it.lrp as usize].resources.memory_mb),
        )
    });
    let mut seen_tasks: HashSet<&str> = HashSet::new();
    let mut tasks: Vec<u32> = (0..request.tasks.len() as u32)
        .filter(|&i| seen_tasks.insert(request.tasks[i as usize].task_guid.as_str()))
        .collect();
    tasks.sort_by_key(|&i| Reverse(request.tasks[i as usize].resources.memory_mb));
    let task_judged: Vec<usize> = request
        .tasks
        .iter()
        .map(|t| st.judge(&t.rootfs, &t.volume_drivers, &t.placement_tags))
        .collect();

    let lrp_failure = |it: &LrpItem, e: &PlacementError, x: PlacementExplanation| LrpFailure {
        lrp: it.lrp as usize,
        process_guid: request.lrps[it.lrp as usize].process_guid.clone(),
        index: it.index,
        placement_error: e.to_string(),
        explanation: x,
    };
    let task_failure = |t: u32, e: &PlacementError, x: PlacementExplanation| TaskFailure {
        task: t as usize,
        task_guid: request.tasks[t as usize].task_guid.clone(),
        placement_error: e.to_string(),
        explanation: x,
    };

    let mut diagnoses = Diagnoses::default();
    if st.len() == 0 {
        // Diego: no zones → everything fails with "unable to communicate to compatible cells",
        // also when cells answered but all are evacuating; that case says so instead.
        let e = if st.evacuating > 0 {
            PlacementError::NoOtherCell
        } else {
            PlacementError::CellCommunication
        };
        for it in &items {
            let (_, x) = diagnoses.get(&st, lrp_judged[it.lrp as usize], true, 0, 0);
            results.failed_lrps.push(lrp_failure(it, &e, x));
        }
        for &t in &tasks {
            let (_, x) = diagnoses.get(&st, task_judged[t as usize], false, 0, 0);
            results.failed_tasks.push(task_failure(t, &e, x));
        }
        return results;
    }

    let mut placer = P::build(&st);
    let maximum = config.starting_container_count_maximum;
    let mut inflight: u64 = st.starting.iter().map(|&s| s as u64).sum();
    let capped = |inflight: u64| maximum > 0 && inflight >= maximum as u64;
    let split = items.iter().position(|it| it.index > 0).unwrap_or(items.len());

    // Suffix minima of what the work still to come needs, in placement order, so the placer
    // may drop cells that can never take anything again.
    let lrp_need = |it: &LrpItem| {
        let r = &request.lrps[it.lrp as usize].resources;
        (r.memory_mb.max(0), r.disk_mb.max(0))
    };
    let task_need = |t: &u32| {
        let r = &request.tasks[*t as usize].resources;
        (r.memory_mb.max(0), r.disk_mb.max(0))
    };
    let sequence: Vec<(i64, i64)> = items[..split]
        .iter()
        .map(lrp_need)
        .chain(tasks.iter().map(task_need))
        .chain(items[split..].iter().map(lrp_need))
        .collect();
    let mut floors = vec![(i64::MAX, i64::MAX); sequence.len() + 1];
    for i in (0..sequence.len()).rev() {
        floors[i] = (
            floors[i + 1].0.min(sequence[i].0),
            floors[i + 1].1.min(sequence[i].1),
        );
    }

    let mut zone_order: Vec<(u32, usize)> = Vec::with_capacity(st.zones);
    let mut zone_mask = vec![false; st.zones];
    let mut place_lrps = |st: &mut State,
                          placer: &mut P,
                          diagnoses: &mut Diagnoses,
                          inflight: &mut u64,
                          results: &mut AuctionResults,
                          items: &[LrpItem],
                          offset: usize| {
        for (pos, it) in items.iter().enumerate() {
            let (floor_m, floor_d) = floors[offset + pos];
            placer.floor(floor_m, floor_d);
            let start = &request.lrps[it.lrp as usize];
            let (memory, disk) = (start.resources.memory_mb.max(0), start.resources.disk_mb.max(0));
            let judged = lrp_judged[it.lrp as usize];
            if capped(*inflight) {
                let (_, mut x) = diagnoses.get(st, judged, true, memory, disk);
                x.inflight_limit = Some(InflightLimit {
                    starting: *inflight,
                    maximum,
                });
                let e = PlacementError::ExceededInflightCreation;
                results.failed_lrps.push(lrp_failure(it, &e, x));
                continue;
            }
            let p = lrp_process[it.lrp as usize];
            let mut winner = None;
            if st.judged[judged].filter_error.is_none() {
                // Zones ordered by how many instances of the process they hold; zones with
                // equal counts are pooled; the first pool with a feasible cell wins.
                let counts = &st.procs.zone_counts[p as usize * st.zones..(p as usize + 1) * st.zones];
                zone_order.clear();
                zone_order.extend(counts.iter().enumerate().map(|(z, &n)| (n, z)));
                zone_order.sort_unstable();
                let mut g = 0;
                while g < zone_order.len() && winner.is_none() {
                    let count = zone_order[g].0;
                    zone_mask.iter_mut().for_each(|m| *m = false);
                    while g < zone_order.len() && zone_order[g].0 == count {
                        zone_mask[zone_order[g].1] = true;
                        g += 1;
                    }
                    winner = placer.best_lrp(st, p, memory, disk, &st.judged[judged].compatible, &zone_mask);
                }
            }
            match winner {
                Some(w) => {
                    st.place_lrp(p, w.cell, memory, disk);
                    placer.placed(st, w.cell);
                    *inflight += 1;
                    diagnoses.version += 1;
                    results.successful_lrps.push(LrpPlacement {
                        lrp: it.lrp as usize,
                        process_guid: start.process_guid.clone(),
                        index: it.index,
                        cell_id: st.ids[w.cell as usize].clone(),
                    });
                }
                None => {
                    let (e, x) = diagnoses.get(st, judged, true, memory, disk);
                    results.failed_lrps.push(lrp_failure(it, &e, x));
                }
            }
        }
    };

    place_lrps(
        &mut st,
        &mut placer,
        &mut diagnoses,
        &mut inflight,
        &mut results,
        &items[..split],
        0,
    );

    for (pos, &t) in tasks.iter().enumerate() {
        let (floor_m, floor_d) = floors[split + pos];
        placer.floor(floor_m, floor_d);
        let task = &request.tasks[t as usize];
        let (memory, disk) = (task.resources.memory_mb.max(0), task.resources.disk_mb.max(0));
        let judged = task_judged[t as usize];
        if capped(inflight) {
            let (_, mut x) = diagnoses.get(&st, judged, false, memory, disk);
            x.inflight_limit = Some(InflightLimit {
                starting: inflight,
                maximum,
            });
            results
                .failed_tasks
                .push(task_failure(t, &PlacementError::ExceededInflightCreation, x));
            continue;
        }
        let winner = if st.judged[judged].filter_error.is_none() {
            placer.best_task(&st, memory, disk, &st.judged[judged].compatible)
        } else {
            None
        };
        match winner {
            Some(w) => {
                st.place_task(w.cell, memory, disk);
                placer.placed(&st, w.cell);
                inflight += 1;
                diagnoses.version += 1;
                results.successful_tasks.push(TaskPlacement {
                    task: t as usize,
                    task_guid: task.task_guid.clone(),
                    cell_id: st.ids[w.cell as usize].clone(),
                });
            }
            None => {
                let (e, x) = diagnoses.get(&st, judged, false, memory, disk);
                results.failed_tasks.push(task_failure(t, &e, x));
            }
        }
    }

    place_lrps(
        &mut st,
        &mut placer,
        &mut diagnoses,
        &mut inflight,
        &mut results,
        &items[split..],
        split + tasks.len(),
    );
    results
}
