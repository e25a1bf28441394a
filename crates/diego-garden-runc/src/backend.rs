//! [`RuncBackend`]: `diego_garden::ContainerBackend` on real runc containers.
//!
//! Layout: each container lives in `<depot>/<handle>/` — the overlay (`upper`, `work`,
//! `merged`), the OCI bundle's `config.json`, the init's `init.pid`/`init.log`, the container's
//! record `container.json` (its spec, state, mapped ports, creation time), and
//! `processes/<id>/` for each process run in it (see [`crate::shim::ProcessFiles`]).
//!
//! Decisions:
//! - **Init**: `create` starts the container detached (`runc run --detach`) with a tiny idle
//!   loop as the non-root default user, which exits on TERM; its stdio is `/dev/null` and a log
//!   file, never a pipe (a detached container keeps runc's stdio).
//! - **Processes** each have a [`shim`](crate::shim): a small supervisor process of their own
//!   that runs `runc exec --detach`, is the process's subreaper, and writes its output and exit
//!   status to files, which this server tails into an
//!   [`EventLog`](diego_garden::event_log::EventLog) (see `process.rs`). Nothing of a process
//!   lives only in this server's memory.
//! - **Restarts**: [`RuncBackend::open`] rediscovers the depot — every container runc still
//!   runs comes back with its processes (their output replayed from the start, exit statuses
//!   of those that ended meanwhile) and its net-in proxy, which kept serving its host ports
//!   throughout; anything half-made or whose init died is removed.
//! - **OOM**: an exit of 137 while the container's `memory.oom_control` `oom_kill` count grew
//!   (the shim compares before and after).
//! - **Signals** go to the process's host pid (from `runc exec --pid-file`).
//! - **Destroy** kills the init (the pid namespace dies with it, taking every exec'd process
//!   along), waits for the cgroup to empty, `runc delete`s, then removes the overlay, the
//!   directory and any cgroup leaf runc left.
//! - **Net-in**: a [proxy process](crate::netin::proxy) per container with `net_in` entries,
//!   started once the init runs, like a shim outliving the server: it listens on the
//!   configured `host_ip` for each entry and relays into `127.0.0.1:<container port>` inside
//!   the container's network namespace (see `net_in.rs`); a taken host port is `Invalid`.
//!   Destroy kills the proxy first.
//! - **Disk limits**: a limited container's writable layer is its own loop-mounted ext4 image
//!   (see [`crate::overlay`]).
//! - **Not yet**: `grace_time_ms`, user namespaces.

mod metrics;
mod net_in;
mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diego_garden::{
    new_id, properties_match, Capacity, ContainerBackend, ContainerInfo, ContainerMetrics, ContainerSpec,
    ContainerState, GardenError, NetIn, PortMapping, ProcessSpec, ProcessStream, Properties, Signal,
    TarStream,
};
use tracing::{debug, info, warn};

use crate::bundle::{self, BundleError};
use crate::netin::Dialer;
use crate::shim::ShimCommand;
use crate::{cgroup, Overlay, RootfsError, RootfsStore, Runc, User};
use process::Process;

/// How long `stop` waits after SIGTERM before SIGKILL, unless changed with
/// [`RuncBackend::with_stop_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long `destroy` waits for the killed processes' shims to report their exit.
const DESTROY_WAIT: Duration = Duration::from_secs(5);

/// The container's init: idles until TERM (busybox `sh` as pid 1 ignores TERM without a trap).
const IDLE_INIT: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

/// Where and with what the backend runs.
#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// One directory per container.
    pub depot: PathBuf,
    /// The rootfs cache (see [`RootfsStore`]).
    pub store: PathBuf,
    /// The cell's configured root filesystems, if any.
    pub preloaded_dir: Option<PathBuf>,
    /// runc's private state dir (`runc --root`).
    pub runc_root: PathBuf,
    pub capacity: Capacity,
    /// Address reported as the containers' `host_ip`.
    pub host_ip: String,
    /// How to start a process's supervisor (see [`crate::shim`]).
    pub shim: ShimCommand,
    /// How to start a container's net-in proxy (see [`crate::netin::proxy`]).
    pub netin_proxy: ShimCommand,
}

/// What `<depot>/<handle>/container.json` keeps of a container, for [`RuncBackend::open`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    spec: ContainerSpec,
    state: ContainerState,
    /// The net-in mappings as made (host ports chosen when 0 was asked for).
    ports: Vec<PortMapping>,
    created_unix_ms: u64,
}

const RECORD: &str = "container.json";

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Container {
    spec: ContainerSpec,
    state: ContainerState,
    dir: PathBuf,
    overlay: Overlay,
    /// The rootfs's `/etc/passwd`, read at create, for resolving process users.
    passwd: Option<String>,
    processes: BTreeMap<String, Arc<Process>>,
    events: Arc<Mutex<Vec<String>>>,
    created: Instant,
    created_unix_ms: u64,
    /// The net-in mappings as made, one per `spec.net_in` entry, in order (the container's
    /// proxy process serves them).
    ports: Vec<PortMapping>,
    /// Connects inside the container's network namespace (health checks); made on first use.
    dialer: Option<Dialer>,
}

impl Container {
    fn info(&self, host_ip: &str) -> ContainerInfo {
        ContainerInfo {
            handle: self.spec.handle.clone(),
            state: self.state,
            properties: self.spec.properties.clone(),
            host_ip: host_ip.to_string(),
            container_ip: String::new(),
            mapped_ports: self.ports.clone(),
            process_ids: self.processes.keys().cloned().collect(),
            events: self.events.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn running(&self) -> Vec<Arc<Process>> {
        self.processes.values().filter(|p| p.running()).cloned().collect()
    }

    fn record(&self) -> Record {
        Record {
            spec: self.spec.clone(),
            state: self.state,
            ports: self.ports.clone(),
            created_unix_ms: self.created_unix_ms,
        }
    }

    /// Writes `container.json` (atomically: a restart finds the old record or the new one).
    fn persist(&self) -> Result<(), GardenError> {
        let json = serde_json::to_vec_pretty(&self.record())
            .map_err(|e| GardenError::Unavailable(format!("encoding {RECORD}: {e}")))?;
        let tmp = self.dir.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(RECORD)))
            .map_err(unavailable(format!(
                "writing {}",
                self.dir.join(RECORD).display()
            )))
    }
}

#[derive(Default)]
struct Containers {
    ready: BTreeMap<String, Container>,
    /// Handles being created or destroyed: taken, but not usable.
    busy: BTreeSet<String>,
}

/// Containers run by runc; see the module docs.
pub struct RuncBackend {
    config: RuncConfig,
    runc: Runc,
    store: RootfsStore,
    grace: Duration,
    containers: Mutex<Containers>,
}

fn missing(handle: &str) -> GardenError {
    GardenError::not_found(format!("container {handle:?}"))
}

fn unavailable(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> GardenError {
    move |e| GardenError::Unavailable(format!("{what}: {e}"))
}

fn rootfs_error(e: RootfsError) -> GardenError {
    match e {
        RootfsError::Unavailable { .. } => GardenError::Unavailable(e.to_string()),
        _ => GardenError::Invalid(e.to_string()),
    }
}

fn bundle_error(e: BundleError) -> GardenError {
    GardenError::Invalid(e.to_string())
}

fn join_error(e: tokio::task::JoinError) -> GardenError {
    GardenError::Unavailable(format!("background task failed: {e}"))
}

impl RuncBackend {
    /// A backend keeping containers under `config.depot`, taking over the containers an
    /// earlier run left there: see [`RuncBackend::recover`]. This is what a server uses.
    pub async fn open(config: RuncConfig) -> Result<Self, GardenError> {
        let backend = Self::new(config)?;
        let recovered = backend.recover().await?;
        info!(
            containers = recovered.containers,
            processes = recovered.processes,
            proxies_started = recovered.proxies_started,
            removed = recovered.removed.len(),
            "recovered the depot"
        );
        Ok(backend)
    }

    /// A backend keeping containers under `config.depot` (created if missing), knowing none of
    /// the containers already there until [`RuncBackend::recover`] is called.
    ///
    /// This process becomes a child subreaper, so that the init of each container it creates
    /// is re-parented to it (not to the host's init) and reaped when the container is
    /// destroyed: a host whose pid 1 does not reap orphans keeps no zombie either.
    pub fn new(config: RuncConfig) -> Result<Self, GardenError> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| GardenError::Unavailable(format!("becoming a child subreaper: {e}")))?;
        for dir in [&config.depot, &config.store, &config.runc_root] {
            std::fs::create_dir_all(dir).map_err(unavailable(format!("creating {}", dir.display())))?;
        }
        let runc = Runc::new("runc", &config.runc_root);
        let store = RootfsStore::new(&config.store, config.preloaded_dir.clone());
        Ok(Self {
            config,
            runc,
            store,
            grace: DEFAULT_STOP_GRACE,
            containers: Mutex::default(),
        })
    }

    /// Takes over what an earlier run of this backend left in the depot: each container that
    /// runc still runs comes back with its record, its processes (output replayed from the
    /// start; those that exited meanwhile with their exit status) and its net-in proxy (taken
    /// over as it runs, or started again on the same host ports if it died). Directories
    /// without a record (a create cut short), containers whose init is gone (a host reboot),
    /// and runc containers without a directory are removed, with their proxies.
    pub async fn recover(&self) -> Result<Recovered, GardenError> {
        let runc = self.runc.clone();
        let depot = self.config.depot.clone();
        let scan = tokio::task::spawn_blocking(move || scan_depot(&runc, &depot))
            .await
            .map_err(join_error)??;
        let mut recovered = Recovered {
            removed: scan.removed,
            ..Default::default()
        };
        for (dir, record) in scan.found {
            let handle = record.spec.handle.clone();
            let passwd = std::fs::read_to_string(Overlay::new(&dir).merged().join("etc/passwd")).ok();
            let events: Arc<Mutex<Vec<String>>> = Arc::default();
            let mut processes = BTreeMap::new();
            if let Ok(entries) = std::fs::read_dir(dir.join("processes")) {
                for entry in entries.flatten() {
                    let id = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().join("process.json").exists() {
                        processes.insert(id, process::recover(&entry.path(), events.clone()));
                    }
                }
            }
            let ports = match net_in::adopt(
                &self.config.netin_proxy,
                &self.config.host_ip,
                &record.ports,
                &dir,
            )
            .await
            {
                Ok(adopted) => {
                    recovered.proxies_started += usize::from(adopted == net_in::Adopted::Started);
                    record.ports.clone()
                }
                Err(e) => {
                    warn!(handle = %handle, error = %e, "net-in not restored");
                    events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("net-in not restored after a restart: {e}"));
                    Vec::new()
                }
            };
            let age = Duration::from_millis(unix_ms_now().saturating_sub(record.created_unix_ms));
            recovered.containers += 1;
            recovered.processes += processes.len();
            let container = Container {
                overlay: Overlay::new(&dir),
                dir,
                spec: record.spec,
                state: record.state,
                passwd,
                processes,
                events,
                created: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                created_unix_ms: record.created_unix_ms,
                ports,
                dialer: None,
            };
            self.lock().ready.insert(handle, container);
        }
        Ok(recovered)
    }

    /// The time `stop` gives processes between SIGTERM and SIGKILL.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_container<T>(
        &self,
        handle: &str,
        f: impl FnOnce(&mut Container) -> Result<T, GardenError>,
    ) -> Result<T, GardenError> {
        match self.lock().ready.get_mut(handle) {
            Some(c) => f(c),
            None => Err(missing(handle)),
        }
    }

    fn process(&self, handle: &str, id: &str) -> Result<Arc<Process>, GardenError> {
        self.with_container(handle, |c| {
            c.processes
                .get(id)
                .cloned()
                .ok_or_else(|| GardenError::not_found(format!("process {id:?} in container {handle:?}")))
        })
    }

    /// The container's root and the host path of container path `path` in it.
    fn host_path(&self, handle: &str, path: &str) -> Result<(PathBuf, PathBuf), GardenError> {
        let merged = self.with_container(handle, |c| Ok(c.overlay.merged()))?;
        let joined = container_path(&merged, path)?;
        Ok((merged, joined))
    }
}

/// What [`RuncBackend::recover`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Containers taken over.
    pub containers: usize,
    /// Processes taken over in them (running or exited).
    pub processes: usize,
    /// Net-in proxies started again because the recorded one no longer ran (those still
    /// running are taken over as they are).
    pub proxies_started: usize,
    /// Handles of what was removed: half-made containers, containers whose init had died, and
    /// runc containers without a depot directory.
    pub removed: Vec<String>,
}

struct Scan {
    found: Vec<(PathBuf, Record)>,
    removed: Vec<String>,
}

/// Sorts the depot into containers to take over and leftovers, removing the leftovers
/// (blocking).
fn scan_depot(runc: &Runc, depot: &Path) -> Result<Scan, GardenError> {
    let states: BTreeMap<String, String> = runc
        .list_states()
        .map_err(unavailable("runc list"))?
        .into_iter()
        .collect();
    let mut scan = Scan {
        found: Vec::new(),
        removed: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let entries = std::fs::read_dir(depot).map_err(unavailable(format!("reading {}", depot.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let dir = entry.path();
        seen.insert(name.clone());
        let record: Option<Record> = std::fs::read(dir.join(RECORD))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|r: &Record| r.spec.handle == name);
        match (record, states.get(&name).map(String::as_str)) {
            (Some(record), Some("running")) => scan.found.push((dir, record)),
            (record, state) => {
                warn!(
                    handle = %name,
                    recorded = record.is_some(),
                    runc_state = state.unwrap_or("none"),
                    "removing a container left from an earlier run"
                );
                remove_container(runc, &name, &dir)?;
                scan.removed.push(name);
            }
        }
    }
    for id in states.keys().filter(|id| !seen.contains(*id)) {
        warn!(handle = %id, "removing a runc container without a depot directory");
        kill_container(runc, id, None)?;
        cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), id)
            .map_err(unavailable("removing cgroups"))?;
        scan.removed.push(id.clone());
    }
    Ok(scan)
}

/// Container path `path` (absolute, without `..`) under the container's root `merged`.
/// Symlinks are checked later, when tar's directory is resolved.
fn container_path(merged: &Path, path: &str) -> Result<PathBuf, GardenError> {
    let rel = Path::new(path);
    if !rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(GardenError::Invalid(format!(
            "path {path:?} must be absolute and must not contain '..'"
        )));
    }
    Ok(merged.join(rel.strip_prefix("/").unwrap_or(rel)))
}

/// Builds and starts a container (blocking). On failure everything made so far is removed.
fn create_container(
    runc: &Runc,
    store: &RootfsStore,
    spec: &ContainerSpec,
    dir: &Path,
) -> Result<Option<String>, GardenError> {
    let overlay = Overlay::new(dir).with_disk_templates(store.disk_templates_dir());
    let started = Instant::now();
    let result = (|| {
        let base = store.resolve(&spec.rootfs).map_err(rootfs_error)?;
        overlay
            .mount(&base, spec.limits.disk_bytes)
            .map_err(|e| match e {
                crate::OverlayError::Invalid(_) => GardenError::Invalid(e.to_string()),
                _ => GardenError::Unavailable(e.to_string()),
            })?;
        let layered = started.elapsed();
        let passwd = std::fs::read_to_string(overlay.merged().join("etc/passwd")).ok();
        let init = ProcessSpec {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), IDLE_INIT.into()],
            ..Default::default()
        };
        let user = User::resolve("", passwd.as_deref()).map_err(|e| GardenError::Invalid(e.to_string()))?;
        let config = bundle::config(spec, &init, &user, &overlay.merged()).map_err(bundle_error)?;
        bundle::write_config(dir, &config).map_err(unavailable("writing config.json"))?;
        let log_path = dir.join("init.log");
        let log = std::fs::File::create(&log_path).map_err(unavailable("creating init.log"))?;
        let log2 = log.try_clone().map_err(unavailable("creating init.log"))?;
        let status = runc
            .run_detached(dir, &spec.handle, &dir.join("init.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(unavailable("running runc run"))?;
        if !status.success() {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(GardenError::Unavailable(format!(
                "runc run --detach {} failed ({status}): {}",
                spec.handle,
                output.trim()
            )));
        }
        debug!(
            handle = %spec.handle,
            layer_ms = layered.as_secs_f64() * 1e3,
            runc_ms = (started.elapsed() - layered).as_secs_f64() * 1e3,
            "container layer mounted and runc run"
        );
        Ok(passwd)
    })();
    if result.is_err() {
        if let Err(e) = remove_container(runc, &spec.handle, dir) {
            warn!(handle = %spec.handle, error = %e, "cleaning up a failed create");
        }
    }
    result
}

/// The `net_in` entries as `(host port, container port)`, checked.
fn net_in_ports(net_in: &[NetIn]) -> Result<Vec<(u16, u16)>, GardenError> {
    net_in
        .iter()
        .map(|n| {
            let host = u16::try_from(n.host_port).map_err(|_| {
                GardenError::Invalid(format!("net_in host port {} is not a TCP port", n.host_port))
            })?;
            let container = u16::try_from(n.container_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    GardenError::Invalid(format!(
                        "net_in container port {} is not a TCP port",
                        n.container_port
                    ))
                })?;
            Ok((host, container))
        })
        .collect()
}

/// Kills the container and removes its runc state (blocking).
///
/// `runc delete --force` of a running container signals it and then polls for its death in
/// 100 ms steps, which made destroy the slowest part of a container's life. Killing first and
/// watching the container's cgroup empty (tasks leave it as they die, before any reaping) lets
/// `runc delete` find the container already stopped and remove it at once. With the container's
/// directory at hand the init is killed directly (one `runc` run fewer).
fn kill_container(runc: &Runc, handle: &str, dir: Option<&Path>) -> Result<(), GardenError> {
    let killed_directly = dir
        .and_then(|d| container_init(d, handle))
        .is_some_and(|pid| nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok());
    let root = Path::new(cgroup::CGROUP_ROOT);
    let mut stopped = false;
    if killed_directly || runc.kill(handle).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while cgroup::has_tasks(root, handle) == Some(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped = cgroup::has_tasks(root, handle) == Some(false);
    }
    // For a stopped container without hooks, `runc delete` removes its cgroups and its state
    // directory under runc's root, nothing else; doing that here saves starting runc (about
    // 10 ms of every destroy). Anything unexpected falls back to runc.
    if stopped {
        let state = runc.state_dir().join(handle);
        if state.join("state.json").is_file()
            && std::fs::remove_dir_all(&state).is_ok()
            && cgroup::remove_leftovers(root, handle).is_ok()
        {
            return Ok(());
        }
    }
    runc.delete_force(handle)
        .map_err(unavailable(format!("runc delete --force {handle}")))
}

/// The host pid of the container's init from `<dir>/init.pid`, if that process is alive and in
/// the container's cgroup (so a reused pid is never signalled).
fn container_init(dir: &Path, handle: &str) -> Option<nix::unistd::Pid> {
    let pid: i32 = std::fs::read_to_string(dir.join("init.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let ours = cgroup::cgroups_path(handle);
    cgroups
        .lines()
        .any(|l| l.ends_with(&format!(":{ours}")))
        .then(|| nix::unistd::Pid::from_raw(pid))
}

/// Reaps the container's dead init if it is this process's child: this process is a child
/// subreaper (see [`RuncBackend::new`]), so the init of a container it created was re-parented
/// to it when `runc run --detach` returned. (A container taken over after a restart has its
/// init re-parented to the host's init instead, which reaps it.)
fn reap_init(dir: &Path) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Some(pid) = std::fs::read_to_string(dir.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(nix::errno::Errno::EINTR) => {}
            // Reaped, not ours (ECHILD), or somehow still alive after the kill: done.
            _ => return,
        }
    }
}

/// Kills the container and its net-in proxy and removes every trace of them: runc state,
/// overlay mount, directory, cgroup leaves (blocking).
fn remove_container(runc: &Runc, handle: &str, dir: &Path) -> Result<(), GardenError> {
    // Should this fail, the proxy still exits by itself once the directory is gone.
    if let Err(e) = net_in::stop(dir) {
        warn!(handle, error = %e, "stopping the net-in proxy");
    }
    kill_container(runc, handle, Some(dir))?;
    remove_files(handle, dir)
}

/// Removes what is left of a killed and `runc delete`d container: reaps its init, removes the
/// overlay, the directory and the cgroup leaves (blocking).
fn remove_files(handle: &str, dir: &Path) -> Result<(), GardenError> {
    reap_init(dir);
    Overlay::new(dir)
        .destroy()
        .map_err(|e| GardenError::Unavailable(e.to_string()))?;
    // The overlay is unmounted now, so a recursive delete cannot reach into the container.
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unavailable(format!("removing {}", dir.display()))(e)),
    }
    cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), handle)
        .map_err(unavailable("removing cgroups"))?;
    Ok(())
}

#[async_trait]
impl ContainerBackend for RuncBackend {
    async fn ping(&self) -> Result<(), GardenError> {
        let runc = self.runc.clone();
        let depot = self.config.depot.clone();
        tokio::task::spawn_blocking(move || {
            runc.version().map_err(unavailable("runc --version"))?;
            let probe = depot.join(format!(".ping-{}", new_id()));
            std::fs::write(&probe, b"")
                .map_err(unavailable(format!("writing to depot {}", depot.display())))?;
            std::fs::remove_file(&probe).map_err(unavailable("removing the ping probe"))
        })
        .await
        .map_err(join_error)?
    }

    async fn capacity(&self) -> Result<Capacity, GardenError> {
        Ok(self.config.capacity)
    }

    async fn create(&self, mut spec: ContainerSpec) -> Result<ContainerInfo, GardenError> {
        if spec.handle.is_empty() {
            spec.handle = new_id();
        }
        bundle::validate_handle(&spec.handle).map_err(bundle_error)?;
        let ports = net_in_ports(&spec.net_in)?;
        {
            let mut containers = self.lock();
            if containers.ready.contains_key(&spec.handle) || containers.busy.contains(&spec.handle) {
                return Err(GardenError::Exists(format!("container {:?}", spec.handle)));
            }
            let max = self.config.capacity.max_containers;
            let used = (containers.ready.len() + containers.busy.len()) as u64;
            if max > 0 && used >= max {
                return Err(GardenError::Invalid(format!(
                    "at capacity: {max} containers already exist; destroy one first"
                )));
            }
            containers.busy.insert(spec.handle.clone());
        }
        let dir = self.config.depot.join(&spec.handle);
        let (runc, store, blocking_spec, blocking_dir) =
            (self.runc.clone(), self.store.clone(), spec.clone(), dir.clone());
        let created = tokio::task::spawn_blocking(move || {
            create_container(&runc, &store, &blocking_spec, &blocking_dir)
        })
        .await
        .map_err(join_error)
        .and_then(|r| r);
        let passwd = match created {
            Ok(passwd) => passwd,
            Err(e) => {
                self.lock().busy.remove(&spec.handle);
                return Err(e);
            }
        };
        let mapped = net_in::start(&self.config.netin_proxy, &self.config.host_ip, &ports, &dir).await;
        let container = mapped.and_then(|ports| {
            let container = Container {
                overlay: Overlay::new(&dir),
                dir: dir.clone(),
                spec: spec.clone(),
                state: ContainerState::Active,
                passwd,
                processes: BTreeMap::new(),
                events: Arc::default(),
                created: Instant::now(),
                created_unix_ms: unix_ms_now(),
                ports,
                dialer: None,
            };
            // Recorded last: a restart removes a container without a record as half-made.
            container.persist().map(|()| container)
        });
        let container = match container {
            Ok(c) => c,
            Err(e) => {
                let (runc, id, dir) = (self.runc.clone(), spec.handle.clone(), dir.clone());
                let cleaned = tokio::task::spawn_blocking(move || remove_container(&runc, &id, &dir))
                    .await
                    .map_err(join_error)
                    .and_then(|r| r);
                if let Err(c) = cleaned {
                    warn!(handle = %spec.handle, error = %c, "cleaning up a failed create");
                }
                self.lock().busy.remove(&spec.handle);
                return Err(e);
            }
        };
        let mut containers = self.lock();
        containers.busy.remove(&spec.handle);
        info!(handle = %spec.handle, rootfs = %spec.rootfs, "created container");
        let info = container.info(&self.config.host_ip);
        containers.ready.insert(info.handle.clone(), container);
        Ok(info)
    }

    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError> {
        Ok(self
            .lock()
            .ready
            .values()
            .filter(|c| properties_match(&c.spec.properties, filter))
            .map(|c| c.spec.handle.clone())
            .collect())
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError> {
        self.with_container(handle, |c| Ok(c.info(&self.config.host_ip)))
    }

    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError> {
        let running = self.with_container(handle, |c| {
            c.state = ContainerState::Stopped;
            if let Err(e) = c.persist() {
                warn!(handle, error = %e, "recording the stopped state");
            }
            Ok(c.running())
        })?;
        if !kill {
            for p in &running {
                p.signal(Signal::Term.number()).await?;
            }
            let deadline = tokio::time::Instant::now() + self.grace;
            for p in &running {
                p.wait(deadline.saturating_duration_since(tokio::time::Instant::now()))
                    .await;
            }
        }
        for p in running.iter().filter(|p| p.running()) {
            p.signal(Signal::Kill.number()).await?;
        }
        for p in &running {
            p.wait(DESTROY_WAIT).await;
        }
        Ok(())
    }

    async fn destroy(&self, handle: &str) -> Result<(), GardenError> {
        let mut container = {
            let mut containers = self.lock();
            let container = containers.ready.remove(handle).ok_or_else(|| missing(handle))?;
            containers.busy.insert(handle.to_string());
            container
        };
        // No new connections into a dying container (a failed destroy keeps it unmapped).
        let dir = container.dir.clone();
        let unmapped = tokio::task::spawn_blocking(move || net_in::stop(&dir))
            .await
            .map_err(join_error)
            .and_then(|r| r);
        let killed = match unmapped {
            Ok(()) => {
                container.ports.clear();
                let (runc, id, dir) = (self.runc.clone(), handle.to_string(), container.dir.clone());
                tokio::task::spawn_blocking(move || kill_container(&runc, &id, Some(&dir)))
                    .await
                    .map_err(join_error)
                    .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        let removed = match killed {
            Ok(()) => {
                // The pid namespace died with the init, taking every exec'd process with it.
                for p in container.processes.values() {
                    p.wait(DESTROY_WAIT).await;
                }
                let (id, dir) = (handle.to_string(), container.dir.clone());
                tokio::task::spawn_blocking(move || remove_files(&id, &dir))
                    .await
                    .map_err(join_error)
                    .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        let mut containers = self.lock();
        containers.busy.remove(handle);
        match removed {
            Ok(()) => {
                info!(handle, "destroyed container");
                Ok(())
            }
            Err(e) => {
                // Keep it, so destroy can be retried.
                warn!(handle, error = %e, "destroying container failed");
                containers.ready.insert(handle.to_string(), container);
                Err(e)
            }
        }
    }

    async fn run(&self, handle: &str, mut spec: ProcessSpec) -> Result<ProcessStream, GardenError> {
        if spec.id.is_empty() {
            spec.id = new_id();
        }
        crate::bundle::validate_handle(&spec.id).map_err(|_| {
            GardenError::Invalid(format!(
                "process id {:?}: must be letters, digits, '-', '_' or '.'",
                spec.id
            ))
        })?;
        let mut guard = self.lock();
        let container = guard.ready.get_mut(handle).ok_or_else(|| missing(handle))?;
        if container.processes.contains_key(&spec.id) {
            return Err(GardenError::Exists(format!(
                "process {:?} in container {handle:?}",
                spec.id
            )));
        }
        let user = User::resolve(&spec.user, container.passwd.as_deref())
            .map_err(|e| GardenError::Invalid(e.to_string()))?;
        let config = bundle::config(&container.spec, &spec, &user, &container.overlay.merged())
            .map_err(bundle_error)?;
        let dir = container.dir.join("processes").join(&spec.id);
        let process = process::start(
            &self.config.shim,
            &self.runc,
            handle,
            &dir,
            &config.process,
            container.events.clone(),
        )?;
        container.processes.insert(spec.id.clone(), process.clone());
        drop(guard);
        Ok(ProcessStream {
            id: spec.id,
            events: process.log.stream(),
        })
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError> {
        let process = self.process(handle, process_id)?;
        Ok(ProcessStream {
            id: process_id.to_string(),
            events: process.log.stream(),
        })
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError> {
        self.process(handle, process_id)?.signal(signal.number()).await
    }

    async fn stream_in(&self, handle: &str, dst_path: &str, tar: TarStream) -> Result<(), GardenError> {
        let (merged, dst) = self.host_path(handle, dst_path)?;
        diego_garden::tar::extract(&merged, &dst, tar).await
    }

    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError> {
        let (merged, src) = self.host_path(handle, src_path)?;
        diego_garden::tar::archive(&merged, &src).await
    }

    fn can_connect(&self) -> bool {
        true
    }

    /// Through a thread that joined the container's network namespace (one per container,
    /// made on first use and kept): a connection to `127.0.0.1:port` inside it.
    async fn connect(&self, handle: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        use std::io::{Error, ErrorKind};
        let dialer = match self.lock().ready.get_mut(handle) {
            None => return Err(Error::new(ErrorKind::NotFound, missing(handle).to_string())),
            Some(c) => {
                if c.dialer.is_none() {
                    let pid: u32 = std::fs::read_to_string(c.dir.join("init.pid"))?
                        .trim()
                        .parse()
                        .map_err(|e| Error::other(format!("container {handle:?}: init.pid: {e}")))?;
                    c.dialer = Some(Dialer::for_pid(pid)?);
                }
                c.dialer.clone().expect("just set")
            }
        };
        dialer.connect(port).await
    }

    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError> {
        let found: Vec<(String, PathBuf, Instant)> = {
            let containers = self.lock();
            handles
                .iter()
                .filter_map(|h| {
                    containers
                        .ready
                        .get(h)
                        .map(|c| (h.clone(), c.overlay.upper(), c.created))
                })
                .collect()
        };
        tokio::task::spawn_blocking(move || {
            found
                .into_iter()
                .map(|(handle, upper, created)| {
                    let (memory_bytes, cpu_usage_ns, pids) =
                        metrics::cgroup_usage(Path::new(cgroup::CGROUP_ROOT), &handle);
                    let m = ContainerMetrics {
                        memory_bytes,
                        cpu_usage_ns,
                        disk_bytes: metrics::disk_usage(&upper),
                        pids,
                        age_ms: created.elapsed().as_millis() as u64,
                    };
                    (handle, m)
                })
                .collect()
        })
        .await
        .map_err(join_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_stay_under_the_root() {
        let root = Path::new("/depot/c1/merged");
        assert_eq!(container_path(root, "/").unwrap(), root);
        assert_eq!(
            container_path(root, "/tmp/in").unwrap(),
            Path::new("/depot/c1/merged/tmp/in")
        );
        for bad in ["tmp", "", "/tmp/../../etc", "/.."] {
            assert!(
                matches!(container_path(root, bad), Err(GardenError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }
}
