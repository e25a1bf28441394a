//! `diego dev`'s lifecycle: Ctrl-C stops the cells, then the auctioneer, then the BBS (so the
//! cell's presence removal and the lock release reach a BBS that is still there) and says
//! what it leaves running; the next start takes those containers over; `--reset` starts from
//! nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use diego_testkit::{eventually, free_port};
use tokio::process::{Child, Command};

mod common;
use common::{diego, BIN};

const WAIT: Duration = Duration::from_secs(60);

fn dev(data: &Path, port: u16, log: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["dev", "--cells", "1", "--backend", "runc", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--logs-listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("DIEGO_BBS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("diego dev did not stop")
        .unwrap()
}

/// Where in `text` the first line holding every one of `parts` is.
/// The RUNNING instance of `sleeper`.
async fn running_sleeper(client: &diego_client::BbsClient) -> diego_model::ActualLrp {
    let rows = client.actual_lrp("sleeper", 0).await.unwrap();
    rows.into_iter()
        .find(|a| a.state == diego_model::ActualLrpState::Running)
        .expect("a RUNNING row of sleeper/0")
}

fn line_of(text: &str, parts: &[&str]) -> Option<usize> {
    text.lines().position(|l| parts.iter().all(|p| l.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cells_then_auctioneer_then_bbs_and_reset_starts_from_nothing() {
    if !common::runc_usable("ctrl_c_stops_cells_then_auctioneer_then_bbs_and_reset_starts_from_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = common::RuncLeftovers::for_depot(&dir.path().join("dev/cell-0/depot"));
    let data = dir.path().join("dev");
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("dev.log");
    let mut child = dev(&data, port, &log, &[]);
    let client = diego_client::BbsClient::new(bbs.clone());
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "sleeper",
            "--image",
            "preloaded:busybox",
            "--health-check",
            "none",
            "--",
            "sleep",
            "3600",
        ],
    )
    .await;
    assert!(ok, "{out}");
    eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .any(|a| a.state == diego_model::ActualLrpState::Running)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    })
    .await;

    let before = running_sleeper(&client).await;
    let status = interrupt(&mut child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exited with {status}:\n{text}");
    let cell = line_of(&text, &["cell 0", "stopped"]).unwrap_or_else(|| panic!("no cell stop:\n{text}"));
    let auctioneer =
        line_of(&text, &["auctioneer", "stopped"]).unwrap_or_else(|| panic!("no auctioneer stop:\n{text}"));
    let bbs_stop =
        line_of(&text, &["member=bbs", "stopped"]).unwrap_or_else(|| panic!("no BBS stop:\n{text}"));
    assert!(cell < auctioneer && auctioneer < bbs_stop, "stop order:\n{text}");
    assert!(line_of(&text, &["removed the cell presence"]).is_some(), "{text}");
    assert!(line_of(&text, &["released the BBS lock"]).is_some(), "{text}");
    // No role spoke to one already gone. The one exception is benign: the BBS may be
    // sending the stopped cell's work to the auctioneer as it stops, and retries that.
    let gone: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("connection closed") && !l.contains("diego_bbs::auction_requests"))
        .collect();
    assert!(
        gone.is_empty(),
        "a role spoke to one already gone: {gone:#?}\n{text}"
    );
    assert!(
        text.contains("1 container is left running; the next `diego dev` takes them over"),
        "says what it leaves:\n{text}"
    );

    // The next start takes the container over: the same instance RUNNING, no crash counted.
    let log = dir.path().join("dev-again.log");
    let mut child = dev(&data, port, &log, &[]);
    eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let adopted = rows.iter().any(|a| {
            a.state == diego_model::ActualLrpState::Running
                && a.presence == diego_model::Presence::Ordinary
                && a.instance_guid == before.instance_guid
        });
        (adopted && rows.len() == 1)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    // Past the rep's first sync with the BBS, which would crash a row it has no container for.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = running_sleeper(&client).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(after.instance_guid, before.instance_guid, "{text}");
    assert_eq!(after.crash_count, 0, "{after:?}\n{text}");
    assert!(!text.contains("nothing wants"), "{text}");

    // kill -9 of the whole of dev, down past the presence and lock TTLs: the next start
    // adopts the container and keeps it (whether or not a convergence pass saw the cell
    // missing first and marked the instance SUSPECT, which the rep's sync holds on to: see
    // diego-rep's `the_sync_keeps_the_container_of_a_suspect_instance`); the same instance
    // runs on, ORDINARY, without a crash.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let log = dir.path().join("dev-killed.log");
    let mut child = dev(&data, port, &log, &[]);
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let same = rows.iter().any(|a| {
            a.state == diego_model::ActualLrpState::Running
                && a.presence == diego_model::Presence::Ordinary
                && a.instance_guid == before.instance_guid
                && a.crash_count == 0
        });
        (same && rows.len() == 1).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("no longer has here"), "{text}");
    let status = interrupt(&mut child).await;
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());

    // --reset: nothing of the earlier run is left.
    let log = dir.path().join("dev-reset.log");
    let mut child = dev(&data, port, &log, &["--reset"]);
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;
    let desired = client.desired_lrps(&Default::default()).await.unwrap();
    assert!(desired.is_empty(), "{desired:?}");
    let status = interrupt(&mut child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("reset: destroyed 1 container and deleted"),
        "{text}"
    );
    assert!(!text.contains("left running"), "{text}");
}
