//! `diego bench logs --json`, small: every line written through the shipper reaches the
//! follower, and every figure is printed.

#[test]
fn bench_logs_prints_every_figure_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "bench",
            "logs",
            "--json",
            "--instances",
            "10",
            "--rate",
            "2000",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("no JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "lines_per_sec",
        "follow_latency_p99_ms",
        "lost_lines",
        "written",
        "received",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {last}");
    }
    assert_eq!(v["written"], 2000);
    assert_eq!(v["received"], v["written"], "{last}");
    assert_eq!(v["lost_lines"], 0, "{last}");
    assert!(v["lines_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["follow_latency_p99_ms"].as_f64().unwrap() >= 0.0);
}
