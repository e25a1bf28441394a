//! The task lifecycle over HTTP (diego-spec §4.1).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn lifecycle_desire_start_complete_resolve_delete() {
    let s = start().await;
    let (st, t) = s.desire_task("t1").await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["state"], "PENDING");
    assert_eq!(t["task_definition"]["result_file"], "/tmp/out");

    let (st, r) = s.post("/v1/tasks/t1/start", json!({"cell_id": "cell-a"})).await;
    assert_eq!((st, &r["should_start"]), (StatusCode::OK, &json!(true)));
    let (_, t) = s.get("/v1/tasks/t1").await;
    assert_eq!(
        (t["state"].as_str(), t["cell_id"].as_str()),
        (Some("RUNNING"), Some("cell-a"))
    );

    // Starting again on the same cell: no, don't start it twice. On another cell: refused.
    let (st, r) = s.post("/v1/tasks/t1/start", json!({"cell_id": "cell-a"})).await;
    assert_eq!((st, &r["should_start"]), (StatusCode::OK, &json!(false)));
    let (st, r) = s.post("/v1/tasks/t1/start", json!({"cell_id": "cell-b"})).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "InvalidStateTransition")
    );

    let (st, r) = s
        .post(
            "/v1/tasks/t1/complete",
            json!({"cell_id": "cell-b", "result": "nope"}),
        )
        .await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "RunningOnDifferentCell")
    );

    let (st, t) = s
        .post(
            "/v1/tasks/t1/complete",
            json!({"cell_id": "cell-a", "result": "42\n"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(
        (t["state"].as_str(), t["result"].as_str(), t["failed"].as_bool()),
        (Some("COMPLETED"), Some("42\n"), Some(false))
    );

    // Delete needs RESOLVING first.
    let (st, r) = s.call("DELETE", "/v1/tasks/t1", None).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "InvalidStateTransition")
    );
    let (st, t) = s.post("/v1/tasks/t1/resolving", json!({})).await;
    assert_eq!((st, t["state"].as_str()), (StatusCode::OK, Some("RESOLVING")));
    let (st, r) = s.post("/v1/tasks/t1/resolving", json!({})).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "InvalidStateTransition"),
        "only one resolver"
    );
    let (st, _) = s.call("DELETE", "/v1/tasks/t1", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, r) = s.get("/v1/tasks/t1").await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
}

#[tokio::test]
async fn desiring_an_existing_guid_is_resource_exists() {
    let s = start().await;
    assert_eq!(s.desire_task("dup").await.0, StatusCode::CREATED);
    let (st, r) = s.desire_task("dup").await;
    assert_eq!((st, error_type(&r)), (StatusCode::CONFLICT, "ResourceExists"));
}

#[tokio::test]
async fn cancel_from_pending_and_running() {
    let s = start().await;
    s.desire_task("p").await;
    s.desire_task("r").await;
    s.post("/v1/tasks/r/start", json!({"cell_id": "cell-a"})).await;
    for guid in ["p", "r"] {
        let (st, t) = s.post(&format!("/v1/tasks/{guid}/cancel"), json!({})).await;
        assert_eq!(st, StatusCode::OK, "{t}");
        assert_eq!(t["state"], "COMPLETED");
        assert_eq!(t["failed"], true);
        assert_eq!(t["failure_reason"], "task was cancelled");
    }
    let (st, r) = s.post("/v1/tasks/p/cancel", json!({})).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "InvalidStateTransition")
    );
}

#[tokio::test]
async fn cancel_of_a_running_task_notifies_its_cell() {
    let (rep_url, mut calls) = fake_rep().await;
    let s = start().await;
    s.register_cell("cell-a", &rep_url).await;
    s.desire_task("c").await;
    s.post("/v1/tasks/c/start", json!({"cell_id": "cell-a"})).await;
    s.post("/v1/tasks/c/cancel", json!({})).await;
    let path = tokio::time::timeout(std::time::Duration::from_secs(5), calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, "/v1/tasks/c/cancel");
}

#[tokio::test]
async fn reject_counts_then_fails_after_max_retries() {
    let s = start().await;
    s.desire_task("rj").await;
    for n in 1..=3 {
        let (st, t) = s
            .post(
                "/v1/tasks/rj/reject",
                json!({"rejection_reason": "insufficient resources"}),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            (t["state"].as_str(), t["rejection_count"].as_u64()),
            (Some("PENDING"), Some(n))
        );
    }
    let (_, t) = s
        .post(
            "/v1/tasks/rj/reject",
            json!({"rejection_reason": "insufficient resources"}),
        )
        .await;
    assert_eq!(t["state"], "COMPLETED");
    assert_eq!(t["failed"], true);
    assert_eq!(t["failure_reason"], "insufficient resources");
}

#[tokio::test]
async fn lists_filter_by_domain_cell_and_state() {
    let s = start().await;
    for g in ["a", "b", "c"] {
        s.desire_task(g).await;
    }
    let mut other = task_request("d");
    other["domain"] = json!("other");
    s.post("/v1/tasks", other).await;
    s.post("/v1/tasks/b/start", json!({"cell_id": "cell-x"})).await;

    let guids = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_guid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(guids(s.get("/v1/tasks").await.1), ["a", "b", "c", "d"]);
    assert_eq!(guids(s.get("/v1/tasks?domain=other").await.1), ["d"]);
    assert_eq!(guids(s.get("/v1/tasks?cell_id=cell-x").await.1), ["b"]);
    assert_eq!(guids(s.get("/v1/tasks?state=PENDING").await.1), ["a", "c", "d"]);
    let (st, r) = s.get("/v1/tasks?state=DONE").await;
    assert_eq!(
        (st, r["field_errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("state"))
    );
}

/// Many cells race to start one task: exactly one wins.
#[tokio::test]
async fn racing_starts_have_one_winner() {
    let s = std::sync::Arc::new(start().await);
    s.desire_task("race").await;
    let mut handles = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let (st, r) = s
                .post("/v1/tasks/race/start", json!({"cell_id": format!("cell-{i}")}))
                .await;
            st == StatusCode::OK && r["should_start"] == json!(true)
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += usize::from(h.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// A callback receiver that answers each POST with the next status of `statuses` (then 200)
/// and hands every body it receives to the test.
async fn callback_receiver(
    statuses: Vec<u16>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(statuses.into_iter()));
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (tx, statuses) = (tx.clone(), statuses.clone());
        async move {
            let _ = tx.send(serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default());
            let code = statuses.lock().unwrap().next().unwrap_or(200);
            axum::http::StatusCode::from_u16(code).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn gone(s: &Server, guid: &str) -> bool {
    for _ in 0..200 {
        if s.get(&format!("/v1/tasks/{guid}")).await.0 == StatusCode::NOT_FOUND {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn completion_callback_receives_the_result_then_the_task_is_deleted() {
    let (url, mut bodies) = callback_receiver(vec![]).await;
    let s = start().await;
    let mut req = task_request("cb");
    req["task_definition"]["completion_callback_url"] = json!(url);
    req["task_definition"]["annotation"] = json!("note");
    s.post("/v1/tasks", req).await;
    s.post("/v1/tasks/cb/start", json!({"cell_id": "cell-a"})).await;
    s.post(
        "/v1/tasks/cb/complete",
        json!({"cell_id": "cell-a", "result": "42"}),
    )
    .await;
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["task_guid"], "cb");
    assert_eq!(body["result"], "42");
    assert_eq!(body["failed"], false);
    assert_eq!(body["annotation"], "note");
    assert!(gone(&s, "cb").await, "the resolved task is deleted");
}

#[tokio::test]
async fn a_busy_callback_receiver_is_retried_and_a_cancelled_task_calls_back_too() {
    let (url, mut bodies) = callback_receiver(vec![503, 504]).await;
    let s = start().await;
    let mut req = task_request("busy");
    req["task_definition"]["completion_callback_url"] = json!(url);
    s.post("/v1/tasks", req).await;
    s.post("/v1/tasks/busy/cancel", json!({})).await;
    for _ in 0..3 {
        let body = tokio::time::timeout(std::time::Duration::from_secs(10), bodies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (body["failed"].as_bool(), body["failure_reason"].as_str()),
            (Some(true), Some("task was cancelled"))
        );
    }
    assert!(gone(&s, "busy").await);
}

#[tokio::test]
async fn an_unreachable_callback_leaves_the_task_resolving() {
    let s = start().await;
    let mut req = task_request("lost");
    // Nothing listens on port 1 of loopback.
    req["task_definition"]["completion_callback_url"] = json!("http://127.0.0.1:1/done");
    s.post("/v1/tasks", req).await;
    s.post("/v1/tasks/lost/cancel", json!({})).await;
    let mut state = String::new();
    for _ in 0..200 {
        state = s.get("/v1/tasks/lost").await.1["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state == "RESOLVING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(state, "RESOLVING");
}
