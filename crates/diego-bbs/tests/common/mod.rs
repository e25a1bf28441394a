//! Shared helpers for the BBS's HTTP tests: a real server on loopback, a tiny JSON client.
#![allow(dead_code)]

use std::sync::Arc;

use diego_bbs::{BbsConfig, RunningBbs, StoreConfig};
use diego_model::{Clock, ManualClock};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub shutdown: CancellationToken,
    /// The BBS's store, for writes made behind its back.
    pub store: diego_store::DynStore,
    _running: RunningBbs,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start() -> Server {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut BbsConfig)) -> Server {
    let mut config = BbsConfig::new("127.0.0.1:0".parse().unwrap(), StoreConfig::Memory);
    // The store's clock is manual: a lock TTL in its seconds that tests' jumps never pass.
    config.lock.ttl = std::time::Duration::from_secs(365 * 86_400);
    configure(&mut config);
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = diego_bbs::open_store(&config, dyn_clock.clone()).await.unwrap();
    let shutdown = CancellationToken::new();
    let running = diego_bbs::start_with_store(config, store.clone(), dyn_clock, shutdown.clone())
        .await
        .unwrap();
    Server {
        url: running.url(),
        http: reqwest::Client::new(),
        clock,
        shutdown,
        store,
        _running: running,
    }
}

impl Server {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body)).await
    }

    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn desire_task(&self, guid: &str) -> (StatusCode, Value) {
        self.post("/v1/tasks", task_request(guid)).await
    }

    pub async fn desire_lrp(&self, guid: &str, instances: i32) -> (StatusCode, Value) {
        self.post("/v1/desired_lrps", lrp(guid, instances)).await
    }

    pub async fn register_cell(&self, cell_id: &str, rep_url: &str) {
        let (st, body) = self
            .post(
                "/v1/cells",
                json!({"cell_presence": {"cell_id": cell_id, "rep_url": rep_url, "zone": "z1",
                        "capacity": {"memory_mb": 1024, "disk_mb": 1024, "containers": 10}},
                       "ttl_seconds": 30}),
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    }
}

pub fn task_request(guid: &str) -> Value {
    json!({
        "task_guid": guid,
        "domain": "tests",
        "task_definition": {
            "rootfs": "preloaded:busybox",
            "action": {"run": {"path": "sh", "args": ["-c", "echo 42 > /tmp/out"]}},
            "memory_mb": 64,
            "result_file": "/tmp/out"
        }
    })
}

pub fn lrp(guid: &str, instances: i32) -> Value {
    json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": "preloaded:busybox",
        "instances": instances,
        "action": {"run": {"path": "httpd", "args": ["-f", "-p", "8080"]}},
        "memory_mb": 128,
        "ports": [8080]
    })
}

pub fn ik(cell: &str) -> Value {
    json!({"instance_guid": format!("ig-{cell}"), "cell_id": cell})
}

pub fn net_info() -> Value {
    json!({"address": "127.0.0.1", "ports": [{"container_port": 8080, "host_port": 61001}]})
}

pub fn error_type(body: &Value) -> &str {
    body["type"].as_str().unwrap_or("<no type>")
}

/// A rep stand-in that records the paths the BBS calls.
pub async fn fake_rep() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(uri.path().to_string());
            axum::http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

/// One SSE frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE reader for tests.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Server {
    pub async fn subscribe(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut req = self.http.get(format!("{}{}", self.url, path));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse {
            resp,
            buf: String::new(),
        }
    }
}

impl Sse {
    /// Exactly `n` events, each awaited for up to 10 s (generous: CI machines are loaded), then
    /// a short look for any extra one, which is returned too so the caller's assertion shows it.
    pub async fn take(&mut self, n: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        while frames.len() < n {
            match self.next(std::time::Duration::from_secs(10)).await {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        if let Some(extra) = self.next(std::time::Duration::from_millis(300)).await {
            frames.push(extra);
        }
        frames
    }

    /// The next event, or `None` if none arrives within `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        frame.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if frame.event.is_empty() {
                    continue; // keep-alive comment
                }
                frame.data = serde_json::from_str(&data).unwrap();
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// An auctioneer stand-in that records each start-request call as (path, JSON body).
pub async fn fake_auctioneer() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = tx.send((uri.path().to_string(), v));
            axum::http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}
