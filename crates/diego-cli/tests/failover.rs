//! BBS failover end to end: `diego bench failover` with a real etcd, two `diego bbs` child
//! processes and clients given both URLs. kill -9 of the active BBS: the other takes the lock
//! (waited for boundedly by the bench), writes and reads go on through it, no acknowledged
//! write is lost or applied twice, and the task event stream, resumed with Last-Event-ID at
//! the other BBS, shows every creation exactly once.

use std::process::Command;

use serde_json::Value;

#[test]
fn killing_the_active_bbs_loses_and_repeats_nothing() {
    let test = "killing_the_active_bbs_loses_and_repeats_nothing";
    if !diego_testkit::host::tool_for(
        test,
        "etcd",
        "apt-get install etcd-server; scripts/test installs it",
    ) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["bench", "failover", "--json", "--etcd-members", "1"])
        .args(["--rounds", "2", "--load", "2", "--rate", "40"])
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "error")
        .output()
        .expect("running diego bench failover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(r["rounds"], 2, "{r}");
    assert!(r["acknowledged_writes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["duplicate_writes"], 0, "{r}");
    assert_eq!(
        r["failed_writes"], 0,
        "every write was acknowledged through the other BBS: {r}\n{stderr}"
    );
    assert_eq!(r["events_missed"], 0, "{r}");
    assert!(
        r["event_reconnects"].as_u64().unwrap() >= 2,
        "the subscriber resumed at the other BBS after each kill: {r}"
    );
    assert_eq!(r["event_resyncs"], 0, "resumed by id, not relisted: {r}");
    // Some write was acknowledged after each kill (a gap spans it).
    assert!(r["writes_unavailable_ms_p50"].as_f64().unwrap() > 0.0, "{r}");
}
