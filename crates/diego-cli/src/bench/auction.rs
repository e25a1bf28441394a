//! `diego bench auction`: the placement algorithm in process, on Diego's simulation scenarios
//! and 1,000,000 instances onto 10,000 cells in 3 zones, beside Diego's full-scan algorithm on
//! a smaller run (see `diego_auction::sim` and docs/070-auction.md).

use anyhow::Context as _;
use diego_auction::sim::{run_bench, BenchReport};

pub struct Options {
    pub json: bool,
    /// A tenth of the million-instance run (for a quick look).
    pub quick: bool,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let quick = o.quick;
    let report = tokio::task::spawn_blocking(move || run_bench(quick))
        .await
        .context("the auction benchmark panicked")?;
    print_human(&report);
    if o.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn print_human(report: &BenchReport) {
    eprintln!(
        "{:<64} {:>9} {:>7} {:>8} {:>10} {:>7} {:>7} {:>5} {:>5}",
        "scenario", "placed", "failed", "seconds", "placed/s", "mem sd", "spread", "zone±", "over"
    );
    for r in &report.scenarios {
        eprintln!(
            "{:<64} {:>9} {:>7} {:>8.3} {:>10.0} {:>7.4} {:>7.4} {:>5} {:>5}",
            r.name,
            r.placements,
            r.failures,
            r.seconds,
            r.placements_per_sec,
            r.mem_fraction_stddev,
            r.mem_fraction_spread,
            r.max_zone_imbalance,
            r.overcommitted_cells
        );
    }
    let b = &report.naive_baseline;
    eprintln!(
        "Diego's full scan vs the index, {} instances on {} cells: {:.3} s vs {:.3} s ({:.0}x), identical results: {}",
        b.instances, b.cells, b.naive_seconds, b.indexed_seconds, b.speedup, b.identical_results
    );
    match report.million_on_10k_cells_seconds {
        Some(s) => eprintln!(
            "1,000,000 instances onto 10,000 cells in 3 zones: {s:.2} s ({:.0} placements/s); \
             memory-fraction stddev {:.4}, max zone imbalance {}, overcommitted cells {}",
            report.placements_per_sec,
            report.mem_fraction_stddev,
            report.max_zone_imbalance,
            report.overcommitted_cells
        ),
        None => eprintln!("--quick: the million-instance run was replaced by a tenth of it"),
    }
}
