//! The auction's wire types (diego-spec §3.4, §3.5, §6.4): start requests the BBS sends the
//! auctioneer, the state a cell's rep reports, and the work the auctioneer gives a rep.
//! Plain data: the placement algorithm lives in `diego-auction`.

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
