//! The auction's working copy of the cells, and Diego's score split into a cell key and a shift.
//!
//! Diego scores an LRP on a cell as (diego-spec §6.2, auction `cell.go`, rep `resources.go`)
//!
//! ```text
//! score = mean over r ∈ {memory, disk, containers} of (1 − (available_r − need_r) / total_r)
//!       + starting_container_weight × starting_containers
//!       + 1000 × instances of the same process on the cell
//!       + bin_pack_first_fit_weight × position of the cell in its zone
//! ```
//!
//! and a task the same way with `1000 × tasks on the cell` instead of the last two terms. The
//! mean splits into a part that depends only on the cell — the mean of the *used* fractions
//! `(total_r − available_r) / total_r` — and a part that depends only on the work and the cell's
//! totals — the mean of `need_r / total_r`. So this module computes, per cell, a **key**
//! (used fractions + starting weight + bin-pack term for LRPs, + task locality for tasks) that
//! does not depend on the work, and per (work, cell totals) a **shift**, and scores as
//!
//! ```text
//! lrp score  = (key_lrp + shift) + 1000 × same-process instances
//! task score = key_task + shift
//! ```
//!
//! This is Diego's formula with its terms associated differently, so a score can differ from
//! Go's `float64` result in the last bits; Diego's own choice between such near-equal cells is
//! arbitrary anyway (it iterates Go maps). Ties are broken by key, then by cell id, which makes
//! the auction deterministic. Every operation here is monotone in its inputs, which is what lets
//! the index prove it finds the same winner as a full scan (see `index.rs`).

use std::collections::HashMap;

use crate::filter::{CellClass, Constraint, JudgedConstraint};
use crate::types::{AuctionConfig, AuctionRequest, CellState};

/// Weight of one instance of the same process (or one task) already on a cell.
pub(crate) const LOCALITY_OFFSET: f64 = 1000.0;

/// A cell's total as the divisor of a fraction; a zero total counts as infinitely large for the
/// work's share (adding nothing) while its used fraction counts as full (see [`used_fraction`]).
#[inline]
pub(crate) fn divisor(total: i64) -> f64 {
    if total <= 0 {
        f64::INFINITY
    } else {
        total as f64
    }
}

#[inline]
fn used_fraction(available: i64, total: i64) -> f64 {
    if total <= 0 {
        1.0
    } else {
        (total - available) as f64 / total as f64
    }
}

/// The work's share of a cell: mean of need/total over memory, disk and one container.
/// `need_*` must be ≥ 0; the divisors come from [`divisor`]. Monotone: non-increasing in the
/// divisors, non-decreasing in the needs.
#[inline]
pub(crate) fn shift(need_memory: i64, need_disk: i64, div_m: f64, div_d: f64, div_c: f64) -> f64 {
    ((need_memory as f64 / div_m + need_disk as f64 / div_d) + 1.0 / div_c) / 3.0
}

#[inline]
pub(crate) fn lrp_score(key_lrp: f64, shift: f64, same_process: u32) -> f64 {
    (key_lrp + shift) + LOCALITY_OFFSET * same_process as f64
}

#[inline]
pub(crate) fn task_score(key_task: f64, shift: f64) -> f64 {
    key_task + shift
}

/// A scored candidate; `better` is the auction's total order: lower score, then lower key, then
/// lower cell rank (cell id order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub score: f64,
    pub key: f64,
    pub cell: u32,
}

impl Candidate {
    #[inline]
    pub(crate) fn better_than(&self, other: &Candidate) -> bool {
        self.score < other.score
            || (self.score == other.score
                && (self.key < other.key || (self.key == other.key && self.cell < other.cell)))
    }
}

#[inline]
pub(crate) fn offer(best: &mut Option<Candidate>, c: Candidate) {
    match best {
        Some(b) if !c.better_than(b) => {}
        _ => *best = Some(c),
    }
}

/// Per-process placement counts for the processes in the request.
#[derive(Debug, Default)]
pub(crate) struct Processes {
    pub ids: HashMap<String, u32>,
    /// `zone_counts[p * zones + z]`: instances of process `p` in zone `z`.
    pub zone_counts: Vec<u32>,
    /// Per process: (cell, instances) for every cell holding it.
    pub cells: Vec<Vec<(u32, u32)>>,
}

/// Live (non-evacuating) cells in cell-id order, as structure-of-arrays; index = rank.
#[derive(Debug)]
pub(crate) struct State {
    pub config: AuctionConfig,
    pub ids: Vec<String>,
    pub zone: Vec<u16>,
    pub zones: usize,
    pub class: Vec<u32>,
    pub classes: Vec<CellClass>,
    /// Class ids in use by live cells.
    pub live_classes: Vec<bool>,
    pub evacuating: u32,
    pub total_m: Vec<i64>,
    pub total_d: Vec<i64>,
    pub total_c: Vec<i64>,
    pub div_m: Vec<f64>,
    pub div_d: Vec<f64>,
    pub div_c: Vec<f64>,
    pub proxy: Vec<i64>,
    pub bin_pack: Vec<f64>,
    pub avail_m: Vec<i64>,
    pub avail_d: Vec<i64>,
    pub avail_c: Vec<i64>,
    pub starting: Vec<u32>,
    pub tasks: Vec<u32>,
    pub key_lrp: Vec<f64>,
    pub key_task: Vec<f64>,
    pub procs: Processes,
    /// Class attributes of evacuating cells, for explanations (they reject everything).
    pub judged: Vec<JudgedConstraint>,
    judged_ids: HashMap<Constraint, usize>,
}

impl State {
    /// Copy the cells (dropping evacuating ones and repeated cell ids, as Diego's zone builder
    /// keeps one state per cell id) and count the request's processes already on them.
    pub(crate) fn new(cells: &[CellState], request: &AuctionRequest, config: AuctionConfig) -> Self {
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_by(|&a, &b| cells[a].cell_id.cmp(&cells[b].cell_id).then(a.cmp(&b)));
        order.dedup_by(|b, a| cells[*a].cell_id == cells[*b].cell_id);
        let evacuating = order.iter().filter(|&&i| cells[i].evacuating).count() as u32;
        order.retain(|&i| !cells[i].evacuating);

        let n = order.len();
        let mut zone_ids: HashMap<&str, u16> = HashMap::new();
        let mut zone_names: Vec<&str> = order.iter().map(|&i| cells[i].zone.as_str()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        for (z, name) in zone_names.iter().enumerate() {
            zone_ids.insert(name, z as u16);
        }
        let mut class_ids: HashMap<CellClass, u32> = HashMap::new();
        let mut classes = Vec::new();
        let mut s = State {
            config,
            ids: Vec::with_capacity(n),
            zone: Vec::with_capacity(n),
            zones: zone_names.len(),
            class: Vec::with_capacity(n),
            classes: Vec::new(),
            live_classes: Vec::new(),
            evacuating,
            total_m: Vec::with_capacity(n),
            total_d: Vec::with_capacity(n),
            total_c: Vec::with_capacity(n),
            div_m: Vec::with_capacity(n),
            div_d: Vec::with_capacity(n),
            div_c: Vec::with_capacity(n),
            proxy: Vec::with_capacity(n),
            bin_pack: vec![0.0; n],
            avail_m: Vec::with_capacity(n),
            avail_d: Vec::with_capacity(n),
            avail_c: Vec::with_capacity(n),
            starting: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            key_lrp: vec![0.0; n],
            key_task: vec![0.0; n],
            procs: Processes::default(),
            judged: Vec::new(),
            judged_ids: HashMap::new(),
        };
        for &i in &order {
            let c = &cells[i];
            let class = CellClass::of(c);
            let next = class_ids.len() as u32;
            let id = *class_ids.entry(class.clone()).or_insert_with(|| {
                classes.push(class);
                next
            });
            s.ids.push(c.cell_id.clone());
            s.zone.push(zone_ids[c.zone.as_str()]);
            s.class.push(id);
            s.total_m.push(c.total.memory_mb);
            s.total_d.push(c.total.disk_mb);
            s.total_c.push(c.total.containers);
            s.div_m.push(divisor(c.total.memory_mb));
            s.div_d.push(divisor(c.total.disk_mb));
            s.div_c.push(divisor(c.total.containers));
            s.proxy.push(c.proxy_memory_mb.max(0));
            s.avail_m.push(c.available.memory_mb);
            s.avail_d.push(c.available.disk_mb);
            s.avail_c.push(c.available.containers);
            s.starting.push(c.starting_container_count);
            s.tasks.push(c.tasks.len() as u32);
        }
        s.live_classes = vec![true; classes.len()];
        s.classes = classes;

        // Bin-pack-first-fit: Diego replaces each cell's index by its position in its zone
        // ordered by BOSH index, only when the weight is positive (auction `zone_builder.go`).
        if config.bin_pack_first_fit_weight > 0.0 {
            let mut by_zone: Vec<Vec<usize>> = vec![Vec::new(); s.zones];
            for rank in 0..n {
                by_zone[s.zone[rank] as usize].push(rank);
            }
            for members in &mut by_zone {
                members.sort_by_key(|&rank| (cells[order[rank]].cell_index, rank));
                for (pos, &rank) in members.iter().enumerate() {
                    s.bin_pack[rank] = config.bin_pack_first_fit_weight * pos as f64;
                }
            }
        }
        for c in 0..n {
            s.refresh_keys(c as u32);
        }

        // Processes of the request, and their instances already on live cells.
        for lrp in &request.lrps {
            let next = s.procs.ids.len() as u32;
            s.procs.ids.entry(lrp.process_guid.clone()).or_insert(next);
        }
        s.procs.zone_counts = vec![0; s.procs.ids.len() * s.zones];
        s.procs.cells = vec![Vec::new(); s.procs.ids.len()];
        for (rank, &i) in order.iter().enumerate() {
            for inst in &cells[i].lrps {
                if let Some(&p) = s.procs.ids.get(inst.process_guid.as_str()) {
                    s.count_instance(p, rank as u32);
                }
            }
        }
        s
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Recompute a cell's keys from its current state (after building or placing).
    pub(crate) fn refresh_keys(&mut self, cell: u32) {
        let c = cell as usize;
        let used = ((used_fraction(self.avail_m[c], self.total_m[c])
            + used_fraction(self.avail_d[c], self.total_d[c]))
            + used_fraction(self.avail_c[c], self.total_c[c]))
            / 3.0;
        let base = used + self.config.starting_container_weight * self.starting[c] as f64;
        // `+ 0.0` turns a -0.0 into +0.0 so equal keys compare equal bit for bit.
        self.key_lrp[c] = (base + self.bin_pack[c]) + 0.0;
        self.key_task[c] = (base + LOCALITY_OFFSET * self.tasks[c] as f64) + 0.0;
    }

    fn count_instance(&mut self, p: u32, cell: u32) {
        self.procs.zone_counts[p as usize * self.zones + self.zone[cell as usize] as usize] += 1;
        let list = &mut self.procs.cells[p as usize];
        match list.iter_mut().find(|(c, _)| *c == cell) {
            Some((_, k)) => *k += 1,
            None => list.push((cell, 1)),
        }
    }

    /// Can the cell hold work needing `memory` (already including the cell's proxy for LRPs)?
    #[inline]
    pub(crate) fn fits(&self, cell: usize, memory: i64, disk: i64) -> bool {
        self.avail_m[cell] >= memory && self.avail_d[cell] >= disk && self.avail_c[cell] >= 1
    }

    /// Reserve an LRP instance on a cell: Diego's `CellState.AddLRP` (resources subtracted,
    /// one more starting container) plus the proxy memory the rep will allocate with it.
    pub(crate) fn place_lrp(&mut self, p: u32, cell: u32, memory: i64, disk: i64) {
        let c = cell as usize;
        self.avail_m[c] -= memory + self.proxy[c];
        self.avail_d[c] -= disk;
        self.avail_c[c] -= 1;
        self.starting[c] += 1;
        self.refresh_keys(cell);
        self.count_instance(p, cell);
    }

    /// Reserve a task on a cell: Diego's `CellState.AddTask`.
    pub(crate) fn place_task(&mut self, cell: u32, memory: i64, disk: i64) {
        let c = cell as usize;
        self.avail_m[c] -= memory;
        self.avail_d[c] -= disk;
        self.avail_c[c] -= 1;
        self.starting[c] += 1;
        self.tasks[c] += 1;
        self.refresh_keys(cell);
    }

    /// The judged form of a constraint, computed once per distinct constraint.
    pub(crate) fn judge(
        &mut self,
        rootfs: &str,
        volume_drivers: &[String],
        placement_tags: &[String],
    ) -> usize {
        let constraint = Constraint {
            rootfs: rootfs.to_string(),
            volume_drivers: volume_drivers.to_vec(),
            placement_tags: placement_tags.to_vec(),
        };
        if let Some(&id) = self.judged_ids.get(&constraint) {
            return id;
        }
        let id = self.judged.len();
        self.judged.push(JudgedConstraint::new(
            constraint.clone(),
            &self.classes,
            &self.live_classes,
        ));
        self.judged_ids.insert(constraint, id);
        id
    }

    /// Score of an LRP on a cell (`memory` without the proxy).
    #[inline]
    pub(crate) fn lrp_candidate(&self, cell: usize, memory: i64, disk: i64, same_process: u32) -> Candidate {
        let sh = shift(
            memory + self.proxy[cell],
            disk,
            self.div_m[cell],
            self.div_d[cell],
            self.div_c[cell],
        );
        let key = self.key_lrp[cell];
        Candidate {
            score: lrp_score(key, sh, same_process),
            key,
            cell: cell as u32,
        }
    }

    /// Score of a task on a cell.
    #[inline]
    pub(crate) fn task_candidate(&self, cell: usize, memory: i64, disk: i64) -> Candidate {
        let sh = shift(memory, disk, self.div_m[cell], self.div_d[cell], self.div_c[cell]);
        let key = self.key_task[cell];
        Candidate {
            score: task_score(key, sh),
            key,
            cell: cell as u32,
        }
    }
}
