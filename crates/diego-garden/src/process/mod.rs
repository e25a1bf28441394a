//! The process backend: containers are directories on the host and their processes are plain
//! host processes. **It provides no isolation**: processes run as the server's user, see the
//! host's filesystem, network and other processes, and the only limits are per-process
//! rlimits (`nofile`, via `prlimit`). Container memory/disk/pid/cpu limits are recorded but
//! not enforced. Use it where runc is unavailable (no root) and the workloads are trusted.
//!
//! Decisions (see also [`paths`] for the on-disk layout):
//! - **Ports**: with no network namespace a container port *is* a host port, so each `net_in`
//!   maps `host_port = container_port`; asking for a different host port, or for a port
//!   another container of this backend already maps, is `Invalid`.
//! - **Users**: a process runs as the server's user; asking for any other user is `Invalid`.
//! - **Signals** go to the process's whole process group (see [`spawn`]).
//! - **State** is in memory; each process's output and exit status are also written under
//!   `<depot>/<handle>/processes/<id>/` for inspection, but a restarted server does not
//!   rediscover containers.
//! - **After a crash** of the server its containers' processes would run on as orphans (they
//!   are host processes; `PR_SET_PDEATHSIG` is tied to the spawning thread, which tokio
//!   retires, so it is not relied on). Each process's group is therefore recorded on disk as
//!   it is spawned, and [`ProcessBackend::new`] *ends* the containers an earlier run left in
//!   the depot: it SIGKILLs their recorded groups, waits until they are gone and removes the
//!   directories, with a WARN per container, as the runc backend does with the stopped
//!   containers it finds. Adopting them is not possible: the new server is not their parent
//!   (no exit status to wait for, no output pipes). See `groups.rs` for how a reused pid is
//!   never killed. `destroy` (and `stop`'s SIGKILL) kill every group of the container, those
//!   of processes that already exited too, and dropping the backend kills all of them.

mod groups;
mod metrics;
pub mod paths;
mod spawn;

mod user;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::event_log::EventLog;
use crate::{
    new_id, properties_match, Capacity, ContainerBackend, ContainerInfo, ContainerMetrics, ContainerSpec,
    ContainerState, GardenError, PortMapping, ProcessSpec, ProcessStream, Properties, Signal, TarStream,
};
use groups::Group;
use paths::{validate_name, ContainerDirs};
use spawn::Launch;
use user::CurrentUser;

/// How long `stop` waits after SIGTERM before SIGKILL, unless changed with
/// [`ProcessBackend::with_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long `destroy` waits for killed processes to be reaped before removing the directory
/// anyway. SIGKILL cannot be caught, so this only matters for processes stuck in the kernel.
const DESTROY_WAIT: Duration = Duration::from_secs(5);

/// How long opening a depot waits for the process groups of an earlier run's containers to be
/// gone after SIGKILL, before removing their directories anyway.
const LEFTOVER_WAIT: Duration = Duration::from_secs(10);

/// The only image scheme: the host's own filesystem stands in for any preloaded rootfs.
const PRELOADED: &str = "preloaded:";

struct Process {
    log: EventLog,
    /// Leader of the process's group.
    pid: u32,
    /// The group it leads, as recorded on disk.
    group: Group,
}

impl Process {
    fn running(&self) -> bool {
        self.log.exit_status().is_none()
    }
}

struct Container {
    spec: ContainerSpec,
    state: ContainerState,
    dirs: ContainerDirs,
    mapped_ports: Vec<PortMapping>,
    /// Container env, parsed at create.
    env: Vec<(String, String)>,
    processes: BTreeMap<String, Arc<Process>>,
    created: Instant,
}

impl Container {
    fn info(&self) -> ContainerInfo {
        ContainerInfo {
            handle: self.spec.handle.clone(),
            state: self.state,
            properties: self.spec.properties.clone(),
            host_ip: "127.0.0.1".into(),
            // The container shares the host's network: its address is the host's.
            container_ip: "127.0.0.1".into(),
            mapped_ports: self.mapped_ports.clone(),
            process_ids: self.processes.keys().cloned().collect(),
            events: Vec::new(),
        }
    }

    fn running(&self) -> Vec<Arc<Process>> {
        self.processes.values().filter(|p| p.running()).cloned().collect()
    }

    /// The groups of all its processes, exited ones too: their children may live on.
    fn groups(&self) -> Vec<Group> {
        self.processes.values().map(|p| p.group.clone()).collect()
    }
}

/// Containers as directories under a depot and processes as host processes; no isolation
/// (see the module docs).
pub struct ProcessBackend {
    depot: PathBuf,
    capacity: Capacity,
    grace: Duration,
    user: CurrentUser,
    containers: Mutex<BTreeMap<String, Container>>,
}

impl ProcessBackend {
    /// A backend keeping its containers under `depot` (created if missing). Provides NO
    /// isolation: processes run on the host as the server's user, limited only by rlimits.
    ///
    /// Containers an earlier server left in the depot (it crashed, or was killed) are ended
    /// first: their recorded process groups are SIGKILLed and waited for (up to 10 s), then
    /// their directories removed. This blocks; from async code call it in `spawn_blocking`.
    pub fn new(depot: PathBuf, capacity: Capacity) -> Result<Self, GardenError> {
        std::fs::create_dir_all(&depot)
            .map_err(|e| GardenError::Unavailable(format!("creating depot {}: {e}", depot.display())))?;
        let user = CurrentUser::detect()?;
        warn!(
            depot = %depot.display(),
            uid = user.uid,
            "process backend: NO isolation; processes run on the host as the server's user, limited only by rlimits"
        );
        remove_leftovers(&depot)?;
        Ok(Self {
            depot,
            capacity,
            grace: DEFAULT_STOP_GRACE,
            user,
            containers: Mutex::new(BTreeMap::new()),
        })
    }

    /// The time `stop` gives processes between SIGTERM and SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_container<T>(
        &self,
        handle: &str,
        f: impl FnOnce(&mut Container) -> Result<T, GardenError>,
    ) -> Result<T, GardenError> {
        let mut cs = self.lock();
        let c = cs.get_mut(handle).ok_or_else(|| missing(handle))?;
        f(c)
    }

    fn process(&self, handle: &str, id: &str) -> Result<Arc<Process>, GardenError> {
        self.with_container(handle, |c| {
            c.processes
                .get(id)
                .cloned()
                .ok_or_else(|| GardenError::not_found(format!("process {id:?} in container {handle:?}")))
        })
    }

    /// The port mappings of `spec`, or why they cannot be had.
    fn ports(spec: &ContainerSpec, taken: &BTreeSet<u32>) -> Result<Vec<PortMapping>, GardenError> {
        let mut mine = BTreeSet::new();
        let mut mapped = Vec::new();
        for n in &spec.net_in {
            let port = n.container_port;
            if port == 0 || port > 65_535 {
                return Err(GardenError::Invalid(format!(
                    "net_in container_port must be 1-65535 (got {port})"
                )));
            }
            if n.host_port != 0 && n.host_port != port {
                return Err(GardenError::Invalid(format!(
                    "net_in {}->{port}: the process backend has no network isolation, so a \
                     container port is the host port; ask for host_port 0 or {port}",
                    n.host_port
                )));
            }
            if taken.contains(&port) || !mine.insert(port) {
                return Err(GardenError::Invalid(format!(
                    "port {port} is already mapped by another container (the process backend \
                     shares the host's ports between containers)"
                )));
            }
            mapped.push(PortMapping {
                host_port: port,
                container_port: port,
            });
        }
        Ok(mapped)
    }
}

impl Drop for ProcessBackend {
    /// A server that stops (rather than crashes) does not leave its containers' processes
    /// behind: no other server could take them over. SIGKILL only, no waiting; the
    /// directories are removed by the next backend opened on the depot.
    fn drop(&mut self) {
        let cs = self.containers.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut ended = 0;
        for c in cs.values() {
            for g in c.groups() {
                ended += usize::from(g.kill());
            }
        }
        if ended > 0 {
            info!(
                groups = ended,
                "process backend closed: killed its containers' processes"
            );
        }
    }
}

/// Ends the containers an earlier run left in `depot`: kills their recorded process groups,
/// waits for them to be gone, and removes their directories. Blocking.
fn remove_leftovers(depot: &std::path::Path) -> Result<(), GardenError> {
    let entries = std::fs::read_dir(depot).map_err(|e| io_unavailable("reading", depot, e))?;
    let leftovers: Vec<(String, PathBuf, Vec<Group>)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let dir = e.path();
            (!name.starts_with('.') && dir.is_dir()).then(|| {
                let groups = groups::recorded(&dir);
                (name, dir, groups)
            })
        })
        .collect();
    if leftovers.is_empty() {
        return Ok(());
    }
    // One wait for all of them: they die together.
    let all: Vec<Group> = leftovers.iter().flat_map(|(_, _, g)| g.iter().cloned()).collect();
    let before: Vec<usize> = leftovers
        .iter()
        .map(|(_, _, g)| g.iter().filter(|g| !g.members().is_empty()).count())
        .collect();
    let (_, stuck) = groups::end(&all, LEFTOVER_WAIT);
    if stuck > 0 {
        warn!(
            groups = stuck,
            "processes of an earlier run's containers outlived SIGKILL; removing their directories anyway"
        );
    }
    for ((handle, dir, groups), live) in leftovers.iter().zip(before) {
        warn!(
            %handle,
            processes = groups.len(),
            killed_groups = live,
            "removing a container left from an earlier run"
        );
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_unavailable("removing", dir, e)),
        }
    }
    Ok(())
}

/// SIGKILLs `groups` and waits (off the async workers) until they are gone or `limit` passed;
/// whether they are gone.
async fn end_groups(groups: Vec<Group>, limit: Duration) -> bool {
    if groups.is_empty() {
        return true;
    }
    match tokio::task::spawn_blocking(move || groups::end(&groups, limit)).await {
        Ok((_, stuck)) => stuck == 0,
        Err(e) => {
            warn!(error = %e, "ending process groups failed");
            false
        }
    }
}

fn missing(handle: &str) -> GardenError {
    GardenError::not_found(format!("container {handle:?}"))
}

fn io_unavailable(what: &str, path: &std::path::Path, e: std::io::Error) -> GardenError {
    GardenError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// Waits until the process has exited (its log ends).
async fn exited(p: &Process) {
    let mut events = p.log.stream();
    while events.next().await.is_some() {}
}

async fn signal_all(procs: &[Arc<Process>], signal: Signal) {
    for p in procs {
        if let Err(e) = spawn::signal_group(p.pid, signal).await {
            warn!(pid = p.pid, ?signal, error = %e, "signalling process group failed");
        }
    }
}

#[async_trait]
impl ContainerBackend for ProcessBackend {
    async fn ping(&self) -> Result<(), GardenError> {
        debug!(depot = %self.depot.display(), "process backend (NO isolation): checking the depot");
        tokio::fs::metadata(&self.depot)
            .await
            .map(|_| ())
            .map_err(|e| io_unavailable("depot", &self.depot, e))
    }

    async fn capacity(&self) -> Result<Capacity, GardenError> {
        Ok(self.capacity)
    }

    async fn create(&self, mut spec: ContainerSpec) -> Result<ContainerInfo, GardenError> {
        if spec.rootfs.is_empty() {
            return Err(GardenError::Invalid("rootfs is required".into()));
        }
        if !spec.rootfs.starts_with(PRELOADED) {
            return Err(GardenError::Invalid(format!(
                "rootfs {:?}: the process backend has no image support (processes see the \
                 host's filesystem); use preloaded:NAME",
                spec.rootfs
            )));
        }
        if spec.handle.is_empty() {
            spec.handle = new_id();
        }
        validate_name("handle", &spec.handle)?;
        let env = spawn::parse_env("container", &spec.env)?;
        let handle = spec.handle.clone();
        let dirs = ContainerDirs::new(&self.depot, &handle);
        {
            // Reserve the handle (and its ports) before touching the disk, so concurrent
            // creates cannot both succeed.
            let mut cs = self.lock();
            if cs.contains_key(&handle) {
                return Err(GardenError::Exists(format!("container {handle:?}")));
            }
            if cs.len() as u64 >= self.capacity.max_containers {
                return Err(GardenError::Invalid(format!(
                    "at capacity ({} containers)",
                    self.capacity.max_containers
                )));
            }
            let taken = cs
                .values()
                .flat_map(|c| c.mapped_ports.iter().map(|m| m.host_port))
                .collect();
            let mapped_ports = Self::ports(&spec, &taken)?;
            cs.insert(
                handle.clone(),
                Container {
                    spec,
                    state: ContainerState::Active,
                    dirs: dirs.clone(),
                    mapped_ports,
                    env,
                    processes: BTreeMap::new(),
                    created: Instant::now(),
                },
            );
        }
        let made = async {
            // A directory not in our table is left over from an earlier server: start afresh.
            if tokio::fs::symlink_metadata(&dirs.base).await.is_ok() {
                tokio::fs::remove_dir_all(&dirs.base)
                    .await
                    .map_err(|e| io_unavailable("removing stale", &dirs.base, e))?;
            }
            for d in [&dirs.home, &dirs.tmp] {
                tokio::fs::create_dir_all(d)
                    .await
                    .map_err(|e| io_unavailable("creating", d, e))?;
            }
            Ok::<_, GardenError>(())
        }
        .await;
        if let Err(e) = made {
            self.lock().remove(&handle);
            let _ = tokio::fs::remove_dir_all(&dirs.base).await;
            return Err(e);
        }
        info!(%handle, dir = %dirs.base.display(), "created container");
        self.info(&handle).await
    }

    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, c)| properties_match(&c.spec.properties, filter))
            .map(|(h, _)| h.clone())
            .collect())
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError> {
        self.with_container(handle, |c| Ok(c.info()))
    }

    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError> {
        let (running, groups) = self.with_container(handle, |c| {
            c.state = ContainerState::Stopped;
            Ok((c.running(), c.groups()))
        })?;
        if !kill {
            signal_all(&running, Signal::Term).await;
            let all_exited = futures_util::future::join_all(running.iter().map(|p| exited(p)));
            if tokio::time::timeout(self.grace, all_exited).await.is_ok() {
                info!(%handle, processes = running.len(), "stopped container");
                return Ok(());
            }
        }
        let left: Vec<_> = running.into_iter().filter(|p| p.running()).collect();
        // Every group, those whose leader exited too: their children are the container's.
        end_groups(groups, DESTROY_WAIT).await;
        futures_util::future::join_all(left.iter().map(|p| exited(p))).await;
        info!(%handle, killed = left.len(), "stopped container");
        Ok(())
    }

    async fn destroy(&self, handle: &str) -> Result<(), GardenError> {
        let c = self.lock().remove(handle).ok_or_else(|| missing(handle))?;
        let running = c.running();
        // Every group, those whose leader exited too: their children are the container's.
        let gone = end_groups(c.groups(), DESTROY_WAIT).await;
        let reaped = futures_util::future::join_all(running.iter().map(|p| exited(p)));
        if !gone || tokio::time::timeout(DESTROY_WAIT, reaped).await.is_err() {
            warn!(%handle, "killed processes did not exit; removing the container directory anyway");
        }
        match tokio::fs::remove_dir_all(&c.dirs.base).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_unavailable("removing", &c.dirs.base, e)),
        }
        info!(%handle, killed = running.len(), "destroyed container");
        Ok(())
    }

    async fn run(&self, handle: &str, mut spec: ProcessSpec) -> Result<ProcessStream, GardenError> {
        if spec.path.is_empty() {
            return Err(GardenError::Invalid("process path is required".into()));
        }
        if !self.user.accepts(&spec.user) {
            let me = match &self.user.name {
                Some(name) => format!("{name}, uid {}", self.user.uid),
                None => format!("uid {}", self.user.uid),
            };
            return Err(GardenError::Invalid(format!(
                "user {:?}: the process backend cannot switch users; processes run as the \
                 server's user ({me}); leave user empty",
                spec.user
            )));
        }
        if spec.id.is_empty() {
            spec.id = new_id();
        }
        validate_name("process id", &spec.id)?;
        let process_env = spawn::parse_env("process", &spec.env)?;
        let (dirs, container_env) = self.with_container(handle, |c| Ok((c.dirs.clone(), c.env.clone())))?;
        let dir = spawn::resolve_dir(&dirs.home, &spec.dir);
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Err(GardenError::Invalid(format!(
                "working directory {:?} ({}) is not a directory",
                spec.dir,
                dir.display()
            )));
        }
        let mut env = vec![
            ("PATH".to_string(), spawn::DEFAULT_PATH.to_string()),
            ("HOME".to_string(), dirs.home.display().to_string()),
            ("TMPDIR".to_string(), dirs.tmp.display().to_string()),
        ];
        env.extend(container_env);
        env.extend(process_env);
        let launch = Launch {
            path: spec.path.clone(),
            args: spec.args.clone(),
            env,
            dir,
            nofile: spec.limits.nofile,
        };
        // Spawn under the lock so that a concurrent stop/destroy either sees this process or
        // refuses it first; spawning is a fork+exec, not a wait.
        let (child, log) = self.with_container(handle, |c| {
            if c.state == ContainerState::Stopped {
                return Err(GardenError::Invalid(format!("container {handle:?} is stopped")));
            }
            if c.processes.contains_key(&spec.id) {
                return Err(GardenError::Exists(format!(
                    "process {:?} in container {handle:?}",
                    spec.id
                )));
            }
            let child = launch.spawn()?;
            let log = EventLog::new();
            // A child that has not been waited for always has its pid.
            let pid = child
                .id()
                .ok_or_else(|| GardenError::Unavailable("spawned process has no pid".into()))?;
            // Recorded before anything else, so that a server that dies from here on leaves
            // the group to the next one to end (see `groups`). A small blocking write.
            let group = Group::of_leader(pid).and_then(|g| g.write(&c.dirs.process(&spec.id)).map(|()| g));
            let group = match group {
                Ok(g) => g,
                Err(e) => {
                    // Dropping the child kills it (kill_on_drop); its group too, right away.
                    groups::kill_new(pid);
                    return Err(GardenError::Unavailable(format!(
                        "recording process {:?}'s group: {e}",
                        spec.id
                    )));
                }
            };
            c.processes.insert(
                spec.id.clone(),
                Arc::new(Process {
                    log: log.clone(),
                    pid,
                    group,
                }),
            );
            Ok((child, log))
        })?;
        info!(%handle, process = %spec.id, path = %spec.path, "started process");
        tokio::spawn(spawn::supervise(child, log.clone(), dirs.process(&spec.id)));
        Ok(ProcessStream {
            id: spec.id,
            events: log.stream(),
        })
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError> {
        let p = self.process(handle, process_id)?;
        Ok(ProcessStream {
            id: process_id.to_string(),
            events: p.log.stream(),
        })
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError> {
        let p = self.process(handle, process_id)?;
        if !p.running() {
            return Ok(());
        }
        spawn::signal_group(p.pid, signal).await
    }

    async fn stream_in(&self, handle: &str, dst_path: &str, tar: TarStream) -> Result<(), GardenError> {
        let dirs = self.with_container(handle, |c| Ok(c.dirs.clone()))?;
        let dst = dirs.host_path(dst_path)?;
        crate::tar::extract(&dirs.root, &dst, tar).await
    }

    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError> {
        let dirs = self.with_container(handle, |c| Ok(c.dirs.clone()))?;
        let src = dirs.host_path(src_path)?;
        crate::tar::archive(&dirs.root, &src).await
    }

    fn can_connect(&self) -> bool {
        true
    }

    /// Processes share the host's network: a container port is a host port.
    async fn connect(&self, handle: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        self.with_container(handle, |_| Ok(()))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
    }

    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError> {
        let wanted: Vec<(String, PathBuf, Vec<u32>, u64)> = {
            let cs = self.lock();
            handles
                .iter()
                .filter_map(|h| {
                    let c = cs.get(h)?;
                    let pids = c.running().iter().map(|p| p.pid).collect();
                    Some((
                        h.clone(),
                        c.dirs.base.clone(),
                        pids,
                        c.created.elapsed().as_millis() as u64,
                    ))
                })
                .collect()
        };
        // /proc reads and the directory walk block; keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|(h, dir, pids, age_ms)| {
                    let m = ContainerMetrics {
                        memory_bytes: pids.iter().map(|&p| metrics::rss_bytes(p)).sum(),
                        cpu_usage_ns: pids.iter().map(|&p| metrics::cpu_ns(p)).sum(),
                        disk_bytes: metrics::disk_bytes(&dir),
                        pids: pids.len() as u64,
                        age_ms,
                    };
                    (h, m)
                })
                .collect()
        })
        .await
        .map_err(|e| GardenError::Unavailable(format!("collecting metrics: {e}")))
    }
}
