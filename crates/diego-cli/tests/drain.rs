//! Evacuation end to end on real runc containers (root; needs runc and busybox-static): a
//! `diego dev --cells 0` (BBS + auctioneer) with two `diego cell` processes, an LRP of two
//! busybox httpd instances, and one cell evacuated — by `diego cell drain` or by SIGTERM —
//! while every index is probed over HTTP all along.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrp, ActualLrpState, Presence};
use diego_testkit::{eventually, free_port};
use futures_util::StreamExt;
use tokio::process::{Child, Command};

mod common;
use common::{diego, BIN};

const WAIT: Duration = Duration::from_secs(60);
/// The polling loop's bounds: one round every 50 ms, for at most 60 s.
const POLL_EVERY: Duration = Duration::from_millis(50);
const POLL_FOR: Duration = Duration::from_secs(60);
const INSTANCES: i32 = 2;

/// A `diego` process of the test, its stderr kept in a log file (printed if the test fails).
/// Dropped: SIGKILLed by its PID and waited for, then (for a cell) whatever containers it left
/// are removed.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    leftovers: Option<common::RuncLeftovers>,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[String], depot: Option<PathBuf>) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env_remove("DIEGO_BBS_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning diego");
        Proc {
            name: name.to_string(),
            child,
            log,
            leftovers: depot.map(|d| common::RuncLeftovers::for_depot(&d)),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("{} still running after {limit:?}", self.name),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last lines of {} ----", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Containers go after the process that could still be making them.
        drop(self.leftovers.take());
    }
}

/// A BBS and auctioneer (`diego dev --cells 0`) and two runc cells in zones z1 and z2.
struct Cluster {
    client: BbsClient,
    bbs: String,
    root: PathBuf,
    cells: Vec<(String, Proc)>,
    _dev: Proc,
}

impl Cluster {
    async fn start(root: &Path) -> Cluster {
        let port = free_port();
        let bbs = format!("http://127.0.0.1:{port}");
        let dev = Proc::spawn(
            "dev",
            root,
            &[
                "dev".into(),
                "--cells".into(),
                "0".into(),
                "--data-dir".into(),
                root.join("dev").display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
            None,
        );
        let client = BbsClient::new(bbs.clone());
        eventually(WAIT, || async { client.ping().await.map_err(|e| e.to_string()) }).await;
        let mut cells = Vec::new();
        for (id, zone) in [("cell-a", "z1"), ("cell-b", "z2")] {
            let dir = root.join(id);
            let args = [
                "cell",
                "--backend",
                "runc",
                "--bbs",
                &bbs,
                "--cell-id",
                id,
                "--zone",
                zone,
                "--memory-mb",
                "2048",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--data-dir",
                &dir.display().to_string(),
            ]
            .map(String::from);
            cells.push((
                id.to_string(),
                Proc::spawn(id, root, &args, Some(dir.join("depot"))),
            ));
        }
        let cluster = Cluster {
            client,
            bbs,
            root: root.to_path_buf(),
            cells,
            _dev: dev,
        };
        eventually(WAIT, || async {
            let n = cluster.client.cells().await.map_err(|e| e.to_string())?.len();
            (n == 2).then_some(()).ok_or(format!("{n} cells"))
        })
        .await;
        cluster
    }

    fn depot(&self, cell: &str) -> PathBuf {
        self.root.join(cell).join("depot")
    }

    fn cell(&mut self, id: &str) -> &mut Proc {
        &mut self.cells.iter_mut().find(|(c, _)| c == id).unwrap().1
    }

    /// `web`, as a user creates it (README tour, with an index page so `GET /` answers 200):
    /// `--port` gives it a TCP health check, so RUNNING means serving.
    async fn desire_web(&self) -> Vec<ActualLrp> {
        let script =
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
        let instances = INSTANCES.to_string();
        let (ok, out) = diego(
            &self.bbs,
            &[
                "lrp",
                "create",
                "web",
                "--instances",
                &instances,
                "--image",
                "preloaded:busybox",
                "--port",
                "8080",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
        .await;
        assert!(ok, "{out}");
        let desired = self.client.desired_lrp("web").await.unwrap();
        assert!(
            desired.check_definition.is_some_and(|c| !c.checks.is_empty()),
            "lrp create --port checks the port"
        );
        eventually(WAIT, || async {
            let running = running_rows(&self.client).await?;
            let ordinary = running
                .iter()
                .filter(|a| a.presence == Presence::Ordinary)
                .count();
            (ordinary == INSTANCES as usize)
                .then_some(running.clone())
                .ok_or(format!("{ordinary} running"))
        })
        .await
    }
}

/// Every RUNNING row of `web` (ORDINARY and EVACUATING).
async fn running_rows(client: &BbsClient) -> Result<Vec<ActualLrp>, String> {
    let rows = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some("web".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter(|a| a.state == ActualLrpState::Running)
        .collect())
}

/// Whether `a` answers `GET /` with 200 and the index page.
async fn answers(http: &reqwest::Client, a: &ActualLrp) -> bool {
    let Some(port) = a.ports.iter().find(|p| p.container_port == 8080) else {
        return false;
    };
    let url = format!("http://{}:{}/", a.address, port.host_port);
    match http.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r.text().await.is_ok_and(|t| t.trim() == "ok"),
        _ => false,
    }
}

/// Whether some RUNNING row of `index` answers; also whether an EVACUATING one did.
async fn index_serves(client: &BbsClient, http: &reqwest::Client, index: i32) -> (bool, bool, String) {
    let rows = match client.actual_lrp("web", index).await {
        Ok(rows) => rows,
        Err(e) => return (false, false, format!("reading index {index}: {e}")),
    };
    let mut seen = Vec::new();
    let mut evacuating_served = false;
    for a in rows.iter().filter(|a| a.state == ActualLrpState::Running) {
        let ok = answers(http, a).await;
        seen.push(format!("{:?} on {} answered={ok}", a.presence, a.cell_id));
        if ok {
            evacuating_served |= a.presence == Presence::Evacuating;
            return (true, evacuating_served, seen.join("; "));
        }
    }
    let states: Vec<String> = rows
        .iter()
        .map(|a| format!("{:?} {} on {:?}", a.presence, a.state, a.cell_id))
        .collect();
    (
        false,
        false,
        format!("rows [{}], probes [{}]", states.join(", "), seen.join("; ")),
    )
}

/// What the polling loop saw.
#[derive(Debug, Default)]
struct Availability {
    rounds: usize,
    /// Index and what was seen, each time an index had no answering instance.
    gaps: Vec<(i32, String)>,
    /// Rounds in which an index was served by its EVACUATING instance.
    served_by_evacuating: usize,
}

/// Probes every index every `POLL_EVERY` until `stop` (or `POLL_FOR` passes). An index whose
/// instances do not answer is looked at once more with a fresh read of the BBS (the replacement
/// may have taken over between the read and the probe); only then is it a gap.
fn poll(client: BbsClient, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Availability> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut seen = Availability::default();
        let until = tokio::time::Instant::now() + POLL_FOR;
        while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < until {
            seen.rounds += 1;
            for index in 0..INSTANCES {
                let (mut ok, mut by_evacuating, mut what) = index_serves(&client, &http, index).await;
                if !ok {
                    (ok, by_evacuating, what) = index_serves(&client, &http, index).await;
                }
                if !ok {
                    seen.gaps.push((index, what));
                }
                seen.served_by_evacuating += by_evacuating as usize;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        seen
    })
}

/// The containers runc still has for a cell, and what is left in its depot.
fn containers_left(depot: &Path) -> (Vec<String>, usize) {
    let runc_root = depot.with_file_name("depot.runc");
    let listed = std::process::Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["list", "--quiet"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ids = listed
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let dirs = std::fs::read_dir(depot).map(|d| d.count()).unwrap_or(0);
    (ids, dirs)
}

/// The shared body: two instances up, `evacuate` one cell holding instance 0 while polling,
/// then the checks.
async fn evacuation_keeps_every_index_serving(how: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path()).await;
    let running = cluster.desire_web().await;
    let drained = running
        .iter()
        .find(|a| a.index == 0)
        .map(|a| a.cell_id.clone())
        .unwrap();
    let other = if drained == "cell-a" { "cell-b" } else { "cell-a" };
    // Before anything moves, every index answers.
    let http = reqwest::Client::new();
    for index in 0..INSTANCES {
        let (ok, _, what) = index_serves(&cluster.client, &http, index).await;
        assert!(ok, "index {index} does not serve before the drain: {what}");
    }

    // Every EVACUATING row created from now on, by index (from the BBS's event stream).
    let mut events = cluster.client.events_lrps(None).await.unwrap();
    let evacuated = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watcher = {
        let evacuated = evacuated.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = events.next().await {
                if e.event != "actual_lrp_created" {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
                if v["actual_lrp"]["presence"] == "EVACUATING" {
                    let index = v["actual_lrp"]["index"].as_i64().unwrap_or(-1);
                    evacuated.lock().unwrap().push(index);
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll(cluster.client.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    match how {
        "drain" => {
            let (ok, out) = diego(&cluster.bbs, &["cell", "drain", &drained, "--timeout", "90"]).await;
            assert!(ok, "diego cell drain failed: {out}");
            assert!(out.contains(&format!("cell {drained} drained")), "{out}");
            assert!(out.contains(" left ("), "progress is shown: {out}");
        }
        "sigterm" => {
            let pid = cluster.cell(&drained).pid();
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
        other => panic!("unknown way to evacuate: {other}"),
    }
    let status = cluster.cell(&drained).exited(Duration::from_secs(90)).await;
    assert!(status.success(), "the drained cell exited with {status}");

    // Everything ends up on the other cell, RUNNING in ORDINARY rows.
    let after = eventually(WAIT, || async {
        let rows = running_rows(&cluster.client).await?;
        let on_other = rows
            .iter()
            .filter(|a| a.presence == Presence::Ordinary && a.cell_id == other)
            .count();
        (on_other == INSTANCES as usize && rows.len() == INSTANCES as usize)
            .then_some(rows.clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let seen = poller.await.unwrap();
    println!(
        "{how}: {} polling rounds, every index answered in each; {} answers came from an EVACUATING instance",
        seen.rounds, seen.served_by_evacuating
    );

    assert!(seen.rounds >= 10, "the poller barely ran: {seen:?}");
    assert!(
        seen.gaps.is_empty(),
        "an index had no answering instance during the evacuation ({} of {} rounds): {:?}",
        seen.gaps.len(),
        seen.rounds,
        seen.gaps
    );
    // The drained cell's instances were handed over through EVACUATING rows (not dropped and
    // placed again); index 0 was on it.
    let on_drained: Vec<i64> = running
        .iter()
        .filter(|a| a.cell_id == drained)
        .map(|a| a.index as i64)
        .collect();
    // EVACUATING rows were created for exactly the drained cell's indices.
    eventually(Duration::from_secs(10), || async {
        let mut seen = evacuated.lock().unwrap().clone();
        seen.sort();
        (seen == on_drained)
            .then_some(())
            .ok_or(format!("EVACUATING rows by index: {seen:?}, want {on_drained:?}"))
    })
    .await;
    watcher.abort();
    let all = cluster
        .client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        INSTANCES as usize,
        "no EVACUATING row is left: {all:?}"
    );
    for a in &after {
        assert!(answers(&http, a).await, "{a:?} does not answer");
    }
    let cells: Vec<String> = cluster
        .client
        .cells()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cell_presence.cell_id)
        .collect();
    assert_eq!(cells, [other.to_string()], "the drained cell left the BBS");
    let (ids, dirs) = containers_left(&cluster.depot(&drained));
    assert!(
        ids.is_empty() && dirs == 0,
        "containers left on the drained cell: runc {ids:?}, {dirs} depot entries"
    );
    // The other cell keeps running its instances.
    assert!(matches!(cluster.cell(other).child.try_wait(), Ok(None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_drain_moves_instances_with_every_index_serving_throughout() {
    if !common::runc_usable("cell_drain_moves_instances_with_every_index_serving_throughout") {
        return;
    }
    evacuation_keeps_every_index_serving("drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_evacuates_a_cell_with_every_index_serving_throughout() {
    if !common::runc_usable("sigterm_evacuates_a_cell_with_every_index_serving_throughout") {
        return;
    }
    evacuation_keeps_every_index_serving("sigterm").await;
}

#[tokio::test]
async fn drain_of_an_unknown_cell_says_which_cells_there_are() {
    let bbs = diego_testkit::TestBbs::start().await;
    let (ok, out) = diego(&bbs.url, &["cell", "drain", "nope", "--timeout", "1"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("cell \"nope\" is not registered") && out.contains("live cells: none"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_dev_cell_stops_alone() {
    // `diego dev` runs its cells in its own process: draining one must not stop the others.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let mut dev = Proc::spawn(
        "dev",
        dir.path(),
        &[
            "dev".into(),
            "--cells".into(),
            "2".into(),
            "--backend".into(),
            "process".into(),
            "--data-dir".into(),
            dir.path().join("dev").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        None,
    );
    let client = BbsClient::new(bbs.clone());
    let cells = eventually(WAIT, || async {
        let cells = client.cells().await.map_err(|e| e.to_string())?;
        (cells.len() == 2)
            .then_some(cells.clone())
            .ok_or(format!("{} cells", cells.len()))
    })
    .await;
    let (drained, kept) = (&cells[0].cell_presence.cell_id, &cells[1].cell_presence.cell_id);
    let (ok, out) = diego(&bbs, &["cell", "drain", drained, "--timeout", "30"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("cell {drained} drained")), "{out}");
    // The other cell and the BBS keep going (a stopped role would stop all of dev at once).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        matches!(dev.child.try_wait(), Ok(None)),
        "diego dev stopped after one of its cells was drained"
    );
    let left: Vec<String> = client
        .cells()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cell_presence.cell_id)
        .collect();
    assert_eq!(left, [kept.to_string()]);
}
