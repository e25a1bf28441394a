//! Evacuation without root (diego-spec §4.7): a real BBS and auctioneer over loopback and reps
//! on the process backend. An evacuating cell says so in `/state`, takes no work, hands its
//! instances to another cell, lets tasks finish up to its timeout, then stops.

use std::sync::Arc;
use std::time::Duration;

use diego_auction::service::{self as auctioneer, AuctioneerConfig};
use diego_client::{ActualLrpQuery, BbsClient, RepClient};
use diego_executor::ResourceCapacity;
use diego_garden::process::ProcessBackend;
use diego_garden::{Capacity, DynBackend};
use diego_logs::MemorySink;
use diego_model::auction::{LrpWork, Work};
use diego_model::{
    Action, ActualLrp, ActualLrpState, DesireTaskRequest, DesiredLrp, Presence, RunAction, TaskDefinition,
    TaskState,
};
use diego_rep::{RepConfig, RunningRep};
use diego_testkit::{eventually, TestBbs};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    bbs: TestBbs,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let bbs = TestBbs::start().await;
        let shutdown = CancellationToken::new();
        let mut config = AuctioneerConfig::new(bbs.url.clone(), "127.0.0.1:0".parse().unwrap());
        config.lock_ttl = Duration::from_secs(2);
        auctioneer::start(config, shutdown.clone()).await.unwrap();
        eventually(WAIT, || async {
            bbs.client
                .lock_holder("auctioneer")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no auctioneer yet".to_string())
        })
        .await;
        Cluster {
            bbs,
            shutdown,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A cell on the process backend (real processes, no isolation), evacuating quickly.
    async fn cell(&self, id: &str, evacuation_timeout: Duration) -> RunningRep {
        let capacity = Capacity {
            memory_bytes: 4 << 30,
            disk_bytes: 4 << 30,
            max_containers: 20,
        };
        let backend: DynBackend =
            Arc::new(ProcessBackend::new(self.dir.path().join(id).join("depot"), capacity).unwrap());
        let mut config = RepConfig::new(id, &self.bbs.url, "127.0.0.1:0".parse().unwrap());
        config.capacity = ResourceCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 20,
        };
        config.graceful_shutdown = Duration::from_millis(500);
        config.evacuation_interval = Duration::from_millis(200);
        // A busy bulk sync: it must leave the evacuation's containers alone.
        config.sync_interval = Duration::from_millis(100);
        config.evacuation_timeout = evacuation_timeout;
        diego_rep::start(config, backend, MemorySink::new(), self.shutdown.child_token())
            .await
            .unwrap()
    }
}

fn sh(script: &str) -> Action {
    Action::run(RunAction {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    })
}

fn lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb: 64,
        disk_mb: 64,
        action: Some(sh("exec sleep 1000")),
        ..Default::default()
    }
}

async fn rows(client: &BbsClient, guid: &str) -> Vec<ActualLrp> {
    client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Waits until every instance of `guid` is RUNNING on `cell` in ORDINARY rows, and nothing else.
async fn all_running_on(client: &BbsClient, guid: &str, n: usize, cell: &str) -> Vec<ActualLrp> {
    eventually(WAIT, || async {
        let rows = rows(client, guid).await;
        let ok = rows.len() == n
            && rows.iter().all(|a| {
                a.state == ActualLrpState::Running && a.cell_id == cell && a.presence == Presence::Ordinary
            });
        ok.then_some(rows.clone()).ok_or(format!("{rows:?}"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuating_cell_hands_its_instances_over_and_stops() {
    let c = Cluster::start().await;
    let client = &c.bbs.client;
    let a = c.cell("cell-a", Duration::from_secs(60)).await;
    client.desire_lrp(&lrp("web", 2)).await.unwrap();
    let before = all_running_on(client, "web", 2, "cell-a").await;
    let b = c.cell("cell-b", Duration::from_secs(60)).await;

    let rep_a = RepClient::new(&a.url, reqwest::Client::new(), Duration::from_secs(5));
    assert!(!rep_a.state().await.unwrap().evacuating);
    rep_a.evacuate().await.unwrap();
    // Said at once in /state (so the auctioneer skips the cell), and /work takes nothing.
    assert!(rep_a.state().await.unwrap().evacuating);
    let work = Work {
        cell_id: "cell-a".into(),
        lrps: vec![LrpWork {
            process_guid: "other".into(),
            domain: "d".into(),
            index: 0,
            ..Default::default()
        }],
        tasks: Vec::new(),
    };
    let refused = rep_a.perform(&work).await.unwrap();
    assert_eq!(refused, work, "an evacuating cell takes no work");

    // Both instances move to B; A stops once nothing is left, and leaves the BBS.
    tokio::time::timeout(WAIT, a.task)
        .await
        .expect("the evacuated rep did not stop")
        .unwrap()
        .expect("the evacuated rep stopped cleanly");
    assert!(a.rep.drained());
    assert!(
        a.rep.store.list().is_empty(),
        "containers left on the drained cell"
    );
    let after = all_running_on(client, "web", 2, "cell-b").await;
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(
            old.instance_guid, new.instance_guid,
            "index {} was replaced",
            old.index
        );
    }
    let cells: Vec<String> = client
        .cells()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.cell_presence.cell_id)
        .collect();
    assert_eq!(cells, ["cell-b"]);
    // Dropping A's containers did not crash or remove the replacements (A has stopped: its
    // harmonizer and sync are joined, nothing of A writes any more).
    let settled = rows(client, "web").await;
    assert!(
        settled
            .iter()
            .all(|a| a.state == ActualLrpState::Running && a.crash_count == 0 && a.cell_id == "cell-b"),
        "{settled:?}"
    );
    assert_eq!(b.rep.store.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_finish_and_the_timeout_fails_what_is_left() {
    let c = Cluster::start().await;
    let client = &c.bbs.client;
    let a = c.cell("cell-a", Duration::from_secs(3)).await;
    let task = |guid: &str, script: &str| DesireTaskRequest {
        task_guid: guid.into(),
        domain: "d".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(sh(script)),
            memory_mb: 64,
            disk_mb: 64,
            ..Default::default()
        },
    };
    client.desire_task(&task("short", "sleep 1")).await.unwrap();
    client
        .desire_task(&task("long", "exec sleep 1000"))
        .await
        .unwrap();
    // No other cell: this instance cannot move, so it is given up at the timeout.
    client.desire_lrp(&lrp("stuck", 1)).await.unwrap();
    all_running_on(client, "stuck", 1, "cell-a").await;
    eventually(WAIT, || async {
        let n = tasks_running(client).await?;
        (n == 2).then_some(()).ok_or(format!("{n} tasks running"))
    })
    .await;

    a.rep.evacuate();
    tokio::time::timeout(WAIT, a.task)
        .await
        .expect("the rep did not stop after its evacuation timeout")
        .unwrap()
        .expect("the rep stopped cleanly");
    assert!(a.rep.drained());
    let short = client.task("short").await.unwrap();
    assert_eq!(
        (short.state, short.failed),
        (TaskState::Completed, false),
        "{short:?}"
    );
    let long = client.task("long").await.unwrap();
    assert_eq!(
        (long.state, long.failed),
        (TaskState::Completed, true),
        "{long:?}"
    );
    assert_eq!(long.failure_reason, diego_rep::TASK_EVACUATION_TIMED_OUT);
    // The stranded instance is to be placed again (elsewhere), not left EVACUATING.
    let stuck = rows(client, "stuck").await;
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(
        (stuck[0].state, stuck[0].presence),
        (ActualLrpState::Unclaimed, Presence::Ordinary),
        "{stuck:?}"
    );
    assert!(a.rep.store.list().is_empty());
    assert!(client.cells().await.unwrap().is_empty());
}

/// How many of the tasks `short` and `long` are RUNNING.
async fn tasks_running(client: &BbsClient) -> Result<usize, String> {
    let mut n = 0;
    for guid in ["short", "long"] {
        let t = client.task(guid).await.map_err(|e| e.to_string())?;
        n += (t.state == TaskState::Running) as usize;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auctioneer_places_nothing_on_an_evacuating_cell() {
    // Only an evacuating cell: the replacement of its instance cannot be placed, and the
    // auction says why — it left the cell out because of /state, it did not try it.
    let c = Cluster::start().await;
    let client = &c.bbs.client;
    let a = c.cell("cell-a", Duration::from_secs(60)).await;
    client.desire_lrp(&lrp("web", 1)).await.unwrap();
    let before = all_running_on(client, "web", 1, "cell-a").await;
    a.rep.evacuate();
    let waiting = eventually(WAIT, || async {
        let rows = rows(client, "web").await;
        let ordinary = rows.iter().find(|r| r.presence == Presence::Ordinary).cloned();
        match ordinary {
            Some(o) if !o.placement_error.is_empty() => Ok((o, rows)),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    let (ordinary, all) = waiting;
    // Every cell is evacuating: the reason says so, and the explanation counts the cell.
    assert_eq!(
        ordinary.placement_error,
        "no other cell: every cell is evacuating"
    );
    let explained = ordinary.placement_explanation.as_ref().map(|e| e.evacuating);
    assert_eq!(explained, Some(1), "{:?}", ordinary.placement_explanation);
    // Meanwhile the old instance keeps serving as EVACUATING, in its container.
    let evacuating = all
        .iter()
        .find(|r| r.presence == Presence::Evacuating)
        .unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(
        (evacuating.state, evacuating.instance_guid.as_str()),
        (ActualLrpState::Running, before[0].instance_guid.as_str())
    );
    // ... and keeps serving across many bulk syncs while no replacement can be placed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = rows(client, "web").await;
    assert!(
        still
            .iter()
            .any(|r| r.presence == Presence::Evacuating && r.instance_guid == before[0].instance_guid),
        "{still:?}"
    );
    let containers = a.rep.store.list();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].state, diego_executor::ContainerState::Running);
    assert!(!a.task.is_finished(), "the cell waits for the replacement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_removes_an_evacuating_row_whose_container_is_gone() {
    // An agent that died mid-evacuation left an EVACUATING row; started again, its cell has
    // no container for it, so nothing serves it and the sync removes it.
    let c = Cluster::start().await;
    let client = &c.bbs.client;
    client.desire_lrp(&lrp("web", 1)).await.unwrap();
    let ik = diego_model::ActualLrpInstanceKey::new("ig-lost", "cell-a");
    let net = diego_model::ActualLrpNetInfo {
        address: "127.0.0.1".into(),
        ports: Vec::new(),
        instance_address: String::new(),
    };
    let req = diego_model::api::StartActualLrpRequest {
        instance_key: ik.clone(),
        net_info: net.clone(),
        ..Default::default()
    };
    client.start_actual_lrp("web", 0, &req).await.unwrap();
    assert!(client
        .evacuate_running_actual_lrp("web", 0, &ik, &net)
        .await
        .unwrap());
    let _a = c.cell("cell-a", Duration::from_secs(60)).await;
    eventually(WAIT, || async {
        let rows = rows(client, "web").await;
        let stranded = rows.iter().any(|r| r.presence == Presence::Evacuating);
        (!stranded).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;
}
