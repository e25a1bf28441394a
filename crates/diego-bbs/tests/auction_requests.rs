//! The BBS asks the auctioneer (found through its lock) to place new work, and asks again for
//! work left waiting.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

type Calls = tokio::sync::mpsc::UnboundedReceiver<(String, Value)>;

/// The next start-request call, within 5 s.
async fn next_call(calls: &mut Calls) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .expect("no start request within 5 s")
        .unwrap()
}

/// The next `/v1/lrps` and `/v1/tasks` calls, in whichever order they come.
async fn lrps_and_tasks(calls: &mut Calls) -> (Value, Value) {
    let (mut lrps, mut tasks) = (None, None);
    while lrps.is_none() || tasks.is_none() {
        let (path, body) = next_call(calls).await;
        match path.as_str() {
            "/v1/lrps" => lrps = Some(body),
            "/v1/tasks" => tasks = Some(body),
            other => panic!("unexpected call {other}"),
        }
    }
    (lrps.unwrap(), tasks.unwrap())
}

fn indices(call: &Value, guid: &str) -> Vec<i64> {
    call.as_array()
        .unwrap()
        .iter()
        .find(|r| r["process_guid"] == guid)
        .unwrap_or_else(|| panic!("no request for {guid} in {call}"))["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn new_work_goes_to_the_lock_holder() {
    let s = start().await;
    let (url, mut calls) = fake_auctioneer().await;
    let (st, _) = s
        .post(
            "/v1/locks/auctioneer",
            json!({"owner": "a1", "value": url, "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    assert_eq!(s.desire_lrp("web", 3).await.0, StatusCode::CREATED);
    let (path, body) = next_call(&mut calls).await;
    assert_eq!(path, "/v1/lrps");
    assert_eq!(indices(&body, "web"), [0, 1, 2]);
    let r = &body[0];
    assert_eq!(r["domain"], "tests", "{r}");
    assert!(r["resource"]["memory_mb"].as_i64().unwrap() > 0, "{r}");
    assert!(
        r["placement_constraint"]["rootfs"]
            .as_str()
            .unwrap()
            .contains(':'),
        "{r}"
    );

    let (st, _) = s
        .call("PATCH", "/v1/desired_lrps/web", Some(json!({"instances": 5})))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = next_call(&mut calls).await;
    assert_eq!(indices(&body, "web"), [3, 4]);

    assert_eq!(s.desire_task("t1").await.0, StatusCode::CREATED);
    let (path, body) = next_call(&mut calls).await;
    assert_eq!(path, "/v1/tasks");
    assert_eq!(body[0]["task_guid"], "t1");

    // A crash that restarts at once asks for the index again.
    let (st, _) = s
        .post(
            "/v1/actual_lrps/web/1/claim",
            json!({"instance_key": ik("cell-a")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post(
            "/v1/actual_lrps/web/1/start",
            json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, a) = s
        .post(
            "/v1/actual_lrps/web/1/crash",
            json!({"instance_key": ik("cell-a"), "error_message": "boom"}),
        )
        .await;
    assert_eq!(
        (st, a["state"].as_str()),
        (StatusCode::OK, Some("UNCLAIMED")),
        "{a}"
    );
    let (_, body) = next_call(&mut calls).await;
    assert_eq!(indices(&body, "web"), [1]);

    // A rejected task that may be retried is not re-sent at once (the same cells would reject
    // it again): the periodic pass asks for it once it is stale.
    let (st, t) = s
        .post("/v1/tasks/t1/reject", json!({"rejection_reason": "cell full"}))
        .await;
    assert_eq!(
        (st, t["state"].as_str()),
        (StatusCode::OK, Some("PENDING")),
        "{t}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.try_recv().is_err(), "a rejected task was re-sent at once");
}

#[tokio::test]
async fn requests_wait_for_an_auctioneer_and_stale_work_is_asked_for_again() {
    let s = start_with(|c| {
        c.convergence.interval = Duration::from_millis(100);
    })
    .await;
    // No auctioneer yet: the requests wait (and are retried) until one holds the lock.
    assert_eq!(s.desire_lrp("web", 2).await.0, StatusCode::CREATED);
    assert_eq!(s.desire_task("t1").await.0, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (url, mut calls) = fake_auctioneer().await;
    s.post(
        "/v1/locks/auctioneer",
        json!({"owner": "a1", "value": url, "ttl_seconds": 600}),
    )
    .await;
    let (lrps, tasks) = lrps_and_tasks(&mut calls).await;
    assert_eq!(indices(&lrps, "web"), [0, 1]);
    assert_eq!(tasks[0]["task_guid"], "t1");

    // The auctioneer took them but nothing was placed: not asked again before they are
    // stale, then asked again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(calls.try_recv().is_err(), "re-sent before the work was stale");
    s.clock.advance_ms(31_000);
    let (lrps, tasks) = lrps_and_tasks(&mut calls).await;
    assert_eq!(indices(&lrps, "web"), [0, 1]);
    assert_eq!(tasks[0]["task_guid"], "t1");
}

#[tokio::test]
async fn a_crashed_instance_is_restarted_once_its_backoff_has_passed() {
    let s = start_with(|c| {
        c.convergence.interval = Duration::from_millis(100);
        c.convergence.rules.stale_unclaimed_ms = 300_000;
    })
    .await;
    let (url, mut calls) = fake_auctioneer().await;
    s.post(
        "/v1/locks/auctioneer",
        json!({"owner": "a1", "value": url, "ttl_seconds": 6000}),
    )
    .await;
    // No immediate restarts: the first crash waits 30 s (the minimum backoff).
    let mut body = lrp("strict", 1);
    body["crash_policy"] = json!({"immediate_restarts": 0});
    assert_eq!(s.post("/v1/desired_lrps", body).await.0, StatusCode::CREATED);
    next_call(&mut calls).await;
    s.post(
        "/v1/actual_lrps/strict/0/start",
        json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
    )
    .await;
    let (_, a) = s
        .post(
            "/v1/actual_lrps/strict/0/crash",
            json!({"instance_key": ik("cell-a"), "error_message": "Exit status 1"}),
        )
        .await;
    assert_eq!(a["state"], "CRASHED", "{a}");

    // Not before the backoff…
    s.clock.advance_ms(20_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(calls.try_recv().is_err(), "restarted before its backoff");
    let (_, v) = s.get("/v1/actual_lrps/strict/0").await;
    assert_eq!(v[0]["state"], "CRASHED");
    // …and after it: UNCLAIMED (crash count kept) and asked for.
    s.clock.advance_ms(11_000);
    let (path, body) = next_call(&mut calls).await;
    assert_eq!(path, "/v1/lrps");
    assert_eq!(indices(&body, "strict"), [0]);
    let (_, v) = s.get("/v1/actual_lrps/strict/0").await;
    assert_eq!(
        (v[0]["state"].as_str(), v[0]["crash_count"].as_i64()),
        (Some("UNCLAIMED"), Some(1)),
        "{v}"
    );
}
