//! Simulated cells register with a real BBS, report their state like a rep, renew, and leave.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use common::{start, WAIT};
use diego_client::ClientError;
use diego_model::auction::CellResources;
use diego_simcells::{SimCells, SimCellsConfig, SimCellsError};
use diego_testkit::{eventually, TestBbs};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn cells_register_presences_with_their_rep_urls_and_zones() {
    let sim = start(3, |c| c.placement_tags = vec!["gpu".into()]).await;
    assert_eq!(sim.cells.cell_ids, ["sim-0000", "sim-0001", "sim-0002"]);
    let cells = sim.bbs.client.cells().await.unwrap();
    let by_id: BTreeMap<_, _> = cells
        .iter()
        .map(|c| (c.cell_presence.cell_id.as_str(), &c.cell_presence))
        .collect();
    assert_eq!(by_id.len(), 3, "{cells:?}");
    for (i, zone) in ["z0", "z1", "z2"].into_iter().enumerate() {
        let p = by_id[sim.cell(i)];
        assert_eq!(p.zone, zone);
        assert_eq!(
            p.rep_url,
            format!("http://{}/cells/{}", sim.cells.addr, sim.cell(i))
        );
        assert_eq!(p.capacity.memory_mb, 16 * 1024);
        assert_eq!(p.capacity.containers, 250);
        assert_eq!(p.placement_tags, ["gpu"]);
        assert!(p
            .rootfs_providers
            .iter()
            .any(|r| r.name == "preloaded" && r.properties == ["busybox"]));
    }
}

#[tokio::test]
async fn state_reports_totals_zone_and_nothing_held() {
    let sim = start(2, |c| {
        c.memory_mb = 4096;
        c.disk_mb = 8192;
        c.containers = 10;
    })
    .await;
    let state = sim.rep(1).state().await.unwrap();
    let total = CellResources {
        memory_mb: 4096,
        disk_mb: 8192,
        containers: 10,
    };
    assert_eq!(state.cell_id, "sim-0001");
    assert_eq!(state.zone, "z1");
    assert_eq!(state.rep_url, sim.cells.rep_url("sim-0001"));
    assert_eq!(state.total_resources, total);
    assert_eq!(state.available_resources, total);
    assert!(state.lrps.is_empty() && state.tasks.is_empty());
    assert_eq!(state.starting_container_count, 0);
    assert!(!state.evacuating);
    assert_eq!(state.rootfs_providers.len(), 3);
}

#[tokio::test]
async fn an_unknown_cell_is_not_found() {
    let sim = start(1, |_| {}).await;
    let rep = diego_client::RepClient::new(
        format!("{}/cells/sim-9999", sim.cells.base_url),
        reqwest::Client::new(),
        Duration::from_secs(5),
    );
    let err = rep.state().await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn presences_are_renewed_before_they_lapse() {
    let sim = start(2, |c| c.presence_ttl = Duration::from_secs(2)).await;
    let first = sim.bbs.client.cells().await.unwrap();
    let expiry = |cells: &[diego_client::CellPresenceWithExpiry]| {
        cells.iter().map(|c| c.expires_at).min().unwrap_or_default()
    };
    let before = expiry(&first);
    // Renewals every ~667 ms push the expiry forward; a 2 s TTL without them would lapse.
    eventually(WAIT, || async {
        let cells = sim.bbs.client.cells().await?;
        ensure!(cells.len() == 2, "{} presences", cells.len());
        ensure!(expiry(&cells) > before, "not renewed yet");
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.bbs.client.cells().await.unwrap().len(), 2);
}

#[tokio::test]
async fn shutdown_removes_the_presences_and_stops_serving() {
    let bbs = TestBbs::start().await;
    let shutdown = CancellationToken::new();
    let running = SimCells::start(SimCellsConfig::new(bbs.url.clone(), 3), shutdown.clone())
        .await
        .unwrap();
    assert_eq!(bbs.client.cells().await.unwrap().len(), 3);
    let url = running.rep_url(&running.cell_ids[0]);
    shutdown.cancel();
    // The task ends once the presences are gone and the server has stopped.
    tokio::time::timeout(WAIT, running.task)
        .await
        .expect("stopping in time")
        .unwrap()
        .unwrap();
    assert!(bbs.client.cells().await.unwrap().is_empty());
    let rep = diego_client::RepClient::new(url, reqwest::Client::new(), Duration::from_secs(2));
    assert!(rep.state().await.unwrap_err().is_connect());
}

#[tokio::test]
async fn a_bbs_that_is_not_there_fails_the_start() {
    let port = diego_testkit::free_port();
    let mut config = SimCellsConfig::new(format!("http://127.0.0.1:{port}"), 2);
    config.bbs_wait = Duration::from_millis(300);
    let err = SimCells::start(config, CancellationToken::new())
        .await
        .err()
        .expect("no BBS listens there");
    match &err {
        SimCellsError::BbsUnavailable { source, .. } => {
            assert!(matches!(source, ClientError::Transport { .. }), "{source:?}")
        }
        other => panic!("unexpected error: {other:?}"),
    }
}

#[tokio::test]
async fn cells_started_before_their_bbs_register_once_it_serves() {
    let port = diego_testkit::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let config = SimCellsConfig::new(format!("http://{addr}"), 3);
    let shutdown = CancellationToken::new();
    // The BBS comes up after several refused attempts; the start waits for it.
    let later = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        TestBbs::start_on(addr).await
    };
    let (running, bbs) = tokio::join!(
        tokio::time::timeout(WAIT, SimCells::start(config, shutdown.clone())),
        later
    );
    let running = running
        .expect("registered in time")
        .expect("the start succeeds once the BBS serves");
    assert_eq!(running.cell_ids.len(), 3);
    assert_eq!(bbs.client.cells().await.unwrap().len(), 3);
    shutdown.cancel();
}
