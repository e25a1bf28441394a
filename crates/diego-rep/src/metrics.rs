//! The rep's metrics (docs/110-metrics.md): the cell's capacity and containers under Diego's
//! names (`CapacityTotalMemory`, `ContainerCount`, `StartingContainerCount`,
//! `RepBulkSyncDuration`, …), containers by state, and what each LRP instance uses (CPU,
//! memory, disk), read from the backend at scrape time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_executor::{Container, ContainerState, ResourceCapacity};
use diego_garden::ContainerMetrics;
use diego_runtime::metrics::{FloatGauge, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::work::Workload;

/// Bulk sync duration bucket bounds, in seconds.
const SYNC_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Whether a container in `state` counts as starting (Diego's `StartingContainerCount`, which
/// the auction weighs): reserved, initializing or created, not yet running.
pub(crate) fn is_starting(state: ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Reserved | ContainerState::Initializing | ContainerState::Created
    )
}

/// Containers by state, every state present (zero included).
pub(crate) fn by_state(containers: &[Container]) -> BTreeMap<ContainerState, u64> {
    let mut counts: BTreeMap<ContainerState, u64> = ContainerState::ALL.iter().map(|s| (*s, 0)).collect();
    for c in containers {
        *counts.entry(c.state).or_default() += 1;
    }
    counts
}

/// What one LRP instance uses, as exposed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InstanceUsage {
    pub process_guid: String,
    pub index: i32,
    pub instance_guid: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub memory_quota_bytes: u64,
    pub disk_quota_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

/// The LRP instances among `workloads` (container guid → workload) with the backend's
/// `usage` of their containers; instances whose container the backend did not report (not
/// created yet, or gone) are left out, as are tasks.
pub(crate) fn instance_usage(
    workloads: &HashMap<String, Workload>,
    usage: &BTreeMap<String, ContainerMetrics>,
) -> Vec<InstanceUsage> {
    workloads
        .iter()
        .filter_map(|(guid, w)| {
            let Workload::Lrp {
                process_guid,
                index,
                instance_guid,
                memory_mb,
                disk_mb,
                ..
            } = w
            else {
                return None;
            };
            let m = usage.get(guid)?;
            Some(InstanceUsage {
                process_guid: process_guid.clone(),
                index: *index,
                instance_guid: instance_guid.clone(),
                cpu_seconds: m.cpu_usage_ns as f64 / 1e9,
                memory_bytes: m.memory_bytes,
                disk_bytes: m.disk_bytes,
                memory_quota_bytes: u64::try_from(*memory_mb).unwrap_or(0) * MIB,
                disk_quota_bytes: u64::try_from(*disk_mb).unwrap_or(0) * MIB,
            })
        })
        .collect()
}

pub(crate) struct RepMetrics {
    pub registry: Arc<Metrics>,
    total_memory: Gauge,
    total_disk: Gauge,
    total_containers: Gauge,
    remaining_memory: Gauge,
    remaining_disk: Gauge,
    remaining_containers: Gauge,
    container_count: Gauge,
    starting: Gauge,
    containers: Family<StateLabels, Gauge>,
    bulk_sync_last: FloatGauge,
    bulk_sync: Histogram,
    usage_failures: Counter,
    instances: Arc<Mutex<Vec<InstanceUsage>>>,
}

impl RepMetrics {
    pub fn new() -> Self {
        let mut b = Metrics::builder("rep");
        let g = Gauge::default;
        let (total_memory, total_disk, total_containers) = (g(), g(), g());
        let (remaining_memory, remaining_disk, remaining_containers) = (g(), g(), g());
        let (container_count, starting) = (g(), g());
        let containers = Family::<StateLabels, Gauge>::default();
        let bulk_sync_last = FloatGauge::default();
        let bulk_sync = Histogram::new(SYNC_BUCKETS);
        let usage_failures = Counter::default();
        let instances = Arc::new(Mutex::new(Vec::new()));
        let diego = b.diego();
        for (name, help, gauge) in [
            (
                "CapacityTotalMemory",
                "Memory (MiB) the cell offers",
                &total_memory,
            ),
            ("CapacityTotalDisk", "Disk (MiB) the cell offers", &total_disk),
            (
                "CapacityTotalContainers",
                "Containers the cell offers",
                &total_containers,
            ),
            (
                "CapacityRemainingMemory",
                "Memory (MiB) not reserved by a container",
                &remaining_memory,
            ),
            (
                "CapacityRemainingDisk",
                "Disk (MiB) not reserved by a container",
                &remaining_disk,
            ),
            (
                "CapacityRemainingContainers",
                "Containers the cell can still take",
                &remaining_containers,
            ),
            (
                "ContainerCount",
                "Containers on the cell, in any state",
                &container_count,
            ),
            (
                "StartingContainerCount",
                "Containers reserved, initializing or created, not yet running",
                &starting,
            ),
        ] {
            diego.register(name, help, gauge.clone());
        }
        diego.register(
            "RepBulkSyncDuration",
            "Seconds the last bulk sync with the BBS took",
            bulk_sync_last.clone(),
        );
        let role = b.role();
        role.register(
            "containers",
            "Containers on the cell by state",
            containers.clone(),
        );
        role.register_with_unit(
            "bulk_sync_duration",
            "Time each bulk sync with the BBS took",
            Unit::Seconds,
            bulk_sync.clone(),
        );
        role.register(
            "instance_metrics_failures",
            "Scrapes whose per-instance usage the container backend could not report",
            usage_failures.clone(),
        );
        role.register_collector(Box::new(InstanceFigures(instances.clone())));
        RepMetrics {
            registry: b.build(),
            total_memory,
            total_disk,
            total_containers,
            remaining_memory,
            remaining_disk,
            remaining_containers,
            container_count,
            starting,
            containers,
            bulk_sync_last,
            bulk_sync,
            usage_failures,
            instances,
        }
    }

    pub fn bulk_synced(&self, took: Duration) {
        self.bulk_sync_last.set(took.as_secs_f64());
        self.bulk_sync.observe(took.as_secs_f64());
    }

    /// Sets what is read at scrape time; `usage` is `None` when the backend could not say.
    pub fn set(
        &self,
        total: ResourceCapacity,
        remaining: ResourceCapacity,
        containers: &[Container],
        usage: Option<Vec<InstanceUsage>>,
    ) {
        let v = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.total_memory.set(v(total.memory_mb));
        self.total_disk.set(v(total.disk_mb));
        self.total_containers.set(v(total.containers));
        self.remaining_memory.set(v(remaining.memory_mb));
        self.remaining_disk.set(v(remaining.disk_mb));
        self.remaining_containers.set(v(remaining.containers));
        let counts = by_state(containers);
        self.container_count.set(v(counts.values().sum()));
        self.starting.set(v(counts
            .iter()
            .filter(|(s, _)| is_starting(**s))
            .map(|(_, n)| n)
            .sum()));
        for (state, n) in counts {
            self.containers
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(v(n));
        }
        let usage = usage.unwrap_or_else(|| {
            self.usage_failures.inc();
            Vec::new()
        });
        *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = usage;
    }
}

/// The per-instance figures of the current scrape, one series per instance that has them.
#[derive(Debug)]
struct InstanceFigures(Arc<Mutex<Vec<InstanceUsage>>>);

impl Collector for InstanceFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if instances.is_empty() {
            return Ok(());
        }
        let labels = |i: &InstanceUsage| {
            [
                ("process_guid", i.process_guid.clone()),
                ("index", i.index.to_string()),
                ("instance_guid", i.instance_guid.clone()),
            ]
        };
        let mut cpu = encoder.encode_descriptor(
            "instance_cpu",
            "CPU time the instance's processes have used",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for i in instances.iter() {
            ConstCounter::new(i.cpu_seconds).encode(cpu.encode_family(&labels(i))?)?;
        }
        type Field = fn(&InstanceUsage) -> u64;
        let gauges: [(&str, &str, Field); 4] = [
            ("instance_memory", "Memory the instance uses", |i| i.memory_bytes),
            ("instance_disk", "Disk the instance's writable layer uses", |i| {
                i.disk_bytes
            }),
            ("instance_memory_quota", "The instance's memory limit", |i| {
                i.memory_quota_bytes
            }),
            ("instance_disk_quota", "The instance's disk limit", |i| {
                i.disk_quota_bytes
            }),
        ];
        for (name, help, field) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Gauge)?;
            for i in instances.iter() {
                let value = i64::try_from(field(i)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&labels(i))?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use diego_runtime::metrics::Format;

    use super::*;

    fn container(guid: &str, state: ContainerState) -> Container {
        Container {
            state,
            ..Container::reserved(guid, 64, 64)
        }
    }

    fn lrp(guid: &str, index: i32) -> Workload {
        Workload::Lrp {
            process_guid: guid.into(),
            index,
            domain: "d".into(),
            instance_guid: format!("{guid}-{index}"),
            memory_mb: 128,
            disk_mb: 0,
        }
    }

    #[test]
    fn containers_by_state_and_which_are_starting() {
        use ContainerState::*;
        let list = [
            container("a", Reserved),
            container("b", Initializing),
            container("c", Running),
            container("d", Running),
        ];
        let counts = by_state(&list);
        assert_eq!(counts.len(), ContainerState::ALL.len());
        assert_eq!(
            (counts[&Running], counts[&Completed], counts[&Reserved]),
            (2, 0, 1)
        );
        for (state, starting) in [
            (Reserved, true),
            (Initializing, true),
            (Created, true),
            (Running, false),
            (Completed, false),
        ] {
            assert_eq!(is_starting(state), starting, "{state}");
        }
    }

    #[test]
    fn usage_covers_the_lrp_instances_the_backend_reported() {
        let workloads = HashMap::from([
            ("c1".to_string(), lrp("web", 0)),
            ("c2".to_string(), lrp("web", 1)),
            (
                "t1".to_string(),
                Workload::Task {
                    task_guid: "t".into(),
                    domain: "d".into(),
                    memory_mb: 1,
                    disk_mb: 1,
                    started: true,
                    cancelled: false,
                },
            ),
        ]);
        let metrics = |memory_bytes| ContainerMetrics {
            memory_bytes,
            cpu_usage_ns: 1_500_000_000,
            disk_bytes: 4096,
            pids: 1,
            age_ms: 10,
        };
        // c2 is not created yet; the task is no instance.
        let usage = BTreeMap::from([
            ("c1".to_string(), metrics(10 * MIB)),
            ("t1".to_string(), metrics(1)),
        ]);
        let got = instance_usage(&workloads, &usage);
        assert_eq!(
            got,
            [InstanceUsage {
                process_guid: "web".into(),
                index: 0,
                instance_guid: "web-0".into(),
                cpu_seconds: 1.5,
                memory_bytes: 10 * MIB,
                disk_bytes: 4096,
                memory_quota_bytes: 128 * MIB,
                disk_quota_bytes: 0,
            }]
        );
    }

    #[test]
    fn a_scrape_exposes_capacity_containers_and_instances() {
        let m = RepMetrics::new();
        let cap = |memory_mb, disk_mb, containers| ResourceCapacity {
            memory_mb,
            disk_mb,
            containers,
        };
        let usage = instance_usage(
            &HashMap::from([("c1".to_string(), lrp("web", 0))]),
            &BTreeMap::from([(
                "c1".to_string(),
                ContainerMetrics {
                    memory_bytes: 2048,
                    cpu_usage_ns: 250_000_000,
                    disk_bytes: 0,
                    pids: 1,
                    age_ms: 1,
                },
            )]),
        );
        m.bulk_synced(Duration::from_millis(30));
        m.set(
            cap(1024, 2048, 10),
            cap(896, 2048, 9),
            &[container("c1", ContainerState::Running)],
            Some(usage),
        );
        let text = m.registry.encode(Format::Prometheus).unwrap();
        for line in [
            "CapacityTotalMemory 1024",
            "CapacityTotalDisk 2048",
            "CapacityTotalContainers 10",
            "CapacityRemainingMemory 896",
            "CapacityRemainingContainers 9",
            "ContainerCount 1",
            "StartingContainerCount 0",
            "RepBulkSyncDuration 0.03",
            "rep_containers{state=\"running\"} 1",
            "rep_containers{state=\"reserved\"} 0",
            "rep_bulk_sync_duration_seconds_count 1",
            "rep_instance_cpu_seconds_total{process_guid=\"web\",index=\"0\",instance_guid=\"web-0\"} 0.25",
            "rep_instance_memory_bytes{process_guid=\"web\",index=\"0\",instance_guid=\"web-0\"} 2048",
            "rep_instance_memory_quota_bytes{process_guid=\"web\",index=\"0\",instance_guid=\"web-0\"} 134217728",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }

        // The instance went, and the backend could not answer: no stale series, one failure.
        m.set(cap(1024, 2048, 10), cap(1024, 2048, 10), &[], None);
        let text = m.registry.encode(Format::Prometheus).unwrap();
        assert!(!text.contains("rep_instance_memory_bytes{"), "{text}");
        assert!(
            text.lines().any(|l| l == "rep_instance_metrics_failures_total 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "ContainerCount 0"), "{text}");
    }
}
