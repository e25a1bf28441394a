//! Scenario builders modelled on Diego's simulation (diego-spec §6.6, auction
//! `simulation/simulation_test.go`), plus the million-instance run. Deterministic per seed.

use crate::types::{
    AuctionConfig, AuctionRequest, CellResources, CellState, LrpInstance, LrpStart, TaskStart, WorkResources,
};

use super::rng::Rng;

/// Cells, one batch of work, and the tuning to auction it with.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub cells: Vec<CellState>,
    pub request: AuctionRequest,
    pub config: AuctionConfig,
}

/// Diego's simulated cell: 100 MB, 100 MB disk, 100 containers.
fn sim_cell(i: usize, zone: &str) -> CellState {
    let mut c = CellState::new(&format!("cell-{i:05}"), zone, CellResources::new(100, 100, 100));
    c.cell_index = i as u32;
    c
}

/// Add `n` unrelated 1 MB instances (index 0 of fresh processes) to a cell, as Diego's
/// `generateUniqueLRPs` does for initial distributions.
fn preload(cell: &mut CellState, n: usize, tag: &str) {
    for i in 0..n {
        cell.lrps.push(LrpInstance {
            process_guid: format!("{tag}-{}-{i}", cell.cell_id),
            index: 0,
        });
    }
    cell.available.memory_mb -= n as i64;
    cell.available.disk_mb -= n as i64;
    cell.available.containers -= n as i64;
}

fn tiny() -> WorkResources {
    WorkResources {
        memory_mb: 1,
        disk_mb: 1,
        max_pids: 10,
    }
}

/// "Large cold LRPStarts": `cells` empty cells in two zones; `cells × 72` start requests of
/// 1 MB, `cells × 8` of 2 MB and `cells × 2` of 4 MB; half of each for unique processes, half
/// for a few shared colours (so those processes get many instances); shuffled.
pub fn cold_start(cells: usize, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let zones = ["z0", "z1"];
    let cell_states: Vec<CellState> = (0..cells).map(|i| sim_cell(i, zones[i % 2])).collect();
    let colours = [
        "purple",
        "red",
        "orange",
        "teal",
        "gray",
        "blue",
        "pink",
        "green",
        "lime",
        "cyan",
        "lightseagreen",
        "brown",
    ];
    let mut lrps = Vec::new();
    let mut unique = 0usize;
    for (requests, memory, palette) in [(cells * 72, 1, 0..4), (cells * 8, 2, 4..8), (cells * 2, 4, 8..12)] {
        let res = WorkResources {
            memory_mb: memory,
            disk_mb: 1,
            max_pids: 10,
        };
        for i in 0..requests / 2 {
            unique += 1;
            lrps.push(LrpStart::new(&format!("app-{unique}"), [0], res));
            // Diego's generator gives a coloured request the loop index as its instance index.
            let colour = colours[palette.start + rng.below(palette.len() as u64) as usize];
            lrps.push(LrpStart::new(colour, [i as u32], res));
        }
    }
    rng.shuffle(&mut lrps);
    Scenario {
        name: format!("cold start: {} start requests on {cells} empty cells", lrps.len()),
        cells: cell_states,
        request: AuctionRequest {
            lrps,
            tasks: Vec::new(),
        },
        config: AuctionConfig::default(),
    }
}

/// "Imbalanced scenario (e.g. a deploy)": 100 cells, all but `empty` holding 50 instances;
/// `apps` new one-instance apps must not overload the empty cells.
pub fn imbalanced_deploy(empty: usize, apps: usize) -> Scenario {
    let mut cells: Vec<CellState> = (0..100).map(|i| sim_cell(i, "z0")).collect();
    for c in cells.iter_mut().take(100 - empty) {
        preload(c, 50, "old");
    }
    let lrps = (0..apps)
        .map(|i| LrpStart::new(&format!("new-{i}"), [0], tiny()))
        .collect();
    Scenario {
        name: format!(
            "imbalanced deploy: {apps} apps onto 100 cells, {} of them half full",
            100 - empty
        ),
        cells,
        request: AuctionRequest {
            lrps,
            tasks: Vec::new(),
        },
        config: AuctionConfig::default(),
    }
}

/// "AZ distribution": cells 0 and 2 in z0, cell 1 alone in z1 and already holding 50 instances;
/// 40 instances of one process must split 20/20 between the zones.
pub fn zone_distribution() -> Scenario {
    let mut cells: Vec<CellState> = (0..3)
        .map(|i| sim_cell(i, if i == 1 { "z1" } else { "z0" }))
        .collect();
    preload(&mut cells[1], 50, "old");
    Scenario {
        name: "AZ distribution: 40 instances, lone loaded cell in the second zone".to_string(),
        cells,
        request: AuctionRequest {
            lrps: vec![LrpStart::new("red", 0..40, tiny())],
            tasks: Vec::new(),
        },
        config: AuctionConfig::default(),
    }
}

/// A realistic cell: 64 GiB memory, 128 GiB disk, 250 containers.
fn big_cell(i: usize, zones: usize) -> CellState {
    let mut c = CellState::new(
        &format!("cell-{i:05}"),
        &format!("z{}", i % zones),
        CellResources::new(64 * 1024, 128 * 1024, 250),
    );
    c.cell_index = (i / zones) as u32;
    c
}

/// Memory sizes of typical apps: 128 MB 30 %, 256 MB 25 %, 512 MB 25 %, 1 GB 15 %, 2 GB 5 %.
fn app_memory(rng: &mut Rng) -> i64 {
    match rng.below(100) {
        0..30 => 128,
        30..55 => 256,
        55..80 => 512,
        80..95 => 1024,
        _ => 2048,
    }
}

/// One huge batch: `processes` apps of 1–20 instances and `tasks` tasks onto `cells` cells in
/// three zones, some of the cells already a third full.
pub fn huge_batch(cells: usize, processes: usize, tasks: usize, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut cell_states: Vec<CellState> = (0..cells).map(|i| big_cell(i, 3)).collect();
    for c in cell_states.iter_mut() {
        if rng.below(3) == 0 {
            let n = 60;
            for i in 0..n {
                c.lrps.push(LrpInstance {
                    process_guid: format!("old-{}-{i}", c.cell_id),
                    index: 0,
                });
            }
            c.available.memory_mb -= n * 350;
            c.available.disk_mb -= n * 1024;
            c.available.containers -= n;
        }
    }
    let lrps = (0..processes)
        .map(|p| {
            let n = 1 + rng.below(20) as u32;
            let mem = app_memory(&mut rng);
            LrpStart::new(
                &format!("app-{p:06}"),
                0..n,
                WorkResources {
                    memory_mb: mem,
                    disk_mb: 1024,
                    max_pids: 1024,
                },
            )
        })
        .collect();
    let task_starts = (0..tasks)
        .map(|t| {
            let mem = app_memory(&mut rng);
            TaskStart::new(
                &format!("task-{t:06}"),
                WorkResources {
                    memory_mb: mem,
                    disk_mb: 2048,
                    max_pids: 1024,
                },
            )
        })
        .collect();
    Scenario {
        name: format!("huge batch: {processes} apps (1-20 instances) + {tasks} tasks onto {cells} cells"),
        cells: cell_states,
        request: AuctionRequest {
            lrps,
            tasks: task_starts,
        },
        config: AuctionConfig::default(),
    }
}

/// The big one: `processes` × `instances` LRP instances of mixed memory onto `cells` empty cells
/// in three zones (1,000,000 = 100,000 × 10 onto 10,000 cells at full scale).
pub fn million(cells: usize, processes: usize, instances: u32, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let cell_states: Vec<CellState> = (0..cells).map(|i| big_cell(i, 3)).collect();
    let lrps = (0..processes)
        .map(|p| {
            let mem = app_memory(&mut rng);
            LrpStart::new(
                &format!("app-{p:06}"),
                0..instances,
                WorkResources {
                    memory_mb: mem,
                    disk_mb: 1024,
                    max_pids: 1024,
                },
            )
        })
        .collect();
    Scenario {
        name: format!(
            "{} instances ({processes} apps × {instances}) onto {cells} cells in 3 zones",
            processes * instances as usize
        ),
        cells: cell_states,
        request: AuctionRequest {
            lrps,
            tasks: Vec::new(),
        },
        config: AuctionConfig::default(),
    }
}

/// Demand beyond capacity: the million-style mix onto cells of 45 GiB, so about one instance
/// in fifteen cannot be placed and is explained.
pub fn over_demand(cells: usize, processes: usize, seed: u64) -> Scenario {
    let mut s = million(cells, processes, 10, seed);
    for c in s.cells.iter_mut() {
        c.total.memory_mb = 45 * 1024;
        c.available = c.total;
    }
    s.name = format!(
        "over demand: {} instances onto {cells} cells of 45 GiB",
        processes * 10
    );
    s
}
