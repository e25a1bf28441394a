//! The BBS lock through a real BBS: which BBS is active, and a deposed one's background
//! writes refused by the store (the fence), seen through `/v1/ping`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use diego_bbs::{BbsConfig, StoreConfig};
use diego_model::{Clock, ManualClock};
use diego_testkit::eventually;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn ping(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/v1/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_bbs_cannot_write_and_steps_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BbsConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        StoreConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        },
    );
    // In the store's (manual) clock the lock lives 60 s; this BBS renews it every 20 s of
    // real time, longer than the test runs.
    config.lock.ttl = Duration::from_secs(60);
    config.lock.retry_interval = Duration::from_secs(3600);
    config.lock.owner = "bbs-a".into();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = diego_bbs::open_store(&config, dyn_clock.clone()).await.unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let running = diego_bbs::start_with_store(config.clone(), store, dyn_clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let url = running.url();
    let http = reqwest::Client::new();
    eventually(WAIT, || async {
        let p = ping(&http, &url).await;
        if p["role"] == "active" && p["lock_holder"] == "bbs-a" {
            Ok(())
        } else {
            Err(p.to_string())
        }
    })
    .await;

    // Another process on the same file takes the lock once it has lapsed in the store's
    // clock; bbs-a has not renewed, so it still believes itself active.
    let other = diego_bbs::open_store(&config, dyn_clock).await.unwrap();
    clock.advance_ms(61_000);
    other
        .acquire_lock(diego_model::locks::BBS, "bbs-b", "http://elsewhere", 60)
        .await
        .unwrap();
    assert_eq!(ping(&http, &url).await["role"], "active");

    // A completed task with a callback: bbs-a's callback worker tries to mark it RESOLVING,
    // a fenced write the store refuses.
    let mut req = task_request("t1");
    req["task_definition"]["completion_callback_url"] = json!("http://127.0.0.1:9/cb");
    let call = |method: &'static str, path: String, body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .request(method.parse().unwrap(), format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        }
    };
    call("POST", "/v1/tasks".into(), req).await;
    call("POST", "/v1/tasks/t1/start".into(), json!({"cell_id": "cell-a"})).await;
    call(
        "POST",
        "/v1/tasks/t1/complete".into(),
        json!({"cell_id": "cell-a", "result": "42\n"}),
    )
    .await;

    let p = eventually(WAIT, || async {
        let p = ping(&http, &url).await;
        if p["role"] == "passive" {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await;
    assert_eq!(p["lock_holder"], "bbs-b", "{p}");
    assert_eq!(p["lock_holder_url"], "http://elsewhere", "{p}");
    let reason = p["last_step_down"].as_str().unwrap_or_default();
    assert!(reason.contains("bbs-b"), "the step-down names the holder: {p}");
    let task = other.get_task("t1").await.unwrap().unwrap();
    assert_eq!(
        task.state,
        diego_model::TaskState::Completed,
        "the deposed BBS's write did not land"
    );
}

#[tokio::test]
async fn a_single_bbs_is_active_and_says_so() {
    let s = start().await;
    let p = eventually(WAIT, || async {
        let (_, p) = s.get("/v1/ping").await;
        if p["role"] == "active" {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await;
    assert_eq!(p["available"], true);
    assert_eq!(p["owner"], p["lock_holder"], "{p}");
    assert_eq!(p["lock_holder_url"], s.url.as_str(), "{p}");
}
