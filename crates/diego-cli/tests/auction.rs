//! Placement end to end with the real binaries: `diego dev` (BBS + auctioneer) with
//! `diego sim-cells`, and two `diego auctioneer`s of which the active one is SIGKILLed.

use std::collections::BTreeMap;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrpState, DesiredLrp};
use diego_testkit::{eventually, free_port, TestBbs};
use tokio::process::{Child, Command};

mod common;
use common::{diego, spawn};
const WAIT: Duration = Duration::from_secs(30);

/// Claimed (or already running) instances of `guid` per cell.
async fn held_per_cell(client: &BbsClient, guid: &str) -> Result<BTreeMap<String, usize>, String> {
    let actuals = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut per_cell = BTreeMap::new();
    for a in actuals
        .iter()
        .filter(|a| matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running))
    {
        *per_cell.entry(a.cell_id.clone()).or_insert(0) += 1;
    }
    Ok(per_cell)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_ten_sim_cells_places_twenty_instances_two_per_cell() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    // No real cell: the 20 instances go to the 10 simulated ones.
    let _dev = spawn(&[
        "dev",
        "--cells",
        "0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--logs-listen",
        "127.0.0.1:0",
    ]);
    let client = BbsClient::new(bbs.clone());
    eventually(WAIT, || async { client.ping().await.map_err(|e| e.to_string()) }).await;
    let _cells = spawn(&["sim-cells", "--count", "10", "--bbs", &bbs]);
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 10).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "web",
            "--instances",
            "20",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let per_cell = eventually(WAIT, || async {
        let per_cell = held_per_cell(&client, "web").await?;
        let total: usize = per_cell.values().sum();
        (total == 20)
            .then_some(per_cell.clone())
            .ok_or(format!("{total} held: {per_cell:?}"))
    })
    .await;
    assert_eq!(per_cell.len(), 10, "every cell holds some: {per_cell:?}");
    assert!(
        per_cell.values().all(|n| *n <= 2),
        "at most 2 per cell: {per_cell:?}"
    );

    // Unplaceable: Diego's error and the explanation, in the CLI.
    let (ok, out) = diego(
        &bbs,
        &["lrp", "create", "huge", "--memory", "999999", "--", "sleep", "1"],
    )
    .await;
    assert!(ok, "{out}");
    let shown = eventually(WAIT, || async {
        let (_, out) = diego(&bbs, &["lrp", "get", "huge"]).await;
        out.contains("not placed").then_some(out.clone()).ok_or(out)
    })
    .await;
    assert!(
        shown.contains(
            "not placed (index 0): insufficient resources: memory — 0 of 10 cells fit: 10 lack memory (need 999999 MB, best has 16384 MB free)"
        ),
        "{shown}"
    );
}

fn lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "apps".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb: 64,
        disk_mb: 64,
        action: Some(diego_model::Action::run(diego_model::RunAction {
            path: "true".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_auctioneer_takes_over_from_a_sigkilled_one() {
    let bbs = TestBbs::start().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _cells = diego_simcells::SimCells::start(
        diego_simcells::SimCellsConfig::new(bbs.url.clone(), 4),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let ports = [free_port(), free_port()];
    let mut auctioneers: Vec<Child> = ports
        .iter()
        .map(|p| {
            spawn(&[
                "auctioneer",
                "--bbs",
                &bbs.url,
                "--listen",
                &format!("127.0.0.1:{p}"),
                "--lock-ttl",
                "2",
            ])
        })
        .collect();
    let first_url = eventually(WAIT, || async {
        match bbs.client.lock_holder("auctioneer").await {
            Ok(Some(h)) => Ok(h.value),
            Ok(None) => Err("no holder yet".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    bbs.client.desire_lrp(&lrp("before", 4)).await.unwrap();
    eventually(WAIT, || async {
        let n: usize = held_per_cell(&bbs.client, "before").await?.values().sum();
        (n == 4).then_some(()).ok_or(format!("{n} held"))
    })
    .await;

    // SIGKILL the active one (by the PID this test started): no release, the lock lapses.
    let active = ports
        .iter()
        .position(|p| first_url.ends_with(&format!(":{p}")))
        .expect("the lock names one of ours");
    let pid = auctioneers[active].id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap()
        .success());
    auctioneers[active].wait().await.unwrap();

    bbs.client.desire_lrp(&lrp("after", 4)).await.unwrap();
    eventually(WAIT, || async {
        let n: usize = held_per_cell(&bbs.client, "after").await?.values().sum();
        (n == 4).then_some(()).ok_or(format!("{n} held"))
    })
    .await;
    let holder = bbs.client.lock_holder("auctioneer").await.unwrap().unwrap();
    assert_ne!(holder.value, first_url, "the standby holds the lock now");
    assert!(
        holder.value.ends_with(&format!(":{}", ports[1 - active])),
        "{}",
        holder.value
    );
    shutdown.cancel();
}
