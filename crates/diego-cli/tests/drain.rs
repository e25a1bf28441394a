//! Evacuation end to end on real runc containers (root; needs runc and busybox-static): a
//! `diego dev --cells 0` (BBS + auctioneer) with two `diego cell` processes, an LRP of two
//! busybox httpd instances, and one cell evacuated — by `diego cell drain` or by SIGTERM —
//! while every index is probed over HTTP all along.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrpState, Presence};
use diego_testkit::eventually;
use futures_util::StreamExt;

mod common;
use common::cluster::{answers, running_rows, start_dev, Cluster};
use common::diego;

const WAIT: Duration = Duration::from_secs(60);
/// The polling loop's bounds: one round every 50 ms, for at most 60 s.
const POLL_EVERY: Duration = Duration::from_millis(50);
const POLL_FOR: Duration = Duration::from_secs(60);
const INSTANCES: i32 = 2;

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
    let mut cluster = Cluster::start(dir.path(), &[("cell-a", "z1"), ("cell-b", "z2")], &[]).await;
    let running = cluster.desire_web(INSTANCES).await;
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
    let (mut dev, client) = start_dev(dir.path(), &["--cells", "2", "--backend", "process"], 2).await;
    let bbs = client.base_url().to_string();
    let cells = client.cells().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_only_cell_is_refused_unless_forced() {
    // The tour's last step on a one-cell `diego dev`: a drain there would only stop the work.
    let dir = tempfile::tempdir().unwrap();
    // Dropped after dev: the app processes a killed dev leaves are ended too.
    let _apps = common::ProcessLeftovers(dir.path().to_path_buf());
    let (_dev, client) = start_dev(dir.path(), &["--backend", "process"], 1).await;
    let bbs = client.base_url().to_string();
    let cell = client.cells().await.unwrap()[0].cell_presence.cell_id.clone();
    let (ok, out) = diego(&bbs, &["lrp", "create", "web", "--", "sleep", "600"]).await;
    assert!(ok, "{out}");
    let running = eventually(WAIT, || async {
        let rows = running_rows(&client).await?;
        (rows.len() == 1)
            .then_some(rows.clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;

    let (ok, out) = diego(&bbs, &["cell", "drain", &cell, "--timeout", "5"]).await;
    assert!(!ok, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(
        out.contains(&format!("refusing to drain cell {cell}: no other cell")) && out.contains("--force"),
        "{out}"
    );
    // Nothing changed: the instance runs on as it was, not EVACUATING.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = client.actual_lrp("web", 0).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].presence, rows[0].state, rows[0].instance_guid.as_str()),
        (
            Presence::Ordinary,
            ActualLrpState::Running,
            running[0].instance_guid.as_str()
        )
    );

    // Forced, it evacuates; the replacement waits, saying there is no other cell.
    let (ok, out) = diego(&bbs, &["cell", "drain", &cell, "--force", "--timeout", "2"]).await;
    assert!(!ok, "the cell stays until its evacuation timeout: {out}");
    assert!(out.contains(&format!("cell {cell}: evacuating")), "{out}");
    eventually(WAIT, || async {
        let rows = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
        let waiting = rows.iter().any(|r| {
            r.presence == Presence::Ordinary && r.placement_error == "no other cell: every cell is evacuating"
        });
        let evacuating = rows.iter().any(|r| r.presence == Presence::Evacuating);
        (waiting && evacuating).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;
}
