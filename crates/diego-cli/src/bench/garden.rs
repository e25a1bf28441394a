//! `diego bench garden`: the runc container backend, in process, against raw `runc run`.
//!
//! Needs root and runc. Everything lives in a temporary directory (depot, rootfs store, runc
//! state); the `preloaded:busybox` rootfs is built once before any timing. Then:
//! 1. cycles: `create` (preloaded:busybox, 64 MiB memory and 64 pids limits) → `run /bin/true`
//!    with its event stream drained to `Exited` (code 0 checked) → `destroy`; sequentially
//!    (median, p99), then 8 workers in parallel (containers per second);
//! 2. the raw baseline, same number of sequential iterations: mount an overlay over the same
//!    base, write the crate's OCI bundle for `/bin/true`, `runc run` it in the foreground (which
//!    deletes the container on exit), unmount and remove the overlay and directory, and remove
//!    any cgroup leaf left — the same filesystem work the backend pays, without its idle init,
//!    shim, `runc exec` and `runc delete`;
//! 3. idle overhead: K containers each running `sleep 3600` with the stream kept open; the
//!    growth of this process's RSS plus the RSS of its child processes (the shims that
//!    supervise the sleeps), per container. The containers' own cgroup memory is reported
//!    beside it. Every container is destroyed afterwards, also on error.

use crate::process::is_root;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_garden::{
    procfs, Capacity, ContainerBackend, ContainerSpec, Limits, ProcessEvent, ProcessSpec, ProcessStream,
};
use diego_garden_runc::{bundle, cgroup, Overlay, RootfsStore, Runc, RuncBackend, RuncConfig, User};
use futures_util::StreamExt;
use serde_json::json;

const ROOTFS: &str = "preloaded:busybox";
const PARALLEL: usize = 8;
const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
const PIDS_LIMIT: u64 = 64;

pub struct Options {
    pub json: bool,
    /// Sequential cycles, and raw `runc run` iterations.
    pub cycles: usize,
    /// Cycles in total over the 8 parallel workers.
    pub parallel_cycles: usize,
    /// Idle containers for the overhead measurement.
    pub idle: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            json: false,
            cycles: 30,
            parallel_cycles: 40,
            idle: 10,
        }
    }
}

fn spec(handle: &str) -> ContainerSpec {
    ContainerSpec {
        handle: handle.to_string(),
        rootfs: ROOTFS.into(),
        limits: Limits {
            memory_bytes: MEMORY_LIMIT,
            pids: PIDS_LIMIT,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn process(path: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        path: path.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// Reads a process's events to `Exited` and checks it exited 0.
async fn drain_to_success(mut stream: ProcessStream) -> anyhow::Result<()> {
    while let Some(event) = stream.events.next().await {
        if let ProcessEvent::Exited(status) = event {
            if status.code != 0 {
                bail!("/bin/true exited with {}", status.code);
            }
            return Ok(());
        }
    }
    bail!("the event stream of /bin/true ended without an exit status")
}

/// The parts of one cycle.
#[derive(Clone, Copy)]
struct Cycle {
    total: Duration,
    create: Duration,
    run: Duration,
    destroy: Duration,
}

/// One create → run /bin/true → destroy; the container is destroyed even if the run fails.
async fn cycle(backend: &RuncBackend, handle: &str) -> anyhow::Result<Cycle> {
    let started = Instant::now();
    backend
        .create(spec(handle))
        .await
        .with_context(|| format!("creating container {handle}"))?;
    let created = Instant::now();
    let ran = match backend.run(handle, process("/bin/true", &[])).await {
        Ok(stream) => drain_to_success(stream).await,
        Err(e) => Err(anyhow::Error::new(e).context(format!("running /bin/true in {handle}"))),
    };
    let exited = Instant::now();
    let destroyed = backend.destroy(handle).await;
    ran?;
    destroyed.with_context(|| format!("destroying container {handle}"))?;
    Ok(Cycle {
        total: started.elapsed(),
        create: created - started,
        run: exited - created,
        destroy: exited.elapsed(),
    })
}

/// The raw baseline (blocking): overlay mount, bundle, foreground `runc run`, overlay removal.
fn raw_runc_once(runc: &Runc, base: &Path, dir: &Path, handle: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let overlay = Overlay::new(dir);
    overlay.mount(base, 0).context("mounting the raw overlay")?;
    let ran = (|| {
        let passwd = std::fs::read_to_string(overlay.merged().join("etc/passwd")).ok();
        let user = User::resolve("", passwd.as_deref())?;
        let config = bundle::config(
            &spec(handle),
            &process("/bin/true", &[]),
            &user,
            &overlay.merged(),
        )?;
        bundle::write_config(dir, &config)?;
        let out = runc
            .run(dir, handle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running runc run")?;
        if !out.status.success() {
            bail!(
                "runc run {handle} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        anyhow::Ok(())
    })();
    if ran.is_err() {
        let _ = runc.delete_force(handle);
    }
    overlay.destroy().context("removing the raw overlay")?;
    std::fs::remove_dir_all(dir).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), handle)?;
    ran?;
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 (nearest rank) in milliseconds.
fn median_p99(times: &[Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = times.iter().copied().map(ms).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2], v[p99])
}

/// `VmRSS` of `pid` in KiB (`None` if the process is gone).
fn vm_rss_kb(pid: u32) -> Option<u64> {
    procfs::status_kb(pid, "VmRSS")
}

/// The count and total `VmRSS` (KiB) of this process's direct children outside containers.
fn children_rss_kb() -> anyhow::Result<(usize, u64)> {
    let me = std::process::id();
    let (mut n, mut kb) = (0, 0);
    for entry in std::fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let ppid = procfs::Stat::read(pid).ok().map(|s| s.ppid);
        // A container's init is re-parented to us (the backend is a subreaper), but it is the
        // container's own process, counted in its cgroup memory, not supervision.
        let in_container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.contains(&format!(":{}/", cgroup::PARENT))));
        if ppid == Some(me) && !in_container {
            if let Some(rss) = vm_rss_kb(pid) {
                n += 1;
                kb += rss;
            }
        }
    }
    Ok((n, kb))
}

/// A container's own memory use from its cgroup (v1 `memory.usage_in_bytes`, else v2
/// `memory.current`).
fn cgroup_memory_bytes(handle: &str) -> Option<u64> {
    let rel = cgroup::cgroups_path(handle);
    let rel = rel.trim_start_matches('/');
    let root = Path::new(cgroup::CGROUP_ROOT);
    [
        root.join("memory").join(rel).join("memory.usage_in_bytes"),
        root.join(rel).join("memory.current"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| s.trim().parse().ok())
}

struct Idle {
    overhead_mb: f64,
    self_delta_mb: f64,
    children: usize,
    children_mb: f64,
    container_mb: f64,
}

/// Starts `sleep 3600` in each of `handles` (created here and recorded in `made`, so the caller
/// destroys them whatever happens) and measures the supervision memory.
async fn idle_phase(
    backend: &RuncBackend,
    handles: &[String],
    made: &Mutex<Vec<String>>,
) -> anyhow::Result<Idle> {
    let me = std::process::id();
    let (_, children_before) = children_rss_kb()?;
    let before = vm_rss_kb(me).context("reading our VmRSS")?;
    let mut streams = Vec::new();
    for h in handles {
        backend
            .create(spec(h))
            .await
            .with_context(|| format!("creating idle container {h}"))?;
        made.lock().unwrap_or_else(|p| p.into_inner()).push(h.clone());
        streams.push(
            backend
                .run(h, process("/bin/sleep", &["3600"]))
                .await
                .with_context(|| format!("starting sleep in {h}"))?,
        );
    }
    // Let the shims finish starting (their RSS settles once the process runs).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kb(me).context("reading our VmRSS")?;
    let (children, children_kb) = children_rss_kb()?;
    let container_bytes: u64 = handles.iter().filter_map(|h| cgroup_memory_bytes(h)).sum();
    drop(streams);
    let k = handles.len().max(1) as f64;
    let self_delta_mb = (after as f64 - before as f64) / 1024.0;
    let children_mb = children_kb.saturating_sub(children_before) as f64 / 1024.0;
    Ok(Idle {
        overhead_mb: (self_delta_mb + children_mb) / k,
        self_delta_mb,
        children,
        children_mb,
        container_mb: container_bytes as f64 / (1024.0 * 1024.0) / k,
    })
}

async fn destroy_all(backend: &RuncBackend, handles: &Mutex<Vec<String>>) -> anyhow::Result<()> {
    let handles = std::mem::take(&mut *handles.lock().unwrap_or_else(|p| p.into_inner()));
    let mut first_error = None;
    for h in handles {
        if let Err(e) = backend.destroy(&h).await {
            first_error.get_or_insert(anyhow::Error::new(e).context(format!("destroying {h}")));
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("diego bench garden needs root (it mounts overlays and runs runc); run it as root");
    }
    let runc_version = Command::new("runc").arg("--version").output();
    let runc_version = match runc_version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => bail!("diego bench garden needs runc on PATH (`runc --version` failed); install runc"),
    };
    let (cycles, parallel_cycles, idle) = (o.cycles.max(1), o.parallel_cycles.max(1), o.idle.max(1));

    let dir = tempfile::Builder::new().prefix("diego-bench-garden").tempdir()?;
    let config = RuncConfig {
        depot: dir.path().join("depot"),
        store: dir.path().join("store"),
        preloaded_dir: None,
        runc_root: dir.path().join("runc"),
        capacity: Capacity::default(),
        host_ip: "127.0.0.1".into(),
        shim: crate::commands::garden::shim_command()?,
        netin_proxy: crate::commands::garden::netin_proxy_command()?,
    };
    let backend = Arc::new(RuncBackend::new(config.clone()).context("starting the runc backend")?);
    let store = RootfsStore::new(&config.store, None);
    let base: PathBuf = tokio::task::spawn_blocking(move || store.resolve(ROOTFS))
        .await?
        .context("building the busybox rootfs")?;
    // Handles are unique to this run: cgroups (`/diego/<handle>`) are host-wide.
    let run_id: String = diego_garden::new_id().chars().take(8).collect();
    say(
        &o,
        &format!(
            "{runc_version}; rootfs {ROOTFS} built once before timing at {}; one untimed warm-up cycle each",
            base.display()
        ),
    );

    // Warm-up, untimed: first use of the binaries and the page cache.
    cycle(&backend, &format!("b{run_id}-warm")).await?;

    let mut seq = Vec::with_capacity(cycles);
    for i in 0..cycles {
        seq.push(cycle(&backend, &format!("b{run_id}-s{i}")).await?);
    }
    let part = |f: fn(&Cycle) -> Duration| median_p99(&seq.iter().map(f).collect::<Vec<_>>());
    let (cycle_median_ms, cycle_p99_ms) = part(|c| c.total);
    let (create_median_ms, _) = part(|c| c.create);
    let (run_median_ms, _) = part(|c| c.run);
    let (destroy_median_ms, _) = part(|c| c.destroy);
    say(
        &o,
        &format!(
            "cycle (create → run /bin/true, drain to exit 0 → destroy), {cycles} sequential: \
             median {cycle_median_ms:.1} ms, p99 {cycle_p99_ms:.1} ms (medians of the parts: create \
             {create_median_ms:.1} ms, run {run_median_ms:.1} ms, destroy {destroy_median_ms:.1} ms)"
        ),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..PARALLEL {
        let (backend, next, run_id) = (backend.clone(), next.clone(), run_id.clone());
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= parallel_cycles {
                    return anyhow::Ok(times);
                }
                times.push(cycle(&backend, &format!("b{run_id}-p{i}")).await?.total);
            }
        }));
    }
    let mut par = Vec::new();
    for w in workers {
        par.extend(w.await??);
    }
    let par_secs = started.elapsed().as_secs_f64();
    let parallel8_containers_per_sec = parallel_cycles as f64 / par_secs;
    let (par_median_ms, par_p99_ms) = median_p99(&par);
    say(
        &o,
        &format!(
            "{PARALLEL} in parallel: {parallel_cycles} cycles in {par_secs:.2} s = \
             {parallel8_containers_per_sec:.1} containers/s (per cycle: median {par_median_ms:.1} ms, p99 {par_p99_ms:.1} ms)"
        ),
    );

    let runc = Runc::new("runc", &config.runc_root);
    let raw_dir = dir.path().join("raw");
    let (raw_id, raw_cycles) = (run_id.clone(), cycles);
    let raw = tokio::task::spawn_blocking(move || {
        raw_runc_once(&runc, &base, &raw_dir.join("warm"), &format!("b{raw_id}-rwarm"))?;
        (0..raw_cycles)
            .map(|i| {
                let h = format!("b{raw_id}-r{i}");
                raw_runc_once(&runc, &base, &raw_dir.join(&h), &h)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let (raw_runc_median_ms, raw_runc_p99_ms) = median_p99(&raw);
    let ratio = cycle_median_ms / raw_runc_median_ms;
    say(
        &o,
        &format!(
            "raw runc (overlay mount → bundle → runc run /bin/true in the foreground → overlay removal), \
             {cycles} sequential: median {raw_runc_median_ms:.1} ms, p99 {raw_runc_p99_ms:.1} ms; \
             cycle/raw = {ratio:.2}×"
        ),
    );

    let made = Mutex::new(Vec::new());
    let handles: Vec<String> = (0..idle).map(|i| format!("b{run_id}-i{i}")).collect();
    let measured = idle_phase(&backend, &handles, &made).await;
    let destroyed = destroy_all(&backend, &made).await;
    let m = measured?;
    destroyed?;
    say(
        &o,
        &format!(
            "idle: {idle} containers running sleep 3600 with open streams: supervision {:.2} MB per container \
             (this process's VmRSS +{:.1} MB, plus {} child processes (shims) {:.1} MB); \
             the containers' own cgroup memory {:.2} MB each",
            m.overhead_mb,
            m.self_delta_mb,
            m.children,
            m.children_mb,
            m.container_mb
        ),
    );

    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let summary = json!({
        "cycle_median_ms": round(cycle_median_ms, 1),
        "cycle_p99_ms": round(cycle_p99_ms, 1),
        "cycle_create_median_ms": round(create_median_ms, 1),
        "cycle_run_median_ms": round(run_median_ms, 1),
        "cycle_destroy_median_ms": round(destroy_median_ms, 1),
        "raw_runc_median_ms": round(raw_runc_median_ms, 1),
        "raw_runc_p99_ms": round(raw_runc_p99_ms, 1),
        "cycle_to_raw_ratio": round(ratio, 2),
        "parallel8_containers_per_sec": round(parallel8_containers_per_sec, 1),
        "parallel8_cycle_median_ms": round(par_median_ms, 1),
        "parallel8_cycle_p99_ms": round(par_p99_ms, 1),
        "idle_overhead_rss_mb": round(m.overhead_mb, 2),
        "idle_self_rss_delta_mb": round(m.self_delta_mb, 2),
        "idle_child_processes": m.children,
        "idle_child_rss_mb": round(m.children_mb, 2),
        "idle_container_memory_mb": round(m.container_mb, 2),
        "cycles": cycles,
        "parallel_cycles": parallel_cycles,
        "idle_containers": idle,
    });
    if o.json {
        println!("{summary}");
    }
    Ok(())
}

fn say(o: &Options, line: &str) {
    super::say(o.json, line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_use_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(median_p99(&times), (51.0, 99.0));
        assert_eq!(median_p99(&[Duration::from_millis(7)]), (7.0, 7.0));
    }
}
