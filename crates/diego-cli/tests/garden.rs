//! `diego garden --backend process|runc`: the real binary serving the container API, driven by the
//! HTTP client as a backend.

use diego_cli::process::is_root;

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
    if !is_root()
        || std::process::Command::new("runc")
            .arg("--version")
            .output()
            .is_err()
    {
        println!("SKIPPED garden_serves_the_runc_backend_and_stops_on_sigterm: needs root and runc");
        return;
    }
    serve_run_and_stop("runc").await;
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "garden",
            "--backend",
            backend,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--depot",
        ])
        .arg(&depot)
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
