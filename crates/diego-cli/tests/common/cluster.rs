//! A cluster of real processes for the CLI's end-to-end tests: `diego dev --cells 0` (BBS and
//! auctioneer in one process) or separate `diego bbs` and `diego auctioneer` processes (so each
//! can be killed and restarted on its own), and `diego cell` processes on the runc backend, each
//! killed and cleaned up (containers included) when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_garden_runc::Runc;
use diego_model::{ActualLrp, ActualLrpState, Presence};
use diego_testkit::{eventually, free_port};
use tokio::process::{Child, Command};

use super::{diego, RuncLeftovers, BIN};

const WAIT: Duration = Duration::from_secs(60);

/// A `diego` process of the test, its stderr kept in a log file (printed if the test fails).
/// Dropped: SIGKILLed by its PID and waited for, then (for a cell) whatever containers it left
/// are removed.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub leftovers: Option<RuncLeftovers>,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, args: &[String], depot: Option<PathBuf>) -> Proc {
        let log = dir.join(format!("{name}.log"));
        // Appended to: a restarted process (same name) adds to its predecessor's log.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::from(diego_testkit::diego_command(Path::new(BIN), args))
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning diego");
        Proc {
            name: name.to_string(),
            child,
            log,
            leftovers: depot.map(|d| RuncLeftovers::for_depot(&d)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
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

/// `diego dev` with `flags`, its data in `dir/dev`, on a free port, once `cells` cells are
/// registered: the process (its log in `dir`) and a client of its BBS.
pub async fn start_dev(dir: &Path, flags: &[&str], cells: usize) -> (Proc, BbsClient) {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--data-dir".into(),
        dir.join("dev").display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    // Tests run side by side: each dev's log server on a port of its own unless named.
    if !flags.contains(&"--logs-listen") {
        args.extend(["--logs-listen".into(), "127.0.0.1:0".into()]);
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let dev = Proc::spawn("dev", dir, &args, None);
    let client = BbsClient::new(format!("http://127.0.0.1:{port}"));
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == cells).then_some(()).ok_or(format!("{n} of {cells} cells"))
    })
    .await;
    (dev, client)
}

/// Waits until the BBS holds no actual LRP at all.
pub async fn no_instances(client: &BbsClient) {
    eventually(WAIT, || async {
        let n = client
            .actual_lrps(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .len();
        (n == 0).then_some(()).ok_or(format!("{n} instances left"))
    })
    .await;
}

/// A BBS and auctioneer (`diego dev --cells 0`, or `diego bbs` and `diego auctioneer`) and runc
/// cells (`diego cell` processes).
pub struct Cluster {
    pub client: BbsClient,
    pub bbs: String,
    pub root: PathBuf,
    pub cells: Vec<(String, Proc)>,
    /// `diego dev --cells 0` ([`Cluster::start`]), or `bbs` then `auctioneer`
    /// ([`Cluster::start_roles`]); dropped after the cells.
    pub control: Vec<Proc>,
    bbs_port: u16,
    auctioneer_port: u16,
    bbs_flags: Vec<String>,
    auctioneer_flags: Vec<String>,
}

impl Cluster {
    /// `cells` as (id, zone); `cell_flags` added to every cell's command line.
    pub async fn start(root: &Path, cells: &[(&str, &str)], cell_flags: &[&str]) -> Cluster {
        let port = free_port();
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
                "--logs-listen".into(),
                "127.0.0.1:0".into(),
            ],
            None,
        );
        let mut cluster = Self::empty(root, port, 0, &[], &[]);
        cluster.control.push(dev);
        cluster.add_cells(cells, cell_flags).await;
        cluster
    }

    /// As [`Cluster::start`], with the BBS (`root/bbs.log`, its store in `root/bbs-data`) and
    /// the auctioneer (`root/auctioneer.log`) as separate processes, each given its flags;
    /// either can be started again ([`Cluster::spawn_bbs`], [`Cluster::spawn_auctioneer`]) on
    /// the same address and store.
    pub async fn start_roles(
        root: &Path,
        cells: &[(&str, &str)],
        cell_flags: &[&str],
        bbs_flags: &[&str],
        auctioneer_flags: &[&str],
    ) -> Cluster {
        let mut cluster = Self::empty(root, free_port(), free_port(), bbs_flags, auctioneer_flags);
        let bbs = cluster.spawn_bbs();
        cluster.control.push(bbs);
        let auctioneer = cluster.spawn_auctioneer();
        cluster.control.push(auctioneer);
        cluster.add_cells(cells, cell_flags).await;
        cluster
    }

    fn empty(
        root: &Path,
        bbs_port: u16,
        auctioneer_port: u16,
        bbs_flags: &[&str],
        auctioneer_flags: &[&str],
    ) -> Cluster {
        let bbs = format!("http://127.0.0.1:{bbs_port}");
        Cluster {
            client: BbsClient::new(bbs.clone()),
            bbs,
            root: root.to_path_buf(),
            cells: Vec::new(),
            control: Vec::new(),
            bbs_port,
            auctioneer_port,
            bbs_flags: bbs_flags.iter().map(|f| f.to_string()).collect(),
            auctioneer_flags: auctioneer_flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Waits for the BBS, starts the cells and waits until all are registered.
    async fn add_cells(&mut self, cells: &[(&str, &str)], cell_flags: &[&str]) {
        eventually(WAIT, || async {
            self.client.ping().await.map_err(|e| e.to_string())
        })
        .await;
        for &(id, zone) in cells {
            let cell = Self::spawn_cell(&self.root, &self.bbs, id, zone, cell_flags);
            self.cells.push((id.to_string(), cell));
        }
        let want = self.cells.len();
        eventually(WAIT, || async {
            let n = self.client.cells().await.map_err(|e| e.to_string())?.len();
            (n == want).then_some(()).ok_or(format!("{n} cells"))
        })
        .await;
    }

    /// A `diego bbs` on the cluster's BBS address and store ([`Cluster::start_roles`]).
    pub fn spawn_bbs(&self) -> Proc {
        let mut args: Vec<String> = [
            "bbs",
            "--data-dir",
            &self.root.join("bbs-data").display().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", self.bbs_port),
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.bbs_flags.iter().cloned());
        Proc::spawn("bbs", &self.root, &args, None)
    }

    /// A `diego auctioneer` on the cluster's auctioneer address ([`Cluster::start_roles`]).
    pub fn spawn_auctioneer(&self) -> Proc {
        let mut args: Vec<String> = [
            "auctioneer",
            "--bbs",
            &self.bbs,
            "--listen",
            &format!("127.0.0.1:{}", self.auctioneer_port),
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.auctioneer_flags.iter().cloned());
        Proc::spawn("auctioneer", &self.root, &args, None)
    }

    /// The control-plane process named `name` (`dev`, `bbs` or `auctioneer`).
    pub fn role(&mut self, name: &str) -> &mut Proc {
        self.control.iter_mut().find(|p| p.name == name).unwrap()
    }

    /// A `diego cell` with the runc backend, its data in `root/ID` (a restart reuses it).
    pub fn spawn_cell(root: &Path, bbs: &str, id: &str, zone: &str, flags: &[&str]) -> Proc {
        let dir = root.join(id);
        let mut args: Vec<String> = [
            "cell",
            "--backend",
            "runc",
            "--bbs",
            bbs,
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
        .map(String::from)
        .to_vec();
        args.extend(flags.iter().map(|f| f.to_string()));
        Proc::spawn(id, root, &args, Some(dir.join("depot")))
    }

    pub fn depot(&self, cell: &str) -> PathBuf {
        self.root.join(cell).join("depot")
    }

    /// runc over the cell's private state dir (`<depot>.runc`).
    pub fn runc(&self, cell: &str) -> Runc {
        Runc::new("runc", self.depot(cell).with_file_name("depot.runc"))
    }

    pub fn cell(&mut self, id: &str) -> &mut Proc {
        &mut self.cells.iter_mut().find(|(c, _)| c == id).unwrap().1
    }

    /// `web`, as a user creates it (README tour, with an index page so `GET /` answers 200):
    /// `--port` gives it a TCP health check, so RUNNING means serving.
    pub async fn desire_web(&self, instances: i32) -> Vec<ActualLrp> {
        let script =
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
        let count = instances.to_string();
        let (ok, out) = diego(
            &self.bbs,
            &[
                "lrp",
                "create",
                "web",
                "--instances",
                &count,
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
            (ordinary == instances as usize)
                .then_some(running.clone())
                .ok_or(format!("{ordinary} running"))
        })
        .await
    }
}

/// Every RUNNING row of `web` (ORDINARY and EVACUATING).
pub async fn running_rows(client: &BbsClient) -> Result<Vec<ActualLrp>, String> {
    Ok(web_rows(client)
        .await?
        .into_iter()
        .filter(|a| a.state == ActualLrpState::Running)
        .collect())
}

/// Every row (any state and presence) of the `web` LRP.
pub async fn web_rows(client: &BbsClient) -> Result<Vec<ActualLrp>, String> {
    client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some("web".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

/// Reads the BBS every `every` (for at most 120 s) until `stop`, recording any moment an
/// index of `web` had two RUNNING ORDINARY instances; returns (reads, doubles).
pub fn watch_doubles(
    client: BbsClient,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut rounds, mut doubles) = (0, Vec::new());
        let until = std::time::Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            if let Ok(all) = web_rows(&client).await {
                rounds += 1;
                let mut per_index: HashMap<i32, Vec<String>> = HashMap::new();
                for a in all
                    .iter()
                    .filter(|a| a.state == ActualLrpState::Running && a.presence == Presence::Ordinary)
                {
                    per_index.entry(a.index).or_default().push(a.cell_id.clone());
                }
                for (i, cells) in per_index {
                    if cells.len() > 1 {
                        doubles.push(format!("index {i}: RUNNING ORDINARY on {cells:?}"));
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
        (rounds, doubles)
    })
}

/// Whether `a` answers `GET /` with 200 and the index page.
pub async fn answers(http: &reqwest::Client, a: &ActualLrp) -> bool {
    let Some(port) = a.ports.iter().find(|p| p.container_port == 8080) else {
        return false;
    };
    let url = format!("http://{}:{}/", a.address, port.host_port);
    match http.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r.text().await.is_ok_and(|t| t.trim() == "ok"),
        _ => false,
    }
}
