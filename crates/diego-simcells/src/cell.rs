//! One simulated cell: who it is (id, zone, rep URL, what it offers) and what it holds.

use std::sync::{Mutex, MutexGuard};

use diego_model::auction::{CellResources, CellState};
use diego_model::{CellCapacity, CellPresence, RegisterCellRequest};

use crate::config::SimCellsConfig;
use crate::holdings::Holdings;

/// Shared by the HTTP handlers and the lifecycle tasks of this cell.
#[derive(Debug)]
pub struct SimCell {
    pub id: String,
    pub zone: String,
    pub rep_url: String,
    /// `/state` without the holdings; cloned and filled in per request.
    template: CellState,
    holdings: Mutex<Holdings>,
}

impl SimCell {
    /// Cell number `i` of `config`, reachable at `{base_url}/cells/{id}`.
    pub fn new(config: &SimCellsConfig, i: usize, id: String, base_url: &str) -> Self {
        let total = CellResources {
            memory_mb: config.memory_mb,
            disk_mb: config.disk_mb,
            containers: config.containers,
        };
        let rep_url = format!("{base_url}/cells/{id}");
        let zone = config.zone_of(i);
        let template = CellState {
            cell_id: id.clone(),
            rep_url: rep_url.clone(),
            zone: zone.clone(),
            rootfs_providers: config.rootfs_providers.clone(),
            total_resources: total,
            available_resources: total,
            lrps: Vec::new(),
            tasks: Vec::new(),
            starting_container_count: 0,
            evacuating: false,
            volume_drivers: Vec::new(),
            placement_tags: config.placement_tags.clone(),
            optional_placement_tags: config.optional_placement_tags.clone(),
        };
        SimCell {
            id,
            zone,
            rep_url,
            template,
            holdings: Mutex::new(Holdings::new(total)),
        }
    }

    /// The holdings, for a moment: never hold the guard across an `.await`.
    pub fn holdings(&self) -> MutexGuard<'_, Holdings> {
        // No method of Holdings can panic between updating its maps and its totals, so a
        // lock poisoned by a panic elsewhere still guards consistent data.
        self.holdings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `GET /state`.
    pub fn state(&self) -> CellState {
        let mut s = self.template.clone();
        let h = self.holdings();
        s.available_resources = h.available();
        s.starting_container_count = h.starting_container_count();
        s.lrps = h.cell_lrps();
        s.tasks = h.cell_tasks();
        s
    }

    /// The presence registered with the BBS (and renewed).
    pub fn register_request(&self, ttl_seconds: i64) -> RegisterCellRequest {
        let t = &self.template;
        RegisterCellRequest {
            cell_presence: CellPresence {
                cell_id: self.id.clone(),
                rep_url: self.rep_url.clone(),
                zone: self.zone.clone(),
                capacity: CellCapacity {
                    memory_mb: t.total_resources.memory_mb,
                    disk_mb: t.total_resources.disk_mb,
                    containers: t.total_resources.containers,
                },
                rootfs_providers: t.rootfs_providers.clone(),
                placement_tags: t.placement_tags.clone(),
                optional_placement_tags: t.optional_placement_tags.clone(),
            },
            ttl_seconds,
        }
    }
}
