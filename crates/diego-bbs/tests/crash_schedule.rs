//! The crash restart schedule (diego-spec §5, docs/030-lrps.md) through a real BBS with
//! paused time: the store's and BBS's clock is manual, so a backoff passes only when a test
//! advances it. Crashes come in as the rep reports them (`POST …/crash`), and the BBS's own
//! converger (passes every 20 ms of wall time, each deciding on the manual clock) carries out
//! the delayed restarts. Nothing here measures wall-clock time: after moving the clock a test
//! waits for two more completed passes (read from `/metrics`), so at least one whole pass
//! has seen the new time, and then asserts what it decided.

mod common;

use std::time::Duration;

use common::*;
use diego_model::ActualLrp;
use diego_store::{Record, Txn, Write};
use diego_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

async fn server() -> Server {
    server_converging_every(Duration::from_millis(20)).await
}

/// A BBS converging every `interval` of wall time, with cell-a registered.
async fn server_converging_every(interval: Duration) -> Server {
    let s = start_with(|c| {
        c.convergence.interval = interval;
    })
    .await;
    // The instances' cell, with a presence that outlives every jump of the clock here, so
    // convergence never takes its RUNNING instances for SUSPECT.
    let (st, body) = s
        .post(
            "/v1/cells",
            json!({"cell_presence": {"cell_id": "cell-a", "rep_url": "http://127.0.0.1:9", "zone": "z1",
                    "capacity": {"memory_mb": 1024, "disk_mb": 1024, "containers": 10}},
                   "ttl_seconds": 365 * 86_400}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    s
}

async fn passes(s: &Server) -> u64 {
    let (_, text) = s.raw("GET", "/metrics", Vec::new()).await;
    text.lines()
        .find_map(|l| l.strip_prefix("bbs_convergence_passes_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Returns once two more convergence passes have completed: the second began after this
/// call, so it decided with the clock as it is now.
async fn two_passes(s: &Server) {
    let from = passes(s).await;
    eventually(WAIT, || async {
        let now = passes(s).await;
        (now >= from + 2)
            .then_some(())
            .ok_or(format!("{now} passes, waiting for {}", from + 2))
    })
    .await;
}

/// (state, crash count) of index 0.
async fn instance(s: &Server, guid: &str) -> (String, i64) {
    let (st, v) = s.get(&format!("/v1/actual_lrps?process_guid={guid}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a = &v.as_array().unwrap()[0];
    (
        a["state"].as_str().unwrap().to_string(),
        a["crash_count"].as_i64().unwrap(),
    )
}

async fn start_running(s: &Server, guid: &str) {
    let (st, a) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/0/start"),
            json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
        )
        .await;
    assert_eq!(
        (st, a["state"].as_str()),
        (StatusCode::OK, Some("RUNNING")),
        "{a}"
    );
}

/// Runs index 0 on cell-a and crashes it as the rep reports a crash; the state and count
/// the crash left.
async fn run_and_crash(s: &Server, guid: &str) -> (String, i64) {
    start_running(s, guid).await;
    crash(s, guid).await
}

async fn crash(s: &Server, guid: &str) -> (String, i64) {
    let (st, a) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/0/crash"),
            json!({"instance_key": ik("cell-a"), "error_message": "Exit status 1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    (
        a["state"].as_str().unwrap().to_string(),
        a["crash_count"].as_i64().unwrap(),
    )
}

fn st(state: &str, count: i64) -> (String, i64) {
    (state.to_string(), count)
}

/// The instance is CRASHED with `count`; convergence leaves it so until `wait_ms` have
/// passed since the crash, and restarts it (UNCLAIMED, count kept) once they have.
async fn restarted_after(s: &Server, guid: &str, count: i64, wait_ms: i64) {
    assert_eq!(instance(s, guid).await, st("CRASHED", count));
    s.clock.advance_ms(wait_ms - 1);
    two_passes(s).await;
    assert_eq!(
        instance(s, guid).await,
        st("CRASHED", count),
        "crash #{count}: still waiting 1 ms before its {wait_ms} ms backoff ends"
    );
    s.clock.advance_ms(1);
    two_passes(s).await;
    assert_eq!(
        instance(s, guid).await,
        st("UNCLAIMED", count),
        "crash #{count}: restarted once its {wait_ms} ms backoff ended"
    );
}

/// The instance stays CRASHED with `count` however long convergence looks at it.
async fn given_up(s: &Server, guid: &str, count: i64) {
    for _ in 0..3 {
        s.clock.advance_ms(24 * 60 * MIN);
        two_passes(s).await;
        assert_eq!(instance(s, guid).await, st("CRASHED", count), "given up on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_schedule_three_immediate_then_doubling_backoff_to_16_minutes() {
    let s = server().await;
    let (status, d) = s.desire_lrp("crashy", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");

    // Crashes #1..#3: straight back to UNCLAIMED, no pass needed.
    for n in 1..=3 {
        assert_eq!(
            run_and_crash(&s, "crashy").await,
            st("UNCLAIMED", n),
            "crash #{n}"
        );
    }
    // Crash #4 onwards wait: 30 s, 60 s, 2, 4, 8 min, then 16 min for good.
    let waits = [
        30 * SEC,
        MIN,
        2 * MIN,
        4 * MIN,
        8 * MIN,
        16 * MIN,
        16 * MIN,
        16 * MIN,
    ];
    for (i, wait) in waits.into_iter().enumerate() {
        let n = 4 + i as i64;
        assert_eq!(run_and_crash(&s, "crashy").await, st("CRASHED", n), "crash #{n}");
        restarted_after(&s, "crashy", n, wait).await;
    }
}

/// Sets index 0's stored crash count behind the BBS's back (to skip ahead in the schedule).
async fn set_crash_count(s: &Server, guid: &str, count: i32) {
    let all = s.store.list_actual_lrps(&Default::default()).await.unwrap();
    let mut a: ActualLrp = all
        .into_iter()
        .find(|a| a.process_guid == guid && a.index == 0)
        .unwrap();
    a.crash_count = count;
    s.store
        .commit(Txn::one(Write::update(Record::ActualLrp(a))))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_200_crashes_the_instance_is_never_restarted() {
    let s = server().await;
    s.desire_lrp("doomed", 1).await;
    start_running(&s, "doomed").await;
    // Crashes #1..#198 as if they had happened (each is the same as #11 above).
    set_crash_count(&s, "doomed", 198).await;
    assert_eq!(crash(&s, "doomed").await, st("CRASHED", 199));
    restarted_after(&s, "doomed", 199, 16 * MIN).await;
    assert_eq!(run_and_crash(&s, "doomed").await, st("CRASHED", 200));
    given_up(&s, "doomed", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_five_minutes_running_starts_the_count_again() {
    let s = server().await;
    s.desire_lrp("steady", 1).await;
    for n in 1..=3 {
        assert_eq!(run_and_crash(&s, "steady").await, st("UNCLAIMED", n));
    }
    assert_eq!(run_and_crash(&s, "steady").await, st("CRASHED", 4));
    restarted_after(&s, "steady", 4, 30 * SEC).await;

    // Exactly 5 minutes RUNNING is not more than 5: the count goes on.
    start_running(&s, "steady").await;
    s.clock.advance_ms(5 * MIN);
    two_passes(&s).await;
    assert_eq!(crash(&s, "steady").await, st("CRASHED", 5));
    restarted_after(&s, "steady", 5, MIN).await;

    // Longer than that: crash #1 again, restarted at once.
    start_running(&s, "steady").await;
    s.clock.advance_ms(5 * MIN + 1);
    two_passes(&s).await;
    assert_eq!(crash(&s, "steady").await, st("UNCLAIMED", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lrp_with_a_crash_policy_follows_its_own_schedule() {
    let s = server().await;
    let mut body: Value = lrp("strict", 1);
    body["crash_policy"] = json!({"immediate_restarts": 0, "max_backoff_ms": 60_000, "max_restarts": 5});
    let (status, d) = s.post("/v1/desired_lrps", body).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");

    // No immediate restarts; backoff 30 s, then capped at 60 s; given up at crash #5.
    for (n, wait) in [(1, 30 * SEC), (2, MIN), (3, MIN), (4, MIN)] {
        assert_eq!(run_and_crash(&s, "strict").await, st("CRASHED", n), "crash #{n}");
        restarted_after(&s, "strict", n, wait).await;
    }
    assert_eq!(run_and_crash(&s, "strict").await, st("CRASHED", 5));
    given_up(&s, "strict", 5).await;

    // The policy changed in place applies to the next decision: with max_restarts 10 the
    // instance given up on at 5 is due its restart again (crash #5 waits the 60 s cap).
    let (status, d) = s
        .call(
            "PATCH",
            "/v1/desired_lrps/strict",
            Some(json!({"crash_policy": {"immediate_restarts": 0, "max_backoff_ms": 60_000, "max_restarts": 10}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    two_passes(&s).await;
    assert_eq!(
        instance(&s, "strict").await,
        st("UNCLAIMED", 5),
        "its crash was a day ago, far past the 60 s backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_an_instance_no_longer_desired_leaves_no_row_to_restart() {
    // Convergence far off: only the crash itself may clean up.
    let s = server_converging_every(Duration::from_secs(3600)).await;
    s.desire_lrp("gone", 1).await;
    start_running(&s, "gone").await;
    // The delete's retire ran while the instance was RUNNING (and asked its cell to stop
    // it): only the desired row is gone when the process exits on its own.
    let desired = s.store.get_desired_lrp("gone").await.unwrap().unwrap();
    s.store
        .commit(Txn::one(Write::delete(&Record::DesiredLrp(desired))))
        .await
        .unwrap();
    crash(&s, "gone").await;
    let (st, v) = s.get("/v1/actual_lrps?process_guid=gone").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!([]), "the crashed instance is retired, not restarted");
}
