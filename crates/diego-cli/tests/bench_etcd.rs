//! `diego bench bbs|control-plane --start-etcd N --json` at tiny sizes against a real etcd the
//! benchmark starts itself: the SQLite figures and the etcd figures side by side, etcd's own
//! write rates as the baseline, and where the CPU went. Skipped (saying why) without etcd
//! locally; under CI a missing etcd fails.

use diego_testkit::host::tool_for;
use serde_json::Value;

fn bench(test: &str, args: &[&str]) -> Option<(Value, String)> {
    if !tool_for(
        test,
        "etcd",
        "apt-get install etcd-server; scripts/test installs it",
    ) {
        return None;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .arg("bench")
        .args(args)
        .env_remove("DIEGO_BBS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    Some((v, stderr))
}

fn positive(v: &Value, key: &str) {
    let n = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {v}"));
    assert!(n > 0.0, "{key} = {n}: {v}");
}

#[test]
fn bench_bbs_on_etcd_prints_both_stores_and_etcds_baseline() {
    let test = "bench_bbs_on_etcd_prints_both_stores_and_etcds_baseline";
    let Some((v, stderr)) = bench(
        test,
        &[
            "bbs",
            "--json",
            "--start-etcd",
            "1",
            "--clients",
            "4",
            "--task-seconds",
            "0.5",
            "--lrps",
            "4",
            "--instances-per-lrp",
            "10",
            "--claim-start-instances",
            "20",
        ],
    ) else {
        return;
    };
    assert_eq!(v["store"], "etcd", "{v}");
    assert_eq!(v["etcd_members"], 1, "{v}");
    for key in [
        "etcd_put_per_sec",
        "etcd_txn_per_sec",
        "etcd_put_concurrent_per_sec",
        "etcd_db_size_mb",
        "fsync_per_sec",
        "task_transitions_to_etcd_put_ratio",
    ] {
        positive(&v, key);
    }
    for store in ["sqlite", "etcd"] {
        for key in [
            "task_transitions_per_sec",
            "desired_lrp_creates_per_sec",
            "actual_lrp_claim_start_per_sec",
            "rss_mb_at_100k_actual_lrps",
        ] {
            positive(&v, &format!("{store}_{key}"));
        }
        assert_eq!(v[format!("{store}_actual_lrps_listed")], 40, "{v}");
    }
    assert!(v.get("etcd_skipped_phases").is_none(), "nothing skipped: {v}");
    // The etcd members' CPU is read from /proc (the benchmark started them).
    assert!(v["etcd_task_etcd_cpu_us_per_transition"].is_number(), "{v}");
    assert!(v["etcd_task_bbs_cpu_us_per_transition"].is_number(), "{v}");
    assert!(stderr.contains("etcd baseline:"), "{stderr}");
}

#[test]
fn bench_bbs_on_etcd_skips_lrps_beyond_a_transaction_saying_so() {
    let test = "bench_bbs_on_etcd_skips_lrps_beyond_a_transaction_saying_so";
    let Some((v, stderr)) = bench(
        test,
        &[
            "bbs",
            "--json",
            "--start-etcd",
            "1",
            "--clients",
            "2",
            "--task-seconds",
            "0.2",
            "--lrps",
            "1",
            "--instances-per-lrp",
            "200",
            "--claim-start-instances",
            "10",
        ],
    ) else {
        return;
    };
    let why = v["etcd_skipped_phases"]["desired_lrp_creates"]
        .as_str()
        .unwrap_or_else(|| panic!("the skip is in the JSON: {v}"));
    assert!(why.contains("--max-txn-ops"), "{why}");
    assert!(v.get("etcd_desired_lrp_creates_per_sec").is_none(), "{v}");
    positive(&v, "sqlite_desired_lrp_creates_per_sec");
    positive(&v, "etcd_task_transitions_per_sec");
    assert!(stderr.contains("skipping the LRP phases"), "{stderr}");
}

#[test]
fn bench_control_plane_on_etcd_places_on_both_stores() {
    let test = "bench_control_plane_on_etcd_places_on_both_stores";
    let Some((v, _)) = bench(
        test,
        &[
            "control-plane",
            "--json",
            "--start-etcd",
            "1",
            "--cells",
            "10",
            "--lrps",
            "10",
            "--instances-per-lrp",
            "10",
            "--timeout",
            "120",
        ],
    ) else {
        return;
    };
    assert_eq!(v["store"], "etcd", "{v}");
    positive(&v, "etcd_put_per_sec");
    for store in ["sqlite", "etcd"] {
        positive(&v, &format!("{store}_e2e_placements_per_sec"));
        assert_eq!(v[format!("{store}_instances")], 100, "{v}");
    }
    assert!(v["etcd_placement_etcd_cpu_us_per_instance"].is_number(), "{v}");
}
