//! The BBS's metrics (docs/110-metrics.md): request counts and latencies per route (from
//! [`diego_runtime::metrics`]), records by state counted at scrape time, and the converger's
//! last pass under Diego's names (`ConvergenceLRPDuration`, `LRPsMissing`, …) where Diego has
//! one and `bbs_convergence_*` for ours.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_model::{ActualLrpState, Presence, TaskState};
use diego_runtime::metrics::Metrics;
use diego_store::Counts;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::converger::PassReport;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActualLabels {
    state: &'static str,
    presence: &'static str,
}

/// What the converger figures are drawn from, taken once per scrape so the Diego names and
/// ours describe the same pass.
#[derive(Debug, Default)]
struct ConvergenceSnapshot {
    active: bool,
    last: PassReport,
}

/// The BBS's registry and the figures it sets at scrape time.
pub struct BbsMetrics {
    pub registry: Arc<Metrics>,
    tasks: Family<TaskLabels, Gauge>,
    desired_lrps: Gauge,
    actual_lrps: Family<ActualLabels, Gauge>,
    cells: Gauge,
    convergence: Arc<Mutex<ConvergenceSnapshot>>,
}

impl Default for BbsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BbsMetrics {
    pub fn new() -> Self {
        let mut b = Metrics::builder("bbs");
        let tasks = Family::<TaskLabels, Gauge>::default();
        let desired_lrps = Gauge::default();
        let actual_lrps = Family::<ActualLabels, Gauge>::default();
        let cells = Gauge::default();
        let convergence = Arc::new(Mutex::new(ConvergenceSnapshot::default()));
        let role = b.role();
        role.register("tasks", "Tasks by state", tasks.clone());
        role.register("desired_lrps", "Desired LRPs", desired_lrps.clone());
        role.register(
            "actual_lrps",
            "Actual LRPs by state and presence",
            actual_lrps.clone(),
        );
        role.register("cells", "Live cell presences", cells.clone());
        role.register_collector(Box::new(ConvergenceFigures {
            snapshot: convergence.clone(),
            names: Names::Ours,
        }));
        b.diego().register_collector(Box::new(ConvergenceFigures {
            snapshot: convergence.clone(),
            names: Names::Diegos,
        }));
        BbsMetrics {
            registry: b.build(),
            tasks,
            desired_lrps,
            actual_lrps,
            cells,
            convergence,
        }
    }

    /// Sets the figures read at scrape time: the store's counts (every state, zero included,
    /// so a series never vanishes), the live cells, and whether this BBS is active and its
    /// last pass.
    pub fn set(&self, counts: &Counts, cells: usize, active: bool, last: PassReport) {
        for state in TaskState::ALL {
            let n = counts.tasks.get(&state).copied().unwrap_or(0);
            self.tasks
                .get_or_create(&TaskLabels {
                    state: state.as_str(),
                })
                .set(gauge_value(n));
        }
        self.desired_lrps.set(gauge_value(counts.desired_lrps));
        for state in ActualLrpState::ALL {
            for presence in Presence::ALL {
                let n = counts.actual_lrps.get(&(state, presence)).copied().unwrap_or(0);
                self.actual_lrps
                    .get_or_create(&ActualLabels {
                        state: state.as_str(),
                        presence: presence.as_str(),
                    })
                    .set(gauge_value(n));
            }
        }
        self.cells.set(gauge_value(cells as u64));
        *self.convergence.lock().unwrap_or_else(|p| p.into_inner()) = ConvergenceSnapshot { active, last };
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy)]
enum Names {
    /// `LockHeld`, `ConvergenceLRPDuration`, … (the unprefixed registry).
    Diegos,
    /// `bbs_convergence_*` (the prefixed registry).
    Ours,
}

/// The converger's figures, encoded from the snapshot of the current scrape. A passive BBS
/// reports `LockHeld 0` and no pass.
#[derive(Debug)]
struct ConvergenceFigures {
    snapshot: Arc<Mutex<ConvergenceSnapshot>>,
    names: Names,
}

fn gauge<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: V,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Collector for ConvergenceFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let (active, last) = (snapshot.active, &snapshot.last);
        let e = &mut encoder;
        match self.names {
            Names::Diegos => {
                gauge(
                    e,
                    "LockHeld",
                    "1 while this BBS holds the bbs lock (is active).",
                    None,
                    i64::from(active),
                )?;
                if last.passes == 0 {
                    return Ok(());
                }
                gauge(
                    e,
                    "ConvergenceLRPDuration",
                    "Seconds the last pass spent on LRPs.",
                    None,
                    seconds(last.lrp_duration),
                )?;
                gauge(
                    e,
                    "ConvergenceTaskDuration",
                    "Seconds the last pass spent on tasks.",
                    None,
                    seconds(last.task_duration),
                )?;
                let o = &last.observed;
                for (name, help, n) in [
                    (
                        "LRPsMissing",
                        "Desired indices without an ordinary instance.",
                        o.lrps_missing,
                    ),
                    (
                        "LRPsExtra",
                        "Ordinary instances beyond the desired count.",
                        o.lrps_extra,
                    ),
                    ("CrashedActualLRPs", "Instances in CRASHED.", o.crashed),
                    (
                        "CrashingDesiredLRPs",
                        "Desired LRPs with a crashed instance.",
                        o.crashing_desired,
                    ),
                    (
                        "SuspectRunningActualLRPs",
                        "RUNNING instances on cells that lost their presence.",
                        o.suspect_running,
                    ),
                    (
                        "SuspectClaimedActualLRPs",
                        "CLAIMED instances on cells that lost their presence.",
                        o.suspect_claimed,
                    ),
                    ("PresentCells", "Cells with a live presence.", o.present_cells),
                    (
                        "SuspectCells",
                        "Cells named by instances but without a live presence.",
                        o.lapsed_cells.len() as u64,
                    ),
                ] {
                    gauge(e, name, help, None, gauge_value(n))?;
                }
            }
            Names::Ours => {
                if last.passes == 0 {
                    return Ok(());
                }
                let s = Some(Unit::Seconds);
                gauge(
                    e,
                    "convergence_gather",
                    "Seconds the last pass took to read its snapshot.",
                    s.clone(),
                    seconds(last.gather),
                )?;
                gauge(
                    e,
                    "convergence_plan",
                    "Seconds the last pass took to decide.",
                    s.clone(),
                    seconds(last.plan),
                )?;
                gauge(
                    e,
                    "convergence_apply",
                    "Seconds the last pass took to write its actions.",
                    s,
                    seconds(last.apply),
                )?;
                gauge(
                    e,
                    "convergence_orphans",
                    "Instances of LRPs no longer desired.",
                    None,
                    gauge_value(last.observed.orphans),
                )?;
                let metric = e.encode_descriptor(
                    "convergence_passes",
                    "Convergence passes since this BBS started.",
                    None,
                    MetricType::Counter,
                )?;
                ConstCounter::new(last.passes).encode(metric)?;
                let mut metric = e.encode_descriptor(
                    "convergence_actions",
                    "Actions of the last pass, by kind.",
                    None,
                    MetricType::Gauge,
                )?;
                let kinds = last
                    .applied
                    .iter()
                    .map(|(k, n)| (*k, *n))
                    .chain([("skipped", last.skipped)]);
                for (kind, n) in kinds {
                    ConstGauge::new(gauge_value(n)).encode(metric.encode_family(&[("kind", kind)])?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use diego_runtime::metrics::Format;

    use super::*;

    fn lines(m: &BbsMetrics) -> Vec<String> {
        m.registry
            .encode(Format::Prometheus)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn convergence_figures_use_diegos_names() {
        let m = BbsMetrics::new();
        m.set(&Counts::default(), 0, false, PassReport::default());
        let out = lines(&m);
        assert!(out.iter().any(|l| l == "LockHeld 0"), "{out:#?}");
        assert!(
            !out.iter()
                .any(|l| l.starts_with("LRPsMissing") || l.starts_with("bbs_convergence")),
            "a passive BBS reports no pass: {out:#?}"
        );

        let mut last = PassReport {
            passes: 3,
            lrp_duration: Duration::from_millis(12),
            ..Default::default()
        };
        last.observed.lrps_missing = 2;
        last.observed.present_cells = 5;
        last.applied.insert("create", 2);
        m.set(&Counts::default(), 5, true, last);
        let out = lines(&m);
        for line in [
            "LockHeld 1",
            "ConvergenceLRPDuration 0.012",
            "LRPsMissing 2",
            "PresentCells 5",
            "# TYPE bbs_convergence_passes_total counter",
            "bbs_convergence_passes_total 3",
            "bbs_convergence_gather_seconds 0.0",
            "bbs_convergence_actions{kind=\"create\"} 2",
            "bbs_convergence_actions{kind=\"skipped\"} 0",
            "bbs_cells 5",
        ] {
            assert!(out.iter().any(|l| l == line), "{line:?} missing from {out:#?}");
        }
    }

    #[test]
    fn every_state_is_counted_zero_included() {
        let m = BbsMetrics::new();
        let mut counts = Counts::default();
        counts.tasks.insert(TaskState::Pending, 4);
        counts
            .actual_lrps
            .insert((ActualLrpState::Running, Presence::Evacuating), 2);
        counts.desired_lrps = 1;
        m.set(&counts, 0, true, PassReport::default());
        let out = lines(&m);
        for line in [
            "bbs_tasks{state=\"PENDING\"} 4",
            "bbs_tasks{state=\"RESOLVING\"} 0",
            "bbs_desired_lrps 1",
            "bbs_actual_lrps{state=\"RUNNING\",presence=\"EVACUATING\"} 2",
            "bbs_actual_lrps{state=\"CRASHED\",presence=\"SUSPECT\"} 0",
        ] {
            assert!(out.iter().any(|l| l == line), "{line:?} missing from {out:#?}");
        }
        let actual_series = out.iter().filter(|l| l.starts_with("bbs_actual_lrps{")).count();
        assert_eq!(actual_series, ActualLrpState::ALL.len() * Presence::ALL.len());
    }
}
