//! The reference: Diego's algorithm as Diego runs it, scoring every compatible cell for every
//! unit of work — O(work × cells). Same driver, same score functions and tie-break as the
//! indexed [`crate::schedule`], so the two must agree on every placement; the property tests
//! hold them to that.

use crate::scheduler::{run, Placer};
use crate::state::{offer, Candidate, State};
use crate::types::{AuctionConfig, AuctionRequest, AuctionResults, CellState};

/// Run one auction round by scanning every cell for every placement.
pub fn schedule(cells: &[CellState], request: &AuctionRequest, config: &AuctionConfig) -> AuctionResults {
    run::<Scan>(cells, request, config)
}

/// Full scan; `same_process[c]` holds the current process's instances on cell `c` during a query.
pub(crate) struct Scan {
    same_process: Vec<u32>,
}

impl Placer for Scan {
    fn build(st: &State) -> Self {
        Scan {
            same_process: vec![0; st.len()],
        }
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
        let held = &st.procs.cells[process as usize];
        for &(c, k) in held {
            self.same_process[c as usize] = k;
        }
        let mut best = None;
        for c in 0..st.len() {
            if zones[st.zone[c] as usize]
                && compatible[st.class[c] as usize]
                && st.fits(c, memory + st.proxy[c], disk)
            {
                offer(&mut best, st.lrp_candidate(c, memory, disk, self.same_process[c]));
            }
        }
        for &(c, _) in held {
            self.same_process[c as usize] = 0;
        }
        best
    }

    fn best_task(&mut self, st: &State, memory: i64, disk: i64, compatible: &[bool]) -> Option<Candidate> {
        let mut best = None;
        for c in 0..st.len() {
            if compatible[st.class[c] as usize] && st.fits(c, memory, disk) {
                offer(&mut best, st.task_candidate(c, memory, disk));
            }
        }
        best
    }

    fn placed(&mut self, _st: &State, _cell: u32) {}
}
