//! `diego route-emitter` as a process: a bad `--nats` is refused naming the flag, and a real
//! run against a BBS and a nats-server turns healthy, serves its metrics and stops cleanly
//! on SIGTERM.

mod common;

use std::time::Duration;

use common::cluster::Proc;
use common::diego;
use diego_testkit::{eventually, free_port, NatsServer, TestBbs};

#[tokio::test]
async fn a_bad_nats_url_names_the_flag() {
    for (url, problem) in [
        ("127.0.0.1:4222", "must start with nats://"),
        ("nats://127.0.0.1:99999", "invalid port number"),
    ] {
        let (ok, out) = diego("http://127.0.0.1:1", &["route-emitter", "--nats", url]).await;
        assert!(!ok, "{out}");
        assert!(out.contains("--nats") && out.contains(problem), "{url}: {out}");
    }
}

#[tokio::test]
async fn runs_healthy_and_stops_on_sigterm() {
    let Some(nats) = NatsServer::start("runs_healthy_and_stops_on_sigterm").await else {
        return;
    };
    let bbs = TestBbs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--bbs",
        &bbs.url,
        "route-emitter",
        "--nats",
        &nats.url,
        "--listen",
        &listen,
    ]
    .map(String::from)
    .to_vec();
    let mut proc = Proc::spawn("route-emitter", dir.path(), &args, None);
    let http = diego_runtime::http_client(None).build().unwrap();
    eventually(Duration::from_secs(20), || async {
        let r = http
            .get(format!("http://{listen}/health"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| e.to_string())?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let metrics = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "route_emitter_nats_connected 1"),
        "{metrics}"
    );

    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &proc.pid().to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = proc.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}
