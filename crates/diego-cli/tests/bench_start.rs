//! `diego bench start --json` at a small size: its own `diego dev` with a runc cell, every
//! instance RUNNING, the figures printed (root; needs runc and busybox-static).

use diego_cli::process::is_root;

#[test]
fn bench_start_prints_its_figures_as_json() {
    let runc = std::process::Command::new("runc").arg("--version").output();
    if !is_root() || runc.is_err() || !std::path::Path::new("/bin/busybox").exists() {
        println!("SKIPPED bench_start_prints_its_figures_as_json: needs root, runc and busybox-static");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["bench", "start", "--json", "--instances", "3"])
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    for key in [
        "desire_to_running_p50_ms",
        "desire_to_running_p99_ms",
        "all_running_ms",
        "raw_runc_start_ms",
        "raw_runc_parallel_p50_ms",
        "raw_runc_parallel_all_ms",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["instances"], 3);
    assert!(
        v["desire_to_running_p50_ms"].as_f64() <= v["all_running_ms"].as_f64(),
        "{v}"
    );
    // It leaves nothing: no mount, no loop device, no temporary directory of its own.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("diego-bench-start"), "{mounts}");
    let loops = std::process::Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(!loops.contains("diego-bench-start"), "{loops}");
    let tmp = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("diego-bench-start"))
        .count();
    assert_eq!(
        tmp, 0,
        "a diego-bench-start directory is left in the temporary directory"
    );
}
