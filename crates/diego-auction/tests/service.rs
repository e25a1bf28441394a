//! The auctioneer service against a real BBS and stand-in reps over HTTP on loopback: the BBS
//! finds it through the lock, it places work on cells, records why the rest did not fit, and a
//! standby takes over when the active one goes away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_auction::service::{self, AuctioneerConfig, RunningAuctioneer};
use diego_client::BbsClient;
use diego_model::auction::{CellResources, CellState, Work};
use diego_model::{
    ActualLrpState, CellCapacity, CellPresence, DesireTaskRequest, DesiredLrp, RegisterCellRequest,
    RootfsProvider, TaskDefinition, TaskState,
};
use diego_testkit::{eventually, TestBbs};
use tokio_util::sync::CancellationToken;

/// A rep stand-in: a fixed state, and every `/work` it was sent.
#[derive(Clone)]
struct FakeRep {
    state: CellState,
    works: Arc<Mutex<Vec<Work>>>,
}

async fn rep_state(State(r): State<FakeRep>) -> Json<CellState> {
    Json(r.state.clone())
}

async fn rep_work(State(r): State<FakeRep>, Json(work): Json<Work>) -> Json<Work> {
    r.works.lock().unwrap().push(work);
    Json(Work::default())
}

/// Serves a rep for `cell_id` in `zone` with 1 GiB and 10 containers, and registers it.
async fn fake_cell(bbs: &BbsClient, cell_id: &str, zone: &str) -> FakeRep {
    let total = CellResources {
        memory_mb: 1024,
        disk_mb: 4096,
        containers: 10,
    };
    let providers = vec![RootfsProvider {
        name: "preloaded".into(),
        properties: vec!["busybox".into()],
    }];
    let rep = FakeRep {
        state: CellState {
            cell_id: cell_id.into(),
            zone: zone.into(),
            rootfs_providers: providers.clone(),
            total_resources: total,
            available_resources: total,
            ..Default::default()
        },
        works: Arc::default(),
    };
    let app = Router::new()
        .route("/state", get(rep_state))
        .route("/work", post(rep_work))
        .with_state(rep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    bbs.register_cell(&RegisterCellRequest {
        cell_presence: CellPresence {
            cell_id: cell_id.into(),
            rep_url: url,
            zone: zone.into(),
            capacity: CellCapacity {
                memory_mb: 1024,
                disk_mb: 4096,
                containers: 10,
            },
            rootfs_providers: providers,
            ..Default::default()
        },
        ttl_seconds: 600,
    })
    .await
    .unwrap();
    rep
}

async fn auctioneer(bbs: &TestBbs, shutdown: CancellationToken) -> RunningAuctioneer {
    let mut config = AuctioneerConfig::new(bbs.url.clone(), "127.0.0.1:0".parse().unwrap());
    config.lock_ttl = Duration::from_secs(1);
    config.cell_timeout = Duration::from_secs(2);
    service::start(config, shutdown).await.unwrap()
}

fn lrp(guid: &str, instances: i32, memory_mb: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "apps".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb,
        disk_mb: 64,
        action: Some(diego_model::Action::run(diego_model::RunAction {
            path: "true".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn lrps_sent(reps: &[&FakeRep]) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    for r in reps {
        for w in r.works.lock().unwrap().iter() {
            for l in &w.lrps {
                out.push((w.cell_id.clone(), l.process_guid.clone(), l.index));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_work_and_explains_what_does_not_fit() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let bbs = TestBbs::start().await;
    let a = fake_cell(&bbs.client, "cell-a", "z1").await;
    let b = fake_cell(&bbs.client, "cell-b", "z2").await;
    let shutdown = CancellationToken::new();
    let auctioneer = auctioneer(&bbs, shutdown.clone()).await;
    eventually(Duration::from_secs(10), || async {
        auctioneer.is_active().then_some(()).ok_or("not active yet")
    })
    .await;

    bbs.client.desire_lrp(&lrp("web", 4, 128)).await.unwrap();
    let sent = eventually(Duration::from_secs(10), || async {
        let sent = lrps_sent(&[&a, &b]);
        if sent.len() == 4 {
            Ok(sent)
        } else {
            Err(format!("{sent:?}"))
        }
    })
    .await;
    // Spread: two instances per cell, one cell per zone.
    assert_eq!(
        sent.iter().filter(|(c, _, _)| c == "cell-a").count(),
        2,
        "{sent:?}"
    );
    let mut indices: Vec<i32> = sent.iter().map(|s| s.2).collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2, 3]);

    // Too big for any cell: Diego's error, and why, on the instance.
    bbs.client.desire_lrp(&lrp("huge", 1, 4096)).await.unwrap();
    let failed = eventually(Duration::from_secs(10), || async {
        let a = bbs
            .client
            .actual_lrp("huge", 0)
            .await
            .map_err(|e| e.to_string())?;
        match a.first() {
            Some(a) if !a.placement_error.is_empty() => Ok(a.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(failed.state, ActualLrpState::Unclaimed);
    assert_eq!(failed.placement_error, "insufficient resources: memory");
    let why = failed.placement_explanation.expect("an explanation");
    assert_eq!((why.total_cells, why.fitting_cells), (2, 0));
    assert_eq!(
        why.memory.map(|m| (m.cells, m.need, m.best_available)),
        Some((2, 4096, 1024))
    );
    assert_eq!(
        why.to_string(),
        "0 of 2 cells fit: 2 lack memory (need 4096 MB, best has 1024 MB free)"
    );

    // A task asking for a tag no cell has is rejected with Diego's error and the explanation.
    let mut task = DesireTaskRequest {
        task_guid: "gpu-job".into(),
        domain: "apps".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            memory_mb: 64,
            placement_tags: vec!["gpu".into()],
            action: Some(diego_model::Action::run(diego_model::RunAction {
                path: "true".into(),
                ..Default::default()
            })),
            max_retries: Some(0),
            ..Default::default()
        },
    };
    task.task_definition.disk_mb = 16;
    bbs.client.desire_task(&task).await.unwrap();
    let t = eventually(Duration::from_secs(10), || async {
        let t = bbs.client.task("gpu-job").await.map_err(|e| e.to_string())?;
        if t.state == TaskState::Completed {
            Ok(t)
        } else {
            Err(format!("{:?}", t.state))
        }
    })
    .await;
    assert!(t.failed);
    assert_eq!(
        t.rejection_reason,
        "found no compatible cell with placement tag \"gpu\""
    );
    let why = t.placement_explanation.expect("an explanation");
    assert!(why.to_string().contains("2 lack placement tag \"gpu\""), "{why}");
    assert!(auctioneer.stats().rounds >= 3);
    shutdown.cancel();
    auctioneer.task.await.unwrap().unwrap();
    assert!(
        bbs.client
            .lock_holder(service::AUCTIONEER_LOCK)
            .await
            .unwrap()
            .is_none(),
        "a stopped auctioneer releases its lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_and_placements_continue() {
    let bbs = TestBbs::start().await;
    let cell = fake_cell(&bbs.client, "cell-a", "z1").await;
    let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
    let first = auctioneer(&bbs, stop_first.clone()).await;
    eventually(Duration::from_secs(10), || async {
        first.is_active().then_some(()).ok_or("first not active")
    })
    .await;
    let second = auctioneer(&bbs, stop_second.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(first.is_active() && !second.is_active(), "exactly one is active");
    let holder = bbs
        .client
        .lock_holder(service::AUCTIONEER_LOCK)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.value, first.url);

    bbs.client.desire_lrp(&lrp("before", 1, 64)).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let n = lrps_sent(&[&cell]).len();
        (n == 1).then_some(()).ok_or(format!("{n} sent"))
    })
    .await;

    stop_first.cancel();
    first.task.await.unwrap().unwrap();
    eventually(Duration::from_secs(10), || async {
        second.is_active().then_some(()).ok_or("second not active")
    })
    .await;
    bbs.client.desire_lrp(&lrp("after", 2, 64)).await.unwrap();
    let sent = eventually(Duration::from_secs(10), || async {
        let sent = lrps_sent(&[&cell]);
        (sent.len() == 3)
            .then_some(sent.clone())
            .ok_or(format!("{sent:?}"))
    })
    .await;
    assert!(sent.iter().any(|(_, g, _)| g == "after"), "{sent:?}");
    stop_second.cancel();
}
