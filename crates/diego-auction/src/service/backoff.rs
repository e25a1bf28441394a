//! Placement backoff: LRP instances that no cell could take are held back from the next rounds
//! instead of failing again in every one, as Kubernetes' scheduler keeps unschedulable pods
//! aside until the cluster changes.
//!
//! - A failed instance is parked with its LRP; each further failure of the same LRP doubles the
//!   wait, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] (Diego re-auctions an unplaced instance at
//!   every 30 s convergence pass, so the longest wait is no worse than Diego).
//! - Requests for a parked LRP (the BBS asks again at each convergence pass) merge into it while
//!   they ask for the same placement (resources and constraint); a different one releases it.
//! - It is released when its wait is over, or at once when the set of cells changes (a cell
//!   registered or left: the BBS also re-sends waiting work then).
//! - An LRP with an instance placed forgets its failures.
//!
//! Pure: the caller passes the time, so the rules are tested as tables below.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use diego_model::auction::LrpStartRequest;

use super::{merge_indices, Queue};

/// The wait after an LRP's first failed round.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two rounds that try a parked LRP.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait after an LRP's `failures`-th failed round in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[derive(Debug)]
struct ParkedLrp {
    request: LrpStartRequest,
    until: Instant,
}

/// The parked LRPs, their failure counts and the cells last seen.
#[derive(Debug, Default)]
pub struct Parked {
    lrps: BTreeMap<String, ParkedLrp>,
    /// Failed rounds in a row, per process guid (kept while the LRP is tried again).
    failures: HashMap<String, u32>,
    /// The cell ids of the last round, once there was one.
    cells: Option<BTreeSet<String>>,
}

fn same_placement(a: &LrpStartRequest, b: &LrpStartRequest) -> bool {
    a.domain == b.domain && a.resource == b.resource && a.placement_constraint == b.placement_constraint
}

impl Parked {
    /// Takes an incoming request: merged into its parked LRP when it asks for the same
    /// placement (true), else queued — releasing a parked one that asked for another.
    pub fn absorb(&mut self, r: LrpStartRequest, queue: &mut Queue) -> bool {
        match self.lrps.get_mut(&r.process_guid) {
            Some(p) if same_placement(&p.request, &r) => {
                merge_indices(&mut p.request.indices, r.indices);
                true
            }
            Some(_) => {
                if let Some(p) = self.lrps.remove(&r.process_guid) {
                    queue.push_lrp(p.request);
                }
                self.failures.remove(&r.process_guid);
                queue.push_lrp(r);
                false
            }
            None => {
                queue.push_lrp(r);
                false
            }
        }
    }

    /// Parks the instances of `failed` (one LRP, the indices a round could not place).
    pub fn park(&mut self, failed: LrpStartRequest, now: Instant) {
        let n = self.failures.entry(failed.process_guid.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let until = now + backoff(*n);
        match self.lrps.get_mut(&failed.process_guid) {
            Some(p) => {
                merge_indices(&mut p.request.indices, failed.indices);
                p.until = until;
            }
            None => {
                self.lrps.insert(
                    failed.process_guid.clone(),
                    ParkedLrp {
                        request: failed,
                        until,
                    },
                );
            }
        }
    }

    /// An instance of `process_guid` was placed: its next failure waits the shortest time.
    pub fn placed(&mut self, process_guid: &str) {
        self.failures.remove(process_guid);
    }

    /// Moves every LRP whose wait is over into `queue`; how many instances moved.
    pub fn release_due(&mut self, now: Instant, queue: &mut Queue) -> usize {
        let due: Vec<String> = self
            .lrps
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(g, _)| g.clone())
            .collect();
        let mut moved = 0;
        for guid in due {
            if let Some(p) = self.lrps.remove(&guid) {
                moved += p.request.indices.len();
                queue.push_lrp(p.request);
            }
        }
        moved
    }

    /// Records the cells a round saw; when they differ from the last round's, every parked LRP
    /// goes into `queue` (a new cell may fit them). How many instances moved.
    pub fn cells_seen(&mut self, cells: BTreeSet<String>, queue: &mut Queue) -> usize {
        let changed = self.cells.as_ref().is_some_and(|last| *last != cells);
        self.cells = Some(cells);
        if !changed {
            return 0;
        }
        let mut moved = 0;
        for (_, p) in std::mem::take(&mut self.lrps) {
            moved += p.request.indices.len();
            queue.push_lrp(p.request);
        }
        moved
    }

    /// When the next parked LRP is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.lrps.values().map(|p| p.until).min()
    }

    /// Parked instances, all LRPs together.
    pub fn instances(&self) -> usize {
        self.lrps.values().map(|p| p.request.indices.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(guid: &str, indices: &[i32], memory_mb: i32) -> LrpStartRequest {
        let mut r = LrpStartRequest {
            process_guid: guid.into(),
            indices: indices.to_vec(),
            ..Default::default()
        };
        r.resource.memory_mb = memory_mb;
        r
    }

    fn cells(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_wait_doubles_from_one_second_to_thirty() {
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 30),
            (40, 30),
            (u32::MAX, 30),
        ];
        for (failures, secs) in table {
            assert_eq!(
                backoff(failures),
                Duration::from_secs(secs),
                "after {failures} failures"
            );
        }
    }

    #[test]
    fn a_parked_lrp_takes_in_requests_until_its_wait_is_over() {
        let t0 = Instant::now();
        let mut p = Parked::default();
        let mut q = Queue::default();
        p.park(req("huge", &[0, 1, 2], 1000), t0);
        assert_eq!(p.next_due(), Some(t0 + BACKOFF_MIN));
        // The BBS asks again for the same placement: held, not queued.
        assert!(p.absorb(req("huge", &[2, 3], 1000), &mut q));
        assert!(q.is_empty());
        assert_eq!(p.instances(), 4);
        // Other LRPs pass straight through.
        assert!(!p.absorb(req("web", &[0], 64), &mut q));
        assert_eq!(q.lrps.keys().collect::<Vec<_>>(), ["web"]);
        // Not yet due, then due.
        assert_eq!(p.release_due(t0 + Duration::from_millis(999), &mut q), 0);
        assert_eq!(p.release_due(t0 + BACKOFF_MIN, &mut q), 4);
        assert_eq!(q.lrps["huge"].indices, [0, 1, 2, 3]);
        assert_eq!(p.next_due(), None);
        // It fails again: the wait doubles; once placed, it starts over.
        p.park(req("huge", &[0], 1000), t0);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(2)));
        p.release_due(t0 + Duration::from_secs(2), &mut q);
        p.placed("huge");
        p.park(req("huge", &[0], 1000), t0);
        assert_eq!(p.next_due(), Some(t0 + BACKOFF_MIN));
    }

    #[test]
    fn a_request_for_another_placement_releases_the_parked_one() {
        let t0 = Instant::now();
        let mut p = Parked::default();
        let mut q = Queue::default();
        p.park(req("huge", &[0, 1], 1000), t0);
        p.park(req("huge", &[5], 1000), t0);
        // Recreated smaller (same guid, other resources): both go to the next round.
        assert!(!p.absorb(req("huge", &[0], 64), &mut q));
        assert_eq!(p.instances(), 0);
        assert_eq!(q.lrps["huge"].indices, [0, 1, 5]);
        assert_eq!(q.lrps["huge"].resource.memory_mb, 64);
        // Its failure count went with it.
        p.park(req("huge", &[0], 64), t0);
        assert_eq!(p.next_due(), Some(t0 + BACKOFF_MIN));
    }

    #[test]
    fn a_change_of_cells_releases_everything() {
        let t0 = Instant::now();
        let mut p = Parked::default();
        let mut q = Queue::default();
        assert_eq!(
            p.cells_seen(cells(&["a"]), &mut q),
            0,
            "the first round sets the baseline"
        );
        p.park(req("huge", &[0, 1], 1000), t0);
        p.park(req("big", &[0], 500), t0);
        assert_eq!(p.cells_seen(cells(&["a"]), &mut q), 0, "same cells");
        assert_eq!(p.cells_seen(cells(&["a", "b"]), &mut q), 3, "a cell joined");
        assert_eq!(q.lrps.len(), 2);
        p.park(req("huge", &[0], 1000), t0);
        assert_eq!(p.cells_seen(cells(&["b"]), &mut q), 1, "a cell left");
    }
}
