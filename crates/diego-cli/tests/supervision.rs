//! A supervised member that dies takes its process down: a `diego cell` whose presence
//! renewal is refused exits non-zero instead of serving on unseen.

use std::process::Stdio;
use std::time::{Duration, Instant};

use diego_testkit::{eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

mod common;
use common::BIN;

/// Answers every request with 404, as whatever took over the BBS's address would.
async fn not_a_bbs(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf).await;
            let body = "404 page not found";
            let reply = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_whose_presence_is_refused_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs_url = format!("http://127.0.0.1:{port}");
    let mut bbs = common::spawn(&[
        "bbs",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().join("bbs").display().to_string(),
    ]);
    let client = diego_client::BbsClient::new(bbs_url.clone());
    eventually(Duration::from_secs(30), || async {
        client.ping().await.map_err(|e| e.to_string())
    })
    .await;

    let log = dir.path().join("cell.log");
    let mut cell = Command::new(BIN)
        .args([
            "cell",
            "--backend",
            "process",
            "--bbs",
            &bbs_url,
            "--cell-id",
            "lonely",
        ])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", &dir.path().join("cell").display().to_string()])
        .args(["--presence-ttl", "3"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    // The BBS goes; something that is not a BBS answers at its address.
    bbs.start_kill().unwrap();
    bbs.wait().await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let impostor = tokio::spawn(not_a_bbs(listener));

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = cell.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the cell serves on although its presence is refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    impostor.abort();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exited with {status}; log:\n{text}");
    assert!(
        text.contains("rep presence") && text.contains("refused"),
        "the exit names the member and why:\n{text}"
    );
}
