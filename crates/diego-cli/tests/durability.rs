//! Durability: SIGKILL a real `diego bbs` in the middle of concurrent writes, restart it on
//! the same data dir, and check that every acknowledged write is there and nothing moved
//! backwards.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_bbs(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["bbs", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting diego bbs")
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/v1/ping")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("BBS at {url} never became ready");
}

/// Progress of a task, in lifecycle order; an acknowledged step must never be undone.
fn rank(state: &str) -> u8 {
    match state {
        "PENDING" => 1,
        "RUNNING" => 2,
        "COMPLETED" => 3,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut bbs = spawn_bbs(dir.path(), port);
    wait_ready(&http, &url).await;

    // task guid → highest acknowledged state; LRP guid → acknowledged instance count.
    let acked_tasks: Arc<Mutex<HashMap<String, &'static str>>> = Default::default();
    let acked_lrps: Arc<Mutex<HashMap<String, i64>>> = Default::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (http, url, tasks, lrps) = (http.clone(), url.clone(), acked_tasks.clone(), acked_lrps.clone());
        writers.push(tokio::spawn(async move {
            // Bounded: stops at the first failed request (the kill) or after 100,000 steps.
            for i in 0..100_000 {
                let guid = format!("w{w}-{i}");
                if w % 4 == 0 {
                    let body = json!({"process_guid": guid, "domain": "d", "rootfs": "preloaded:busybox",
                                      "instances": 2, "action": {"run": {"path": "sleep", "args": ["1"]}}});
                    match http
                        .post(format!("{url}/v1/desired_lrps"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => lrps.lock().unwrap().insert(guid, 2),
                        _ => return,
                    };
                    continue;
                }
                let body = json!({"task_guid": guid, "domain": "d", "task_definition": {
                    "rootfs": "preloaded:busybox", "action": {"run": {"path": "true"}}}});
                match http.post(format!("{url}/v1/tasks")).json(&body).send().await {
                    Ok(r) if r.status() == 201 => tasks.lock().unwrap().insert(guid.clone(), "PENDING"),
                    _ => return,
                };
                match http
                    .post(format!("{url}/v1/tasks/{guid}/start"))
                    .json(&json!({"cell_id": "c1"}))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => tasks.lock().unwrap().insert(guid.clone(), "RUNNING"),
                    _ => return,
                };
                let body = json!({"cell_id": "c1", "result": format!("r{i}")});
                match http
                    .post(format!("{url}/v1/tasks/{guid}/complete"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => tasks.lock().unwrap().insert(guid, "COMPLETED"),
                    _ => return,
                };
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    bbs.kill().unwrap(); // SIGKILL
    bbs.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let tasks = acked_tasks.lock().unwrap().clone();
    let lrps = acked_lrps.lock().unwrap().clone();
    assert!(
        tasks.len() > 100,
        "the writers made progress before the kill ({} tasks)",
        tasks.len()
    );

    let mut bbs = spawn_bbs(dir.path(), port);
    wait_ready(&http, &url).await;
    let stored: Vec<Value> = http
        .get(format!("{url}/v1/tasks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: HashMap<&str, &Value> = stored
        .iter()
        .map(|t| (t["task_guid"].as_str().unwrap(), t))
        .collect();
    for (guid, state) in &tasks {
        let t = stored
            .get(guid.as_str())
            .unwrap_or_else(|| panic!("acknowledged task {guid} lost"));
        let now = t["state"].as_str().unwrap();
        assert!(
            rank(now) >= rank(state),
            "task {guid} moved backwards: acknowledged {state}, found {now}"
        );
        if *state == "COMPLETED" {
            assert!(
                t["result"].as_str().unwrap().starts_with('r'),
                "result of {guid} kept"
            );
        }
    }
    let actuals: Vec<Value> = http
        .get(format!("{url}/v1/actual_lrps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (guid, n) in &lrps {
        let r = http
            .get(format!("{url}/v1/desired_lrps/{guid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged desired LRP {guid} lost");
        let count = actuals
            .iter()
            .filter(|a| a["process_guid"] == guid.as_str())
            .count() as i64;
        assert_eq!(
            count, *n,
            "instances of {guid} (desired and instances commit together)"
        );
    }

    // The store opened cleanly and keeps working: the change feed resumes and new writes land.
    let r = http
        .post(format!("{url}/v1/tasks"))
        .json(&json!({"task_guid": "after-restart", "domain": "d",
        "task_definition": {"rootfs": "preloaded:busybox", "action": {"run": {"path": "true"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    bbs.kill().unwrap();
    bbs.wait().unwrap();
}
