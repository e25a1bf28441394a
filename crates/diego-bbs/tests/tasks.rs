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
