//! `diego bench auction --quick --json` runs the real scenarios and prints every figure.

#[test]
fn bench_auction_prints_every_figure_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["bench", "auction", "--quick", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("no JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "placements_per_sec",
        "million_on_10k_cells_seconds",
        "mem_fraction_stddev",
        "max_zone_imbalance",
        "overcommitted_cells",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {last}");
    }
    assert!(v["placements_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["overcommitted_cells"], 0);
    assert!(v["naive_baseline"]["identical_results"].as_bool().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--quick"), "{stderr}");
}
