//! Bad input: named field errors, and no panic or 5xx whatever is thrown at the API.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn several_bad_fields_get_one_400_naming_each() {
    let s = start().await;
    let body = json!({
        "process_guid": "bad guid!",
        "domain": "",
        "rootfs": "no-scheme",
        "instances": -1,
        "memory_mb": -5,
        "ports": [70000],
        "annotation": "x".repeat(10 * 1024 + 1),
        "action": {"run": {"path": ""}, "try": {"action": {"run": {"path": "a"}}}}
    });
    let (st, r) = s.post("/v1/desired_lrps", body).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::BAD_REQUEST, "InvalidRecord"),
        "{r}"
    );
    let fields: Vec<&str> = r["field_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "process_guid",
            "domain",
            "rootfs",
            "instances",
            "action",
            "memory_mb",
            "ports[0]",
            "annotation"
        ]
    );
    for name in ["process_guid", "instances", "memory_mb", "annotation"] {
        assert!(
            r["message"].as_str().unwrap().contains(name),
            "message names {name}: {}",
            r["message"]
        );
    }
    // Nothing about an invalid request is stored.
    assert_eq!(s.get("/v1/desired_lrps").await.1, json!([]));
    assert_eq!(s.get("/v1/actual_lrps").await.1, json!([]));

    let (st, r) = s
        .post(
            "/v1/tasks",
            json!({"task_guid": "ok", "domain": "d", "task_definition": {
                "rootfs": "preloaded:busybox", "cpu_weight": 101, "disk_mb": -1,
                "action": {"timeout": {"timeout_ms": 0, "action": {"run": {"path": "x"}}}}}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let fields: Vec<&str> = r["field_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "task_definition.action.timeout.timeout_ms",
            "task_definition.disk_mb",
            "task_definition.cpu_weight"
        ]
    );
    assert_eq!(s.get("/v1/tasks").await.1, json!([]));
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let s = start().await;
    let (st, r) = s
        .post(
            "/v1/desired_lrps",
            json!({"process_guid": "a", "instances": "three"}),
        )
        .await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRequest"));
    assert_eq!(r["field_errors"][0]["field"], "instances");
}

#[tokio::test]
async fn a_misspelt_field_is_refused_naming_it_and_changes_nothing() {
    let s = start().await;
    let mut body = lrp("typo", 1);
    body["intances"] = json!(3);
    let (st, r) = s.post("/v1/desired_lrps", body).await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRequest"));
    assert_eq!(r["field_errors"][0]["field"], "intances", "{r}");
    assert_eq!(
        r["field_errors"][0]["message"], "unknown field \"intances\"",
        "{r}"
    );
    assert_eq!(s.get("/v1/desired_lrps/typo").await.0, StatusCode::NOT_FOUND);

    s.desire_lrp("typo", 1).await;
    let (st, r) = s
        .call(
            "PATCH",
            "/v1/desired_lrps/typo",
            Some(json!({"instances": 2, "crash_policy": {"max_restart": 5}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(r["field_errors"][0]["field"], "crash_policy.max_restart", "{r}");
    assert_eq!(s.get("/v1/desired_lrps/typo").await.1["instances"], 1);
}

#[tokio::test]
async fn malformed_json_oversized_bodies_and_unknown_routes() {
    let s = start_with(|c| c.max_body_bytes = 64 * 1024).await;
    let (st, body) = s.raw("POST", "/v1/tasks", b"{\"task_guid\":".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["type"],
        "InvalidJSON"
    );

    let huge = format!("{{\"task_guid\":\"{}\"}}", "a".repeat(100 * 1024));
    let (st, body) = s.raw("POST", "/v1/tasks", huge.into_bytes()).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["type"],
        "PayloadTooLarge"
    );

    let (st, r) = s.get("/v1/nope").await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    let (st, r) = s.call("PUT", "/v1/tasks", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_type(&r), "InvalidRequest");
    let (st, r) = s.get("/v1/actual_lrps/web/notanumber").await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRequest"));
}

/// Field names the generator favours, so random JSON reaches past the top level.
const KEYS: &[&str] = &[
    "task_guid",
    "domain",
    "task_definition",
    "rootfs",
    "action",
    "run",
    "path",
    "args",
    "serial",
    "actions",
    "timeout",
    "timeout_ms",
    "try",
    "parallel",
    "codependent",
    "emit_progress",
    "download",
    "from",
    "to",
    "process_guid",
    "instances",
    "memory_mb",
    "disk_mb",
    "ports",
    "routes",
    "annotation",
    "check_definition",
    "checks",
    "tcp_check",
    "port",
    "instance_key",
    "instance_guid",
    "cell_id",
    "net_info",
    "address",
    "error_message",
    "rejection_reason",
    "failure_reason",
    "result",
    "failed",
    "cell_presence",
    "rep_url",
    "capacity",
    "ttl_seconds",
    "metric_tags",
    "crash_policy",
    "env",
    "name",
    "value",
];

fn field_names(r: &Value) -> Vec<String> {
    r["field_errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_invalid_crash_policy_is_refused_naming_the_field() {
    let s = start().await;
    for (policy, field) in [
        (json!({"max_backoff_ms": 29_999}), "crash_policy.max_backoff_ms"),
        (
            json!({"max_backoff_ms": 24 * 3_600_000 + 1}),
            "crash_policy.max_backoff_ms",
        ),
        (json!({"max_restarts": 0}), "crash_policy.max_restarts"),
        (
            json!({"immediate_restarts": 6, "max_restarts": 5}),
            "crash_policy.immediate_restarts",
        ),
        (
            json!({"immediate_restarts": 201}),
            "crash_policy.immediate_restarts",
        ),
        (
            json!({"immediate_restarts": 11, "max_restarts": 500}),
            "crash_policy.immediate_restarts",
        ),
    ] {
        let mut body = lrp("policed", 1);
        body["crash_policy"] = policy.clone();
        let (st, r) = s.post("/v1/desired_lrps", body).await;
        assert_eq!(
            (st, error_type(&r)),
            (StatusCode::BAD_REQUEST, "InvalidRecord"),
            "{policy}: {r}"
        );
        assert_eq!(field_names(&r), [field], "{policy}: {r}");
        assert!(r["message"].as_str().unwrap().contains(field), "{r}");
        assert_eq!(s.get("/v1/desired_lrps").await.1, json!([]), "nothing created");
        assert_eq!(s.get("/v1/actual_lrps").await.1, json!([]), "nothing created");
    }

    // A valid one is stored and shown; an update replaces it, `{}` resets it, and an
    // invalid update is refused without changing anything.
    let mut body = lrp("policed", 1);
    body["crash_policy"] = json!({"immediate_restarts": 0, "max_backoff_ms": 60_000, "max_restarts": 5});
    let (st, d) = s.post("/v1/desired_lrps", body).await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    assert_eq!(
        d["crash_policy"],
        json!({"immediate_restarts": 0, "max_backoff_ms": 60_000, "max_restarts": 5})
    );
    let patch = |b: Value| s.call("PATCH", "/v1/desired_lrps/policed", Some(b));
    let (st, r) = patch(json!({"crash_policy": {"max_restarts": 0}})).await;
    assert_eq!(
        (st, field_names(&r)),
        (
            StatusCode::BAD_REQUEST,
            vec!["crash_policy.max_restarts".to_string()]
        ),
        "{r}"
    );
    let (_, d) = s.get("/v1/desired_lrps/policed").await;
    assert_eq!(d["crash_policy"]["max_restarts"], 5, "unchanged: {d}");
    let (st, d) = patch(json!({"crash_policy": {"max_restarts": 10}})).await;
    assert_eq!(
        (st, &d["crash_policy"]),
        (StatusCode::OK, &json!({"max_restarts": 10})),
        "{d}"
    );
    let (st, d) = patch(json!({"crash_policy": {}})).await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert!(d.get("crash_policy").is_none(), "back to the defaults: {d}");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9_:/ -]{0,12}".prop_map(Value::from),
        Just(Value::from("preloaded:busybox")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Random bytes and random JSON at every documented endpoint never produce a 5xx or a
/// dropped connection, and every error has Diego's error shape.
#[test]
fn random_input_never_breaks_an_endpoint() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(start());
    let s = &s;
    let mut endpoints: Vec<(String, String)> = diego_bbs::openapi::OPERATIONS
        .iter()
        .filter(|op| !op.1.starts_with("/v1/events"))
        .map(|(m, p, ..)| {
            (
                m.to_uppercase(),
                p.replace("{task_guid}", "t")
                    .replace("{process_guid}", "p")
                    .replace("{index}", "0")
                    .replace("{cell_id}", "c"),
            )
        })
        .collect();
    endpoints.dedup();
    // Some records to act on, so lifecycle verbs reach their controllers.
    rt.block_on(async {
        s.desire_task("t").await;
        s.desire_lrp("p", 1).await;
    });

    let sent = std::cell::Cell::new(0usize);
    let check = |method: &str, path: &str, body: Vec<u8>| -> Result<(), TestCaseError> {
        sent.set(sent.get() + 1);
        let (st, text) = rt.block_on(s.raw(method, path, body));
        prop_assert!(st.as_u16() < 500, "{method} {path} → {st}: {text}");
        if !st.is_success() {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{method} {path}: non-JSON error {text:?}: {e}")))?;
            prop_assert!(
                v["type"].is_string() && v["message"].is_string(),
                "{method} {path}: {v}"
            );
        }
        Ok(())
    };

    // A fresh runner per run: a runner counts cases across runs.
    let runner = || {
        TestRunner::new(Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        })
    };
    for (method, path) in &endpoints {
        runner()
            .run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
                check(method, path, bytes)
            })
            .unwrap();
        runner()
            .run(&json_value(), |v| {
                check(method, path, serde_json::to_vec(&v).unwrap())
            })
            .unwrap();
    }
    assert!(
        sent.get() >= endpoints.len() * 96,
        "sent {} requests to {} endpoints",
        sent.get(),
        endpoints.len()
    );
    // The server is still healthy.
    let (st, _) = rt.block_on(s.get("/v1/ping"));
    assert_eq!(st, StatusCode::OK);
}
