//! `diego bench converge`: one convergence pass over a large, damaged cluster.
//!
//! Seeds a SQLite store (the default backend) directly with 25,000 desired LRPs whose
//! instances add up to `--actual` (250,000 by default) spread over 1,000 cells, then damages
//! it: 1% of the cells have no presence (their RUNNING instances must turn SUSPECT with a
//! replacement each), 1% of the indices have no row (they must be created), and 0.5% of the
//! instances are CRASHED with a restart due. Then starts `diego bbs` on that store as a
//! child process: on taking the lock its converger runs a first pass at once, and the
//! benchmark reads that pass's gather, plan and apply times from `/metrics`, then a second,
//! steady-state pass (nothing left to do but look), the BBS's RSS, and as the same-run
//! baseline the time one `GET /v1/actual_lrps` takes to read every instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_model::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, ActualLrpState, CellCapacity,
    CellPresence, Clock, DesiredLrp, SystemClock,
};
use diego_store::{Record, Txn, Write};
use serde_json::json;

use super::procs;

pub struct Options {
    pub json: bool,
    /// Actual LRPs the cluster should have (before the damage).
    pub actual: usize,
    pub desired: usize,
    pub cells: usize,
}

/// Records per seeding transaction.
const BATCH: usize = 2_000;

fn desired_lrp(guid: &str, instances: usize) -> anyhow::Result<DesiredLrp> {
    let mut d: DesiredLrp = serde_json::from_value(json!({
        "process_guid": guid, "domain": "bench", "rootfs": "preloaded:busybox",
        "instances": instances, "memory_mb": 64, "ports": [8080],
        "action": {"run": {"path": "sh", "args": ["-c", "exec httpd -f -p 8080"]}}
    }))
    .context("building the benchmark's desired LRP")?;
    d.modification_tag.epoch = format!("bench-{guid}");
    Ok(d)
}

fn presence(cell: usize) -> CellPresence {
    CellPresence {
        cell_id: format!("cell-{cell}"),
        rep_url: "http://127.0.0.1:9".into(),
        zone: format!("z{}", cell % 3),
        capacity: CellCapacity {
            memory_mb: 256 * 1024,
            disk_mb: 256 * 1024,
            containers: 1024,
        },
        rootfs_providers: Vec::new(),
        placement_tags: Vec::new(),
        optional_placement_tags: Vec::new(),
    }
}

struct Seeded {
    actual_rows: usize,
    missing_cells: usize,
    missing_indices: usize,
    crashed: usize,
}

async fn seed(dir: &std::path::Path, o: &Options) -> anyhow::Result<Seeded> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = diego_bbs::BbsConfig::new(
        "127.0.0.1:0".parse()?,
        diego_bbs::StoreConfig::Sqlite {
            data_dir: dir.to_path_buf(),
        },
    );
    let store = diego_bbs::open_store(&config, clock.clone()).await?;
    store.upsert_domain("bench", 3600).await?;
    let missing_cells = (o.cells / 100).max(1);
    for cell in missing_cells..o.cells {
        store.set_presence(&presence(cell), 3600).await?;
    }
    let per_lrp = o.actual.div_ceil(o.desired).max(1);
    let now = clock.now();
    // Long enough ago that crashed instances are due and nothing UNCLAIMED looks new.
    let since = now - 600 * 1_000_000_000;
    let (mut txn, mut seeded) = (
        Txn::new(),
        Seeded {
            actual_rows: 0,
            missing_cells,
            missing_indices: 0,
            crashed: 0,
        },
    );
    let mut slot = 0usize;
    for l in 0..o.desired {
        let guid = format!("bench-{l}");
        txn.push(Write::insert(Record::DesiredLrp(desired_lrp(&guid, per_lrp)?)));
        for index in 0..per_lrp {
            slot += 1;
            if slot.is_multiple_of(100) {
                seeded.missing_indices += 1;
                continue;
            }
            let key = ActualLrpKey {
                process_guid: guid.clone(),
                index: index as i32,
                domain: "bench".into(),
            };
            // Spread so that missing indices, crashes and the lost cells do not coincide.
            let cell = (slot * 37 + 11) % o.cells;
            let ik = ActualLrpInstanceKey {
                instance_guid: format!("ig-{l}-{index}"),
                cell_id: format!("cell-{cell}"),
            };
            let net = ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                ..Default::default()
            };
            let unclaimed = ActualLrp::unclaimed(key, since, format!("bench-{l}-{index}"));
            let mut a = match unclaimed.start(&ik, &net, Some(true), "z1", since) {
                Ok(Some(a)) => a,
                _ => bail!("seeding: cannot start {guid}/{index}"),
            };
            if slot % 200 == 7 {
                a.state = ActualLrpState::Crashed;
                a.crash_count = 4;
                a.crash_reason = "benchmark crash".into();
                a.cell_id.clear();
                a.instance_guid.clear();
                seeded.crashed += 1;
            }
            txn.push(Write::insert(Record::ActualLrp(a)));
            seeded.actual_rows += 1;
            if txn.writes.len() >= BATCH {
                store.commit(std::mem::take(&mut txn)).await?;
            }
        }
    }
    if !txn.is_empty() {
        store.commit(txn).await?;
    }
    Ok(seeded)
}

/// `/metrics` as name (with labels) → value.
async fn metrics(http: &reqwest::Client, url: &str) -> anyhow::Result<HashMap<String, f64>> {
    let text = http.get(format!("{url}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

struct Pass {
    gather_ms: f64,
    plan_ms: f64,
    apply_ms: f64,
    actions: f64,
}

impl Pass {
    fn total_ms(&self) -> f64 {
        self.gather_ms + self.plan_ms + self.apply_ms
    }
}

/// Waits for pass `n` (counting from 1) and reads its figures.
async fn pass(http: &reqwest::Client, url: &str, n: f64, timeout: Duration) -> anyhow::Result<Pass> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = metrics(http, url).await?;
        let passes = m.get("bbs_convergence_passes_total").copied().unwrap_or(0.0);
        if passes > n {
            bail!("missed pass {n}: passes ran faster than they could be read");
        }
        if passes == n {
            let ms = |k: &str| m.get(k).copied().unwrap_or(0.0) * 1000.0;
            let actions = m
                .iter()
                .filter(|(k, _)| k.starts_with("bbs_convergence_actions{"))
                .map(|(_, v)| v)
                .sum();
            return Ok(Pass {
                gather_ms: ms("bbs_convergence_gather_seconds"),
                plan_ms: ms("bbs_convergence_plan_seconds"),
                apply_ms: ms("bbs_convergence_apply_seconds"),
                actions,
            });
        }
        if Instant::now() > deadline {
            bail!("no convergence pass {n} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!(
        "seeding {} actual LRPs over {} desired LRPs on {} cells …",
        o.actual, o.desired, o.cells
    );
    let t = Instant::now();
    let seeded = seed(dir.path(), &o).await?;
    let seed_s = t.elapsed().as_secs_f64();
    eprintln!(
        "seeded {} rows in {seed_s:.1} s: {} cells without presence, {} indices missing, {} crashed",
        seeded.actual_rows, seeded.missing_cells, seeded.missing_indices, seeded.crashed
    );

    let http = diego_runtime::http_client(None).build()?;
    // Passes 10 s apart: the first runs on taking the lock, the second is read after it.
    let mut bbs = procs::start_bbs(&http, dir.path(), &["--convergence-interval", "10"]).await?;
    let first = pass(&http, &bbs.url, 1.0, Duration::from_secs(300)).await?;
    eprintln!(
        "first pass: {:.0} ms (gather {:.0}, plan {:.0}, apply {:.0}), {} actions",
        first.total_ms(),
        first.gather_ms,
        first.plan_ms,
        first.apply_ms,
        first.actions
    );
    let second = pass(&http, &bbs.url, 2.0, Duration::from_secs(300)).await?;
    eprintln!(
        "steady pass: {:.0} ms (gather {:.0}, plan {:.0}, apply {:.0}), {} actions",
        second.total_ms(),
        second.gather_ms,
        second.plan_ms,
        second.apply_ms,
        second.actions
    );
    let rss_mb = super::bbs::proc_status_mb(bbs.child.id(), "VmRSS")?;
    let t = Instant::now();
    let listed: Vec<serde_json::Value> = http
        .get(format!("{}/v1/actual_lrps", bbs.url))
        .send()
        .await?
        .json()
        .await?;
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "baseline: listing all {} actual LRPs took {list_ms:.0} ms; BBS RSS {rss_mb:.0} MB",
        listed.len()
    );
    if let Ok(Some(status)) = bbs.child.try_wait() {
        bail!("the BBS exited with {status} during the benchmark");
    }
    if o.json {
        let figures = json!({
            "actual_lrps": seeded.actual_rows,
            "desired_lrps": o.desired,
            "cells": o.cells,
            "missing_cells": seeded.missing_cells,
            "missing_indices": seeded.missing_indices,
            "crashed": seeded.crashed,
            "converge_pass_ms": first.total_ms().round(),
            "gather_ms": first.gather_ms.round(),
            "plan_ms": first.plan_ms.round(),
            "apply_ms": first.apply_ms.round(),
            "actions": first.actions,
            "steady_pass_ms": second.total_ms().round(),
            "steady_actions": second.actions,
            "list_actual_lrps_ms": list_ms.round(),
            "rss_mb": rss_mb.round(),
        });
        println!("{figures}");
    }
    Ok(())
}
