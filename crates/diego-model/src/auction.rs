//! The auction's wire types (diego-spec §3.4, §3.5, §6.4): start requests the BBS sends the
//! auctioneer, the state a cell's rep reports, and the work the auctioneer gives a rep.
//! Plain data: the placement algorithm lives in `diego-auction`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cell::RootfsProvider;
use crate::common::{validate_placement_tags, validate_rootfs, Resources};
use crate::desired_lrp::DesiredLrpSchedulingInfo;
use crate::task::Task;
use crate::validation::{join, Validator};

/// Where work may run: rootfs, placement tags and volume drivers a cell must match (§6.3).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConstraint {
    pub rootfs: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_drivers: Vec<String>,
}

impl PlacementConstraint {
    pub fn validate(&self, v: &mut Validator, path: &str) {
        validate_rootfs(v, &join(path, "rootfs"), &self.rootfs);
        validate_placement_tags(v, &join(path, "placement_tags"), &self.placement_tags);
    }
}

fn validate_resource(v: &mut Validator, path: &str, r: &Resources) {
    v.non_negative(&join(path, "memory_mb"), r.memory_mb.into());
    v.non_negative(&join(path, "disk_mb"), r.disk_mb.into());
    v.non_negative(&join(path, "max_pids"), r.max_pids.into());
}

/// `POST /v1/lrps` on the auctioneer: start these indices of a process.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpStartRequest {
    pub process_guid: String,
    pub domain: String,
    pub indices: Vec<i32>,
    pub placement_constraint: PlacementConstraint,
    pub resource: Resources,
}

impl LrpStartRequest {
    /// A request to start `indices` of the LRP described by `info`.
    pub fn for_lrp(info: &DesiredLrpSchedulingInfo, indices: Vec<i32>) -> Self {
        LrpStartRequest {
            process_guid: info.process_guid.clone(),
            domain: info.domain.clone(),
            indices,
            placement_constraint: PlacementConstraint {
                rootfs: info.rootfs.clone(),
                placement_tags: info.placement_tags.clone(),
                volume_drivers: Vec::new(),
            },
            resource: Resources {
                memory_mb: info.memory_mb,
                disk_mb: info.disk_mb,
                max_pids: info.max_pids,
            },
        }
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        v.guid(&join(path, "process_guid"), &self.process_guid);
        v.required(&join(path, "domain"), &self.domain);
        if self.indices.is_empty() {
            v.error(join(path, "indices"), "must name at least one index");
        }
        for (i, index) in self.indices.iter().enumerate() {
            v.non_negative(&format!("{}[{i}]", join(path, "indices")), (*index).into());
        }
        self.placement_constraint
            .validate(v, &join(path, "placement_constraint"));
        validate_resource(v, &join(path, "resource"), &self.resource);
    }
}

/// `POST /v1/tasks` on the auctioneer: place this task.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStartRequest {
    pub task_guid: String,
    pub domain: String,
    pub placement_constraint: PlacementConstraint,
    pub resource: Resources,
}

impl TaskStartRequest {
    /// A request to place `task`.
    pub fn for_task(task: &Task) -> Self {
        let d = &task.task_definition;
        TaskStartRequest {
            task_guid: task.task_guid.clone(),
            domain: task.domain.clone(),
            placement_constraint: PlacementConstraint {
                rootfs: d.rootfs.clone(),
                placement_tags: d.placement_tags.clone(),
                volume_drivers: Vec::new(),
            },
            resource: Resources {
                memory_mb: d.memory_mb,
                disk_mb: d.disk_mb,
                max_pids: d.max_pids,
            },
        }
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        v.guid(&join(path, "task_guid"), &self.task_guid);
        v.required(&join(path, "domain"), &self.domain);
        self.placement_constraint
            .validate(v, &join(path, "placement_constraint"));
        validate_resource(v, &join(path, "resource"), &self.resource);
    }
}

/// Memory, disk and container slots (totals or what is left).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellResources {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

/// An LRP instance a cell holds (reserved, starting or running).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellLrp {
    pub process_guid: String,
    pub index: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_guid: String,
    pub memory_mb: i32,
    pub disk_mb: i32,
}

/// A task a cell holds.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellTask {
    pub task_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    pub memory_mb: i32,
    pub disk_mb: i32,
}

/// `GET /state` on a rep (§3.5): what the cell is and holds.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellState {
    pub cell_id: String,
    #[serde(default)]
    pub rep_url: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub rootfs_providers: Vec<RootfsProvider>,
    pub total_resources: CellResources,
    pub available_resources: CellResources,
    #[serde(default)]
    pub lrps: Vec<CellLrp>,
    #[serde(default)]
    pub tasks: Vec<CellTask>,
    /// Containers reserved, initializing or created but not yet running.
    #[serde(default)]
    pub starting_container_count: i32,
    #[serde(default)]
    pub evacuating: bool,
    #[serde(default)]
    pub volume_drivers: Vec<String>,
    #[serde(default)]
    pub placement_tags: Vec<String>,
    #[serde(default)]
    pub optional_placement_tags: Vec<String>,
}

/// One LRP instance to start on a cell.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpWork {
    pub process_guid: String,
    pub domain: String,
    pub index: i32,
    pub placement_constraint: PlacementConstraint,
    pub resource: Resources,
}

/// `POST /work` on a rep: start these; the answer is the same shape, holding what it could
/// not take.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    pub cell_id: String,
    #[serde(default)]
    pub lrps: Vec<LrpWork>,
    #[serde(default)]
    pub tasks: Vec<TaskStartRequest>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.lrps.is_empty() && self.tasks.is_empty()
    }
}

// ---- placement explanations ----
//
// Why work did not fit, stored with the placement error on the actual LRP or task and shown
// by the CLI; `diego-auction` computes them. Every cell is counted once, under the first check
// it fails (evacuating, rootfs, volume drivers, placement tags, memory, disk, containers), so
// `fitting_cells + rejected_cells() == total_cells`.

/// A count of cells rejected for one named thing (a tag, a volume driver).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub cells: u32,
}

/// Cells that cannot run the requested rootfs.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMiss {
    pub rootfs: String,
    pub cells: u32,
}

/// Cells rejected for one resource, with the nearest miss.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMiss {
    pub cells: u32,
    /// What the work needs on the closest cell (memory includes that cell's proxy allowance).
    pub need: i64,
    /// The most any of these cells has free.
    pub best_available: i64,
}

/// The in-flight start cap that stopped the work.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightLimit {
    pub starting: u64,
    pub maximum: u32,
}

/// Why a unit of work was not placed, cell by cell.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementExplanation {
    /// Cells in the auction's input, evacuating ones included.
    pub total_cells: u32,
    /// Cells that would have taken the work (non-zero only when the in-flight cap stopped it).
    pub fitting_cells: u32,
    pub evacuating: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsMiss>,
    /// Per volume driver: cells lacking it (the first missing driver of each cell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_drivers: Vec<NamedCount>,
    /// Per tag: cells that offer the requested tag neither as required nor as optional.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_placement_tags: Vec<NamedCount>,
    /// Per tag: cells that require a tag the work does not ask for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unrequested_placement_tags: Vec<NamedCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight_limit: Option<InflightLimit>,
}

impl PlacementExplanation {
    /// Cells rejected for any reason; with `fitting_cells` this adds up to `total_cells`.
    pub fn rejected_cells(&self) -> u32 {
        let named = |v: &Vec<NamedCount>| v.iter().map(|n| n.cells).sum::<u32>();
        let res = |r: &Option<ResourceMiss>| r.map_or(0, |r| r.cells);
        self.evacuating
            + self.rootfs.as_ref().map_or(0, |r| r.cells)
            + named(&self.volume_drivers)
            + named(&self.missing_placement_tags)
            + named(&self.unrequested_placement_tags)
            + res(&self.memory)
            + res(&self.disk)
            + res(&self.containers)
    }
}

impl fmt::Display for PlacementExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} cells fit", self.fitting_cells, self.total_cells)?;
        // Biggest reason first; ties keep the filter order.
        let mut counted: Vec<(u32, String)> = Vec::new();
        if self.evacuating > 0 {
            counted.push((self.evacuating, format!("{} evacuating", self.evacuating)));
        }
        if let Some(r) = &self.rootfs {
            counted.push((r.cells, format!("{} lack rootfs \"{}\"", r.cells, r.rootfs)));
        }
        for n in &self.volume_drivers {
            counted.push((n.cells, format!("{} lack volume driver \"{}\"", n.cells, n.name)));
        }
        for n in &self.missing_placement_tags {
            counted.push((n.cells, format!("{} lack placement tag \"{}\"", n.cells, n.name)));
        }
        for n in &self.unrequested_placement_tags {
            counted.push((
                n.cells,
                format!("{} require placement tag \"{}\"", n.cells, n.name),
            ));
        }
        for (name, unit, r) in [
            ("memory", " MB", &self.memory),
            ("disk", " MB", &self.disk),
            ("containers", "", &self.containers),
        ] {
            if let Some(r) = r {
                let text = format!(
                    "{} lack {name} (need {}{unit}, best has {}{unit} free)",
                    r.cells, r.need, r.best_available
                );
                counted.push((r.cells, text));
            }
        }
        counted.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut parts: Vec<String> = Vec::new();
        if let Some(l) = self.inflight_limit {
            parts.push(format!(
                "in-flight start limit reached ({} starting, maximum {})",
                l.starting, l.maximum
            ));
        }
        parts.extend(counted.into_iter().map(|(_, text)| text));
        if self.total_cells == 0 {
            parts.push("no cells reported".to_string());
        }
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_requests_name_their_bad_fields() {
        let mut v = Validator::new();
        LrpStartRequest {
            process_guid: "bad guid!".into(),
            indices: vec![],
            resource: Resources {
                memory_mb: -1,
                ..Default::default()
            },
            ..Default::default()
        }
        .validate(&mut v, "");
        let fields: Vec<String> = v.errors().iter().map(|e| e.field.clone()).collect();
        for f in [
            "process_guid",
            "domain",
            "indices",
            "placement_constraint.rootfs",
            "resource.memory_mb",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn explanations_round_trip_through_json() {
        let e = PlacementExplanation {
            total_cells: 3,
            memory: Some(ResourceMiss {
                cells: 3,
                need: 512,
                best_available: 256,
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<PlacementExplanation>(&json).unwrap(), e);
    }

    #[test]
    fn cell_state_reads_with_defaults() {
        let s: CellState = serde_json::from_str(
            r#"{"cell_id":"c1","total_resources":{"memory_mb":1024,"disk_mb":2048,"containers":10},
                "available_resources":{"memory_mb":512,"disk_mb":2048,"containers":9}}"#,
        )
        .unwrap();
        assert_eq!(s.available_resources.memory_mb, 512);
        assert!(s.lrps.is_empty() && !s.evacuating);
    }
}
