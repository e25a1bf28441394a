//! Shared helpers: a real BBS and simulated cells on loopback.
#![allow(dead_code)]

use std::time::Duration;

use diego_client::RepClient;
use diego_model::auction::{LrpWork, PlacementConstraint, TaskStartRequest, Work};
use diego_model::common::Resources;
use diego_model::{Action, DesireTaskRequest, DesiredLrp, RunAction, TaskDefinition};
use diego_simcells::{RunningSimCells, SimCells, SimCellsConfig};
use diego_testkit::TestBbs;
use tokio_util::sync::CancellationToken;

/// Generous: CI machines are loaded.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Sim {
    pub bbs: TestBbs,
    pub cells: RunningSimCells,
    pub shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `count` cells against a fresh BBS; `configure` adjusts the defaults.
pub async fn start(count: usize, configure: impl FnOnce(&mut SimCellsConfig)) -> Sim {
    let bbs = TestBbs::start().await;
    let mut config = SimCellsConfig::new(bbs.url.clone(), count);
    configure(&mut config);
    let shutdown = CancellationToken::new();
    let cells = SimCells::start(config, shutdown.clone())
        .await
        .expect("starting the simulated cells");
    Sim {
        bbs,
        cells,
        shutdown,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    pub fn cell(&self, i: usize) -> &str {
        &self.cells.cell_ids[i]
    }

    /// The auctioneer's view of cell `i`.
    pub fn rep(&self, i: usize) -> RepClient {
        RepClient::new(
            self.cells.rep_url(self.cell(i)),
            self.http.clone(),
            Duration::from_secs(10),
        )
    }

    /// Work for cell `i`: these indices of `lrp`.
    pub fn lrp_work(&self, i: usize, lrp: &DesiredLrp, indices: &[i32]) -> Work {
        Work {
            cell_id: self.cell(i).to_string(),
            lrps: indices.iter().map(|&index| lrp_work(lrp, index)).collect(),
            tasks: Vec::new(),
        }
    }
}

pub fn lrp(guid: &str, instances: i32, memory_mb: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "sim".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        action: Some(Action::run(RunAction {
            path: "httpd".into(),
            args: vec!["-f".into(), "-p".into(), "8080".into()],
            ..Default::default()
        })),
        memory_mb,
        disk_mb: 64,
        ports: vec![8080],
        ..Default::default()
    }
}

pub fn lrp_work(lrp: &DesiredLrp, index: i32) -> LrpWork {
    LrpWork {
        process_guid: lrp.process_guid.clone(),
        domain: lrp.domain.clone(),
        index,
        placement_constraint: PlacementConstraint {
            rootfs: lrp.rootfs.clone(),
            ..Default::default()
        },
        resource: Resources {
            memory_mb: lrp.memory_mb,
            disk_mb: lrp.disk_mb,
            max_pids: 0,
        },
    }
}

pub fn task(guid: &str, memory_mb: i32) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "sim".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(Action::run(RunAction {
                path: "true".into(),
                ..Default::default()
            })),
            memory_mb,
            ..Default::default()
        },
    }
}

pub fn task_work(req: &DesireTaskRequest) -> TaskStartRequest {
    TaskStartRequest {
        task_guid: req.task_guid.clone(),
        domain: req.domain.clone(),
        placement_constraint: PlacementConstraint {
            rootfs: req.task_definition.rootfs.clone(),
            ..Default::default()
        },
        resource: Resources {
            memory_mb: req.task_definition.memory_mb,
            disk_mb: req.task_definition.disk_mb,
            max_pids: 0,
        },
    }
}
