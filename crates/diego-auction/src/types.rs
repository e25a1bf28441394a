//! The auction's inputs (cell states, start requests, tuning) and its results.
//!
//! These are the crate's own small types, shaped like Diego's `rep.CellState`, `rep.LRP` and
//! `rep.Task` (diego-spec §6.1–§6.4) with field names in snake_case, so an auctioneer shell can
//! fill them from `/state` answers and start requests without this crate knowing about HTTP.

use serde::{Deserialize, Serialize};

use crate::explain::PlacementExplanation;

/// Memory, disk and container slots of a cell (totals or what is still free).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellResources {
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub containers: i64,
}

impl CellResources {
    pub fn new(memory_mb: i64, disk_mb: i64, containers: i64) -> Self {
        Self {
            memory_mb,
            disk_mb,
            containers,
        }
    }
}

/// What one unit of work asks for. `max_pids` is carried for the rep; it does not affect placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkResources {
    pub memory_mb: i64,
    pub disk_mb: i64,
    #[serde(default)]
    pub max_pids: i64,
}

impl WorkResources {
    pub fn new(memory_mb: i64, disk_mb: i64) -> Self {
        Self {
            memory_mb,
            disk_mb,
            max_pids: 0,
        }
    }
}

/// A root filesystem scheme a cell can run (the shape of `diego_model::RootfsProvider`):
/// with `properties` it is a fixed set (`preloaded` + `["cflinuxfs4"]` runs exactly
/// `preloaded:cflinuxfs4`); without, an arbitrary provider (`docker` runs any `docker:…` URL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RootfsProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

impl RootfsProvider {
    /// A fixed-set provider, e.g. `preloaded` with stacks `["cflinuxfs4"]`.
    pub fn fixed(name: &str, stacks: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            properties: stacks.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `preloaded` with the given stacks.
    pub fn preloaded(stacks: &[&str]) -> Self {
        Self::fixed("preloaded", stacks)
    }

    /// An arbitrary provider: any rootfs URL with this scheme.
    pub fn arbitrary(scheme: &str) -> Self {
        Self {
            name: scheme.to_string(),
            properties: Vec::new(),
        }
    }
}

/// One LRP instance already on a cell (it counts for spreading).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpInstance {
    pub process_guid: String,
    pub index: u32,
}

/// A cell as the auction sees it: Diego's `rep.CellState` (diego-spec §6.4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellState {
    pub cell_id: String,
    #[serde(default)]
    pub zone: String,
    /// BOSH index; orders cells for the optional bin-pack-first-fit weight.
    #[serde(default)]
    pub cell_index: u32,
    #[serde(default)]
    pub rootfs_providers: Vec<RootfsProvider>,
    pub total: CellResources,
    pub available: CellResources,
    #[serde(default)]
    pub placement_tags: Vec<String>,
    #[serde(default)]
    pub optional_placement_tags: Vec<String>,
    #[serde(default)]
    pub volume_drivers: Vec<String>,
    #[serde(default)]
    pub lrps: Vec<LrpInstance>,
    /// Guids of the tasks on the cell.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Containers reserved, initializing or created (not yet running).
    #[serde(default)]
    pub starting_container_count: u32,
    #[serde(default)]
    pub evacuating: bool,
    /// Memory the cell adds to every LRP for its Envoy proxy (0 when the proxy is off).
    #[serde(default)]
    pub proxy_memory_mb: i64,
}

impl CellState {
    /// An empty cell with the given capacity, `preloaded:cflinuxfs4` and `docker` rootfs.
    pub fn new(cell_id: &str, zone: &str, total: CellResources) -> Self {
        Self {
            cell_id: cell_id.to_string(),
            zone: zone.to_string(),
            rootfs_providers: vec![
                RootfsProvider::preloaded(&["cflinuxfs4"]),
                RootfsProvider::arbitrary("docker"),
            ],
            total,
            available: total,
            ..Default::default()
        }
    }
}

/// A request to start instances of one desired LRP (Diego's `auctioneer.LRPStartRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpStart {
    pub process_guid: String,
    #[serde(default)]
    pub domain: String,
    pub indices: Vec<u32>,
    pub resources: WorkResources,
    pub rootfs: String,
    #[serde(default)]
    pub placement_tags: Vec<String>,
    #[serde(default)]
    pub volume_drivers: Vec<String>,
}

impl LrpStart {
    /// Start `indices` of `process_guid` on `preloaded:cflinuxfs4` with no tags or drivers.
    pub fn new(process_guid: &str, indices: impl IntoIterator<Item = u32>, resources: WorkResources) -> Self {
        Self {
            process_guid: process_guid.to_string(),
            domain: "domain".to_string(),
            indices: indices.into_iter().collect(),
            resources,
            rootfs: "preloaded:cflinuxfs4".to_string(),
            ..Default::default()
        }
    }
}

/// A request to start one task (Diego's `auctioneer.TaskStartRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    pub task_guid: String,
    #[serde(default)]
    pub domain: String,
    pub resources: WorkResources,
    pub rootfs: String,
    #[serde(default)]
    pub placement_tags: Vec<String>,
    #[serde(default)]
    pub volume_drivers: Vec<String>,
}

impl TaskStart {
    /// A task on `preloaded:cflinuxfs4` with no tags or drivers.
    pub fn new(task_guid: &str, resources: WorkResources) -> Self {
        Self {
            task_guid: task_guid.to_string(),
            domain: "domain".to_string(),
            resources,
            rootfs: "preloaded:cflinuxfs4".to_string(),
            ..Default::default()
        }
    }
}

/// One batch of work: everything the auctioneer drained since the last round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionRequest {
    pub lrps: Vec<LrpStart>,
    pub tasks: Vec<TaskStart>,
}

/// The auctioneer's tuning (diego-spec §6.1, §6.2), with Diego's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuctionConfig {
    /// Score added per starting container on a cell (Diego: `starting_container_weight`, 0.25).
    pub starting_container_weight: f64,
    /// Score added per position of the cell in its zone, ordered by cell index
    /// (Diego: `bin_pack_first_fit_weight`, experimental, 0 = off).
    pub bin_pack_first_fit_weight: f64,
    /// Cap on containers starting across all cells, 0 = unlimited
    /// (Diego: `starting_container_count_maximum`).
    pub starting_container_count_maximum: u32,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        Self {
            starting_container_weight: 0.25,
            bin_pack_first_fit_weight: 0.0,
            starting_container_count_maximum: 0,
        }
    }
}

/// An LRP instance that won a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpPlacement {
    /// Position of the start request in [`AuctionRequest::lrps`].
    pub lrp: usize,
    pub process_guid: String,
    pub index: u32,
    pub cell_id: String,
}

/// A task that won a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlacement {
    /// Position of the start request in [`AuctionRequest::tasks`].
    pub task: usize,
    pub task_guid: String,
    pub cell_id: String,
}

/// An LRP instance that could not be placed, with Diego's error string and why, cell by cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpFailure {
    pub lrp: usize,
    pub process_guid: String,
    pub index: u32,
    /// Diego's placement error, exactly (diego-spec §6.5).
    pub placement_error: String,
    pub explanation: PlacementExplanation,
}

/// A task that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task: usize,
    pub task_guid: String,
    pub placement_error: String,
    pub explanation: PlacementExplanation,
}

/// What one auction round decided, in placement order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionResults {
    pub successful_lrps: Vec<LrpPlacement>,
    pub successful_tasks: Vec<TaskPlacement>,
    pub failed_lrps: Vec<LrpFailure>,
    pub failed_tasks: Vec<TaskFailure>,
}
