//! The routing table kept current from a real BBS on loopback: the first listing, events
//! after it, a BBS restart (the stream drops and resumes), and periodic relisting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{key, register_cell, run_instance};
use diego_bbs::StoreConfig;
use diego_client::BbsClient;
use diego_routing::{sync, HostMap, SyncConfig, SyncStats};
use diego_testkit::{eventually, TestBbs};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `web.example.com` routes to exactly `ports`.
async fn routes_to(hosts: &watch::Receiver<HostMap>, ports: &[u32]) {
    eventually(WAIT, || async {
        let got: Option<Vec<u32>> = hosts
            .borrow()
            .lookup("web.example.com")
            .map(|p| p.endpoints.iter().map(|e| e.port).collect());
        if got.as_deref() == Some(ports) {
            Ok(())
        } else {
            Err(format!("web.example.com routes to {got:?}, want {ports:?}"))
        }
    })
    .await
}

fn start_sync(
    url: &str,
    config: SyncConfig,
) -> (watch::Receiver<HostMap>, Arc<SyncStats>, CancellationToken) {
    let (tx, rx) = watch::channel(HostMap::default());
    let stats = Arc::new(SyncStats::default());
    let stop = CancellationToken::new();
    tokio::spawn(sync::run(
        BbsClient::new(url),
        config,
        stats.clone(),
        move |t| {
            let _ = tx.send(t.hosts());
        },
        stop.clone(),
    ));
    (rx, stats, stop)
}

#[tokio::test]
async fn the_table_follows_the_bbs_across_a_restart() {
    let bbs = TestBbs::start_sqlite().await;
    let c = bbs.client.clone();
    register_cell(&c).await;
    c.desire_lrp(&common::web(3, "web.example.com")).await.unwrap();
    run_instance(&c, 0, 61000).await;

    let (hosts, stats, stop) = start_sync(&bbs.url, SyncConfig::default());
    // The first listing finds what was there before the sync started.
    routes_to(&hosts, &[61000]).await;
    run_instance(&c, 1, 61001).await;
    routes_to(&hosts, &[61000, 61001]).await;
    assert_eq!(
        stats.listings.load(Ordering::Relaxed),
        1,
        "no relisting within 60 s"
    );

    // The BBS goes away and comes back on the same address: the sync reconnects and resumes.
    let addr = bbs.addr;
    let dir = bbs.stop().await.unwrap();
    let mut config = TestBbs::config(StoreConfig::Sqlite {
        data_dir: dir.path().to_path_buf(),
    });
    config.listen = addr;
    let bbs = TestBbs::start_with(config, Some(dir)).await;
    let c = bbs.client.clone();
    register_cell(&c).await;
    c.crash_actual_lrp("web", 0, &key(0), "boom").await.unwrap();
    routes_to(&hosts, &[61001]).await;
    run_instance(&c, 2, 61002).await;
    routes_to(&hosts, &[61001, 61002]).await;

    // Removing the LRP's route leaves the hostname unknown.
    let update = diego_model::DesiredLrpUpdate {
        routes: Some(Default::default()),
        ..Default::default()
    };
    c.update_desired_lrp("web", &update).await.unwrap();
    eventually(WAIT, || async {
        match hosts.borrow().lookup("web.example.com") {
            None => Ok(()),
            Some(p) => Err(format!("still routed: {p:?}")),
        }
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn the_table_is_listed_again_every_interval() {
    let bbs = TestBbs::start().await;
    bbs.client
        .desire_lrp(&common::web(1, "web.example.com"))
        .await
        .unwrap();
    run_instance(&bbs.client, 0, 61000).await;
    let config = SyncConfig {
        resync_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let (hosts, stats, stop) = start_sync(&bbs.url, config);
    routes_to(&hosts, &[61000]).await;
    eventually(WAIT, || async {
        let n = stats.listings.load(Ordering::Relaxed);
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} listings so far"))
        }
    })
    .await;
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    routes_to(&hosts, &[61000]).await;
    stop.cancel();
}
