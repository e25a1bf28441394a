//! `diego bench control-plane`: the real BBS, auctioneer and simulated cells, each its own
//! `diego` process on free loopback ports with a temporary data dir, placing many instances.
//!
//! 1. `diego bbs` (SQLite), `diego auctioneer`, `diego sim-cells --count 1000` start; the
//!    benchmark waits until the auctioneer holds its lock and every cell is registered;
//! 2. the clock starts; 16 clients desire `--lrps` LRPs of `--instances-per-lrp` instances
//!    (100,000 in all by default); the BBS sends start requests to the auctioneer, which fetches
//!    the cells' states, places the instances and sends each cell its work; each simulated cell
//!    claims its instances in the BBS (then starts them);
//! 3. the BBS's `/metrics` is polled every 100 ms until every instance has been CLAIMED (or
//!    is already RUNNING): `e2e_placements_per_sec` = instances / seconds from the first desire
//!    to the last claim.
//!
//! With `--store etcd://…` or `--start-etcd [N]` the same placement then runs again on a BBS
//! over etcd, after etcd's own write rates (`etcd.rs`); the JSON carries both runs as
//! `sqlite_*` and `etcd_*` beside the baseline, with each process's CPU per instance.
//!
//! Nothing is simulated on the control plane's side: the same binaries and HTTP as a cluster,
//! only the cells do no container work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::BbsClient;
use diego_model::DesiredLrp;
use serde_json::{json, Map, Value};

use super::etcd::{self, CpuMeter, EtcdChoice};
use super::procs::{self, free_port};

pub struct Options {
    pub json: bool,
    pub cells: usize,
    pub lrps: usize,
    pub instances_per_lrp: usize,
    /// Give up waiting for the claims after this long.
    pub timeout: Duration,
    /// Also run the placement on etcd (after the SQLite run), beside etcd's own write rates.
    pub etcd: EtcdChoice,
}

fn say(o: &Options, line: &str) {
    super::say(o.json, line);
}

/// Instances by state from the BBS's Prometheus text.
async fn actual_counts(http: &reqwest::Client, bbs: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = http
        .get(format!("{bbs}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("bbs_actual_lrps{")) {
        let state = line
            .split("state=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        *counts.entry(state.to_string()).or_insert(0) += n;
    }
    Ok(counts)
}

fn lrp(i: usize, instances: usize) -> DesiredLrp {
    DesiredLrp {
        process_guid: format!("bench-{i:06}"),
        domain: "bench".into(),
        rootfs: "preloaded:busybox".into(),
        instances: instances as i32,
        memory_mb: 64,
        disk_mb: 64,
        action: Some(diego_model::Action::run(diego_model::RunAction {
            path: "/bin/true".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("diego-bench-control-plane")
        .tempdir()
        .context("creating a temporary data dir")?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let total = o.lrps * o.instances_per_lrp;
    say(
        &o,
        &format!(
            "control plane: diego bbs (SQLite in {}), diego auctioneer, diego sim-cells --count {}; \
             {} LRPs x {} instances = {total}",
            dir.path().display(),
            o.cells,
            o.lrps,
            o.instances_per_lrp
        ),
    );
    let data = dir.path().join("bbs").to_string_lossy().into_owned();
    let (sqlite, sqlite_cpu) = placement(&o, &http, &["--data-dir", &data], None).await?;
    if !o.etcd.wanted() {
        if o.json {
            println!("{}", Value::Object(sqlite));
        }
        return Ok(());
    }

    let (cluster, run, _, mut summary) = etcd::begin(&o.etcd, "bench-cp", |l| say(&o, l)).await?;
    etcd::prefixed("sqlite", &sqlite, &mut summary);
    etcd::prefixed("sqlite", &sqlite_cpu, &mut summary);
    // Desiring an LRP is one transaction of 1 + instances writes, each using an etcd
    // operation, plus 3 (feed entry, head, pruning) within --max-txn-ops (128 by default).
    let ops = o.instances_per_lrp + 4;
    if ops > etcd::DEFAULT_MAX_TXN_OPS {
        let why = format!(
            "desiring an LRP of {} instances is one transaction of {ops} etcd operations, beyond \
             etcd's default --max-txn-ops {} (use --instances-per-lrp {} or fewer)",
            o.instances_per_lrp,
            etcd::DEFAULT_MAX_TXN_OPS,
            etcd::DEFAULT_MAX_TXN_OPS - 4
        );
        say(&o, &format!("etcd: skipping the placement phase: {why}"));
        summary.insert("etcd_skipped_phases".into(), json!({"placement": why}));
    } else {
        let url = cluster.store_url(&run);
        let (on_etcd, etcd_cpu) = placement(&o, &http, &["--store", &url], Some(cluster.pids())).await?;
        etcd::prefixed("etcd", &on_etcd, &mut summary);
        etcd::prefixed("etcd", &etcd_cpu, &mut summary);
        cluster.clear(&run).await?;
        let cell = |m: &Map<String, Value>| m["e2e_placements_per_sec"].to_string();
        say(
            &o,
            &format!(
                "e2e placements/s: sqlite {}, etcd {} (goal: 2000)",
                cell(&sqlite),
                cell(&on_etcd)
            ),
        );
    }
    if o.json {
        println!("{}", Value::Object(summary));
    }
    Ok(())
}

/// The placement run on a BBS over `store` (`--data-dir D` or `--store etcd://…`); `etcd` is
/// the PIDs of the etcd members under it. Returns the figures (the keys of
/// `diego bench control-plane`) and each process's CPU per instance placed.
async fn placement(
    o: &Options,
    http: &reqwest::Client,
    store: &[&str],
    etcd: Option<Vec<u32>>,
) -> anyhow::Result<(Map<String, Value>, Map<String, Value>)> {
    let label = if etcd.is_some() { "etcd" } else { "SQLite" };
    let total = o.lrps * o.instances_per_lrp;
    let bbs = procs::start_bbs_on(http, store, &[]).await?;
    let auctioneer_listen = format!("127.0.0.1:{}", free_port()?);
    let mut auctioneer = procs::spawn(
        &["auctioneer", "--bbs", &bbs.url, "--listen", &auctioneer_listen],
        format!("http://{auctioneer_listen}"),
    )?;
    procs::wait_ready(http, &mut auctioneer, "/v1/ping").await?;
    let cells_listen = format!("127.0.0.1:{}", free_port()?);
    let count = o.cells.to_string();
    let mut cells = procs::spawn(
        &[
            "sim-cells",
            "--bbs",
            &bbs.url,
            "--count",
            &count,
            "--listen",
            &cells_listen,
        ],
        format!("http://{cells_listen}"),
    )?;
    let client = BbsClient::with_http(bbs.url.clone(), http.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let registered = client.cells().await.map(|c| c.len()).unwrap_or(0);
        let holder = client.lock_holder("auctioneer").await.ok().flatten();
        if registered == o.cells && holder.is_some_and(|h| h.value == auctioneer.url) {
            break;
        }
        if let Ok(Some(status)) = cells.child.try_wait() {
            bail!("diego sim-cells exited with {status}");
        }
        if Instant::now() > deadline {
            bail!(
                "{registered} of {} cells registered (or no auctioneer lock) after 60 s",
                o.cells
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(
        o,
        &format!(
            "{label}: {} cells registered; the auctioneer holds its lock",
            o.cells
        ),
    );

    let mut groups = vec![
        ("bbs", vec![bbs.child.id()]),
        ("auctioneer", vec![auctioneer.child.id()]),
        ("sim_cells", vec![cells.child.id()]),
        ("bench", vec![std::process::id()]),
    ];
    if let Some(pids) = etcd {
        groups.push(("etcd", pids));
    }
    let meter = CpuMeter::start(&groups);
    // Desire everything from 16 clients, and watch the claims.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut desirers = Vec::new();
    for _ in 0..16 {
        let (client, next, per, lrps) = (client.clone(), next.clone(), o.instances_per_lrp, o.lrps);
        desirers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= lrps {
                    return anyhow::Ok(());
                }
                client
                    .desire_lrp(&lrp(i, per))
                    .await
                    .with_context(|| format!("desiring LRP {i}"))?;
            }
        }));
    }
    for d in desirers {
        d.await??;
    }
    let desired_secs = started.elapsed().as_secs_f64();
    say(
        o,
        &format!("{label}: desired {total} instances in {desired_secs:.2} s"),
    );
    let mut last_report = Instant::now();
    let (claimed_secs, counts) = loop {
        let counts = actual_counts(http, &bbs.url).await?;
        let held = counts.get("CLAIMED").copied().unwrap_or(0) + counts.get("RUNNING").copied().unwrap_or(0);
        if held as usize >= total {
            break (started.elapsed().as_secs_f64(), counts);
        }
        if started.elapsed() > o.timeout {
            bail!(
                "{label}: only {held} of {total} instances claimed after {:?}: {counts:?}",
                o.timeout
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            say(
                o,
                &format!(
                    "  {:.1} s: {held} claimed or running",
                    started.elapsed().as_secs_f64()
                ),
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut cpu = Map::new();
    meter.per_op(total as u64, "placement", "instance", &mut cpu);
    let e2e = total as f64 / claimed_secs;
    let rounds = http
        .get(format!("{}/v1/ping", auctioneer.url))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["stats"]["rounds"].as_u64())
        .unwrap_or(0);
    say(
        o,
        &format!(
            "{label}: all {total} instances claimed {claimed_secs:.2} s after the first desire: {e2e:.0} placements/s \
             end to end ({rounds} auction rounds); states then: {counts:?}"
        ),
    );
    drop(cells);
    drop(auctioneer);
    drop(bbs);
    let figures = json!({
        "e2e_placements_per_sec": (e2e * 10.0).round() / 10.0,
        "instances": total,
        "cells": o.cells,
        "lrps": o.lrps,
        "desire_seconds": (desired_secs * 1000.0).round() / 1000.0,
        "all_claimed_seconds": (claimed_secs * 1000.0).round() / 1000.0,
        "auction_rounds": rounds,
    });
    let Value::Object(figures) = figures else {
        unreachable!("a JSON object")
    };
    Ok((figures, cpu))
}
