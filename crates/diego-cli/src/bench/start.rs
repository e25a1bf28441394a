//! `diego bench start`: how fast desired instances become RUNNING on a real cell.
//!
//! Unless `--bbs URL` names a cluster, it starts its own: `diego dev --backend runc` as a child
//! process over a temporary data dir on a free port (root and runc needed), and waits for its
//! cell. Then it desires one LRP of `--instances` (20) busybox `httpd` instances with a TCP
//! health check on their port, polls the BBS every 10 ms, and records for each instance the
//! time from the desire to its first sight as RUNNING — which, with a health check, means the
//! container exists, httpd runs and answered a TCP connect made inside the container.
//! `desire_to_running_p50_ms`/`p99`, `all_running_ms` (the last one) follow, beside
//! `raw_runc_start_ms`: the median of a few `runc run --detach` (create + start) of a busybox
//! httpd bundle over the same kind of overlay, measured in the same run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::{ActualLrpQuery, BbsClient};
use diego_garden::{ContainerSpec, ProcessSpec};
use diego_garden_runc::{bundle, cgroup, Overlay, RootfsStore, Runc, User};
use diego_model::{ActualLrpState, CheckDefinition, DesiredLrp};
use serde_json::json;

use super::procs::{self, free_port};
use crate::process::is_root;

pub struct Options {
    pub json: bool,
    pub instances: usize,
    /// An existing cluster instead of a fresh `diego dev`.
    pub bbs: Option<String>,
    /// Passed to the own cluster's cell.
    pub max_concurrent_creates: Option<usize>,
}

fn say(o: &Options, line: &str) {
    super::say(o.json, line);
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Nearest-rank percentile `p` (0–100) of sorted `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn lrp(guid: &str, instances: usize) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "bench".into(),
        rootfs: "preloaded:busybox".into(),
        instances: instances as i32,
        memory_mb: 32,
        disk_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 60_000,
        check_definition: Some(CheckDefinition {
            checks: vec![diego_model::Check::tcp(8080)],
            ..Default::default()
        }),
        action: Some(diego_model::Action::run(diego_model::RunAction {
            path: "httpd".into(),
            args: vec!["-f".into(), "-p".into(), "8080".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One `runc run --detach` of busybox httpd over a fresh overlay: the create+start time only.
fn raw_runc_start(runc: &Runc, base: &Path, dir: &Path, handle: &str) -> anyhow::Result<Duration> {
    let timed = raw_runc_create(runc, base, dir, handle).map(|(took, _)| took);
    raw_runc_remove(runc, dir, handle)?;
    timed
}

/// Mounts a fresh overlay in `dir` and runs busybox httpd there (`runc run --detach`);
/// returns how long runc took and when it was done. The container is left running.
fn raw_runc_create(
    runc: &Runc,
    base: &Path,
    dir: &Path,
    handle: &str,
) -> anyhow::Result<(Duration, Instant)> {
    let overlay = Overlay::new(dir);
    overlay.mount(base, 0).context("mounting the raw overlay")?;
    let spec = ContainerSpec {
        handle: handle.into(),
        rootfs: "preloaded:busybox".into(),
        ..Default::default()
    };
    let process = ProcessSpec {
        path: "httpd".into(),
        args: vec!["-f".into(), "-p".into(), "8080".into()],
        ..Default::default()
    };
    let passwd = std::fs::read_to_string(overlay.merged().join("etc/passwd")).ok();
    let user = User::resolve("", passwd.as_deref())?;
    let config = bundle::config(&spec, &process, &user, &overlay.merged())?;
    bundle::write_config(dir, &config)?;
    // A detached container keeps runc's stdio: a file, never a pipe we would wait on.
    let log_path = dir.join("runc.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let status = runc
        .run_detached(dir, handle, &dir.join("init.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running runc run --detach")?;
    let done = Instant::now();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("runc run --detach failed ({status}): {}", text.trim());
    }
    Ok((done - started, done))
}

/// Kills and removes a raw container with its overlay and cgroups.
fn raw_runc_remove(runc: &Runc, dir: &Path, handle: &str) -> anyhow::Result<()> {
    let _ = runc.kill(handle);
    let _ = runc.delete_force(handle);
    Overlay::new(dir).destroy().context("removing the raw overlay")?;
    let _ = std::fs::remove_dir_all(dir);
    cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), handle)?;
    Ok(())
}

/// `n` raw containers started at once (overlay + `runc run --detach` each, on its own
/// thread): each one's time from the common start to running, sorted. All are removed after.
async fn raw_runc_parallel(runc: &Runc, base: &Path, root: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let (runc, base, d, h) = (
            runc.clone(),
            base.to_path_buf(),
            root.join(format!("raw-par-{i}")),
            format!("bench-start-rawp-{}-{i}", std::process::id()),
        );
        handles.push(tokio::task::spawn_blocking(move || {
            let created = raw_runc_create(&runc, &base, &d, &h);
            (created, runc, d, h)
        }));
    }
    let mut done = Vec::new();
    let mut failure = None;
    let mut made = Vec::new();
    for h in handles {
        let (created, runc, d, h) = h.await?;
        match created {
            Ok((_, at)) => done.push(at - start),
            Err(e) => failure = Some(e),
        }
        made.push((runc, d, h));
    }
    for (runc, d, h) in made {
        tokio::task::spawn_blocking(move || raw_runc_remove(&runc, &d, &h)).await??;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    done.sort();
    Ok(done)
}

/// The `diego dev` this benchmark started: on drop (success or not) it is stopped and the
/// containers its cell kept are removed.
struct OwnCluster {
    dev: Option<procs::Role>,
    depot: std::path::PathBuf,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        drop(self.dev.take());
        remove_cell_leftovers(&self.depot);
    }
}

/// Kills and removes every runc container a stopped cell left in `depot` (runc state in
/// `<depot>.runc`): overlay, disk image, cgroups, directory — also those runc no longer lists
/// (a destroy the cell's stop interrupted half-way).
fn remove_cell_leftovers(depot: &Path) {
    let runc = Runc::new("runc", depot.with_file_name("depot.runc"));
    let mut ids: std::collections::BTreeSet<String> = runc.list().unwrap_or_default().into_iter().collect();
    ids.extend(
        std::fs::read_dir(depot)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned()),
    );
    for id in ids {
        let _ = runc.kill(&id);
        let _ = runc.delete_force(&id);
        // The directory only once nothing is mounted in it any more.
        if Overlay::new(depot.join(&id)).destroy().is_ok() {
            let _ = std::fs::remove_dir_all(depot.join(&id));
        }
        let _ = cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), &id);
    }
}

/// Whether `depot` holds no container (a missing depot holds none).
fn depot_empty(depot: Option<&Path>) -> bool {
    depot.is_none_or(|d| {
        std::fs::read_dir(d)
            .map(|mut e| e.next().is_none())
            .unwrap_or(true)
    })
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let dir = tempfile::Builder::new()
        .prefix("diego-bench-start")
        .tempdir()
        .context("creating a temporary dir")?;
    // Our own cluster unless told otherwise (stopped when `_dev` drops).
    let (bbs_url, dev) = match &o.bbs {
        Some(url) => (url.clone(), None),
        None => {
            if !is_root() {
                bail!("diego bench start runs its own runc cell and needs root (or pass --bbs URL)");
            }
            let listen = format!("127.0.0.1:{}", free_port()?);
            let data = dir.path().join("dev").display().to_string();
            let mut argv = vec![
                "dev".to_string(),
                "--backend".into(),
                "runc".into(),
                "--data-dir".into(),
                data,
                "--listen".into(),
                listen.clone(),
                "--logs-listen".into(),
                "127.0.0.1:0".into(),
            ];
            if let Some(n) = o.max_concurrent_creates {
                argv.extend(["--max-concurrent-creates".to_string(), n.to_string()]);
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut dev = procs::spawn(&argv, format!("http://{listen}"))?;
            procs::wait_ready(&http, &mut dev, "/v1/ping").await?;
            let url = dev.url.clone();
            let own = OwnCluster {
                dev: Some(dev),
                depot: dir.path().join("dev").join("cell-0").join("depot"),
            };
            (url, Some(own))
        }
    };
    let client = BbsClient::with_http(bbs_url.clone(), http.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.cells().await.map(|c| c.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            bail!("no cell registered with {bbs_url} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The raw baseline first (the cell is idle): five create+start of httpd, median.
    let runc = Runc::new("runc", dir.path().join("raw-runc"));
    let store = RootfsStore::new(dir.path().join("raw-store"), None);
    let base = tokio::task::spawn_blocking(move || store.resolve("preloaded:busybox"))
        .await?
        .context("building the busybox rootfs")?;
    let mut raw = Vec::new();
    for i in 0..5 {
        let (runc, base, d, h) = (
            runc.clone(),
            base.clone(),
            dir.path().join(format!("raw-{i}")),
            format!("bench-start-raw-{}-{i}", std::process::id()),
        );
        raw.push(tokio::task::spawn_blocking(move || raw_runc_start(&runc, &base, &d, &h)).await??);
    }
    raw.sort();
    let raw_median = raw[raw.len() / 2];
    // The same number of raw containers at once: what runc itself needs on this machine to
    // start them all together (the floor under the cell's figures).
    let raw_parallel = raw_runc_parallel(&runc, &base, dir.path(), o.instances).await?;
    let (raw_par_p50, raw_par_all) = (
        percentile(&raw_parallel, 50.0),
        raw_parallel[raw_parallel.len() - 1],
    );

    let guid = format!("bench-start-{}", std::process::id());
    say(
        &o,
        &format!(
            "desiring {} busybox httpd instances with a TCP health check ({guid})",
            o.instances
        ),
    );
    let started = Instant::now();
    client
        .desire_lrp(&lrp(&guid, o.instances))
        .await
        .context("desiring the LRP")?;
    let mut running_at: Vec<Option<Duration>> = vec![None; o.instances];
    let query = ActualLrpQuery {
        process_guid: Some(guid.clone()),
        ..Default::default()
    };
    let timeout = Duration::from_secs(120);
    while running_at.iter().any(Option::is_none) {
        if started.elapsed() > timeout {
            let _ = client.remove_desired_lrp(&guid).await;
            let n = running_at.iter().filter(|t| t.is_some()).count();
            bail!("only {n} of {} instances RUNNING after {timeout:?}", o.instances);
        }
        for a in client.actual_lrps(&query).await.unwrap_or_default() {
            let slot = usize::try_from(a.index).ok().and_then(|i| running_at.get_mut(i));
            if let Some(slot) = slot {
                if a.state == ActualLrpState::Running && slot.is_none() {
                    *slot = Some(started.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times: Vec<Duration> = running_at.into_iter().flatten().collect();
    times.sort();
    let (p50, p99, all) = (
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times[times.len() - 1],
    );
    // Stop the instances and wait until the cell has removed them: their records go when
    // their processes have stopped, their containers right after.
    let _ = client.remove_desired_lrp(&guid).await;
    let gone_by = Instant::now() + Duration::from_secs(60);
    let own_depot = dev.as_ref().map(|d| d.depot.clone());
    while Instant::now() < gone_by
        && !(client
            .actual_lrps(&query)
            .await
            .map(|a| a.is_empty())
            .unwrap_or(false)
            && depot_empty(own_depot.as_deref()))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(dev);
    say(
        &o,
        &format!(
            "{} instances: desire → RUNNING p50 {:.1} ms, p99 {:.1} ms, all RUNNING after {:.1} ms; raw runc create+start (runc run --detach of httpd) median {:.1} ms; {} raw at once: p50 {:.1} ms, all after {:.1} ms",
            o.instances,
            ms(p50),
            ms(p99),
            ms(all),
            ms(raw_median),
            o.instances,
            ms(raw_par_p50),
            ms(raw_par_all)
        ),
    );
    if o.json {
        println!(
            "{}",
            json!({
                "desire_to_running_p50_ms": ms(p50),
                "desire_to_running_p99_ms": ms(p99),
                "all_running_ms": ms(all),
                "raw_runc_start_ms": ms(raw_median),
                "raw_runc_parallel_p50_ms": ms(raw_par_p50),
                "raw_runc_parallel_all_ms": ms(raw_par_all),
                "instances": o.instances,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
