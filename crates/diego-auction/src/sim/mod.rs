//! Simulation: Diego's scenarios (diego-spec §6.6) and the million-instance benchmark.
//!
//! Pure and deterministic per seed, except for the wall time, which is measured with
//! [`std::time::Instant`] around [`crate::schedule`] (or [`crate::naive::schedule`]). The
//! quality figures are recomputed from the results and the input cells, independently of the
//! algorithm's own bookkeeping.

mod rng;
mod scenarios;

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use rng::Rng;
pub use scenarios::{
    cold_start, huge_batch, imbalanced_deploy, million, over_demand, zone_distribution, Scenario,
};

use crate::types::AuctionResults;

/// Figures for one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub name: String,
    pub cells: usize,
    pub zones: usize,
    /// LRP instances plus tasks requested.
    pub requested: usize,
    pub placements: usize,
    pub failures: usize,
    pub seconds: f64,
    pub placements_per_sec: f64,
    /// Memory used ÷ total per cell after the round (existing work included).
    pub mem_fraction_min: f64,
    pub mem_fraction_max: f64,
    pub mem_fraction_spread: f64,
    pub mem_fraction_stddev: f64,
    /// New placements per cell: fewest and most.
    pub new_per_cell_min: usize,
    pub new_per_cell_max: usize,
    /// Over the request's processes: the most instances of one process in one zone minus the
    /// fewest in another (existing instances included).
    pub max_zone_imbalance: u32,
    /// Over the request's processes: the most instances of one process on one cell.
    pub max_same_process_per_cell: u32,
    /// Processes with two instances on one cell although they have no more instances than cells.
    pub processes_doubled_up: usize,
    /// Cells whose memory, disk or containers in use exceed their total after the round.
    pub overcommitted_cells: usize,
}

/// Run a scenario with the indexed auction and measure it.
pub fn run_scenario(s: &Scenario) -> (ScenarioReport, AuctionResults) {
    let t = Instant::now();
    let results = crate::schedule(&s.cells, &s.request, &s.config);
    let seconds = t.elapsed().as_secs_f64();
    (report(s, &results, seconds), results)
}

/// Quality figures of a round's results, computed from the input cells and the placements.
pub fn report(s: &Scenario, results: &AuctionResults, seconds: f64) -> ScenarioReport {
    let index: HashMap<&str, usize> = s
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.cell_id.as_str(), i))
        .collect();
    let n = s.cells.len();
    let mut used_m: Vec<i64> = s
        .cells
        .iter()
        .map(|c| c.total.memory_mb - c.available.memory_mb)
        .collect();
    let mut used_d: Vec<i64> = s
        .cells
        .iter()
        .map(|c| c.total.disk_mb - c.available.disk_mb)
        .collect();
    let mut used_c: Vec<i64> = s
        .cells
        .iter()
        .map(|c| c.total.containers - c.available.containers)
        .collect();
    let mut new_per_cell = vec![0usize; n];
    let mut zone_names: Vec<&str> = s.cells.iter().map(|c| c.zone.as_str()).collect();
    zone_names.sort_unstable();
    zone_names.dedup();
    let zone_of: HashMap<&str, usize> = zone_names.iter().enumerate().map(|(i, z)| (*z, i)).collect();
    let zones = zone_names.len();

    // Instances per (process, cell) for the request's processes, existing ones included.
    let mut per_cell: HashMap<(&str, usize), u32> = HashMap::new();
    let requested_procs: std::collections::HashSet<&str> =
        s.request.lrps.iter().map(|l| l.process_guid.as_str()).collect();
    for (i, c) in s.cells.iter().enumerate() {
        for l in &c.lrps {
            if requested_procs.contains(l.process_guid.as_str()) {
                *per_cell.entry((l.process_guid.as_str(), i)).or_insert(0) += 1;
            }
        }
    }
    for p in &results.successful_lrps {
        let c = index[p.cell_id.as_str()];
        let r = &s.request.lrps[p.lrp].resources;
        used_m[c] += r.memory_mb + s.cells[c].proxy_memory_mb;
        used_d[c] += r.disk_mb;
        used_c[c] += 1;
        new_per_cell[c] += 1;
        *per_cell.entry((p.process_guid.as_str(), c)).or_insert(0) += 1;
    }
    for p in &results.successful_tasks {
        let c = index[p.cell_id.as_str()];
        let r = &s.request.tasks[p.task].resources;
        used_m[c] += r.memory_mb;
        used_d[c] += r.disk_mb;
        used_c[c] += 1;
        new_per_cell[c] += 1;
    }
    let live: Vec<usize> = (0..n).filter(|&i| !s.cells[i].evacuating).collect();
    let fractions: Vec<f64> = live
        .iter()
        .map(|&i| used_m[i] as f64 / s.cells[i].total.memory_mb.max(1) as f64)
        .collect();
    let mean = fractions.iter().sum::<f64>() / fractions.len().max(1) as f64;
    let var = fractions.iter().map(|f| (f - mean) * (f - mean)).sum::<f64>() / fractions.len().max(1) as f64;
    let fmin = fractions.iter().cloned().fold(f64::INFINITY, f64::min);
    let fmax = fractions.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let overcommitted = (0..n)
        .filter(|&i| {
            let t = &s.cells[i].total;
            used_m[i] > t.memory_mb || used_d[i] > t.disk_mb || used_c[i] > t.containers
        })
        .count();

    let mut per_proc_zone: HashMap<&str, Vec<u32>> = HashMap::new();
    let mut per_proc_total: HashMap<&str, u32> = HashMap::new();
    let mut max_same = 0;
    let mut doubled: std::collections::HashSet<&str> = Default::default();
    for (&(p, c), &k) in &per_cell {
        per_proc_zone.entry(p).or_insert_with(|| vec![0; zones])[zone_of[s.cells[c].zone.as_str()]] += k;
        *per_proc_total.entry(p).or_insert(0) += k;
        max_same = max_same.max(k);
        if k >= 2 {
            doubled.insert(p);
        }
    }
    let live_cells = live.len() as u32;
    let processes_doubled_up = doubled
        .iter()
        .filter(|p| per_proc_total[*p] <= live_cells)
        .count();
    let max_zone_imbalance = per_proc_zone
        .values()
        .map(|z| z.iter().max().unwrap_or(&0) - z.iter().min().unwrap_or(&0))
        .max()
        .unwrap_or(0);
    let placements = results.successful_lrps.len() + results.successful_tasks.len();
    let requested = s.request.lrps.iter().map(|l| l.indices.len()).sum::<usize>() + s.request.tasks.len();
    ScenarioReport {
        name: s.name.clone(),
        cells: n,
        zones,
        requested,
        placements,
        failures: results.failed_lrps.len() + results.failed_tasks.len(),
        seconds,
        placements_per_sec: placements as f64 / seconds.max(1e-9),
        mem_fraction_min: fmin,
        mem_fraction_max: fmax,
        mem_fraction_spread: fmax - fmin,
        mem_fraction_stddev: var.sqrt(),
        new_per_cell_min: live.iter().map(|&i| new_per_cell[i]).min().unwrap_or(0),
        new_per_cell_max: live.iter().map(|&i| new_per_cell[i]).max().unwrap_or(0),
        max_zone_imbalance,
        max_same_process_per_cell: max_same,
        processes_doubled_up,
        overcommitted_cells: overcommitted,
    }
}

/// Diego's algorithm (the full scan) against the index on the same input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaiveBaseline {
    pub cells: usize,
    pub instances: usize,
    pub naive_seconds: f64,
    pub naive_placements_per_sec: f64,
    pub indexed_seconds: f64,
    pub indexed_placements_per_sec: f64,
    pub speedup: f64,
    /// Both picked the same cell for every instance.
    pub identical_results: bool,
}

/// Everything `diego bench auction` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub quick: bool,
    /// Placement rate of the largest run.
    pub placements_per_sec: f64,
    /// Wall time of 1,000,000 instances onto 10,000 cells in 3 zones; `null` in quick mode,
    /// which runs a tenth of it instead.
    pub million_on_10k_cells_seconds: Option<f64>,
    /// Standard deviation of the memory-used fraction across cells in the largest run.
    pub mem_fraction_stddev: f64,
    /// Worst per-process zone imbalance over the scenarios where everything fit (where
    /// capacity runs out, a zone may simply be full).
    pub max_zone_imbalance: u32,
    /// Overcommitted cells over all scenarios.
    pub overcommitted_cells: usize,
    pub naive_baseline: NaiveBaseline,
    pub scenarios: Vec<ScenarioReport>,
}

/// Compare the full scan with the index on `cells` cells and `processes × 10` instances.
pub fn naive_baseline(cells: usize, processes: usize) -> NaiveBaseline {
    let s = million(cells, processes, 10, 7);
    let t = Instant::now();
    let naive = crate::naive::schedule(&s.cells, &s.request, &s.config);
    let naive_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let indexed = crate::schedule(&s.cells, &s.request, &s.config);
    let indexed_seconds = t.elapsed().as_secs_f64();
    let instances = processes * 10;
    let placed = naive.successful_lrps.len() as f64;
    NaiveBaseline {
        cells,
        instances,
        naive_seconds,
        naive_placements_per_sec: placed / naive_seconds.max(1e-9),
        indexed_seconds,
        indexed_placements_per_sec: indexed.successful_lrps.len() as f64 / indexed_seconds.max(1e-9),
        speedup: naive_seconds / indexed_seconds.max(1e-9),
        identical_results: naive == indexed,
    }
}

/// Run every scenario and the big one (full scale unless `quick`), plus the naive baseline.
pub fn run_bench(quick: bool) -> BenchReport {
    let mut scenarios = vec![
        cold_start(if quick { 25 } else { 100 }, 1),
        imbalanced_deploy(5, 500),
        imbalanced_deploy(1, 100),
        zone_distribution(),
        if quick {
            huge_batch(300, 2_000, 3_000, 3)
        } else {
            huge_batch(2_000, 15_000, 20_000, 3)
        },
        if quick {
            over_demand(300, 3_000, 5)
        } else {
            over_demand(1_000, 10_000, 5)
        },
    ];
    let big = if quick {
        million(1_000, 10_000, 10, 42)
    } else {
        million(10_000, 100_000, 10, 42)
    };
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for s in scenarios.drain(..) {
        reports.push(run_scenario(&s).0);
    }
    let (big_report, results) = run_scenario(&big);
    drop(results);
    drop(big);
    let naive_baseline = if quick {
        naive_baseline(1_000, 500)
    } else {
        naive_baseline(10_000, 2_000)
    };
    let mut all = reports;
    all.push(big_report.clone());
    BenchReport {
        quick,
        placements_per_sec: big_report.placements_per_sec,
        million_on_10k_cells_seconds: (!quick).then_some(big_report.seconds),
        mem_fraction_stddev: big_report.mem_fraction_stddev,
        max_zone_imbalance: all
            .iter()
            .filter(|r| r.failures == 0)
            .map(|r| r.max_zone_imbalance)
            .max()
            .unwrap_or(0),
        overcommitted_cells: all.iter().map(|r| r.overcommitted_cells).sum(),
        naive_baseline,
        scenarios: all,
    }
}
