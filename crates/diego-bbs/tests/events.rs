//! Event streams: order, resumption with Last-Event-ID, and explicit resync.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_subscriber_sees_every_task_change_in_order() {
    let s = start().await;
    let mut events = s.subscribe("/v1/events/tasks", None).await;
    s.desire_task("e1").await;
    s.post("/v1/tasks/e1/start", json!({"cell_id": "cell-a"})).await;
    s.post(
        "/v1/tasks/e1/complete",
        json!({"cell_id": "cell-a", "result": "ok"}),
    )
    .await;
    s.post("/v1/tasks/e1/resolving", json!({})).await;
    s.call("DELETE", "/v1/tasks/e1", None).await;
    // An LRP change must not show up on the task stream.
    s.desire_lrp("not-a-task", 1).await;
    s.desire_task("e2").await;

    let mut seen = Vec::new();
    let mut ids = Vec::new();
    for f in events.take(6).await {
        let state = f
            .data
            .get("after")
            .or(f.data.get("task"))
            .and_then(|t| t["state"].as_str())
            .unwrap_or("")
            .to_string();
        seen.push(format!("{} {}", f.event, state));
        ids.push(f.id.unwrap());
    }
    assert_eq!(
        seen,
        [
            "task_created PENDING",
            "task_changed RUNNING",
            "task_changed COMPLETED",
            "task_changed RESOLVING",
            "task_removed RESOLVING",
            "task_created PENDING"
        ]
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
}

#[tokio::test]
async fn lrp_stream_carries_desired_actual_and_crash_events() {
    let s = start().await;
    let mut events = s.subscribe("/v1/events/lrps", None).await;
    s.desire_lrp("web", 2).await;
    s.post(
        "/v1/actual_lrps/web/0/start",
        json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
    )
    .await;
    s.post(
        "/v1/actual_lrps/web/0/crash",
        json!({"instance_key": ik("cell-a"), "error_message": "Exit status 137"}),
    )
    .await;
    s.call("PATCH", "/v1/desired_lrps/web", Some(json!({"instances": 1})))
        .await;

    let mut names = Vec::new();
    for f in events.take(8).await {
        if f.event == "actual_lrp_crashed" {
            assert_eq!(f.data["crash_count"], 1);
            assert_eq!(f.data["crash_reason"], "Exit status 137");
            assert_eq!(f.data["process_guid"], "web");
            assert_eq!(f.id, None, "only the last event of a change carries the id");
        }
        names.push(f.event);
    }
    assert_eq!(
        names,
        [
            "desired_lrp_created",
            "actual_lrp_created",
            "actual_lrp_created",
            "actual_lrp_changed",
            "actual_lrp_crashed",
            "actual_lrp_changed",
            "desired_lrp_changed",
            "actual_lrp_removed"
        ]
    );
}

#[tokio::test]
async fn reconnecting_with_last_event_id_resumes_without_loss() {
    let s = start().await;
    let mut first = s.subscribe("/v1/events/tasks", None).await;
    for g in ["r1", "r2", "r3"] {
        s.desire_task(g).await;
    }
    let mut last = None;
    let mut got = Vec::new();
    for _ in 0..2 {
        let f = first.next(WAIT).await.unwrap();
        got.push(f.data["task"]["task_guid"].as_str().unwrap().to_string());
        last = f.id;
    }
    drop(first);
    // Changes made while disconnected are delivered on resume.
    for g in ["r4", "r5"] {
        s.desire_task(g).await;
    }
    let mut resumed = s.subscribe("/v1/events/tasks", last).await;
    for f in resumed.take(3).await {
        got.push(f.data["task"]["task_guid"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["r1", "r2", "r3", "r4", "r5"]);
}

#[tokio::test]
async fn resuming_from_beyond_the_retained_history_gets_a_resync() {
    let s = start_with(|c| c.event_retention = 5).await;
    s.desire_task("old").await;
    let mut first = s.subscribe("/v1/events/tasks", Some(0)).await;
    let f = first.next(WAIT).await.unwrap();
    let position = f.id.unwrap();
    drop(first);
    for i in 0..20 {
        s.desire_task(&format!("n{i}")).await;
    }
    let mut resumed = s.subscribe("/v1/events/tasks", Some(position)).await;
    let f = resumed.next(WAIT).await.unwrap();
    assert_eq!(f.event, "resync", "{f:?}");
    assert!(f.data["reason"].as_str().unwrap().contains("no longer retained"));
    // After the resync the stream continues live.
    s.desire_task("after").await;
    let f = resumed.next(WAIT).await.unwrap();
    assert_eq!(
        (f.event.as_str(), f.data["task"]["task_guid"].as_str()),
        ("task_created", Some("after"))
    );
}

#[tokio::test]
async fn a_bad_last_event_id_is_refused() {
    let s = start().await;
    let resp = s
        .http
        .get(format!("{}/v1/events/lrps", s.url))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
