//! A bounded chaos test on real runc containers (root; runc and busybox-static): a separate
//! `diego bbs`, `diego auctioneer` and three `diego cell`s, an LRP of 6 busybox httpd instances
//! and a stream of short tasks (one every ~2 s, `sh -c 'echo ran; sleep 1'`, each its own
//! guid). For about 30–35 s a seeded RNG (`CHAOS_SEED` overrides the seed; it is printed) picks a
//! victim — a cell agent (half the time with its containers' init processes too), the BBS or
//! the auctioneer — kills it with SIGKILL and starts it again (same address, store, data dir)
//! after a short random pause (a quarter of the rounds take a second victim down meanwhile, so
//! e.g. the BBS and a cell are down at once). Then the killing stops and, within bounded
//! waits, every index must be RUNNING exactly once and answer HTTP, the cells must hold one LRP
//! container per index, and every task must be COMPLETED (succeeded, or failed — e.g. "cell
//! disappeared before completion" when its cell was lost).
//!
//! Short timings so recovery takes seconds: cells' presence TTL 3 s and sync every 2 s; the
//! BBS's lock TTL 2 s (retry 1 s), convergence every 2 s, re-auction of work left UNCLAIMED or
//! PENDING after 3 s; the auctioneer's lock TTL 2 s (a restarted auctioneer has a new owner id,
//! so it waits for its predecessor's lock to lapse).
//!
//! "No index ran twice" is watched by a poller of the BBS's actual LRPs (every 100 ms), as in
//! cell_loss.rs. "No task started twice" is observed two ways, because a task cannot leave a
//! mark on the host (a task has no volume or bind-mount field, and runc containers have no
//! network out of their namespace):
//!
//! - from the cells' side: a cell makes a task's container (handle = task guid) only after the
//!   BBS accepted its StartTask, so a poller reads every cell's runc state directory
//!   (`<data_dir>/depot.runc/<id>/state.json`, every 100 ms) and records each task container
//!   as (cell, creation time). A task whose container was seen on two cells, or created twice
//!   on one cell, was started twice. (A container adopted by a restarted agent keeps its
//!   creation time.) A task lives at least a second, so a 100 ms poll sees every container.
//! - from the BBS's side: a poller of the task list (every 100 ms) records each task's
//!   (state, cell) transitions; a task must never be RUNNING on two cells nor go from RUNNING
//!   back to PENDING.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_client::{BbsClient, TaskQuery};
use diego_model::{ActualLrp, ActualLrpState, DesireTaskRequest, Presence, TaskState};

mod common;
use common::cluster::{answers, watch_doubles, web_rows, Cluster, Proc};
use diego_garden_runc::Runc;

const INSTANCES: i32 = 6;
const CELLS: [(&str, &str); 3] = [("cell-a", "z1"), ("cell-b", "z2"), ("cell-c", "z3")];
const CELL_FLAGS: [&str; 4] = ["--presence-ttl", "3", "--sync-interval", "2"];
const BBS_FLAGS: [&str; 8] = [
    "--lock-ttl",
    "2",
    "--lock-retry-interval",
    "1",
    "--convergence-interval",
    "2",
    "--auction-stale-after",
    "3",
];
const AUCTIONEER_FLAGS: [&str; 4] = ["--lock-ttl", "2", "--cell-timeout-ms", "2000"];
/// Rounds start until then (and none whose final gap would end past it).
const CHAOS: Duration = Duration::from_secs(32);
const RECOVERY: Duration = Duration::from_secs(40);
const TASKS_DONE: Duration = Duration::from_secs(30);
const LEFTOVERS: Duration = Duration::from_secs(20);
const TASK_EVERY: Duration = Duration::from_secs(2);
const TASK_PREFIX: &str = "chaos-task-";

/// splitmix64: small, seeded, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Cell(usize),
    Bbs,
    Auctioneer,
}

impl Victim {
    fn name(self) -> String {
        match self {
            Victim::Cell(i) => CELLS[i].0.to_string(),
            Victim::Bbs => "bbs".into(),
            Victim::Auctioneer => "auctioneer".into(),
        }
    }
}

/// Polls until `check` is Ok or `limit` passes; the last complaint otherwise.
async fn within<T, F, Fut>(limit: Duration, mut check: F) -> Result<(T, Duration), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return Ok((v, start.elapsed())),
            Err(e) if start.elapsed() >= limit => return Err(format!("not within {limit:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the BBS said about one task over the run: its (state, cell) changes.
#[derive(Default)]
struct TaskHistory {
    seen: Vec<(TaskState, String)>,
}

/// Polls the BBS's tasks every 100 ms and records each chaos task's (state, cell) changes.
fn watch_tasks(
    client: BbsClient,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, BTreeMap<String, TaskHistory>)> {
    tokio::spawn(async move {
        let mut rounds = 0;
        let mut all: BTreeMap<String, TaskHistory> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(tasks) = client.tasks(&TaskQuery::default()).await {
                rounds += 1;
                for t in tasks.into_iter().filter(|t| t.task_guid.starts_with(TASK_PREFIX)) {
                    let h = all.entry(t.task_guid.clone()).or_default();
                    let now = (t.state, t.cell_id.clone());
                    if h.seen.last() != Some(&now) {
                        h.seen.push(now);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (rounds, all)
    })
}

/// Per task guid, its containers seen as (cell, creation time).
type TaskContainers = BTreeMap<String, BTreeSet<(String, String)>>;

/// Reads every cell's runc state directory every 100 ms; each chaos task's containers as
/// (cell, creation time).
fn watch_task_containers(
    root: PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, TaskContainers)> {
    tokio::task::spawn_blocking(move || {
        let mut rounds = 0;
        let mut seen = TaskContainers::new();
        while !stop.load(Ordering::SeqCst) {
            rounds += 1;
            for (cell, _) in CELLS {
                let dir = root.join(cell).join("depot.runc");
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let id = entry.file_name().to_string_lossy().into_owned();
                    if !id.starts_with(TASK_PREFIX) {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
                        continue;
                    };
                    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    let created = state["created"].as_str().unwrap_or_default().to_string();
                    seen.entry(id).or_default().insert((cell.to_string(), created));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (rounds, seen)
    })
}

/// Desires a chaos task every TASK_EVERY until `stop`; each desire is retried (the BBS may be
/// down) until the BBS has the task. The guids desired.
fn submit_tasks(client: BbsClient, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut desired = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let guid = format!("{TASK_PREFIX}{n}");
            n += 1;
            let req: DesireTaskRequest = serde_json::from_value(serde_json::json!({
                "task_guid": guid,
                "domain": "chaos",
                "task_definition": {
                    "rootfs": "preloaded:busybox",
                    "memory_mb": 32,
                    "action": {"run": {"path": "sh", "args": ["-c", "echo ran; sleep 1"]}}
                }
            }))
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if client.desire_task(&req).await.is_ok() || client.task(&guid).await.is_ok() {
                    desired.push(guid.clone());
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("could not desire {guid} within 15 s");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(TASK_EVERY).await;
        }
        desired
    })
}

/// The containers of a cell that are not task containers.
fn lrp_containers(runc: &Runc) -> usize {
    runc.list()
        .unwrap_or_default()
        .iter()
        .filter(|id| !id.starts_with(TASK_PREFIX))
        .count()
}

/// How many of `rows` each cell has.
fn per_cell(rows: &[ActualLrp]) -> BTreeMap<&str, usize> {
    let mut n = BTreeMap::new();
    for a in rows {
        *n.entry(a.cell_id.as_str()).or_default() += 1;
    }
    n
}

/// kill -9 of `victim` (for a cell, and if `with_containers` its containers' init processes);
/// what was done.
async fn kill(cluster: &mut Cluster, victim: Victim, with_containers: bool) -> String {
    let name = victim.name();
    let proc = match victim {
        Victim::Cell(_) => cluster.cell(&name),
        _ => cluster.role(&name),
    };
    let pid = kill9(proc).await;
    let mut what = format!("kill -9 {name} (pid {pid})");
    if let Victim::Cell(_) = victim {
        let pids: Vec<String> = cluster
            .runc(&name)
            .running_init_pids()
            .unwrap_or_default()
            .into_iter()
            .map(|(_, pid)| pid.to_string())
            .collect();
        if with_containers {
            for p in &pids {
                let _ = std::process::Command::new("kill").args(["-9", p]).status();
            }
            what.push_str(&format!(
                " and its {} containers' init processes {pids:?}",
                pids.len()
            ));
        } else {
            what.push_str(&format!(", its {} containers left running", pids.len()));
        }
    }
    what
}

/// Starts `victim` again (same address, store or data dir); its new PID.
fn restart(cluster: &mut Cluster, victim: Victim) -> u32 {
    let name = victim.name();
    let fresh = match victim {
        Victim::Cell(i) => {
            Cluster::spawn_cell(&cluster.root, &cluster.bbs, CELLS[i].0, CELLS[i].1, &CELL_FLAGS)
        }
        Victim::Bbs => cluster.spawn_bbs(),
        Victim::Auctioneer => cluster.spawn_auctioneer(),
    };
    let slot = match victim {
        Victim::Cell(_) => cluster.cell(&name),
        _ => cluster.role(&name),
    };
    // A cell's containers stay for the new agent to adopt (or destroy): the dead process's
    // cleanup must not remove them (the new one's removes them at the end).
    std::mem::forget(slot.leftovers.take());
    drop(std::mem::replace(slot, fresh));
    slot.pid()
}

async fn kill9(p: &mut Proc) -> u32 {
    let pid = p.pid();
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();
    pid
}

/// Every index once RUNNING ORDINARY and answering: the rows, or what is missing.
async fn all_running_once(client: &BbsClient, http: &reqwest::Client) -> Result<Vec<ActualLrp>, String> {
    let all = web_rows(client).await?;
    let running: Vec<ActualLrp> = all
        .iter()
        .filter(|a| a.state == ActualLrpState::Running && a.presence == Presence::Ordinary)
        .cloned()
        .collect();
    let mut idx: Vec<i32> = running.iter().map(|a| a.index).collect();
    idx.sort();
    if idx != (0..INSTANCES).collect::<Vec<_>>() {
        return Err(format!(
            "running indices {idx:?}; rows {:?}",
            all.iter()
                .map(|a| format!("{} {:?} {:?} {}", a.index, a.state, a.presence, a.cell_id))
                .collect::<Vec<_>>()
        ));
    }
    for a in &running {
        if !answers(http, a).await {
            return Err(format!("index {} on {} does not answer", a.index, a.cell_id));
        }
    }
    Ok(running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_of_cells_bbs_and_auctioneer_end_with_every_index_once_and_no_task_twice() {
    if !common::runc_usable(
        "random_kills_of_cells_bbs_and_auctioneer_end_with_every_index_once_and_no_task_twice",
    ) {
        return;
    }
    let test_start = Instant::now();
    let seed: u64 = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().expect("CHAOS_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("chaos seed {seed} (CHAOS_SEED={seed} repeats the choices)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        Cluster::start_roles(dir.path(), &CELLS, &CELL_FLAGS, &BBS_FLAGS, &AUCTIONEER_FLAGS).await;
    let initial = cluster.desire_web(INSTANCES).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let setup = test_start.elapsed();

    let stop_chaos = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let doubles = watch_doubles(
        cluster.client.clone(),
        stop_watch.clone(),
        Duration::from_millis(100),
    );
    let task_log = watch_tasks(cluster.client.clone(), stop_watch.clone());
    let containers = watch_task_containers(dir.path().to_path_buf(), stop_watch.clone());
    let submitter = submit_tasks(cluster.client.clone(), stop_chaos.clone());

    // The first three victims are a shuffle of a cell, the BBS and the auctioneer (each kind
    // is killed at least once); then any.
    let mut first = [
        Victim::Cell(rng.below(3) as usize),
        Victim::Bbs,
        Victim::Auctioneer,
    ];
    for i in (1..first.len()).rev() {
        first.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut timeline: Vec<String> = Vec::new();
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let chaos_start = Instant::now();
    let (mut last_kill, mut last_restart) = (chaos_start, chaos_start);
    let t = |at: Instant| format!("+{:5.1}s", at.duration_since(chaos_start).as_secs_f64());
    let mut rounds = 0;
    let mut overlaps = 0;
    while chaos_start.elapsed() < CHAOS {
        let pick = |rng: &mut Rng| match rng.below(5) {
            0..=2 => Victim::Cell(rng.below(3) as usize),
            3 => Victim::Bbs,
            _ => Victim::Auctioneer,
        };
        let victim = if rounds < first.len() {
            first[rounds]
        } else {
            pick(&mut rng)
        };
        rounds += 1;
        // A quarter of the time a second victim is killed while the first is down.
        let mut down = vec![victim];
        if rng.below(4) == 0 {
            let second = pick(&mut rng);
            if second != victim {
                down.push(second);
                overlaps += 1;
            }
        }
        for (i, &v) in down.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(rng.millis(100, 1000)).await;
            }
            let with_containers = matches!(v, Victim::Cell(_)) && rng.below(2) == 0;
            last_kill = Instant::now();
            let what = kill(&mut cluster, v, with_containers).await;
            timeline.push(format!("{} {what}", t(last_kill)));
            *kills.entry(v.name()).or_default() += 1;
        }
        for &v in &down {
            let pause = rng.millis(300, 2500);
            tokio::time::sleep(pause).await;
            let pid = restart(&mut cluster, v);
            last_restart = Instant::now();
            timeline.push(format!(
                "{} restarted {} after {} ms more (pid {pid})",
                t(last_restart),
                v.name(),
                pause.as_millis()
            ));
        }
        let gap = rng.millis(1000, 3500);
        if chaos_start.elapsed() + gap >= CHAOS {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    stop_chaos.store(true, Ordering::SeqCst);
    let chaos = chaos_start.elapsed();

    // Recovery: every index once, RUNNING and answering; every task COMPLETED.
    let recovered = within(RECOVERY, || all_running_once(&cluster.client, &http)).await;
    let recovered_at = Instant::now();
    let desired = submitter.await.unwrap();
    let done = within(TASKS_DONE, || async {
        let tasks = cluster
            .client
            .tasks(&TaskQuery::default())
            .await
            .map_err(|e| e.to_string())?;
        let by_guid: HashMap<&str, _> = tasks.iter().map(|t| (t.task_guid.as_str(), t)).collect();
        let open: Vec<String> = desired
            .iter()
            .filter(|g| {
                by_guid
                    .get(g.as_str())
                    .is_none_or(|t| t.state != TaskState::Completed)
            })
            .map(|g| {
                let state = by_guid
                    .get(g.as_str())
                    .map(|t| format!("{:?} on {:?}", t.state, t.cell_id));
                format!("{g}: {}", state.unwrap_or_else(|| "missing".into()))
            })
            .collect();
        if open.is_empty() {
            Ok(tasks
                .into_iter()
                .filter(|t| desired.contains(&t.task_guid))
                .collect::<Vec<_>>())
        } else {
            Err(format!("{} tasks not COMPLETED: {open:?}", open.len()))
        }
    })
    .await;
    // Physically once too: the cells end with one LRP container per index (the containers of
    // replaced instances, left running by killed agents, are destroyed by their restarted cell).
    let containers_left = within(LEFTOVERS, || async {
        let per_cell: BTreeMap<&str, usize> = CELLS
            .iter()
            .map(|(c, _)| (*c, lrp_containers(&cluster.runc(c))))
            .collect();
        let n: usize = per_cell.values().sum();
        (n == INSTANCES as usize)
            .then_some(per_cell.clone())
            .ok_or(format!("{n} LRP containers: {per_cell:?}"))
    })
    .await;
    stop_watch.store(true, Ordering::SeqCst);
    let (double_rounds, doubled) = doubles.await.unwrap();
    let (task_rounds, histories) = task_log.await.unwrap();
    let (container_rounds, task_containers) = containers.await.unwrap();

    // What the observers saw of tasks started twice.
    let mut twice: Vec<String> = Vec::new();
    for (guid, seen) in &task_containers {
        if seen.len() > 1 {
            twice.push(format!("{guid}: containers {seen:?}"));
        }
    }
    for (guid, h) in &histories {
        let cells: BTreeSet<&str> = h
            .seen
            .iter()
            .filter(|(s, _)| *s == TaskState::Running)
            .map(|(_, c)| c.as_str())
            .collect();
        let first_running = h.seen.iter().position(|(s, _)| *s == TaskState::Running);
        let back_to_pending =
            first_running.is_some_and(|i| h.seen[i..].iter().any(|(s, _)| *s == TaskState::Pending));
        if cells.len() > 1 || back_to_pending {
            twice.push(format!("{guid}: BBS saw {:?}", h.seen));
        }
    }

    // The summary, printed before any assertion so a failing run shows it too.
    println!("---- chaos summary (seed {seed}) ----");
    println!(
        "timings: cell presence TTL 3 s, sync 2 s; BBS lock TTL 2 s (retry 1 s), convergence 2 s, \
         re-auction after 3 s; auctioneer lock TTL 2 s"
    );
    println!(
        "setup {:.1} s (3 cells, {INSTANCES} web instances RUNNING); chaos {:.1} s, {rounds} rounds ({overlaps} with two victims down at once), kills: {kills:?}",
        setup.as_secs_f64(),
        chaos.as_secs_f64()
    );
    println!("before: per cell {:?}", per_cell(&initial));
    for line in &timeline {
        println!("  {line}");
    }
    match &recovered {
        Ok((rows, _)) => {
            let placement = per_cell(rows);
            println!(
                "recovered: all {INSTANCES} indices RUNNING once and answering {} ms after the last kill \
                 ({} ms after the last restart); per cell {placement:?}",
                recovered_at.duration_since(last_kill).as_millis(),
                recovered_at.duration_since(last_restart).as_millis()
            );
        }
        Err(e) => println!("NOT recovered: {e}"),
    }
    match &done {
        Ok((tasks, _)) => {
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            for t in tasks {
                let outcome = if t.failed {
                    format!("failed: {}", t.failure_reason)
                } else {
                    "succeeded".into()
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            println!(
                "tasks: {} desired, all COMPLETED {} ms after the last kill: {outcomes:?}",
                desired.len(),
                Instant::now().duration_since(last_kill).as_millis()
            );
        }
        Err(e) => println!("tasks NOT all completed: {e}"),
    }
    match &containers_left {
        Ok((per_cell, after)) => println!(
            "containers: one LRP container per index on the cells {per_cell:?}, {} ms after the tasks",
            after.as_millis()
        ),
        Err(e) => println!("containers NOT one per index: {e}"),
    }
    println!(
        "observers: {double_rounds} LRP polls, {} doubled indices; {task_rounds} task polls, \
         {container_rounds} runc-state polls ({} task containers seen), {} tasks started twice",
        doubled.len(),
        task_containers.len(),
        twice.len()
    );
    println!("total test time {:.1} s", test_start.elapsed().as_secs_f64());

    assert!(
        double_rounds >= 50 && task_rounds >= 50 && container_rounds >= 50,
        "the observers barely ran"
    );
    // The container observer is only evidence if it sees what ran: every task that succeeded
    // had a container, and it lived over a second.
    if let Ok((tasks, _)) = &done {
        let unseen: Vec<&str> = tasks
            .iter()
            .filter(|t| !t.failed && !task_containers.contains_key(&t.task_guid))
            .map(|t| t.task_guid.as_str())
            .collect();
        assert!(
            unseen.is_empty(),
            "succeeded tasks whose container was never seen: {unseen:?}"
        );
    }
    assert!(doubled.is_empty(), "an index ran twice: {doubled:?}");
    assert!(twice.is_empty(), "a task was started twice: {twice:?}");
    recovered.expect("every index RUNNING once and answering");
    containers_left.expect("one LRP container per index");
    let (tasks, _) = done.expect("every task COMPLETED");
    assert!(!tasks.is_empty(), "tasks were desired");
    assert!(tasks.iter().any(|t| !t.failed), "some task succeeded");
}
