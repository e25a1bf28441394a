//! `diego garden --backend process|runc`: the real binary serving the container API, driven by the
//! HTTP client as a backend.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use diego_garden::http::client::GardenClient;
use diego_garden::{ContainerBackend, ContainerSpec, ProcessEvent, ProcessSpec};
use futures_util::StreamExt;

#[tokio::test]
async fn garden_serves_the_process_backend_and_stops_on_sigterm() {
    let err = serve_run_and_stop("process").await;
    assert!(
        err.contains("NO isolation"),
        "the process backend says it does not isolate: {err}"
    );
}

#[tokio::test]
async fn garden_serves_the_runc_backend_and_stops_on_sigterm() {
    if !runc_usable("garden_serves_the_runc_backend_and_stops_on_sigterm") {
        return;
    }
    serve_run_and_stop("runc").await;
}

/// Root and runc are there; otherwise prints why `test` is skipped.
fn runc_usable(test: &str) -> bool {
    diego_testkit::host::root_with(test, &["runc"])
}

/// Starts `diego garden --backend BACKEND`, runs one process in a container through the HTTP
/// client, destroys it, stops the server with SIGTERM; returns the server's stderr.
async fn serve_run_and_stop(backend: &str) -> String {
    let top = tempfile::tempdir().unwrap();
    let depot = top.path().join("depot");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = start_garden(backend, port, &depot).await;
    let client = GardenClient::new(&format!("http://127.0.0.1:{port}")).unwrap();

    let spec = ContainerSpec {
        handle: "c1".into(),
        rootfs: "preloaded:busybox".into(),
        ..Default::default()
    };
    client.create(spec).await.unwrap();
    let p = client
        .run(
            "c1",
            ProcessSpec {
                path: "sh".into(),
                args: vec!["-c".into(), "echo hi; exit 4".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let events: Vec<ProcessEvent> = p.events.collect().await;
    let stdout: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            ProcessEvent::Stdout(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stdout, b"hi\n");
    assert!(
        matches!(events.last(), Some(ProcessEvent::Exited(s)) if s.code == 4),
        "{events:?}"
    );
    client.destroy("c1").await.unwrap();

    // SIGTERM stops it cleanly (stop only the process this test started, by its PID).
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
        .await
        .unwrap();
    err
}

/// Starts `diego garden --backend BACKEND` on `port` with `depot`, and waits for `/ping`.
async fn start_garden(backend: &str, port: u16, depot: &std::path::Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "garden",
            "--backend",
            backend,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--depot",
        ])
        .arg(depot)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = GardenClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.ping().await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
                .await
                .unwrap();
            panic!("diego garden --backend {backend} exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "diego garden never answered /ping");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Stdout until it contains `needle`.
async fn stdout_until(
    events: &mut futures_util::stream::BoxStream<'static, ProcessEvent>,
    needle: &str,
) -> String {
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            if let ProcessEvent::Stdout(b) = e {
                out.push_str(&String::from_utf8_lossy(&b));
                if out.contains(needle) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok() && out.contains(needle), "no {needle:?} in {out:?}");
    out
}

fn sh(id: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        id: id.into(),
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn garden_runc_containers_survive_a_sigkilled_server() {
    if !runc_usable("garden_runc_containers_survive_a_sigkilled_server") {
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let _leftovers = common::RuncLeftovers::for_depot(&top.path().join("depot"));
    let depot = top.path().join("depot");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start_garden("runc", port, &depot).await;
    let client = GardenClient::new(&url).unwrap();
    client
        .create(ContainerSpec {
            handle: "survivor".into(),
            rootfs: "preloaded:busybox".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ticker = client
        .run(
            "survivor",
            sh(
                "ticker",
                "echo pid=$$; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
            ),
        )
        .await
        .unwrap()
        .events;
    let before = stdout_until(&mut ticker, "tick 2\n").await;
    let pid = before
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid line in {before:?}"))
        .to_string();
    client
        .run("survivor", sh("quitter", "sleep 1; echo done; exit 7"))
        .await
        .unwrap();

    // SIGKILL the server (only the process this test started, by its PID).
    drop(ticker);
    let server_pid = server.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &server_pid])
        .status()
        .unwrap();
    server.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut server = start_garden("runc", port, &depot).await;
    let client = GardenClient::new(&url).unwrap();
    let info = client.info("survivor").await.unwrap();
    assert_eq!(info.process_ids, ["quitter", "ticker"]);
    let mut ticker = client.attach("survivor", "ticker").await.unwrap().events;
    let again = stdout_until(&mut ticker, "tick 30\n").await;
    assert!(
        again.starts_with(&before),
        "replay {again:?} does not start with {before:?}"
    );
    // The same process, same pid inside the container, still alive.
    let probe: Vec<ProcessEvent> = client
        .run("survivor", sh("probe", &format!("kill -0 {pid} && echo alive")))
        .await
        .unwrap()
        .events
        .collect()
        .await;
    assert!(
        probe.contains(&ProcessEvent::Stdout(b"alive\n".to_vec().into())),
        "{probe:?}"
    );
    // The one that exited while no server ran reports its status.
    let quitter: Vec<ProcessEvent> = client
        .attach("survivor", "quitter")
        .await
        .unwrap()
        .events
        .collect()
        .await;
    assert!(
        matches!(quitter.last(), Some(ProcessEvent::Exited(s)) if s.code == 7),
        "{quitter:?}"
    );
    assert!(quitter.contains(&ProcessEvent::Stdout(b"done\n".to_vec().into())));

    drop(ticker);
    client.destroy("survivor").await.unwrap();
    assert!(!depot.join("survivor").exists());
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
