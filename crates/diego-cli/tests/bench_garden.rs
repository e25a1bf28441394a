//! `diego bench garden --json` with tiny counts: the real binary, real runc containers. Asserts
//! the summary's shape and that each figure was measured, never how fast.

use diego_cli::process::is_root;

#[test]
fn bench_garden_prints_every_figure_as_json() {
    if !is_root()
        || std::process::Command::new("runc")
            .arg("--version")
            .output()
            .is_err()
    {
        println!("SKIPPED bench_garden_prints_every_figure_as_json: needs root and runc");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "bench",
            "garden",
            "--cycles",
            "3",
            "--parallel-cycles",
            "4",
            "--idle",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "diego bench garden failed: {stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"));
    for key in [
        "cycle_median_ms",
        "cycle_p99_ms",
        "raw_runc_median_ms",
        "parallel8_containers_per_sec",
        "idle_overhead_rss_mb",
    ] {
        let value = summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing or not a number in {summary}"));
        assert!(value > 0.0, "{key} = {value} is not positive in {summary}");
    }
    assert_eq!(summary["idle_containers"], 2, "{summary}");
}
