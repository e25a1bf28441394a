//! A cell agent SIGKILLed while its instances run, on real runc containers (root; needs runc
//! and busybox-static): started again, it takes its containers over — the apps keep their
//! PIDs — and mends the BBS: an instance whose container died meanwhile is crashed and placed
//! again, a container whose LRP was deleted meanwhile is destroyed with its record. Killing an
//! app's process crashes its instance, which is restarted at once.

use std::collections::BTreeSet;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrp, ActualLrpState};
use diego_testkit::{eventually, free_port};
use tokio::process::Child;

mod common;
use common::{diego, spawn};
const WAIT: Duration = Duration::from_secs(60);

/// Children stopped (SIGKILL via kill_on_drop) before the containers their cell left are
/// removed: fields drop in order.
struct Procs {
    dev: Child,
    cell: Option<Child>,
    _leftovers: common::RuncLeftovers,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in [Some(&mut self.dev), self.cell.as_mut()].into_iter().flatten() {
            let _ = child.start_kill();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The PIDs in container `handle` (from its pids cgroup).
fn pids(handle: &str) -> BTreeSet<u32> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/pids/diego/{handle}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The PID of the process whose command line starts with `program` in container `handle`.
fn pid_of(handle: &str, program: &str) -> Option<u32> {
    pids(handle).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(argv0).rsplit('/').next() == Some(program)
        })
    })
}

async fn instances(client: &BbsClient, guid: &str) -> Result<Vec<ActualLrp>, String> {
    let mut rows = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    rows.sort_by_key(|a| a.index);
    Ok(rows)
}

/// Every instance of `guid` RUNNING, `n` of them.
async fn all_running(client: &BbsClient, guid: &str, n: usize) -> Vec<ActualLrp> {
    eventually(WAIT, || async {
        let rows = instances(client, guid).await?;
        let running = rows.iter().filter(|a| a.state == ActualLrpState::Running).count();
        (running == n && rows.len() == n)
            .then_some(rows.clone())
            .ok_or(format!("{running} of {n} running: {rows:?}"))
    })
    .await
}

async fn answers(a: &ActualLrp) -> Result<(), String> {
    let url = format!("http://{}:{}/", a.address, a.ports[0].host_port);
    let status = reqwest::get(&url).await.map_err(|e| e.to_string())?.status();
    // busybox httpd answers (404: nothing to serve in its directory).
    (status.as_u16() < 500)
        .then_some(())
        .ok_or(format!("{url}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_cell_agent_takes_its_containers_over() {
    if !common::runc_usable("a_sigkilled_cell_agent_takes_its_containers_over") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let dev = spawn(&[
        "dev",
        "--cells",
        "0",
        "--data-dir",
        data.path().join("dev").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--logs-listen",
        "127.0.0.1:0",
    ]);
    let cell_dir = data.path().join("cell");
    let cell_listen = format!("127.0.0.1:{}", free_port());
    let cell_args = [
        "cell",
        "--bbs",
        &bbs,
        "--backend",
        "runc",
        "--listen",
        &cell_listen,
        "--data-dir",
        cell_dir.to_str().unwrap(),
    ];
    let mut procs = Procs {
        dev,
        cell: Some(spawn(&cell_args)),
        _leftovers: common::RuncLeftovers::for_depot(&cell_dir.join("depot")),
    };
    let client = BbsClient::new(bbs.clone());
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    let httpd = ["--", "httpd", "-f", "-p", "8080"];
    let web = [
        "lrp",
        "create",
        "web",
        "--instances",
        "2",
        "--image",
        "preloaded:busybox",
        "--port",
        "8080",
    ];
    let (ok, out) = diego(&bbs, &[&web[..], &httpd[..]].concat()).await;
    assert!(ok, "{out}");
    let gone = [
        "lrp",
        "create",
        "gone",
        "--image",
        "preloaded:busybox",
        "--",
        "sleep",
        "1000",
    ];
    let (ok, out) = diego(&bbs, &gone).await;
    assert!(ok, "{out}");
    let before = all_running(&client, "web", 2).await;
    let gone_before = all_running(&client, "gone", 1).await;
    let kept = &before[0];
    let kept_pids = pids(&kept.instance_guid);
    let cmdlines: Vec<String> = kept_pids
        .iter()
        .map(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        pid_of(&kept.instance_guid, "httpd").is_some(),
        "httpd runs in {}: {cmdlines:?}",
        kept.instance_guid
    );

    // The cell agent dies; meanwhile one instance's container dies too, and an LRP is deleted.
    let mut cell = procs.cell.take().unwrap();
    cell.start_kill().unwrap();
    cell.wait().await.unwrap();
    let lost = &before[1];
    let lost_init = pids(&lost.instance_guid)
        .into_iter()
        .min()
        .expect("the container's init");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &lost_init.to_string()])
        .status();
    // kill(2) returns before the process is dead: wait until it is (a zombie, or reaped),
    // as runc sees it, so the agent finds a container that died rather than one dying.
    eventually(WAIT, || async {
        match std::fs::read_to_string(format!("/proc/{lost_init}/stat")) {
            Err(_) => Ok(()),
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
                if matches!(state, Some('Z' | 'X')) {
                    Ok(())
                } else {
                    Err(format!("the container's init is still {state:?}"))
                }
            }
        }
    })
    .await;
    let (ok, out) = diego(&bbs, &["lrp", "delete", "gone"]).await;
    assert!(ok, "{out}");
    assert_eq!(
        pids(&kept.instance_guid),
        kept_pids,
        "the apps run on without their agent"
    );

    procs.cell = Some(spawn(&cell_args));

    // The surviving instance is the same one: same guid and processes, never crashed.
    let after = eventually(WAIT, || async {
        let rows = instances(&client, "web").await?;
        let replaced = rows.iter().any(|a| {
            a.index == 1 && a.state == ActualLrpState::Running && a.instance_guid != lost.instance_guid
        });
        (replaced && rows.len() == 2 && rows[0].state == ActualLrpState::Running)
            .then_some(rows.clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    assert_eq!(after[0].instance_guid, kept.instance_guid);
    assert_eq!(after[0].crash_count, 0);
    assert_eq!(
        pids(&kept.instance_guid),
        kept_pids,
        "same PIDs after the restart"
    );
    eventually(WAIT, || answers(&after[0])).await;
    // The instance whose container died was crashed and placed again.
    assert_eq!(after[1].crash_count, 1);
    assert_eq!(after[1].crash_reason, diego_rep::LOST_CONTAINER);
    eventually(WAIT, || answers(&after[1])).await;
    // The deleted LRP's container and record are gone.
    let depot = cell_dir.join("depot");
    eventually(WAIT, || async {
        let rows = instances(&client, "gone").await?.len();
        let dir = depot.join(&gone_before[0].instance_guid).exists();
        (rows == 0 && !dir)
            .then_some(())
            .ok_or(format!("{rows} rows; container dir there: {dir}"))
    })
    .await;
    assert!(
        !depot.join(&lost.instance_guid).exists(),
        "the dead container was removed"
    );

    // An app process killed: its instance crashes and is restarted at once.
    let app = pid_of(&kept.instance_guid, "httpd").expect("httpd");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &app.to_string()])
        .status();
    let restarted = eventually(WAIT, || async {
        let rows = instances(&client, "web").await?;
        let a = rows[0].clone();
        (a.state == ActualLrpState::Running && a.instance_guid != kept.instance_guid)
            .then_some(a.clone())
            .ok_or(format!("{a:?}"))
    })
    .await;
    assert_eq!(restarted.crash_count, 1);
    assert!(
        restarted.crash_reason.starts_with("Exit status 137"),
        "{}",
        restarted.crash_reason
    );
    eventually(WAIT, || answers(&restarted)).await;

    let (ok, out) = diego(&bbs, &["lrp", "delete", "web"]).await;
    assert!(ok, "{out}");
    eventually(WAIT, || async {
        let n = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(()).ok_or(format!("{n} containers left"))
    })
    .await;
    drop(procs);
}
