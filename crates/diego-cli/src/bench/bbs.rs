//! `diego bench bbs`: the BBS on its embedded store, driven over real HTTP on loopback.
//!
//! Starts `diego bbs` as a child process (so its RSS is its own) on a free port with a
//! temporary data dir, measures the data dir's raw fsync rate as the baseline, then runs:
//! 1. task transitions: 64 clients each loop desire → start → complete → resolving → delete;
//!    every step is one durable write, and `task_transitions_per_sec` counts steps;
//! 2. desired LRP creates: 64 clients create 1,000 desired LRPs of 100 instances each (one
//!    transaction each: the desired record plus 100 UNCLAIMED instances) → 100,000 actual LRPs;
//! 3. actual LRP claim+start: 64 clients claim then start instances; counts instances brought
//!    to RUNNING per second (each is two durable writes);
//! 4. listing all 100,000 actual LRPs (median of several runs) and the BBS's RSS.
//!
//! With `--store etcd://…` or `--start-etcd [N]` the same workload then runs on a BBS over
//! etcd (under a key prefix of its own), after etcd's own sequential put and compare-and-swap
//! rates on the same members (`etcd.rs`); the JSON carries both runs' figures as `sqlite_*`
//! and `etcd_*`, the baseline, `task_transitions_to_etcd_put_ratio`, and each process's CPU
//! per operation. LRP phases whose transaction would exceed etcd's default `--max-txn-ops`
//! are skipped on etcd, saying so (`etcd_skipped_phases`).

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::etcd::{self, CpuMeter, EtcdChoice};

pub struct Options {
    pub json: bool,
    pub clients: usize,
    /// Seconds the task-transition phase runs.
    pub task_seconds: f64,
    pub lrps: usize,
    pub instances_per_lrp: usize,
    pub claim_start_instances: usize,
    /// Also run the workload on etcd (after the SQLite run), beside etcd's own write rates.
    pub etcd: EtcdChoice,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            json: false,
            clients: 64,
            task_seconds: 5.0,
            lrps: 1000,
            instances_per_lrp: 100,
            claim_start_instances: 20_000,
            etcd: EtcdChoice::default(),
        }
    }
}

/// Raw fsyncs per second of 4 KiB appends in `dir`, for one second.
fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = [0u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `RssAnon`, `RssFile`) in MB.
pub(crate) fn proc_status_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("reading {field} of process {pid}"))?;
    Ok(kb / 1024.0)
}

/// Checks a response and reads its body to the end, so the connection goes back to the pool
/// instead of being closed (an unread body would cost a new TCP connection per request).
async fn expect(resp: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<()> {
    let resp = resp.with_context(|| format!("{what}: request failed"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the response"))?;
    if !status.is_success() {
        bail!("{what}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// A POST with a JSON body that is already encoded, to keep the load generator's own CPU
/// use (it shares the machine with the BBS) low.
fn post_json(http: &reqwest::Client, url: String, body: String) -> reqwest::RequestBuilder {
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
}

fn task_body(guid: &str) -> serde_json::Value {
    json!({"task_guid": guid, "domain": "bench", "task_definition": {
        "rootfs": "preloaded:busybox", "memory_mb": 64,
        "action": {"run": {"path": "/bin/true"}}}})
}

const START: &str = r#"{"cell_id":"cell-1"}"#;
const COMPLETE: &str = r#"{"cell_id":"cell-1","result":"ok"}"#;

async fn task_phase(url: &str, http: &reqwest::Client, o: &Options) -> anyhow::Result<f64> {
    let steps = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(o.task_seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..o.clients {
        let (url, http, steps) = (url.to_string(), http.clone(), steps.clone());
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded by time and by count.
            while Instant::now() < deadline && i < 1_000_000 {
                let g = format!("t{c}-{i}");
                let base = format!("{url}/v1/tasks/{g}");
                let desire = post_json(&http, format!("{url}/v1/tasks"), task_body(&g).to_string());
                expect(desire.send().await, "desire").await?;
                let start = post_json(&http, format!("{base}/start"), START.to_string());
                expect(start.send().await, "start").await?;
                let complete = post_json(&http, format!("{base}/complete"), COMPLETE.to_string());
                expect(complete.send().await, "complete").await?;
                expect(http.post(format!("{base}/resolving")).send().await, "resolving").await?;
                expect(http.delete(&base).send().await, "delete").await?;
                steps.fetch_add(5, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(steps.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn lrp_body(guid: &str, instances: usize) -> serde_json::Value {
    json!({"process_guid": guid, "domain": "bench", "rootfs": "preloaded:busybox", "instances": instances,
           "memory_mb": 128, "ports": [8080],
           "action": {"run": {"path": "httpd", "args": ["-f", "-p", "8080"]}}})
}

/// Runs `total` jobs over `clients` workers; `job(i)` performs job i.
async fn fan_out<F, Fut>(clients: usize, total: usize, job: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let job = Arc::new(job);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (next, job) = (next.clone(), job.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return anyhow::Ok(());
                }
                job(i).await?;
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("diego-bench-bbs").tempdir()?;
    let fsync_per_sec = fsync_rate(dir.path())?;
    say(
        &o,
        &format!(
            "baseline: {fsync_per_sec:.0} fsyncs/s (4 KiB appends) in {}",
            dir.path().display()
        ),
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients * 2)
        .build()?;
    let data = dir.path().join("data");
    let sqlite = {
        let bbs = super::procs::start_bbs(&http, &data, &[]).await?;
        workload(&o, &http, &bbs, None).await?
    };
    if !o.etcd.wanted() {
        let mut summary = sqlite.figures;
        summary.insert("fsync_per_sec".into(), json!(fsync_per_sec.round()));
        summary.insert("clients".into(), json!(o.clients));
        if o.json {
            println!("{}", serde_json::Value::Object(summary));
        }
        return Ok(());
    }

    // The same workload on etcd, after etcd's own write rates on the same members.
    let (cluster, run, base, mut summary) = etcd::begin(&o.etcd, "bench-bbs", |l| say(&o, l)).await?;
    let on_etcd = {
        let url = cluster.store_url(&run);
        let bbs = super::procs::start_bbs_on(&http, &["--store", &url], &[]).await?;
        workload(&o, &http, &bbs, Some(cluster.pids())).await?
    };
    let db_size_mb = cluster.db_size_mb().await?;
    say(
        &o,
        &format!(
            "etcd: largest member database after the workload: {db_size_mb:.0} MB (default quota 2048 MB)"
        ),
    );
    cluster.clear(&run).await?;

    summary.insert(
        "etcd_db_size_mb".into(),
        json!((db_size_mb * 10.0).round() / 10.0),
    );
    summary.insert("fsync_per_sec".into(), json!(fsync_per_sec.round()));
    summary.insert("clients".into(), json!(o.clients));
    etcd::prefixed("sqlite", &sqlite.figures, &mut summary);
    etcd::prefixed("sqlite", &sqlite.cpu, &mut summary);
    etcd::prefixed("etcd", &on_etcd.figures, &mut summary);
    etcd::prefixed("etcd", &on_etcd.cpu, &mut summary);
    if !on_etcd.skipped.is_empty() {
        summary.insert("etcd_skipped_phases".into(), Value::Object(on_etcd.skipped));
    }
    let transitions = on_etcd.figures["task_transitions_per_sec"]
        .as_f64()
        .unwrap_or(0.0);
    let ratio = transitions / base.put_per_sec.max(1.0);
    summary.insert(
        "task_transitions_to_etcd_put_ratio".into(),
        json!((ratio * 1000.0).round() / 1000.0),
    );
    let cell = |k: &str, figures: &Map<String, Value>| {
        figures
            .get(k)
            .map_or_else(|| "skipped".to_string(), |v| v.to_string())
    };
    say(&o, "figure                             sqlite        etcd");
    for k in [
        "task_transitions_per_sec",
        "desired_lrp_creates_per_sec",
        "actual_lrp_claim_start_per_sec",
        "list_100k_actual_lrps_ms",
        "rss_mb_at_100k_actual_lrps",
    ] {
        say(
            &o,
            &format!(
                "{k:<34} {:>10}  {:>10}",
                cell(k, &sqlite.figures),
                cell(k, &on_etcd.figures)
            ),
        );
    }
    say(
        &o,
        &format!("task transitions on etcd / etcd's sequential put rate: {ratio:.3} (goal: 0.5)"),
    );
    if o.json {
        println!("{}", Value::Object(summary));
    }
    Ok(())
}

/// One store's figures: the JSON keys of `diego bench bbs`, CPU per operation, and the phases
/// that did not run (with why).
struct Figures {
    figures: Map<String, Value>,
    cpu: Map<String, Value>,
    skipped: Map<String, Value>,
}

/// The four phases against `bbs`. `etcd` is the PIDs of the etcd members under it (`Some`
/// also says the store is etcd, whose transaction size limit the LRP phases must fit).
async fn workload(
    o: &Options,
    http: &reqwest::Client,
    bbs: &super::procs::Role,
    etcd: Option<Vec<u32>>,
) -> anyhow::Result<Figures> {
    let store = if etcd.is_some() { "etcd" } else { "SQLite" };
    let mut groups = vec![("bbs", vec![bbs.child.id()]), ("bench", vec![std::process::id()])];
    if let Some(pids) = &etcd {
        groups.push(("etcd", pids.clone()));
    }
    let mut cpu = Map::new();
    let mut skipped = Map::new();
    let mut figures = Map::new();

    let meter = CpuMeter::start(&groups);
    let started = Instant::now();
    let task_transitions_per_sec = task_phase(&bbs.url, http, o).await?;
    let steps = (task_transitions_per_sec * started.elapsed().as_secs_f64()).round() as u64;
    meter.per_op(steps, "task", "transition", &mut cpu);
    say(
        o,
        &format!(
            "{store}: task transitions: {task_transitions_per_sec:.0}/s ({} clients, durable commits)",
            o.clients
        ),
    );
    figures.insert(
        "task_transitions_per_sec".into(),
        json!(task_transitions_per_sec.round()),
    );

    // Desiring an LRP is one transaction of 1 + instances writes; etcd takes writes + 3
    // operations per transaction at most --max-txn-ops (128 by default).
    let writes = 1 + o.instances_per_lrp;
    if etcd.is_some() && writes + 3 > etcd::DEFAULT_MAX_TXN_OPS {
        let why = format!(
            "desiring an LRP of {} instances is one transaction of {} etcd operations, beyond \
             etcd's default --max-txn-ops {} (use --instances-per-lrp {} or fewer)",
            o.instances_per_lrp,
            writes + 3,
            etcd::DEFAULT_MAX_TXN_OPS,
            etcd::DEFAULT_MAX_TXN_OPS - 4
        );
        say(o, &format!("{store}: skipping the LRP phases: {why}"));
        for phase in [
            "desired_lrp_creates",
            "actual_lrp_claim_start",
            "list_actual_lrps",
        ] {
            skipped.insert(phase.into(), json!(why));
        }
        figures.insert("instances_per_desired_lrp".into(), json!(o.instances_per_lrp));
        return Ok(Figures {
            figures,
            cpu,
            skipped,
        });
    }

    let (url, h, n) = (bbs.url.clone(), http.clone(), o.instances_per_lrp);
    let meter = CpuMeter::start(&groups);
    let secs = fan_out(o.clients, o.lrps, move |i| {
        let (url, h) = (url.clone(), h.clone());
        async move {
            expect(
                h.post(format!("{url}/v1/desired_lrps"))
                    .json(&lrp_body(&format!("lrp{i}"), n))
                    .send()
                    .await,
                "desire LRP",
            )
            .await
        }
    })
    .await?;
    meter.per_op(o.lrps as u64, "lrp_create", "lrp", &mut cpu);
    let desired_lrp_creates_per_sec = o.lrps as f64 / secs;
    let total_actuals = o.lrps * o.instances_per_lrp;
    say(
        o,
        &format!(
            "{store}: desired LRP creates: {desired_lrp_creates_per_sec:.0}/s ({} instances each; {:.0} actual LRPs/s)",
            o.instances_per_lrp,
            total_actuals as f64 / secs
        ),
    );

    let (url, h, per) = (bbs.url.clone(), http.clone(), o.instances_per_lrp);
    let count = o.claim_start_instances.min(total_actuals);
    let meter = CpuMeter::start(&groups);
    let secs = fan_out(o.clients, count, move |i| {
        let (url, h) = (url.clone(), h.clone());
        async move {
            let base = format!("{url}/v1/actual_lrps/lrp{}/{}", i / per, i % per);
            let ik = json!({"instance_guid": format!("ig-{i}"), "cell_id": "cell-1"});
            expect(
                h.post(format!("{base}/claim"))
                    .json(&json!({"instance_key": ik}))
                    .send()
                    .await,
                "claim",
            )
            .await?;
            let net =
                json!({"address": "127.0.0.1", "ports": [{"container_port": 8080, "host_port": 61000}]});
            expect(
                h.post(format!("{base}/start"))
                    .json(&json!({"instance_key": ik, "net_info": net}))
                    .send()
                    .await,
                "start",
            )
            .await
        }
    })
    .await?;
    meter.per_op(count as u64, "claim_start", "instance", &mut cpu);
    let actual_lrp_claim_start_per_sec = count as f64 / secs;
    say(o, &format!("{store}: actual LRP claim+start: {actual_lrp_claim_start_per_sec:.0} instances/s ({count} instances, 2 writes each)"));

    let rss_before_list = proc_status_mb(bbs.child.id(), "VmRSS")?;
    let mut times = Vec::new();
    let mut body = None;
    for _ in 0..5 {
        let started = Instant::now();
        body = Some(
            http.get(format!("{}/v1/actual_lrps", bbs.url))
                .send()
                .await?
                .bytes()
                .await?,
        );
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let list_100k_actual_lrps_ms = times[times.len() / 2];
    let listed: Vec<serde::de::IgnoredAny> =
        serde_json::from_slice(body.as_deref().unwrap_or_default()).context("parsing the actual LRP list")?;
    let n_listed = listed.len();
    say(
        o,
        &format!(
            "{store}: list {n_listed} actual LRPs over HTTP: median {list_100k_actual_lrps_ms:.0} ms of 5"
        ),
    );
    let pid = bbs.child.id();
    let rss_mb_at_100k_actual_lrps = proc_status_mb(pid, "VmRSS")?;
    let (anon, file) = (proc_status_mb(pid, "RssAnon")?, proc_status_mb(pid, "RssFile")?);
    say(
        o,
        &format!(
            "{store}: BBS RSS with {n_listed} actual LRPs stored, after listing them: {rss_mb_at_100k_actual_lrps:.0} MB \
             ({anon:.0} MB anonymous, {file:.0} MB file-backed); before listing: {rss_before_list:.0} MB"
        ),
    );

    for (k, v) in [
        (
            "desired_lrp_creates_per_sec",
            json!(desired_lrp_creates_per_sec.round()),
        ),
        ("instances_per_desired_lrp", json!(o.instances_per_lrp)),
        (
            "actual_lrp_claim_start_per_sec",
            json!(actual_lrp_claim_start_per_sec.round()),
        ),
        (
            "list_100k_actual_lrps_ms",
            json!((list_100k_actual_lrps_ms * 10.0).round() / 10.0),
        ),
        ("actual_lrps_listed", json!(n_listed)),
        (
            "rss_mb_at_100k_actual_lrps",
            json!((rss_mb_at_100k_actual_lrps * 10.0).round() / 10.0),
        ),
    ] {
        figures.insert(k.into(), v);
    }
    Ok(Figures {
        figures,
        cpu,
        skipped,
    })
}

fn say(o: &Options, line: &str) {
    super::say(o.json, line);
}
