//! `diego bench recovery`: how long after a cell dies every instance runs again.
//!
//! Its own cluster of child processes: `diego dev --cells 0` (BBS and auctioneer) and three
//! `diego cell`s (runc when root with runc installed, else the process backend), each with the
//! default presence TTL. An LRP of 12 instances (busybox httpd with a TCP check on runc; a
//! plain `sleep` on the process backend, which has no port to check). Each trial SIGKILLs the
//! cell agent holding the most instances and every process of its containers (found by their
//! root or working directory under the cell's data dir), then times until every index is
//! RUNNING on another cell. The killed cell is restarted on its data dir before the next trial.
//! The baseline printed beside it is the presence TTL: the floor detection waits for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{ActualLrpState, Presence};
use serde_json::json;

use super::procs::{self, until, Role};

pub struct Options {
    pub json: bool,
    pub trials: usize,
}

const INSTANCES: usize = 12;
const CELLS: usize = 3;
const LRP: &str = "recovery";
const PRESENCE_TTL_MS: u64 = crate::commands::cell::DEFAULT_PRESENCE_TTL_SECS * 1000;

fn start_cell(root: &Path, bbs: &str, i: usize, runc: bool) -> anyhow::Result<Role> {
    let port = procs::free_port()?;
    let dir = cell_dir(root, i).display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let id = format!("cell-{i}");
    let zone = format!("z{}", i + 1);
    let backend = if runc { "runc" } else { "process" };
    let args = [
        "cell",
        "--backend",
        backend,
        "--bbs",
        bbs,
        "--cell-id",
        &id,
        "--zone",
        &zone,
        "--memory-mb",
        "4096",
        "--listen",
        &listen,
        "--data-dir",
        &dir,
    ];
    procs::spawn(&args, format!("http://{listen}"))
}

fn cell_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("cell-{i}"))
}

/// SIGKILLs the cell's containers: runc's (their init, found with `runc state`: their
/// processes are in their own mount namespace) and every process whose root or working directory lies under `dir`
/// (the process backend's); how many containers or processes.
fn kill_under(dir: &Path) -> usize {
    let runc = diego_garden_runc::Runc::new("runc", dir.join("depot.runc"));
    let mut killed = 0;
    if runc.state_dir().exists() {
        // The container's init: its PID namespace, and every process in it, goes with it.
        for (_, pid) in runc.running_init_pids().unwrap_or_default() {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            killed += usize::from(status.is_ok_and(|s| s.success()));
        }
    }
    let own = std::process::id().to_string();
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            ["root", "cwd"]
                .iter()
                .any(|l| std::fs::read_link(e.path().join(l)).is_ok_and(|p| p.starts_with(dir)))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|p| *p != own)
        .collect();
    if !pids.is_empty() {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status();
    }
    killed + pids.len()
}

async fn placed(client: &BbsClient) -> anyhow::Result<Vec<(i32, String)>> {
    let rows = client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(LRP.into()),
            ..Default::default()
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|a| a.state == ActualLrpState::Running && a.presence == Presence::Ordinary)
        .map(|a| (a.index, a.cell_id))
        .collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let runc = crate::commands::garden::runc_usable();
    let root = tempfile::tempdir()?;
    let http = diego_runtime::http_client(None).build()?;
    let port = procs::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let data = root.path().join("dev").display().to_string();
    let mut dev = procs::spawn(
        &[
            "dev",
            "--cells",
            "0",
            "--data-dir",
            &data,
            "--listen",
            &listen,
            "--logs-listen",
            "127.0.0.1:0",
        ],
        format!("http://{listen}"),
    )?;
    procs::wait_ready(&http, &mut dev, "/v1/ping").await?;
    let client = BbsClient::with_http(dev.url.clone(), http.clone());
    let mut cells: Vec<Role> = (0..CELLS)
        .map(|i| start_cell(root.path(), &dev.url, i, runc))
        .collect::<anyhow::Result<_>>()?;
    until("3 cells registered", Duration::from_secs(60), || async {
        Ok(client.cells().await?.len() == CELLS)
    })
    .await?;

    let mut lrp = json!({"process_guid": LRP, "domain": "bench", "instances": INSTANCES,
                         "rootfs": "preloaded:busybox", "memory_mb": 64, "disk_mb": 64});
    if runc {
        lrp["action"] = json!({"run": {"path": "sh", "args": ["-c", "exec httpd -f -p 8080"]}});
        lrp["ports"] = json!([8080]);
        lrp["check_definition"] = json!({"checks": [{"tcp_check": {"port": 8080}}]});
    } else {
        lrp["action"] = json!({"run": {"path": "sleep", "args": ["3600"]}});
    }
    let r = http
        .post(format!("{}/v1/desired_lrps", dev.url))
        .json(&lrp)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("desiring the LRP: {} {}", r.status(), r.text().await?);
    }
    until("12 instances RUNNING", Duration::from_secs(120), || async {
        Ok(placed(&client).await?.len() == INSTANCES)
    })
    .await?;
    eprintln!(
        "{INSTANCES} instances RUNNING on {CELLS} {} cells; presence TTL {PRESENCE_TTL_MS} ms",
        if runc { "runc" } else { "process-backend" }
    );

    let outcome = trials(&o, root.path(), &dev, &mut cells, &client, runc).await;
    // Whatever happened, the benchmark's containers go with it: the LRP is deleted so the
    // cells stop them (and their mounts and cgroups), then the roles are killed on drop.
    let cleaned = clean_up(&client).await;
    let times = outcome?;
    cleaned?;
    if let Ok(Some(status)) = dev.child.try_wait() {
        bail!("diego dev exited with {status} during the benchmark");
    }
    report(&o, &times, runc)
}

/// Kills the busiest cell per trial and times until every index RUNNING elsewhere.
async fn trials(
    o: &Options,
    root: &Path,
    dev: &Role,
    cells: &mut [Role],
    client: &BbsClient,
    runc: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for trial in 1..=o.trials.max(1) {
        let now = placed(client).await?;
        let mut per_cell = [0usize; CELLS];
        for (_, c) in &now {
            if let Some(i) = c.strip_prefix("cell-").and_then(|n| n.parse::<usize>().ok()) {
                per_cell[i.min(CELLS - 1)] += 1;
            }
        }
        let victim = (0..CELLS).max_by_key(|&i| per_cell[i]).unwrap_or(0);
        let victim_id = format!("cell-{victim}");
        let started = Instant::now();
        let _ = cells[victim].child.kill();
        let _ = cells[victim].child.wait();
        let killed = kill_under(&cell_dir(root, victim));
        until(
            "every index RUNNING elsewhere",
            Duration::from_secs(120),
            || async {
                let p = placed(client).await?;
                Ok(p.len() == INSTANCES && p.iter().all(|(_, c)| *c != victim_id))
            },
        )
        .await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "trial {trial}: killed {victim_id} ({} instances, {killed} containers killed); all RUNNING again after {ms:.0} ms",
            per_cell[victim]
        );
        times.push(ms);
        // Back for the next trial.
        cells[victim] = start_cell(root, &dev.url, victim, runc)?;
        until(
            "the killed cell registered again",
            Duration::from_secs(60),
            || async { Ok(client.cells().await?.len() == CELLS) },
        )
        .await?;
    }
    Ok(times)
}

/// Deletes the LRP and waits until its cells have removed every instance.
async fn clean_up(client: &BbsClient) -> anyhow::Result<()> {
    client.remove_desired_lrp(LRP).await?;
    until("every instance stopped", Duration::from_secs(60), || async {
        Ok(client.actual_lrps(&Default::default()).await?.is_empty())
    })
    .await
}

fn report(o: &Options, times: &[f64], runc: bool) -> anyhow::Result<()> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (p50, max) = (percentile(&sorted, 0.5), *sorted.last().context("no trial")?);
    eprintln!(
        "cell loss → every index RUNNING: p50 {p50:.0} ms, max {max:.0} ms over {} trials",
        times.len()
    );
    if o.json {
        println!(
            "{}",
            json!({
                "backend": if runc { "runc" } else { "process" },
                "instances": INSTANCES,
                "cells": CELLS,
                "trials": times.len(),
                "cell_loss_to_running_ms": times.iter().map(|t| t.round()).collect::<Vec<_>>(),
                "cell_loss_to_running_p50_ms": p50.round(),
                "cell_loss_to_running_max_ms": max.round(),
                "presence_ttl_ms": PRESENCE_TTL_MS,
            })
        );
    }
    Ok(())
}
