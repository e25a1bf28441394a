//! Two real `diego bbs` processes on one SQLite store: one holds the BBS lock, the other is
//! passive; SIGKILL the active one and the other takes the lock over and goes on converging.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LOCK_TTL_S: u64 = 3;
const RETRY_S: u64 = 1;

fn spawn_bbs(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["bbs", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--lock-ttl", &LOCK_TTL_S.to_string()])
        .args(["--lock-retry-interval", &RETRY_S.to_string()])
        .args(["--convergence-interval", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting diego bbs")
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn ping(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(format!("{url}/v1/ping"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn until<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(http: &reqwest::Client, method: &str, url: String, body: Value) -> Value {
    let r = http
        .request(method.parse().unwrap(), &url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passive_bbs_takes_over_when_the_active_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [diego_testkit::free_port(), diego_testkit::free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let mut procs = Killed(ports.iter().map(|&p| spawn_bbs(dir.path(), p)).collect());
    let http = reqwest::Client::new();

    // Exactly one is active, and both name it as the holder.
    let active = until(
        "one active BBS and one passive",
        Duration::from_secs(30),
        async || {
            let a = ping(&http, &urls[0]).await?;
            let b = ping(&http, &urls[1]).await?;
            let roles = (a["role"].as_str()?, b["role"].as_str()?);
            let holder = a["lock_holder"].as_str()?;
            if holder != b["lock_holder"].as_str()? {
                return None;
            }
            match roles {
                ("active", "passive") if holder == a["owner"] => Some(0),
                ("passive", "active") if holder == b["owner"] => Some(1),
                _ => None,
            }
        },
    )
    .await;
    let passive = 1 - active;
    let p = ping(&http, &urls[passive]).await.unwrap();
    assert_eq!(p["lock_holder_url"], urls[active].as_str(), "{p}");

    // An instance claimed by a cell whose presence lapses after the active BBS is gone:
    // only the survivor's converger can put it back up for auction.
    let survivor = &urls[passive];
    send(
        &http,
        "POST",
        format!("{survivor}/v1/desired_lrps"),
        json!({"process_guid": "web", "domain": "tests", "rootfs": "preloaded:busybox", "instances": 1,
               "action": {"run": {"path": "sleep", "args": ["100"]}}, "memory_mb": 64}),
    )
    .await;
    send(
        &http,
        "POST",
        format!("{survivor}/v1/cells"),
        json!({"cell_presence": {"cell_id": "ghost", "rep_url": "http://127.0.0.1:9", "zone": "z1",
                "capacity": {"memory_mb": 1024, "disk_mb": 1024, "containers": 10}},
               "ttl_seconds": 6}),
    )
    .await;
    send(
        &http,
        "POST",
        format!("{survivor}/v1/actual_lrps/web/0/claim"),
        json!({"instance_key": {"instance_guid": "ig-ghost", "cell_id": "ghost"}}),
    )
    .await;

    let killed_at = Instant::now();
    procs.0[active].kill().unwrap();
    procs.0[active].wait().unwrap();
    // A lock lapses a TTL after its last renewal, and the survivor retries every interval.
    let bound = Duration::from_secs(LOCK_TTL_S + RETRY_S) + Duration::from_secs(2);
    until("the survivor becomes active", bound, async || {
        let p = ping(&http, survivor).await?;
        (p["role"] == "active" && p["lock_holder"] == p["owner"]).then_some(())
    })
    .await;
    let took_over = killed_at.elapsed();

    let a = until(
        "the survivor unclaims the lost cell's instance",
        Duration::from_secs(30),
        async || {
            let list: Value = http
                .get(format!("{survivor}/v1/actual_lrps?process_guid=web"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let a = list.as_array()?.first()?.clone();
            (a["state"] == "UNCLAIMED").then_some(a)
        },
    )
    .await;
    assert_eq!(a["index"], 0, "{a}");
    println!(
        "failover: the survivor was active {} ms after the kill (lock TTL {LOCK_TTL_S} s); the lost cell's \
         instance unclaimed {} ms after it",
        took_over.as_millis(),
        killed_at.elapsed().as_millis()
    );
}
