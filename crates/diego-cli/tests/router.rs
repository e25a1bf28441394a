//! The router of `diego dev` on real runc (root, runc and busybox-static): an LRP of 3 busybox
//! httpd instances routed at `web.diego.localhost`; every instance reached; the forwarding
//! headers arrive (a CGI script echoes them); an unknown host gets 404 and a route with no
//! running instance 503, each naming the host; a scale to 1 under load fails no request and
//! leaves nothing going to stopped instances; an instance killed mid-load fails only the
//! requests sent to it, and comes back into the table when RUNNING again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{running_rows, start_dev};
use common::{diego, RuncLeftovers};
use diego_testkit::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(90);
const HOST: &str = "web.diego.localhost";

/// Writes a page naming the instance and a CGI script echoing the forwarding headers, then
/// serves both.
const START: &str = r#"mkdir -p /tmp/www/cgi-bin && echo "instance $INSTANCE_INDEX" > /tmp/www/index.html && printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "xff=$HTTP_X_FORWARDED_FOR"\necho "rid=$HTTP_X_REQUEST_ID"\necho "vcap=$HTTP_X_VCAP_REQUEST_ID"\n' > /tmp/www/cgi-bin/headers && chmod +x /tmp/www/cgi-bin/headers && exec httpd -f -p 8080 -h /tmp/www"#;

struct Router {
    http: reqwest::Client,
    url: String,
    admin: String,
}

/// One answer through the router: (status, body).
type Answer = (u16, String);

impl Router {
    async fn get(&self, host: &str, path: &str) -> reqwest::Result<Answer> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("host", host)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// Instance index → address, as the router's table has them for [`HOST`].
    async fn table(&self) -> Result<BTreeMap<i64, String>, String> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/routes", self.admin))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok(v[HOST]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["index"].as_i64().unwrap(),
                            e["address"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until the table holds exactly `indices`.
    async fn routes(&self, indices: &[i64]) -> BTreeMap<i64, String> {
        let want: BTreeSet<i64> = indices.iter().copied().collect();
        eventually(WAIT, || async {
            let t = self.table().await?;
            let got: BTreeSet<i64> = t.keys().copied().collect();
            (got == want)
                .then_some(t.clone())
                .ok_or(format!("routed {got:?}, want {want:?}"))
        })
        .await
    }

    /// `n` requests (at most `limit` long) from 2 workers, each answer kept in order.
    fn load(&self, n: usize, limit: Duration) -> tokio::task::JoinHandle<Vec<Answer>> {
        let (http, url) = (self.http.clone(), self.url.clone());
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + limit;
            let worker = |http: reqwest::Client, url: String| async move {
                let mut out = Vec::new();
                while out.len() < n / 2 && tokio::time::Instant::now() < until {
                    let r = http.get(format!("{url}/")).header("host", HOST).send().await;
                    out.push(match r {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            };
            let (a, b) = tokio::join!(worker(http.clone(), url.clone()), worker(http, url));
            a.into_iter().chain(b).collect()
        })
    }
}

#[tokio::test]
async fn the_dev_router_follows_scaling_and_instance_loss() {
    if !common::runc_usable("the_dev_router_follows_scaling_and_instance_loss") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = RuncLeftovers::for_depot(&dir.path().join("dev/cell-0/depot"));
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let (_dev, client) = start_dev(
        dir.path(),
        &[
            "--backend",
            "runc",
            "--router-listen",
            &listen,
            "--router-admin",
            &admin,
        ],
        1,
    )
    .await;
    let bbs = client.base_url().to_string();
    let router = Router {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        url: format!("http://{listen}"),
        admin: format!("http://{admin}"),
    };

    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "web",
            "--instances",
            "3",
            "--image",
            "preloaded:busybox",
            "--port",
            "8080",
            "--route",
            HOST,
            "--",
            "sh",
            "-c",
            START,
        ],
    )
    .await;
    assert!(ok, "{out}");
    let before = router.routes(&[0, 1, 2]).await;

    // Every instance answers through the router.
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let (status, body) = router.get(HOST, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.insert(body.trim().to_string());
    }
    assert_eq!(
        seen,
        ["instance 0", "instance 1", "instance 2"]
            .map(String::from)
            .into(),
        "round robin reaches all 3"
    );

    let (status, body) = router.get("nope.diego.localhost", "/").await.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("\"nope.diego.localhost\""), "{body}");

    // A route whose LRP has no running instance: 503 naming the host.
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "idle",
            "--instances",
            "0",
            "--port",
            "8080",
            "--route",
            "idle.diego.localhost",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (status, body) = eventually(WAIT, || async {
        let (status, body) = router
            .get("idle.diego.localhost", "/")
            .await
            .map_err(|e| e.to_string())?;
        (status == 503)
            .then_some((status, body.clone()))
            .ok_or(format!("{status} {body}"))
    })
    .await;
    assert_eq!(status, 503);
    assert!(body.contains("\"idle.diego.localhost\""), "{body}");

    // The app sees the forwarding headers.
    let r = router
        .http
        .get(format!("{}/cgi-bin/headers", router.url))
        .header("host", HOST)
        .header("x-request-id", "e2e-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for line in ["xff=127.0.0.1", "rid=e2e-id-1", "vcap=e2e-id-1"] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in {text:?}");
    }

    // Scale to 1 under load: the cell makes each retired instance unroutable before it stops
    // its container, so no request fails. After settling nothing reaches 1 or 2.
    let load = router.load(2_000, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = diego(&bbs, &["lrp", "scale", "web", "1"]).await;
    assert!(ok, "{out}");
    router.routes(&[0]).await;
    eventually(WAIT, || async {
        let n = running_rows(&client).await?.len();
        (n == 1).then_some(()).ok_or(format!("{n} running"))
    })
    .await;
    let answers = load.await.unwrap();
    let failed: Vec<&Answer> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed during the scale-down (retired: {}, {}): {failed:?}",
        failed.len(),
        answers.len(),
        before[&1],
        before[&2]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..20 {
        let (status, body) = router.get(HOST, "/").await.unwrap();
        assert_eq!((status, body.trim()), (200, "instance 0"));
    }

    // Back to 3, then one instance's process is killed mid-load.
    let (ok, out) = diego(&bbs, &["lrp", "scale", "web", "3"]).await;
    assert!(ok, "{out}");
    let table = router.routes(&[0, 1, 2]).await;
    let victim_address = table[&1].clone();
    let rows = running_rows(&client).await.unwrap();
    let victim = rows.iter().find(|a| a.index == 1).unwrap().instance_guid.clone();
    let runc = diego_garden_runc::Runc::new("runc", dir.path().join("dev/cell-0/depot.runc"));
    let pid = runc
        .running_init_pids()
        .unwrap()
        .into_iter()
        .find(|(id, _)| id.contains(&victim))
        .unwrap_or_else(|| panic!("no container for instance {victim}"))
        .1;
    let load = router.load(2_000, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let answers = load.await.unwrap();
    let ok_count = answers.iter().filter(|(s, _)| *s == 200).count();
    for (status, body) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            *status, 502,
            "only requests sent to the killed instance fail: {body}"
        );
        assert!(
            body.contains(&victim_address),
            "a failure not of the killed instance: {body}"
        );
    }
    assert!(
        ok_count > answers.len() / 2,
        "{ok_count} of {} succeeded",
        answers.len()
    );
    // It restarts, and is routed again once RUNNING.
    let table = router.routes(&[0, 1, 2]).await;
    eventually(WAIT, || async {
        let (status, body) = router.get(HOST, "/").await.map_err(|e| e.to_string())?;
        (status == 200 && body.trim() == "instance 1")
            .then_some(())
            .ok_or(format!("{status} {body:?}; table {table:?}"))
    })
    .await;
}

/// A WebSocket through the router of `diego dev`: an LRP whose instance is a WebSocket echo
/// server (Python's standard library, on the process backend: the busybox rootfs has no
/// WebSocket server), routed at `ws.diego.localhost`; text and a 300-byte binary message come
/// back through the router unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_the_dev_router() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};

    if !diego_testkit::host::tool_for(
        "a_websocket_echoes_through_the_dev_router",
        "python3",
        "scripts/install-packages installs it",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _apps = common::ProcessLeftovers(dir.path().to_path_buf());
    let script = dir.path().join("ws_echo.py");
    std::fs::write(&script, include_str!("support/ws_echo.py")).unwrap();
    let router_addr = format!("127.0.0.1:{}", free_port());
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let (_dev, client) = start_dev(
        dir.path(),
        &[
            "--backend",
            "process",
            "--router-listen",
            &router_addr,
            "--router-admin",
            &admin_addr,
        ],
        1,
    )
    .await;
    let bbs = client.base_url().to_string();
    // The process backend has no network namespace: the container port is a host port.
    let port = free_port().to_string();
    let script = script.display().to_string();
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "ws",
            "--port",
            &port,
            "--route",
            "ws.diego.localhost",
            "--",
            "python3",
            &script,
            &port,
        ],
    )
    .await;
    assert!(ok, "{out}");

    let mut ws = eventually(WAIT, || async {
        let mut req = format!("ws://{router_addr}/echo").into_client_request().unwrap();
        req.headers_mut()
            .insert("host", "ws.diego.localhost".parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| e.to_string())?;
        (response.status() == 101)
            .then_some(ws)
            .ok_or(format!("{}", response.status()))
    })
    .await;
    let binary: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    for message in [
        Message::text("hello"),
        Message::binary(binary),
        Message::text("again"),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an echo within the deadline")
            .expect("the stream stays open")
            .unwrap();
        assert_eq!(echo, message, "through the router");
    }
    ws.close(None).await.unwrap();
    // It went through the router, which counted the upgrade.
    let metrics = reqwest::get(format!("http://{admin_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "router_websocket_upgrades_total 1"),
        "{metrics}"
    );
}
