//! A `diego cell --backend process` SIGKILLed while its instances run (no root needed): its
//! apps' processes outlive it (host processes, no container to take them down), and the cell
//! started again on the same data dir ends every one of them — the children of the app's
//! shell too — removes the containers, and the instances are placed again and RUNNING.

use std::path::Path;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrp, ActualLrpState};
use diego_testkit::{eventually, free_port};

mod common;
use common::cluster::Proc;
use common::{alive, diego, processes_in, ProcessLeftovers};

const WAIT: Duration = Duration::from_secs(60);
const INSTANCES: usize = 3;

async fn rows(client: &BbsClient) -> Result<Vec<ActualLrp>, String> {
    let mut rows = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some("sleepers".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    rows.sort_by_key(|a| a.index);
    Ok(rows)
}

/// Every instance RUNNING; the rows.
async fn all_running(client: &BbsClient) -> Vec<ActualLrp> {
    eventually(WAIT, || async {
        let rows = rows(client).await?;
        let running = rows.iter().filter(|a| a.state == ActualLrpState::Running).count();
        (running == INSTANCES && rows.len() == INSTANCES)
            .then_some(rows.clone())
            .ok_or(format!("{running} of {INSTANCES} running: {rows:?}"))
    })
    .await
}

fn cell_args(bbs: &str, data: &Path) -> Vec<String> {
    [
        "cell",
        "--backend",
        "process",
        "--bbs",
        bbs,
        "--memory-mb",
        "2048",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        &data.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_cell_ends_the_processes_its_killed_predecessor_left() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cell");
    let depot = data.join("depot");
    let _leftovers = ProcessLeftovers(depot.clone());
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let _dev = Proc::spawn(
        "dev",
        root.path(),
        &[
            "dev".into(),
            "--cells".into(),
            "0".into(),
            "--data-dir".into(),
            root.path().join("dev").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--logs-listen".into(),
            "127.0.0.1:0".into(),
        ],
        None,
    );
    let client = BbsClient::new(bbs.clone());
    eventually(WAIT, || async { client.ping().await.map_err(|e| e.to_string()) }).await;
    let mut cell = Proc::spawn("cell", root.path(), &cell_args(&bbs, &data), None);
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    // Each instance is a shell with two sleeps: one in the background, one it waits for.
    let count = INSTANCES.to_string();
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "sleepers",
            "--instances",
            &count,
            "--image",
            "preloaded:busybox",
            "--",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let before = all_running(&client).await;
    let apps = eventually(WAIT, || async {
        let found = processes_in(&depot);
        let sleeps = found.iter().filter(|(_, c)| c == "sleep").count();
        (sleeps == 2 * INSTANCES)
            .then_some(found.clone())
            .ok_or(format!("{sleeps} sleeps: {found:?}"))
    })
    .await;

    // kill -9 of the agent: its apps' processes are orphaned, not ended.
    cell.child.start_kill().unwrap();
    cell.exited(WAIT).await;
    assert!(
        apps.iter().all(|(p, _)| alive(p)),
        "host processes outlive their agent: {apps:?}"
    );
    assert!(depot.read_dir().unwrap().count() >= INSTANCES);

    let cell = Proc::spawn("cell", root.path(), &cell_args(&bbs, &data), None);
    // The earlier run's processes are gone, and every instance runs again, in new containers.
    let after = eventually(WAIT, || async {
        let rows = rows(&client).await?;
        let fresh = rows.iter().all(|a| {
            a.state == ActualLrpState::Running && before.iter().all(|b| b.instance_guid != a.instance_guid)
        });
        (rows.len() == INSTANCES && fresh)
            .then_some(rows.clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    let survivors: Vec<_> = apps.iter().filter(|(p, _)| alive(p)).collect();
    assert!(
        survivors.is_empty(),
        "left running by the killed cell: {survivors:?}"
    );
    for b in &before {
        assert!(
            !depot.join(&b.instance_guid).exists(),
            "the killed cell's container {} is removed",
            b.instance_guid
        );
    }
    let log = std::fs::read_to_string(&cell.log).unwrap();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("removing a container left from an earlier run"))
        .count();
    assert_eq!(warned, INSTANCES, "one warning per container:\n{log}");
    // The new instances are the new cell's processes.
    eventually(WAIT, || async {
        let found = processes_in(&depot);
        let sleeps = found.iter().filter(|(_, c)| c == "sleep").count();
        (sleeps == 2 * INSTANCES && found.iter().all(|(p, _)| !apps.iter().any(|(a, _)| a == p)))
            .then_some(())
            .ok_or(format!("{sleeps} sleeps: {found:?}"))
    })
    .await;
    assert_eq!(after.len(), INSTANCES);

    let (ok, out) = diego(&bbs, &["lrp", "delete", "sleepers"]).await;
    assert!(ok, "{out}");
    eventually(WAIT, || async {
        let n = processes_in(&depot).len();
        let dirs = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (n == 0 && dirs == 0)
            .then_some(())
            .ok_or(format!("{n} processes, {dirs} containers left"))
    })
    .await;
}
