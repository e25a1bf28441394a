//! The OpenAPI document covers every route, and every documented route is served.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn every_route_constant_is_documented_and_served() {
    let s = start().await;
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    use diego_client::routes::bbs as r;
    let constants = [
        r::PING,
        r::OPENAPI,
        r::METRICS,
        r::TASKS,
        r::TASK,
        r::TASK_START,
        r::TASK_COMPLETE,
        r::TASK_REJECT,
        r::TASK_FAIL,
        r::TASK_CANCEL,
        r::TASK_RESOLVING,
        r::DESIRED_LRPS,
        r::DESIRED_LRP,
        r::SCHEDULING_INFOS,
        r::SCHEDULING_INFO,
        r::ACTUAL_LRPS,
        r::ACTUAL_LRP,
        r::ACTUAL_LRP_CLAIM,
        r::ACTUAL_LRP_START,
        r::ACTUAL_LRP_CRASH,
        r::ACTUAL_LRP_FAIL,
        r::PLACEMENT_FAILURES,
        r::ACTUAL_LRP_REMOVE,
        r::ACTUAL_LRP_RETIRE,
        r::ACTUAL_LRP_EVACUATE_RUNNING,
        r::ACTUAL_LRP_EVACUATE_CLAIMED,
        r::ACTUAL_LRP_EVACUATE_CRASHED,
        r::ACTUAL_LRP_EVACUATE_STOPPED,
        r::ACTUAL_LRP_REMOVE_EVACUATING,
        r::DOMAINS,
        r::CELLS,
        r::CELL,
        r::EVENTS_LRPS,
        r::EVENTS_TASKS,
    ];
    for c in constants {
        assert!(paths.contains_key(c), "{c} is not documented");
    }
    // Every documented operation is routed: it never falls through to the unknown-route or
    // wrong-method answers.
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if path.starts_with("/v1/events") {
                continue;
            }
            let concrete = path
                .replace("{task_guid}", "x")
                .replace("{process_guid}", "x")
                .replace("{index}", "0")
                .replace("{cell_id}", "x");
            let (st, body) = s.raw(&method.to_uppercase(), &concrete, b"{}".to_vec()).await;
            assert_ne!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no such route"), "{method} {path} is not routed");
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_and_records_by_state() {
    let s = start().await;
    s.desire_task("m1").await;
    s.desire_lrp("m2", 2).await;
    let resp = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("bbs_requests_total{method=\"POST\",route=\"/v1/tasks\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(text.contains("bbs_tasks{state=\"PENDING\"} 1"), "{text}");
    assert!(
        text.contains("bbs_actual_lrps{state=\"UNCLAIMED\",presence=\"ORDINARY\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("bbs_request_duration_seconds_count{method=\"POST\",route=\"/v1/tasks\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn domains_and_cells() {
    let s = start().await;
    let (st, _) = s
        .post(
            "/v1/domains",
            serde_json::json!({"domain": "cf-apps", "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, d) = s.get("/v1/domains").await;
    assert_eq!(d[0]["domain"], "cf-apps");
    s.clock.advance_ms(61_000);
    assert_eq!(
        s.get("/v1/domains").await.1,
        serde_json::json!([]),
        "expired domains are not fresh"
    );

    s.register_cell("cell-1", "http://127.0.0.1:1801").await;
    let (_, c) = s.get("/v1/cells").await;
    assert_eq!(c[0]["cell_presence"]["cell_id"], "cell-1");
    s.clock.advance_ms(31_000);
    assert_eq!(
        s.get("/v1/cells").await.1,
        serde_json::json!([]),
        "presence lapses after its TTL"
    );
    s.register_cell("cell-1", "http://127.0.0.1:1801").await;
    let (st, _) = s.call("DELETE", "/v1/cells/cell-1", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, r) = s.call("DELETE", "/v1/cells/cell-1", None).await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    let (st, r) = s.post("/v1/cells", serde_json::json!({"cell_presence": {"cell_id": "", "rep_url": "x", "capacity": {"memory_mb": -1, "disk_mb": 0, "containers": 0}}, "ttl_seconds": 0})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(r["field_errors"].as_array().unwrap().len(), 4, "{r}");
}

/// Every `$ref` in the document resolves, and each schema an operation names is a real schema
/// generated from the model (not a placeholder).
#[tokio::test]
async fn schemas_are_complete_and_every_reference_resolves() {
    let s = start().await;
    let (_, doc) = s.get("/openapi.json").await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap().to_string());
                    }
                    refs(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 40, "{} refs", all.len());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd ref {r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    let task = &schemas["Task"];
    for field in ["task_guid", "state", "task_definition", "rejection_count"] {
        assert!(
            task["properties"].get(field).is_some(),
            "Task schema lacks {field}: {task}"
        );
    }
    let desired = &schemas["DesiredLrp"]["properties"];
    assert!(
        desired.get("instances").is_some() && desired.get("action").is_some(),
        "{desired}"
    );
}

#[tokio::test]
async fn locks_elect_one_holder_renew_expire_and_release() {
    let s = start().await;
    let take = |owner: &str| serde_json::json!({"owner": owner, "value": format!("http://{owner}"), "ttl_seconds": 15});
    let (st, held) = s.post("/v1/locks/auctioneer", take("a1")).await;
    assert_eq!(st, StatusCode::OK, "{held}");
    assert_eq!(
        (held["owner"].as_str(), held["value"].as_str()),
        (Some("a1"), Some("http://a1"))
    );
    let (st, r) = s.post("/v1/locks/auctioneer", take("a2")).await;
    assert_eq!((st, error_type(&r)), (StatusCode::CONFLICT, "LockCollision"));
    let (_, holder) = s.get("/v1/locks/auctioneer").await;
    assert_eq!(holder["owner"], "a1");

    // The holder renews; without renewal the lock lapses and another owner takes it.
    s.clock.advance_ms(10_000);
    assert_eq!(s.post("/v1/locks/auctioneer", take("a1")).await.0, StatusCode::OK);
    s.clock.advance_ms(10_000);
    assert_eq!(
        s.post("/v1/locks/auctioneer", take("a2")).await.0,
        StatusCode::CONFLICT
    );
    s.clock.advance_ms(6_000);
    let (st, held) = s.post("/v1/locks/auctioneer", take("a2")).await;
    assert_eq!((st, held["owner"].as_str()), (StatusCode::OK, Some("a2")));

    // Only the holder releases.
    let (st, r) = s.call("DELETE", "/v1/locks/auctioneer?owner=a1", None).await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    let (st, _) = s.call("DELETE", "/v1/locks/auctioneer?owner=a2", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, r) = s.get("/v1/locks/auctioneer").await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));

    let (st, r) = s
        .post(
            "/v1/locks/auctioneer",
            serde_json::json!({"owner": "", "ttl_seconds": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(r["field_errors"].as_array().unwrap().len(), 2, "{r}");
}
