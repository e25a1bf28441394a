//! Cell loss end to end on real runc containers (root; runc and busybox-static): three
//! `diego cell` processes under one `diego dev --cells 0`, an LRP of 6 busybox httpd
//! instances, and one cell lost — killed with its containers, or frozen with SIGSTOP while its
//! containers keep serving.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_model::{ActualLrp, ActualLrpState, Presence};
use diego_testkit::eventually;

mod common;
use common::cluster::{answers, watch_doubles, web_rows, Cluster};

const WAIT: Duration = Duration::from_secs(60);
const INSTANCES: i32 = 6;
const CELLS: [(&str, &str); 3] = [("cell-a", "z1"), ("cell-b", "z2"), ("cell-c", "z3")];

/// The cell holding the most instances (so the loss moves several).
fn busiest(running: &[ActualLrp]) -> String {
    let mut n: HashMap<&str, usize> = HashMap::new();
    for a in running {
        *n.entry(a.cell_id.as_str()).or_default() += 1;
    }
    n.into_iter().max_by_key(|(c, k)| (*k, *c)).unwrap().0.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cell_s_instances_are_replaced_on_the_other_cells() {
    if !common::runc_usable("a_killed_cell_s_instances_are_replaced_on_the_other_cells") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &CELLS, &[]).await;
    let running = cluster.desire_web(INSTANCES).await;
    let lost = busiest(&running);
    let moved = running.iter().filter(|a| a.cell_id == lost).count();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_doubles(cluster.client.clone(), stop.clone(), Duration::from_millis(50));

    // kill -9 of the agent, then of its containers (as a machine that dies takes both).
    let started = Instant::now();
    let (_, cell) = cluster.cells.iter_mut().find(|(c, _)| *c == lost).unwrap();
    cell.child.start_kill().unwrap();
    cell.child.wait().await.unwrap();
    drop(cell.leftovers.take());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let after = eventually(WAIT, || async {
        let all = web_rows(&cluster.client).await?;
        let ok = all.len() == INSTANCES as usize
            && all.iter().all(|a| {
                a.state == ActualLrpState::Running && a.presence == Presence::Ordinary && a.cell_id != lost
            });
        ok.then_some(all.clone()).ok_or(format!(
            "{:?}",
            all.iter()
                .map(|a| format!("{} {:?} {:?} {}", a.index, a.state, a.presence, a.cell_id))
                .collect::<Vec<_>>()
        ))
    })
    .await;
    let recovered = started.elapsed();
    for a in &after {
        assert!(answers(&http, a).await, "replacement {a:?} does not answer");
    }
    stop.store(true, Ordering::SeqCst);
    let (rounds, doubles) = watcher.await.unwrap();
    assert!(rounds >= 5, "the watcher barely ran");
    assert!(doubles.is_empty(), "an index ran twice: {doubles:?}");
    let cells: Vec<String> = cluster
        .client
        .cells()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cell_presence.cell_id)
        .collect();
    assert!(!cells.contains(&lost), "the lost cell is forgotten: {cells:?}");
    println!(
        "cell {lost} killed with {moved} of {INSTANCES} instances: all RUNNING and answering on the others after {} ms",
        recovered.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cell_s_instances_turn_suspect_keep_serving_and_end_up_once_per_index() {
    if !common::runc_usable("a_frozen_cell_s_instances_turn_suspect_keep_serving_and_end_up_once_per_index") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A short sync: after it resumes, the cell drops the replaced instances' containers at
    // its next comparison with the BBS.
    let mut cluster = Cluster::start(dir.path(), &CELLS, &["--sync-interval", "2"]).await;
    let running = cluster.desire_web(INSTANCES).await;
    let frozen = busiest(&running);
    let on_frozen: Vec<i32> = running
        .iter()
        .filter(|a| a.cell_id == frozen)
        .map(|a| a.index)
        .collect();
    let pid = cluster.cell(&frozen).pid().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_doubles(cluster.client.clone(), stop.clone(), Duration::from_millis(50));

    // Its heartbeat stops; its containers do not.
    let frozen_guard = Frozen(pid.clone());
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let suspects = eventually(WAIT, || async {
        let all = web_rows(&cluster.client).await?;
        let suspects: Vec<ActualLrp> = all
            .iter()
            .filter(|a| a.presence == Presence::Suspect && a.cell_id == frozen)
            .cloned()
            .collect();
        let mut idx: Vec<i32> = suspects.iter().map(|a| a.index).collect();
        idx.sort();
        (idx == on_frozen)
            .then_some(suspects.clone())
            .ok_or(format!("suspects at {idx:?}, want {on_frozen:?}"))
    })
    .await;
    // Still serving: their containers run on. Asked inside each container's network
    // namespace (nsenter), since the host-port forwarders live in the frozen agent.
    let containers = cluster.runc(&frozen).running_init_pids().unwrap();
    let mut served = 0;
    for (id, pid) in &containers {
        let pid = pid.to_string();
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-n", "python3", "-c"])
            .arg("import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/', timeout=2).read().decode())")
            .output()
            .unwrap();
        let answered = String::from_utf8_lossy(&out.stdout).trim() == "ok";
        if !answered {
            eprintln!("{id}: {} {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        served += usize::from(answered);
    }
    println!(
        "{served} of {} containers of the {} SUSPECT instances answered while their cell was frozen",
        containers.len(),
        suspects.len()
    );
    assert_eq!(
        served,
        suspects.len(),
        "SUSPECT instances keep serving: {containers:?}"
    );
    // Replacements are placed and run on the other cells.
    eventually(WAIT, || async {
        let all = web_rows(&cluster.client).await?;
        let replaced = on_frozen.iter().all(|i| {
            all.iter().any(|a| {
                a.index == *i
                    && a.presence == Presence::Ordinary
                    && a.state == ActualLrpState::Running
                    && a.cell_id != frozen
            })
        });
        replaced
            .then_some(())
            .ok_or(format!("{} rows, replacements not all running", all.len()))
    })
    .await;

    // It resumes: exactly one instance per index, all RUNNING, every one answering.
    drop(frozen_guard);
    let after = eventually(WAIT, || async {
        let all = web_rows(&cluster.client).await?;
        let mut idx: Vec<i32> = all.iter().map(|a| a.index).collect();
        idx.sort();
        let ok = idx == (0..INSTANCES).collect::<Vec<_>>()
            && all
                .iter()
                .all(|a| a.state == ActualLrpState::Running && a.presence == Presence::Ordinary);
        ok.then_some(all.clone()).ok_or(format!("{idx:?}"))
    })
    .await;
    for a in &after {
        assert!(answers(&http, a).await, "{a:?} does not answer");
    }
    // The resumed cell drops the containers whose instances were replaced.
    let runc = cluster.runc(&frozen);
    let keep = after.iter().filter(|a| a.cell_id == frozen).count();
    eventually(WAIT, || async {
        let n = runc.list().map_err(|e| e.to_string())?.len();
        (n == keep)
            .then_some(())
            .ok_or(format!("{n} containers on {frozen}, want {keep}"))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (_, doubles) = watcher.await.unwrap();
    assert!(doubles.is_empty(), "an index ran twice: {doubles:?}");
}

/// SIGCONTs the frozen process when dropped, so a failing test leaves nothing stopped.
struct Frozen(String);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}
