//! A whole Diego on this machine with real containers: `diego dev` (BBS, auctioneer, one cell
//! on the runc backend) driven by the CLI as a user would (root; needs runc and busybox-static).

use std::process::Stdio;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrpState, TaskState};
use diego_testkit::{eventually, free_port};
use tokio::process::{Child, Command};

mod common;
use common::{diego, BIN};
const WAIT: Duration = Duration::from_secs(60);

/// `diego dev` stopped (SIGTERM, by its PID) when dropped, then whatever containers its cell
/// left removed (cells keep their containers across a stop by design). Fields drop in order:
/// the process is stopped before the leftovers are cleaned.
struct Dev {
    child: Child,
    _leftovers: common::RuncLeftovers,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_lrps_run_in_runc_containers_under_diego_dev() {
    if !common::runc_usable("tasks_and_lrps_run_in_runc_containers_under_diego_dev") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["dev", "--backend", "runc", "--data-dir"])
        .arg(data.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--logs-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dev = Dev {
        child,
        _leftovers: common::RuncLeftovers::for_depot(&data.path().join("cell-0").join("depot")),
    };
    let client = BbsClient::new(bbs.clone());
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    // A task's result file comes back; a failing one says how it exited.
    let (ok, out) = diego(
        &bbs,
        &[
            "task",
            "submit",
            "t1",
            "--image",
            "preloaded:busybox",
            "--result-file",
            "/tmp/out",
            "--",
            "sh",
            "-c",
            "echo 42 > /tmp/out",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = diego(&bbs, &["task", "submit", "t2", "--", "sh", "-c", "exit 3"]).await;
    assert!(ok, "{out}");
    // Over its memory limit: killed by the OOM killer, and said so.
    let (ok, out) = diego(
        &bbs,
        &[
            "task",
            "submit",
            "t3",
            "--memory",
            "16",
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let oom = eventually(WAIT, || async {
        let t = client.task("t3").await.map_err(|e| e.to_string())?;
        (t.state == TaskState::Completed)
            .then_some(t.clone())
            .ok_or(t.state.to_string())
    })
    .await;
    assert!(oom.failed);
    assert!(
        oom.failure_reason.contains("(out of memory)"),
        "{}",
        oom.failure_reason
    );
    for (guid, failed) in [("t1", false), ("t2", true)] {
        let t = eventually(WAIT, || async {
            let t = client.task(guid).await.map_err(|e| e.to_string())?;
            (t.state == TaskState::Completed)
                .then_some(t.clone())
                .ok_or(t.state.to_string())
        })
        .await;
        assert_eq!(t.failed, failed, "{t:?}");
        if failed {
            assert!(t.failure_reason.contains("Exit status 3"), "{}", t.failure_reason);
        } else {
            assert_eq!(t.result.trim(), "42");
        }
    }

    // Three busybox httpd instances answer HTTP on their host addresses.
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "web",
            "--instances",
            "3",
            "--image",
            "preloaded:busybox",
            "--port",
            "8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let running = eventually(WAIT, || async {
        let a = client
            .actual_lrps(&ActualLrpQuery {
                process_guid: Some("web".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let running: Vec<_> = a
            .iter()
            .filter(|a| a.state == ActualLrpState::Running)
            .cloned()
            .collect();
        (running.len() == 3)
            .then_some(running.clone())
            .ok_or(format!("{} running", running.len()))
    })
    .await;
    for a in &running {
        let url = format!("http://{}:{}/", a.address, a.ports[0].host_port);
        let status = eventually(WAIT, || async {
            reqwest::get(&url)
                .await
                .map(|r| r.status())
                .map_err(|e| e.to_string())
        })
        .await;
        // busybox httpd answers (404: no index page in its directory).
        assert!(status.as_u16() < 500, "{url}: {status}");
    }
    let (_, shown) = diego(&bbs, &["lrp", "get", "web"]).await;
    assert!(shown.contains("3 running of 3 desired"), "{shown}");
    // Per instance: index, state, cell, address, uptime (SINCE), crashes, CPU and memory.
    assert!(shown.contains("CPU") && shown.contains("MEMORY"), "{shown}");
    for line in shown.lines().filter(|l| l.contains("RUNNING")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (cpu, memory) = (fields[fields.len() - 3], fields[fields.len() - 2]);
        assert!(cpu.ends_with('%') && memory.ends_with('M'), "{line}");
    }

    // Scaling down stops the extra containers and removes their instances; the one kept
    // goes on serving.
    let (ok, out) = diego(&bbs, &["lrp", "scale", "web", "1"]).await;
    assert!(ok, "{out}");
    let depot = data.path().join("cell-0").join("depot");
    let kept = eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&ActualLrpQuery {
                process_guid: Some("web".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let dirs = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (rows.len() == 1 && dirs == 1)
            .then(|| rows[0].clone())
            .ok_or(format!("{} rows, {dirs} containers", rows.len()))
    })
    .await;
    assert_eq!(kept.index, 0);
    let url = format!("http://{}:{}/", kept.address, kept.ports[0].host_port);
    let status = reqwest::get(&url).await.unwrap().status();
    assert!(status.as_u16() < 500, "{url}: {status}");

    // A TCP health check is probed inside the container (not through the accepting net-in
    // proxy): an app that never listens never becomes RUNNING and crashes as Diego says.
    let sh = |script: &str| {
        Some(diego_model::Action::run(diego_model::RunAction {
            path: "sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }))
    };
    let tcp_check = Some(diego_model::CheckDefinition {
        checks: vec![diego_model::Check::tcp(8080)],
        ..Default::default()
    });
    client
        .desire_lrp(&diego_model::DesiredLrp {
            process_guid: "deaf".into(),
            domain: "d".into(),
            rootfs: "preloaded:busybox".into(),
            instances: 1,
            memory_mb: 64,
            disk_mb: 64,
            ports: vec![8080],
            start_timeout_ms: 2000,
            check_definition: tcp_check.clone(),
            action: sh("exec sleep 1000"),
            ..Default::default()
        })
        .await
        .unwrap();
    let deaf = eventually(WAIT, || async {
        let a = client.actual_lrp("deaf", 0).await.map_err(|e| e.to_string())?;
        let a = a.first().cloned().ok_or("no instance")?;
        (a.crash_count >= 1)
            .then_some(a.clone())
            .ok_or(format!("{:?} crashes {}", a.state, a.crash_count))
    })
    .await;
    assert!(
        deaf.crash_reason.starts_with("Instance never healthy after 2s"),
        "{}",
        deaf.crash_reason
    );
    client.remove_desired_lrp("deaf").await.unwrap();

    // Deleting the LRP stops and removes every container.
    let (ok, out) = diego(&bbs, &["lrp", "delete", "web"]).await;
    assert!(ok, "{out}");
    eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&ActualLrpQuery {
                process_guid: Some("web".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .len();
        let dirs = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (rows == 0 && dirs == 0)
            .then_some(())
            .ok_or(format!("{rows} rows, {dirs} containers"))
    })
    .await;
    drop(dev);
}
