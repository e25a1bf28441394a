//! The placement index: finds the same winner as scanning every cell, in O(log n) typical time.
//!
//! Cells are split by (zone, filter class) — the filters and the zone order only ever select
//! whole groups — and each group is a complete binary tree over its cells in cell-id order.
//! Every node keeps, over the cells below it:
//!
//! - the minimum LRP key and the minimum task key (the work-independent part of the score, see
//!   `state.rs`),
//! - the maximum free memory, disk and containers (to skip subtrees where nothing fits),
//! - the maximum of each total (the divisors of the work's share) and the minimum proxy memory,
//! - the smallest cell rank holding each minimum key (leaves are in id order, rank = id order).
//!
//! A search is branch and bound. For a node, `bound = min_key + shift(need + min_proxy, max
//! totals)`. Every operation in the key and shift is a correctly rounded IEEE operation that is
//! monotone in its inputs (sums, divisions of non-negative needs by positive totals), so the
//! bound is ≤ the exact `f64` score of every cell under the node — not approximately, bit for
//! bit. A node is skipped only when nothing under it can beat the best candidate so far in the
//! auction's total order (score, then key, then cell rank):
//!
//! - nothing fits (max free < need), or
//! - `bound > best.score`, or
//! - `bound == best.score` and (`min_key > best.key`, or `min_key == best.key` and the least
//!   rank holding that key under the node is above the best's: a cell with a higher key loses
//!   on key, one with the same key on rank).
//!
//! Hence the search returns exactly the full scan's winner over the cells it is asked about. For
//! LRPs the cells already holding the process are excluded from the trees' answer and scored
//! one by one (their score carries `1000 × instances`), so a search costs O(log n) plus the cells
//! holding the process. The bound is tight within a tree of identical cell totals: the first
//! descent usually lands on the winner and the rest of the tree is cut by the bound.
//!
//! A cell that cannot fit even the least memory and disk of any work still to come this round
//! (or has no container slot left) can never win again; searches that meet one take it out of
//! its tree, so nearly full cells stop costing every later search a detour.

use crate::state::{offer, shift, Candidate, State};

#[derive(Debug, Clone, Copy)]
struct Node {
    min_key_lrp: f64,
    min_key_task: f64,
    max_avail_m: i64,
    max_avail_d: i64,
    max_avail_c: i64,
    max_div_m: f64,
    max_div_d: f64,
    max_div_c: f64,
    min_proxy: i64,
    /// Smallest rank among the cells holding `min_key_lrp` / `min_key_task`.
    rank_lrp: u32,
    rank_task: u32,
}

const EMPTY: Node = Node {
    min_key_lrp: f64::INFINITY,
    min_key_task: f64::INFINITY,
    max_avail_m: i64::MIN,
    max_avail_d: i64::MIN,
    max_avail_c: i64::MIN,
    max_div_m: 0.0,
    max_div_d: 0.0,
    max_div_c: 0.0,
    min_proxy: i64::MAX,
    rank_lrp: u32::MAX,
    rank_task: u32::MAX,
};

/// The lesser (key, rank) pair.
#[inline]
fn least(a: (f64, u32), b: (f64, u32)) -> (f64, u32) {
    if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
        b
    } else {
        a
    }
}

impl Node {
    fn leaf(st: &State, cell: usize) -> Node {
        Node {
            min_key_lrp: st.key_lrp[cell],
            min_key_task: st.key_task[cell],
            max_avail_m: st.avail_m[cell],
            max_avail_d: st.avail_d[cell],
            max_avail_c: st.avail_c[cell],
            max_div_m: st.div_m[cell],
            max_div_d: st.div_d[cell],
            max_div_c: st.div_c[cell],
            min_proxy: st.proxy[cell],
            rank_lrp: cell as u32,
            rank_task: cell as u32,
        }
    }

    fn join(a: &Node, b: &Node) -> Node {
        let (min_key_lrp, rank_lrp) = least((a.min_key_lrp, a.rank_lrp), (b.min_key_lrp, b.rank_lrp));
        let (min_key_task, rank_task) = least((a.min_key_task, a.rank_task), (b.min_key_task, b.rank_task));
        Node {
            min_key_lrp,
            min_key_task,
            rank_lrp,
            rank_task,
            max_avail_m: a.max_avail_m.max(b.max_avail_m),
            max_avail_d: a.max_avail_d.max(b.max_avail_d),
            max_avail_c: a.max_avail_c.max(b.max_avail_c),
            max_div_m: a.max_div_m.max(b.max_div_m),
            max_div_d: a.max_div_d.max(b.max_div_d),
            max_div_c: a.max_div_c.max(b.max_div_c),
            min_proxy: a.min_proxy.min(b.min_proxy),
        }
    }
}

#[derive(Debug)]
struct Tree {
    /// Leaf slots (a power of two); node 1 is the root, node `cap + i` is leaf `i`.
    cap: usize,
    cells: Vec<u32>,
    nodes: Vec<Node>,
}

/// What is being placed.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// An LRP of a process; cells marked with the current stamp hold it and are skipped.
    Lrp,
    Task,
}

struct Search<'a> {
    st: &'a State,
    tree: &'a Tree,
    work: Work,
    memory: i64,
    disk: i64,
    marks: &'a [u32],
    stamp: u32,
    floor_m: i64,
    floor_d: i64,
}

impl Search<'_> {
    /// A cell that cannot fit even the smallest remaining work will never win again.
    fn note_if_dead(&self, cell: usize, dead: &mut Vec<u32>) {
        let st = self.st;
        if st.avail_c[cell] < 1 || st.avail_m[cell] < self.floor_m || st.avail_d[cell] < self.floor_d {
            dead.push(cell as u32);
        }
    }

    /// Branch and bound from `node`; cells found unable to fit any remaining work go to `dead`.
    fn visit(&self, node: usize, best: &mut Option<Candidate>, dead: &mut Vec<u32>) {
        let n = &self.tree.nodes[node];
        let (min_key, min_key_rank, need_m) = match self.work {
            Work::Lrp => (n.min_key_lrp, n.rank_lrp, self.memory.saturating_add(n.min_proxy)),
            Work::Task => (n.min_key_task, n.rank_task, self.memory),
        };
        if n.max_avail_c < 1 || n.max_avail_m < need_m || n.max_avail_d < self.disk {
            if node >= self.tree.cap {
                if let Some(&cell) = self.tree.cells.get(node - self.tree.cap) {
                    self.note_if_dead(cell as usize, dead);
                }
            }
            return;
        }
        if let Some(b) = best {
            // The smallest proxy gives the smallest need, so this stays below every leaf.
            let bound = min_key + shift(need_m, self.disk, n.max_div_m, n.max_div_d, n.max_div_c);
            if bound > b.score
                || (bound == b.score && (min_key > b.key || (min_key == b.key && min_key_rank > b.cell)))
            {
                return;
            }
        }
        if node >= self.tree.cap {
            let cell = self.tree.cells[node - self.tree.cap] as usize;
            let st = self.st;
            match self.work {
                Work::Lrp if st.fits(cell, self.memory + st.proxy[cell], self.disk) => {
                    if self.marks[cell] != self.stamp {
                        offer(best, st.lrp_candidate(cell, self.memory, self.disk, 0));
                    }
                }
                Work::Task if st.fits(cell, self.memory, self.disk) => {
                    offer(best, st.task_candidate(cell, self.memory, self.disk));
                }
                _ => {
                    if st.avail_c[cell] < 1
                        || st.avail_m[cell] < self.floor_m
                        || st.avail_d[cell] < self.floor_d
                    {
                        dead.push(cell as u32);
                    }
                }
            }
            return;
        }
        let (l, r) = (2 * node, 2 * node + 1);
        let key = |i: usize| {
            let n = &self.tree.nodes[i];
            match self.work {
                Work::Lrp => (n.min_key_lrp, n.rank_lrp),
                Work::Task => (n.min_key_task, n.rank_task),
            }
        };
        let (kl, kr) = (key(l), key(r));
        // Most promising child first, so the bound tightens early.
        if kr.0 < kl.0 || (kr.0 == kl.0 && kr.1 < kl.1) {
            self.visit(r, best, dead);
            self.visit(l, best, dead);
        } else {
            self.visit(l, best, dead);
            self.visit(r, best, dead);
        }
    }
}

/// Trees per (zone, class), with a cell → (tree, slot) map for updates.
#[derive(Debug)]
pub(crate) struct Index {
    trees: Vec<Tree>,
    /// `by_zone[z]`: (class, tree) pairs.
    by_zone: Vec<Vec<(u32, usize)>>,
    /// All (class, tree) pairs, for tasks.
    all: Vec<(u32, usize)>,
    slot: Vec<(u32, u32)>,
    marks: Vec<u32>,
    stamp: u32,
    /// The least memory and disk any remaining work needs: a cell with less (or no container
    /// slot) can never win again this round and is taken out of its tree when a search meets it.
    floor_m: i64,
    floor_d: i64,
    dead: Vec<bool>,
    found_dead: Vec<u32>,
}

impl Index {
    pub(crate) fn new(st: &State) -> Self {
        let mut groups: std::collections::BTreeMap<(u16, u32), Vec<u32>> = Default::default();
        for cell in 0..st.len() {
            groups
                .entry((st.zone[cell], st.class[cell]))
                .or_default()
                .push(cell as u32);
        }
        let mut index = Index {
            trees: Vec::new(),
            by_zone: vec![Vec::new(); st.zones],
            all: Vec::new(),
            slot: vec![(0, 0); st.len()],
            marks: vec![0; st.len()],
            stamp: 0,
            floor_m: 0,
            floor_d: 0,
            dead: vec![false; st.len()],
            found_dead: Vec::new(),
        };
        for ((zone, class), cells) in groups {
            let t = index.trees.len();
            let cap = cells.len().next_power_of_two();
            let mut nodes = vec![EMPTY; 2 * cap];
            for (i, &cell) in cells.iter().enumerate() {
                nodes[cap + i] = Node::leaf(st, cell as usize);
                index.slot[cell as usize] = (t as u32, i as u32);
            }
            for node in (1..cap).rev() {
                nodes[node] = Node::join(&nodes[2 * node], &nodes[2 * node + 1]);
            }
            index.trees.push(Tree { cap, cells, nodes });
            index.by_zone[zone as usize].push((class, t));
            index.all.push((class, t));
        }
        index
    }

    /// Re-read one cell's state after a placement.
    pub(crate) fn update(&mut self, st: &State, cell: u32) {
        if !self.dead[cell as usize] {
            self.set_leaf(cell, Node::leaf(st, cell as usize));
        }
    }

    fn bury_found_dead(&mut self) {
        while let Some(cell) = self.found_dead.pop() {
            if !self.dead[cell as usize] {
                self.dead[cell as usize] = true;
                self.set_leaf(cell, EMPTY);
            }
        }
    }

    fn set_leaf(&mut self, cell: u32, leaf: Node) {
        let (t, i) = self.slot[cell as usize];
        let tree = &mut self.trees[t as usize];
        let mut node = tree.cap + i as usize;
        tree.nodes[node] = leaf;
        while node > 1 {
            node /= 2;
            tree.nodes[node] = Node::join(&tree.nodes[2 * node], &tree.nodes[2 * node + 1]);
        }
    }

    /// The best cell for an LRP instance among compatible cells of the zones in `zones`.
    pub(crate) fn best_lrp(
        &mut self,
        st: &State,
        process: u32,
        memory: i64,
        disk: i64,
        compatible: &[bool],
        zones: &[bool],
    ) -> Option<Candidate> {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.stamp = 1;
        }
        let mut best = None;
        for &(cell, k) in &st.procs.cells[process as usize] {
            let c = cell as usize;
            self.marks[c] = self.stamp;
            if zones[st.zone[c] as usize]
                && compatible[st.class[c] as usize]
                && st.fits(c, memory + st.proxy[c], disk)
            {
                offer(&mut best, st.lrp_candidate(c, memory, disk, k));
            }
        }
        for (z, in_group) in zones.iter().enumerate() {
            if !in_group {
                continue;
            }
            for &(class, t) in &self.by_zone[z] {
                if compatible[class as usize] {
                    let s = Search {
                        st,
                        tree: &self.trees[t],
                        work: Work::Lrp,
                        memory,
                        disk,
                        marks: &self.marks,
                        stamp: self.stamp,
                        floor_m: self.floor_m,
                        floor_d: self.floor_d,
                    };
                    s.visit(1, &mut best, &mut self.found_dead);
                }
            }
        }
        self.bury_found_dead();
        best
    }

    /// The best cell for a task among all compatible cells.
    pub(crate) fn best_task(
        &mut self,
        st: &State,
        memory: i64,
        disk: i64,
        compatible: &[bool],
    ) -> Option<Candidate> {
        let mut best = None;
        for &(class, t) in &self.all {
            if compatible[class as usize] {
                let s = Search {
                    st,
                    tree: &self.trees[t],
                    work: Work::Task,
                    memory,
                    disk,
                    marks: &self.marks,
                    stamp: u32::MAX,
                    floor_m: self.floor_m,
                    floor_d: self.floor_d,
                };
                s.visit(1, &mut best, &mut self.found_dead);
            }
        }
        self.bury_found_dead();
        best
    }
}

impl crate::scheduler::Placer for Index {
    fn build(st: &State) -> Self {
        Index::new(st)
    }

    fn best_lrp(
        &mut self,
        st: &State,
        process: u32,
        memory: i64,
        disk: i64,
        compatible: &[bool],
        zones: &[bool],
    ) -> Option<Candidate> {
        Index::best_lrp(self, st, process, memory, disk, compatible, zones)
    }

    fn best_task(&mut self, st: &State, memory: i64, disk: i64, compatible: &[bool]) -> Option<Candidate> {
        Index::best_task(self, st, memory, disk, compatible)
    }

    fn placed(&mut self, st: &State, cell: u32) {
        self.update(st, cell);
    }

    fn floor(&mut self, memory: i64, disk: i64) {
        self.floor_m = memory;
        self.floor_d = disk;
    }
}
