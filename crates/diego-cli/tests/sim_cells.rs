//! `diego sim-cells` against a real BBS: the cells appear as presences, answer as reps, and
//! leave on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;
use diego_testkit::{eventually, TestBbs};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_diego");
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn sim_cells_register_serve_and_leave_on_sigterm() {
    let bbs = TestBbs::start().await;
    let mut child = Command::new(BIN)
        .args(["sim-cells", "--count", "2", "--zones", "2", "--bbs", &bbs.url])
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning diego sim-cells");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a start line in time")
        .unwrap()
        .expect("a start line");
    assert!(line.contains("2 cells"), "{line}");
    assert!(line.contains("sim-0000") && line.contains("sim-0001"), "{line}");

    // Registered before the line is printed.
    let cells = bbs.client.cells().await.unwrap();
    let mut zones: Vec<&str> = cells.iter().map(|c| c.cell_presence.zone.as_str()).collect();
    zones.sort();
    assert_eq!(zones, ["z0", "z1"]);
    let rep_url = &cells[0].cell_presence.rep_url;
    assert!(
        line.contains(rep_url.rsplit_once("/cells/").unwrap().0),
        "{line} vs {rep_url}"
    );
    let rep = diego_client::RepClient::new(rep_url.clone(), reqwest::Client::new(), WAIT);
    let state = rep.state().await.unwrap();
    assert_eq!(state.cell_id, cells[0].cell_presence.cell_id);
    assert_eq!(state.total_resources.containers, 250);

    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    eventually(WAIT, || async {
        let left = bbs.client.cells().await?.len();
        ensure!(left == 0, "{left} presences left");
        Ok(())
    })
    .await;
}
