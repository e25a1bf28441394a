//! A cell end to end without root: a real BBS and auctioneer over loopback, and a rep running
//! real processes with the process backend (no isolation). Tasks complete with their result,
//! instances run, crash, scale down and go away, and the BBS stays true to the cell.

use std::sync::Arc;
use std::time::Duration;

use diego_auction::service::{self as auctioneer, AuctioneerConfig};
use diego_client::{ActualLrpQuery, BbsClient};
use diego_executor::ResourceCapacity;
use diego_garden::process::ProcessBackend;
use diego_garden::{Capacity, DynBackend};
use diego_logs::MemorySink;
use diego_model::{
    Action, ActualLrpState, DesireTaskRequest, DesiredLrp, DesiredLrpUpdate, Presence, RunAction,
    TaskDefinition, TaskState,
};
use diego_rep::{RepConfig, RunningRep};
use diego_testkit::{eventually, TestBbs};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    bbs: TestBbs,
    rep: RunningRep,
    shutdown: CancellationToken,
    /// Stops only the rep.
    rep_shutdown: CancellationToken,
    _depot: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Real processes on this host, no isolation: runs without root.
fn process_backend(dir: &std::path::Path) -> DynBackend {
    let capacity = Capacity {
        memory_bytes: 4 << 30,
        disk_bytes: 4 << 30,
        max_containers: 20,
    };
    Arc::new(ProcessBackend::new(dir.join("depot"), capacity).unwrap())
}

/// A cell of 1 GiB and 20 containers on a free port.
fn rep_config(cell_id: &str, bbs_url: &str) -> RepConfig {
    let mut config = RepConfig::new(cell_id, bbs_url, "127.0.0.1:0".parse().unwrap());
    config.capacity = ResourceCapacity {
        memory_mb: 1024,
        disk_mb: 4096,
        containers: 20,
    };
    config.graceful_shutdown = Duration::from_millis(500);
    // A stopped rep stands for a killed agent here: its presence stays until its TTL, so a
    // rep started again at once is a restart the BBS does not notice.
    config.remove_presence_on_stop = false;
    config
}

async fn cluster() -> Cluster {
    let bbs = TestBbs::start().await;
    let shutdown = CancellationToken::new();
    let mut config = AuctioneerConfig::new(bbs.url.clone(), "127.0.0.1:0".parse().unwrap());
    config.lock_ttl = Duration::from_secs(2);
    auctioneer::start(config, shutdown.clone()).await.unwrap();
    let depot = tempfile::tempdir().unwrap();
    let backend = process_backend(depot.path());
    let mut rep_config = rep_config("cell-1", &bbs.url);
    rep_config.zone = "z1".into();
    rep_config.graceful_shutdown = Duration::from_millis(500);
    let rep_shutdown = shutdown.child_token();
    let rep = diego_rep::start(rep_config, backend, MemorySink::new(), rep_shutdown.clone())
        .await
        .unwrap();
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
        rep,
        shutdown,
        rep_shutdown,
        _depot: depot,
    }
}

fn sh(script: &str) -> Action {
    Action::run(RunAction {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    })
}

fn task(guid: &str, script: &str, result_file: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "d".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(sh(script)),
            memory_mb: 64,
            disk_mb: 64,
            result_file: result_file.into(),
            ..Default::default()
        },
    }
}

async fn finished(client: &BbsClient, guid: &str) -> diego_model::Task {
    eventually(WAIT, || async {
        let t = client.task(guid).await.map_err(|e| e.to_string())?;
        (t.state == TaskState::Completed)
            .then_some(t.clone())
            .ok_or(format!("{}", t.state))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_complete_with_their_result_or_failure() {
    let c = cluster().await;
    c.bbs
        .client
        .desire_task(&task("t1", "echo 42 > $TMPDIR/out", "/tmp/out"))
        .await
        .unwrap();
    let t = finished(&c.bbs.client, "t1").await;
    assert!(!t.failed, "{t:?}");
    assert_eq!(t.result.trim(), "42");

    c.bbs.client.desire_task(&task("t2", "exit 3", "")).await.unwrap();
    let t = finished(&c.bbs.client, "t2").await;
    assert!(t.failed);
    assert!(t.failure_reason.contains("Exit status 3"), "{}", t.failure_reason);

    // Nothing is left on the cell.
    eventually(WAIT, || async {
        let n = c.rep.rep.store.list().len();
        (n == 0).then_some(()).ok_or(format!("{n} containers"))
    })
    .await;
    assert_eq!(c.rep.rep.store.remaining().memory_mb, 1024);
}

fn lrp(guid: &str, instances: i32, script: &str) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb: 64,
        disk_mb: 64,
        action: Some(sh(script)),
        ..Default::default()
    }
}

/// The first row of `web` index 0 once it is RUNNING.
async fn running_web(client: &BbsClient) -> diego_model::ActualLrp {
    eventually(WAIT, || async {
        let a = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
        match a.first() {
            Some(a) if a.state == ActualLrpState::Running => Ok(a.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn states(client: &BbsClient, guid: &str) -> Vec<(i32, ActualLrpState, String)> {
    let mut v: Vec<_> = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.index, a.state, a.cell_id))
        .collect();
    v.sort_by_key(|a| a.0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_scale_down_crash_and_go_away() {
    let c = cluster().await;
    let client = &c.bbs.client;
    client
        .desire_lrp(&lrp("web", 2, "exec sleep 1000"))
        .await
        .unwrap();
    eventually(WAIT, || async {
        let s = states(client, "web").await;
        let running = s
            .iter()
            .filter(|a| a.1 == ActualLrpState::Running && a.2 == "cell-1")
            .count();
        (running == 2).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    let a = client.actual_lrp("web", 0).await.unwrap();
    assert_eq!(a[0].address, "127.0.0.1");
    assert_eq!(c.rep.rep.store.list().len(), 2);

    // Scale down: the BBS asks the cell to stop index 1; its container goes and so does the row.
    client
        .update_desired_lrp(
            "web",
            &DesiredLrpUpdate {
                instances: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually(WAIT, || async {
        let s = states(client, "web").await;
        let n = c.rep.rep.store.list().len();
        (s.len() == 1 && n == 1)
            .then_some(())
            .ok_or(format!("{s:?}, {n} containers"))
    })
    .await;

    // An app that exits crashes its instance, which is restarted at once (crash count 1).
    client
        .desire_lrp(&lrp("crashy", 1, "sleep 0.3; exit 1"))
        .await
        .unwrap();
    let crashed = eventually(WAIT, || async {
        let a = client.actual_lrp("crashy", 0).await.map_err(|e| e.to_string())?;
        let a = a.first().cloned().ok_or("no instance")?;
        (a.crash_count >= 1).then_some(a.clone()).ok_or(format!("{a:?}"))
    })
    .await;
    assert!(
        crashed.crash_reason.contains("Exit status 1"),
        "{}",
        crashed.crash_reason
    );

    // Deleting the LRPs stops everything on the cell.
    client.remove_desired_lrp("web").await.unwrap();
    client.remove_desired_lrp("crashy").await.unwrap();
    eventually(WAIT, || async {
        let rows = states(client, "web").await.len() + states(client, "crashy").await.len();
        let n = c.rep.rep.store.list().len();
        (rows == 0 && n == 0)
            .then_some(())
            .ok_or(format!("{rows} rows, {n} containers"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_a_health_check_runs_once_healthy() {
    let c = cluster().await;
    let client = &c.bbs.client;
    let port = diego_testkit::free_port();
    let mut web = lrp(
        "checked",
        1,
        // Healthy only after a while: the instance must not be RUNNING before.
        &format!("sleep 1; exec python3 -m http.server {port} --bind 127.0.0.1"),
    );
    web.ports = vec![u32::from(port)];
    web.check_definition = Some(diego_model::CheckDefinition {
        checks: vec![diego_model::Check {
            http_check: Some(diego_model::HttpCheck {
                port: u32::from(port),
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    client.desire_lrp(&web).await.unwrap();
    // CLAIMED while the check has not passed…
    eventually(WAIT, || async {
        let s = states(client, "checked").await;
        (s.first().map(|a| a.1) == Some(ActualLrpState::Claimed))
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    // …RUNNING once it does, and the app answers on the instance's port.
    eventually(WAIT, || async {
        let s = states(client, "checked").await;
        (s.first().map(|a| a.1) == Some(ActualLrpState::Running))
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    let a = client.actual_lrp("checked", 0).await.unwrap();
    let addr = format!("{}:{}", a[0].address, a[0].ports[0].host_port);
    let body = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert!(body.status().is_success());
    client.remove_desired_lrp("checked").await.unwrap();
    eventually(WAIT, || async {
        let n = c.rep.rep.store.list().len();
        (n == 0).then_some(()).ok_or(format!("{n} containers"))
    })
    .await;
}

/// The cell's first rep goes away without touching its containers (as a SIGKILLed agent
/// would); returns the instance and task it ran.
async fn run_then_lose_the_rep(c: &Cluster, go: &std::path::Path) -> diego_model::ActualLrp {
    let client = &c.bbs.client;
    client
        .desire_lrp(&lrp("web", 1, "exec sleep 1000"))
        .await
        .unwrap();
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo finished > $TMPDIR/out",
        go.display()
    );
    client
        .desire_task(&task("long", &script, "/tmp/out"))
        .await
        .unwrap();
    let first = eventually(WAIT, || async {
        let a = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
        let t = client.task("long").await.map_err(|e| e.to_string())?;
        match a.first() {
            Some(a) if a.state == ActualLrpState::Running && t.state == TaskState::Running => Ok(a.clone()),
            other => Err(format!("{other:?} {}", t.state)),
        }
    })
    .await;
    c.rep_shutdown.cancel();
    while !c.rep.task.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_rep_takes_over_what_still_runs() {
    let c = cluster().await;
    let client = &c.bbs.client;
    let scratch = tempfile::tempdir().unwrap();
    let go = scratch.path().join("go");
    let first = run_then_lose_the_rep(&c, &go).await;
    let backend = c.rep.rep.backend.clone();
    let before = backend.info(&first.instance_guid).await.unwrap().process_ids;
    // A container of this cell that nothing in the BBS wants.
    backend
        .create(diego_garden::ContainerSpec {
            handle: "stray".into(),
            rootfs: "preloaded:busybox".into(),
            properties: [
                ("diego.cell_id".to_string(), "cell-1".to_string()),
                ("diego.kind".to_string(), "lrp".to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A new rep for the same cell on the same backend.
    let rep_shutdown = c.shutdown.child_token();
    let restarted = diego_rep::start(
        rep_config("cell-1", &c.bbs.url),
        backend.clone(),
        MemorySink::new(),
        rep_shutdown.clone(),
    )
    .await
    .unwrap();
    assert!(
        backend.info("stray").await.is_err(),
        "the unwanted container was destroyed"
    );
    // The instance is the same one: same guid, same process, never crashed, RUNNING again.
    let again = running_web(client).await;
    assert_eq!(again.instance_guid, first.instance_guid);
    assert_eq!(again.crash_count, 0);
    assert_eq!(
        backend.info(&first.instance_guid).await.unwrap().process_ids,
        before,
        "no process was started again"
    );
    assert_eq!(
        restarted.rep.store.remaining().memory_mb,
        1024 - 64 - 64,
        "the adopted containers hold their reservations"
    );
    // The task went on running and completes through the new rep.
    assert_eq!(client.task("long").await.unwrap().state, TaskState::Running);
    std::fs::write(&go, "").unwrap();
    let t = finished(client, "long").await;
    assert!(!t.failed, "{}", t.failure_reason);
    assert_eq!(t.result.trim(), "finished");
    rep_shutdown.cancel();
    let _ = restarted.task.await;
    let _ = backend.destroy(&first.instance_guid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_rep_mends_records_whose_containers_are_gone() {
    let c = cluster().await;
    let client = &c.bbs.client;
    let scratch = tempfile::tempdir().unwrap();
    let first = run_then_lose_the_rep(&c, &scratch.path().join("go")).await;
    let old_backend = c.rep.rep.backend.clone();

    // The new rep's backend has none of the old containers.
    let rep_shutdown = c.shutdown.child_token();
    let restarted = diego_rep::start(
        rep_config("cell-1", &c.bbs.url),
        process_backend(scratch.path()),
        MemorySink::new(),
        rep_shutdown.clone(),
    )
    .await
    .unwrap();
    // The task failed as Diego says; the instance crashed and runs again in a new container.
    let t = finished(client, "long").await;
    assert!(t.failed);
    assert_eq!(t.failure_reason, diego_rep::TASK_CONTAINER_MISSING);
    let again = eventually(WAIT, || async {
        let a = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
        match a.first() {
            Some(a) if a.state == ActualLrpState::Running && a.instance_guid != first.instance_guid => {
                Ok(a.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(again.crash_count, 1);
    assert_eq!(again.crash_reason, diego_rep::LOST_CONTAINER);
    rep_shutdown.cancel();
    let _ = restarted.task.await;
    for handle in [first.instance_guid.as_str(), "long"] {
        let _ = old_backend.destroy(handle).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cells_racing_never_run_a_task_twice() {
    let c = cluster().await;
    // A second cell on the same BBS.
    let depot = tempfile::tempdir().unwrap();
    let backend = process_backend(depot.path());
    let config = rep_config("cell-2", &c.bbs.url);
    let second = diego_rep::start(config, backend, MemorySink::new(), c.shutdown.child_token())
        .await
        .unwrap();
    let ran = depot.path().join("ran");
    let http = reqwest::Client::new();
    let cells = [("cell-1", c.rep.url.clone()), ("cell-2", second.url.clone())];
    let n = 12;
    for i in 0..n {
        let guid = format!("race-{i}");
        let script = format!("echo {guid} >> {}", ran.display());
        c.bbs.client.desire_task(&task(&guid, &script, "")).await.unwrap();
        // Besides the auctioneer's placement, both cells are handed the task at once.
        let sends = cells.iter().map(|(cell_id, url)| {
            let work = diego_model::auction::Work {
                cell_id: cell_id.to_string(),
                tasks: vec![diego_model::auction::TaskStartRequest {
                    task_guid: guid.clone(),
                    domain: "d".into(),
                    placement_constraint: Default::default(),
                    resource: diego_model::common::Resources {
                        memory_mb: 64,
                        disk_mb: 64,
                        max_pids: 0,
                    },
                }],
                ..Default::default()
            };
            let rep = diego_client::RepClient::new(url.clone(), http.clone(), WAIT);
            async move { rep.perform(&work).await }
        });
        futures_util::future::join_all(sends).await;
    }
    for i in 0..n {
        finished(&c.bbs.client, &format!("race-{i}")).await;
    }
    let lines = std::fs::read_to_string(&ran).unwrap();
    let mut seen: Vec<&str> = lines.lines().collect();
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(before, n, "each task ran exactly once: {lines}");
    assert_eq!(seen.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_callback_receives_the_result_and_the_task_is_then_deleted() {
    let c = cluster().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut t = task("cb", "echo callback-result > $TMPDIR/out", "/tmp/out");
    t.task_definition.completion_callback_url = url;
    c.bbs.client.desire_task(&t).await.unwrap();
    let body = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(body["task_guid"], "cb", "{body}");
    assert_eq!(
        body["result"].as_str().map(str::trim),
        Some("callback-result"),
        "{body}"
    );
    assert_eq!(body["failed"], false, "{body}");
    eventually(WAIT, || async {
        match c.bbs.client.task("cb").await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_whose_self_check_fails_answers_503_until_it_passes() {
    use diego_garden::fake::{FakeBackend, FakeProcess};
    use diego_garden::ContainerBackend;
    use std::sync::atomic::{AtomicBool, Ordering};

    let bbs = TestBbs::start().await;
    let broken = Arc::new(AtomicBool::new(false));
    let script_broken = broken.clone();
    let backend = Arc::new(FakeBackend::with_script(Arc::new(move |spec| {
        if spec.path == "/bin/sh" && script_broken.load(Ordering::SeqCst) {
            FakeProcess::exits(1)
        } else {
            FakeProcess::exits(0)
        }
    })));
    let mut config = rep_config("cell-1", &bbs.url);
    config.self_check_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let rep = diego_rep::start(config, backend.clone(), MemorySink::new(), shutdown.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let (http, url) = (http.clone(), rep.url.clone());
        async move {
            let r = http.get(format!("{url}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(status("/ping").await.0, 200);
    assert_eq!(status("/state").await.0, 200);

    broken.store(true, Ordering::SeqCst);
    let (code, body) = eventually(WAIT, || async {
        let (code, body) = status("/ping").await;
        (code == 503)
            .then_some((code, body.clone()))
            .ok_or(format!("{code} {body}"))
    })
    .await;
    assert_eq!(code, 503);
    assert!(
        body.contains("cell self-check failed: a process exited with status 1"),
        "{body}"
    );
    assert_eq!(status("/state").await.0, 503, "the auction gets no state from it");
    let work = http
        .post(format!("{}/work", rep.url))
        .json(&diego_model::auction::Work {
            cell_id: "cell-1".into(),
            ..Default::default()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(work.status().as_u16(), 503, "it takes no work");

    broken.store(false, Ordering::SeqCst);
    eventually(WAIT, || async {
        let (code, body) = status("/ping").await;
        (code == 200).then_some(()).ok_or(format!("{code} {body}"))
    })
    .await;
    assert!(
        backend.list(&Default::default()).await.unwrap().is_empty(),
        "self-check containers are destroyed"
    );
    shutdown.cancel();
    let _ = rep.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_stops_a_container_whose_record_is_gone() {
    let bbs = TestBbs::start().await;
    let shutdown = CancellationToken::new();
    let mut config = AuctioneerConfig::new(bbs.url.clone(), "127.0.0.1:0".parse().unwrap());
    config.lock_ttl = Duration::from_secs(2);
    auctioneer::start(config, shutdown.clone()).await.unwrap();
    let depot = tempfile::tempdir().unwrap();
    let backend = process_backend(depot.path());
    let mut config = rep_config("cell-1", &bbs.url);
    config.sync_interval = Duration::from_millis(200);
    let rep = diego_rep::start(config, backend.clone(), MemorySink::new(), shutdown.clone())
        .await
        .unwrap();
    let client = &bbs.client;
    client
        .desire_lrp(&lrp("web", 1, "exec sleep 1000"))
        .await
        .unwrap();
    let running = running_web(client).await;
    // The record goes behind the cell's back (as if an operator or a bug removed it).
    client
        .remove_actual_lrp("web", 0, Some(&running.instance_key()))
        .await
        .unwrap();
    eventually(WAIT, || async {
        match backend.info(&running.instance_guid).await {
            Err(_) => Ok(()),
            Ok(_) => Err("the container is still there".to_string()),
        }
    })
    .await;
    assert!(rep.rep.workload(&running.instance_guid).is_none());
    shutdown.cancel();
    let _ = rep.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_never_takes_more_than_its_capacity() {
    let c = cluster().await;
    let client = &c.bbs.client;
    // 3 × 400 MB on a 1024 MB cell: two run, the third is not placed.
    let mut big = lrp("big", 3, "exec sleep 1000");
    big.memory_mb = 400;
    client.desire_lrp(&big).await.unwrap();
    let failed = eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&ActualLrpQuery {
                process_guid: Some("big".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let running = rows.iter().filter(|a| a.state == ActualLrpState::Running).count();
        let unplaced: Vec<_> = rows
            .iter()
            .filter(|a| !a.placement_error.is_empty())
            .cloned()
            .collect();
        (running == 2 && unplaced.len() == 1)
            .then(|| unplaced[0].clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    assert!(
        failed.placement_error.starts_with("insufficient resources"),
        "{}",
        failed.placement_error
    );

    // Work sent straight to the full cell comes back as not taken, and nothing is reserved.
    let before = c.rep.rep.store.remaining();
    assert_eq!(before.memory_mb, 1024 - 800);
    let resource = diego_model::Resources {
        memory_mb: 400,
        disk_mb: 64,
        ..Default::default()
    };
    let work = diego_model::auction::Work {
        cell_id: "cell-1".into(),
        lrps: vec![diego_model::auction::LrpWork {
            process_guid: "big".into(),
            domain: "d".into(),
            index: failed.index,
            placement_constraint: Default::default(),
            resource: resource.clone(),
        }],
        tasks: vec![diego_model::auction::TaskStartRequest {
            task_guid: "too-big".into(),
            domain: "d".into(),
            placement_constraint: Default::default(),
            resource,
        }],
    };
    let answer: diego_model::auction::Work = reqwest::Client::new()
        .post(format!("{}/work", c.rep.url))
        .json(&work)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.lrps.len(), 1, "the instance is returned: {answer:?}");
    assert_eq!(answer.tasks.len(), 1, "the task is returned: {answer:?}");
    assert_eq!(c.rep.rep.store.remaining(), before, "nothing was reserved");
    assert_eq!(c.rep.rep.store.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_keeps_the_container_of_a_suspect_instance() {
    // The BBS loses the cell's presence while the cell runs on: convergence marks its instance
    // SUSPECT. The cell's own syncs must not take that for "not mine" and stop the container.
    let mut bbs_config = TestBbs::config(diego_bbs::StoreConfig::Memory);
    bbs_config.convergence.interval = Duration::from_millis(200);
    let bbs = TestBbs::start_with(bbs_config, None).await;
    let shutdown = CancellationToken::new();
    let depot = tempfile::tempdir().unwrap();
    let backend = process_backend(depot.path());
    let mut config = rep_config("cell-1", &bbs.url);
    config.sync_interval = Duration::from_millis(200);
    // Renewed every 20 s: the presence removed below stays away for the whole test.
    config.presence_ttl = Duration::from_secs(60);
    let rep = diego_rep::start(config, backend.clone(), MemorySink::new(), shutdown.clone())
        .await
        .unwrap();
    let client = &bbs.client;
    client
        .desire_lrp(&lrp("web", 1, "exec sleep 1000"))
        .await
        .unwrap();
    // No auctioneer here: the instance is claimed and started the way a cell's work is.
    let work = diego_model::auction::Work {
        cell_id: "cell-1".into(),
        lrps: vec![diego_model::auction::LrpWork {
            process_guid: "web".into(),
            domain: "d".into(),
            index: 0,
            placement_constraint: Default::default(),
            resource: Default::default(),
        }],
        tasks: Vec::new(),
    };
    let rep_client = diego_client::RepClient::new(&rep.url, reqwest::Client::new(), WAIT);
    let refused = rep_client.perform(&work).await.unwrap();
    assert!(refused.lrps.is_empty(), "{refused:?}");
    let running = running_web(client).await;

    client.remove_cell("cell-1").await.unwrap();
    eventually(WAIT, || async {
        let rows = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
        rows.iter()
            .any(|a| a.presence == Presence::Suspect && a.instance_guid == running.instance_guid)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    // Several syncs later the container still runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        backend.info(&running.instance_guid).await.is_ok(),
        "the SUSPECT instance's container was destroyed"
    );
    assert!(rep.rep.workload(&running.instance_guid).is_some());
    shutdown.cancel();
    let _ = rep.task.await;
}
