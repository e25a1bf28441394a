//! The auctioneer's metrics (docs/110-metrics.md): rounds, placements and failures by reason,
//! parked instances, how long rounds take and how many cells they saw, under Diego's names
//! where Diego has one (`AuctioneerLRPAuctionsStarted`, `AuctioneerFetchStatesDuration`, …).

use std::sync::Arc;
use std::time::Duration;

use diego_runtime::metrics::{FloatGauge, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::PlacementError;

/// Round duration bucket bounds, in seconds: a round of a few cells takes milliseconds, one of
/// thousands of cells or 100,000 instances seconds.
const ROUND_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The `reason` of work a cell's rep turned down after the auction chose it.
pub(super) const REP_REFUSED_REASON: &str = "rep_refused";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    /// `lrp` or `task`.
    work: &'static str,
    reason: &'static str,
}

/// The kind of work a placement failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkKind {
    Lrp,
    Task,
}

pub(super) struct AuctioneerMetrics {
    pub registry: Arc<Metrics>,
    rounds: Counter,
    lrps_placed: Counter,
    lrps_failed: Counter,
    tasks_placed: Counter,
    tasks_failed: Counter,
    failures: Family<FailureLabels, Counter>,
    round_duration: Histogram,
    fetch_states: FloatGauge,
    cells: Gauge,
    cells_answered: Gauge,
    parked: Gauge,
    lock_held: Gauge,
}

/// What one round did, as the metrics count it.
#[derive(Debug, Default)]
pub(super) struct RoundFigures {
    pub lrps_placed: u64,
    pub tasks_placed: u64,
    /// `(work, reason)` of each instance or task that was not placed.
    pub failures: Vec<(WorkKind, &'static str)>,
    pub duration: Duration,
    pub fetch_states: Duration,
    pub cells: usize,
    pub cells_answered: usize,
}

impl AuctioneerMetrics {
    pub fn new() -> Self {
        let mut b = Metrics::builder("auctioneer");
        let (rounds, lrps_placed, lrps_failed) = (Counter::default(), Counter::default(), Counter::default());
        let (tasks_placed, tasks_failed) = (Counter::default(), Counter::default());
        let failures = Family::<FailureLabels, Counter>::default();
        let round_duration = Histogram::new(ROUND_BUCKETS);
        let (fetch_states, cells, cells_answered) =
            (FloatGauge::default(), Gauge::default(), Gauge::default());
        let (parked, lock_held) = (Gauge::default(), Gauge::default());
        let diego = b.diego();
        diego.register(
            "AuctioneerLRPAuctionsStarted",
            "LRP instances the auctioneer placed on cells",
            lrps_placed.clone(),
        );
        diego.register(
            "AuctioneerLRPAuctionsFailed",
            "LRP instances the auctioneer could not place",
            lrps_failed.clone(),
        );
        diego.register(
            "AuctioneerTaskAuctionsStarted",
            "Tasks the auctioneer placed on cells",
            tasks_placed.clone(),
        );
        diego.register(
            "AuctioneerTaskAuctionsFailed",
            "Tasks the auctioneer could not place",
            tasks_failed.clone(),
        );
        diego.register(
            "AuctioneerFetchStatesDuration",
            "Seconds the last round took to fetch every cell's state",
            fetch_states.clone(),
        );
        diego.register(
            "LockHeld",
            "1 while this auctioneer holds the auctioneer lock (is active)",
            lock_held.clone(),
        );
        let role = b.role();
        role.register("rounds", "Auction rounds run", rounds.clone());
        role.register(
            "placement_failures",
            "Work not placed, by kind of work (lrp, task) and reason",
            failures.clone(),
        );
        role.register_with_unit(
            "round_duration",
            "Time from the start of a round until its work was sent to the cells",
            Unit::Seconds,
            round_duration.clone(),
        );
        role.register(
            "cells",
            "Live cells the last round found in the BBS",
            cells.clone(),
        );
        role.register(
            "cells_answered",
            "Cells whose state the last round fetched",
            cells_answered.clone(),
        );
        role.register(
            "parked_instances",
            "LRP instances waiting out a placement backoff",
            parked.clone(),
        );
        AuctioneerMetrics {
            registry: b.build(),
            rounds,
            lrps_placed,
            lrps_failed,
            tasks_placed,
            tasks_failed,
            failures,
            round_duration,
            fetch_states,
            cells,
            cells_answered,
            parked,
            lock_held,
        }
    }

    /// Counts a round that ran.
    pub fn round(&self, r: &RoundFigures) {
        self.rounds.inc();
        self.lrps_placed.inc_by(r.lrps_placed);
        self.tasks_placed.inc_by(r.tasks_placed);
        for &(work, reason) in &r.failures {
            match work {
                WorkKind::Lrp => self.lrps_failed.inc(),
                WorkKind::Task => self.tasks_failed.inc(),
            };
            let work = match work {
                WorkKind::Lrp => "lrp",
                WorkKind::Task => "task",
            };
            self.failures.get_or_create(&FailureLabels { work, reason }).inc();
        }
        self.round_duration.observe(r.duration.as_secs_f64());
        self.fetch_states.set(r.fetch_states.as_secs_f64());
        self.cells.set(r.cells as i64);
        self.cells_answered.set(r.cells_answered as i64);
    }

    /// Sets what is read at scrape time.
    pub fn set_state(&self, active: bool, parked_instances: usize) {
        self.lock_held.set(i64::from(active));
        self.parked.set(parked_instances as i64);
    }

    pub fn rounds(&self) -> u64 {
        self.rounds.get()
    }

    /// (LRPs placed, tasks placed, LRPs failed, tasks failed) since start.
    pub fn placements(&self) -> (u64, u64, u64, u64) {
        (
            self.lrps_placed.get(),
            self.tasks_placed.get(),
            self.lrps_failed.get(),
            self.tasks_failed.get(),
        )
    }
}

/// The `reason` label of a placement error: its kind, not its text, whose placement tags a
/// user chooses (every string here is how [`PlacementError`] renders).
pub(super) fn failure_reason(placement_error: &str) -> &'static str {
    let known = [
        (PlacementError::RootfsMismatch.to_string(), "rootfs_mismatch"),
        (
            PlacementError::VolumeDriverMismatch.to_string(),
            "volume_driver_mismatch",
        ),
        (
            PlacementError::CellCommunication.to_string(),
            "cell_communication",
        ),
        (PlacementError::NoOtherCell.to_string(), "no_other_cell"),
        (
            PlacementError::ExceededInflightCreation.to_string(),
            "inflight_start_limit",
        ),
    ];
    if let Some((_, reason)) = known.iter().find(|(text, _)| text == placement_error) {
        return reason;
    }
    if placement_error.starts_with("insufficient resources") {
        "insufficient_resources"
    } else if placement_error.starts_with("found no compatible cell with") {
        "placement_tag_mismatch"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use diego_runtime::metrics::Format;

    use super::*;

    #[test]
    fn placement_errors_map_to_a_bounded_reason() {
        let tags =
            |t: &[&str]| PlacementError::PlacementTagMismatch(t.iter().map(|s| s.to_string()).collect());
        let resources = |disk, memory, containers| PlacementError::InsufficientResources {
            disk,
            memory,
            containers,
        };
        for (error, reason) in [
            (PlacementError::RootfsMismatch, "rootfs_mismatch"),
            (PlacementError::VolumeDriverMismatch, "volume_driver_mismatch"),
            (tags(&[]), "placement_tag_mismatch"),
            (tags(&["gpu"]), "placement_tag_mismatch"),
            (tags(&["a", "b", "c"]), "placement_tag_mismatch"),
            (resources(false, false, false), "insufficient_resources"),
            (resources(true, true, true), "insufficient_resources"),
            (PlacementError::CellCommunication, "cell_communication"),
            (PlacementError::NoOtherCell, "no_other_cell"),
            (PlacementError::ExceededInflightCreation, "inflight_start_limit"),
        ] {
            assert_eq!(failure_reason(&error.to_string()), reason, "{error}");
        }
        assert_eq!(failure_reason("something new"), "other");
    }

    #[test]
    fn a_round_counts_placements_and_failures_by_reason() {
        let m = AuctioneerMetrics::new();
        m.round(&RoundFigures {
            lrps_placed: 3,
            tasks_placed: 1,
            failures: vec![
                (WorkKind::Lrp, "insufficient_resources"),
                (WorkKind::Lrp, "insufficient_resources"),
                (WorkKind::Task, REP_REFUSED_REASON),
            ],
            duration: Duration::from_millis(20),
            fetch_states: Duration::from_millis(5),
            cells: 2,
            cells_answered: 1,
        });
        m.set_state(true, 7);
        assert_eq!(m.rounds(), 1);
        assert_eq!(m.placements(), (3, 1, 2, 1));
        let text = m.registry.encode(Format::Prometheus).unwrap();
        for line in [
            "AuctioneerLRPAuctionsStarted_total 3",
            "AuctioneerLRPAuctionsFailed_total 2",
            "AuctioneerTaskAuctionsStarted_total 1",
            "AuctioneerTaskAuctionsFailed_total 1",
            "AuctioneerFetchStatesDuration 0.005",
            "LockHeld 1",
            "auctioneer_rounds_total 1",
            "auctioneer_placement_failures_total{work=\"lrp\",reason=\"insufficient_resources\"} 2",
            "auctioneer_placement_failures_total{work=\"task\",reason=\"rep_refused\"} 1",
            "auctioneer_round_duration_seconds_count 1",
            "auctioneer_round_duration_seconds_bucket{le=\"0.025\"} 1",
            "auctioneer_round_duration_seconds_bucket{le=\"0.01\"} 0",
            "auctioneer_cells 2",
            "auctioneer_cells_answered 1",
            "auctioneer_parked_instances 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}
