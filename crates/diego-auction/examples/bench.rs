//! `cargo run --release -p diego-auction --example bench [-- --quick] [--json]`
//!
//! Runs Diego's simulation scenarios, the 1,000,000-instance auction and the full-scan
//! baseline, and prints the figures (a table, or the JSON of `BenchReport`).

use diego_auction::sim::run_bench;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let report = run_bench(quick);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
        return;
    }
    println!(
        "{:<72} {:>9} {:>9} {:>8} {:>10} {:>7} {:>7} {:>5} {:>5} {:>5}",
        "scenario", "placed", "failed", "seconds", "placed/s", "mem sd", "spread", "zone±", "same", "over"
    );
    for r in &report.scenarios {
        println!(
            "{:<72} {:>9} {:>9} {:>8.3} {:>10.0} {:>7.4} {:>7.4} {:>5} {:>5} {:>5}",
            r.name,
            r.placements,
            r.failures,
            r.seconds,
            r.placements_per_sec,
            r.mem_fraction_stddev,
            r.mem_fraction_spread,
            r.max_zone_imbalance,
            r.max_same_process_per_cell,
            r.overcommitted_cells
        );
    }
    let b = &report.naive_baseline;
    println!(
        "\nfull scan (Diego's algorithm) vs index, {} instances on {} cells: {:.3} s vs {:.3} s ({:.0}× faster), identical results: {}",
        b.instances, b.cells, b.naive_seconds, b.indexed_seconds, b.speedup, b.identical_results
    );
    match report.million_on_10k_cells_seconds {
        Some(s) => println!(
            "1,000,000 instances onto 10,000 cells: {s:.2} s ({:.0} placements/s)",
            report.placements_per_sec
        ),
        None => println!("quick mode: the million-instance run was replaced by a tenth of it"),
    }
}
