//! `diego bench control-plane --json` at a small size: the real BBS, auctioneer and simulated
//! cells as child processes, every instance claimed, the figures printed.

#[test]
fn bench_control_plane_prints_its_figures_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "bench",
            "control-plane",
            "--json",
            "--cells",
            "20",
            "--lrps",
            "20",
            "--instances-per-lrp",
            "10",
            "--timeout",
            "120",
        ])
        .env_remove("DIEGO_BBS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(v["instances"], 200);
    assert_eq!(v["cells"], 20);
    assert!(v["e2e_placements_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["auction_rounds"].as_u64().unwrap() >= 1, "{v}");
    assert!(stderr.contains("all 200 instances claimed"), "{stderr}");
}
