//! The container store (diego-spec §7.1): the executor's registry of containers, driving each
//! through reserved → initializing → created → running → completed over a
//! [`diego_garden::ContainerBackend`], and telling the rep about every change.
//!
//! - [`ContainerStore::reserve`] takes resources (never overcommitting) and records a RESERVED
//!   container; nothing exists in the backend yet.
//! - [`ContainerStore::run`] starts the container's life in the background: INITIALIZING while
//!   the backend creates it (rootfs, limits, one net-in mapping per port, properties), CREATED
//!   once it exists and its steps start — `Serial(setup, Codependent(action, monitor))` as Diego
//!   assembles an LRP (§2.1), or just the action — and RUNNING as soon as the action starts when
//!   there is no monitor, or when the monitor reports healthy. When the steps end the container
//!   is COMPLETED with a [`RunResult`]: succeeded, failed with the step's user-facing error (or
//!   a generic reason for internal ones), or stopped.
//! - [`ContainerStore::stop`] cancels the steps (SIGTERM, SIGKILL after the grace period): the
//!   result says `stopped`. [`ContainerStore::delete`] stops, destroys the backend container and
//!   releases the reservation; the rep always deletes, in any state.
//! - Every change is a [`ContainerEvent`] on a broadcast channel ([`ContainerStore::subscribe`]).
//!
//! The monitor (health checks) is given by the caller as a [`MonitorFactory`], so this module
//! does not decide how instances are checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_garden::{ContainerInfo, ContainerSpec, DynBackend, Limits, NetIn, PortMapping};
use diego_model::Action;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::container::{Container, ContainerState, RunResult};
use crate::resources::{ReserveError, ResourceCapacity, Resources};
use crate::steps::{CodependentStep, SerialStep, Step, StepContext, StepError};
use crate::transformer::step_for;
use diego_logs::{LogSink, LogStream, LogStreamer};

/// Builds an instance's monitor once its container exists: given the step context, the host
/// address and port mappings of the container, and a callback to call (once) when the
/// instance is healthy.
pub type MonitorFactory =
    Box<dyn FnOnce(&StepContext, &str, &[PortMapping], Arc<dyn Fn() + Send + Sync>) -> Box<dyn Step> + Send>;

/// Everything needed to create and run a reserved container.
pub struct RunRequest {
    pub rootfs: String,
    /// `KEY=VALUE` entries every process gets (instance identity, ports, …).
    pub env: Vec<String>,
    pub setup: Option<Action>,
    pub action: Action,
    /// Container ports to map to host ports (the backend picks them).
    pub ports: Vec<u16>,
    pub limits: Limits,
    pub privileged: bool,
    /// Bookkeeping on the backend container (for rediscovery after a restart).
    pub properties: BTreeMap<String, String>,
    /// Log tags: the log guid and the instance index (tasks: none).
    pub log_guid: String,
    pub log_instance_index: Option<u32>,
    /// The source type of the actions' lines where an action names none (the Task's or LRP's
    /// `log_source`; empty = `LOG`).
    pub log_source: String,
    /// The health monitor; `None` = RUNNING as soon as the action starts.
    pub monitor: Option<MonitorFactory>,
}

/// A change the rep hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEvent {
    /// The container moved to `state` (completed carries its result in `Completed`).
    State {
        guid: String,
        state: ContainerState,
    },
    /// RUNNING, with where its ports are reachable.
    Running {
        guid: String,
        host_ip: String,
        ports: Vec<PortMapping>,
    },
    Completed {
        guid: String,
        result: RunResult,
    },
    /// Deleted: resources released, backend container gone.
    Deleted {
        guid: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    #[error("container {guid:?} is {state}, not reserved")]
    NotReserved { guid: String, state: ContainerState },
    #[error("destroying container {guid:?}: {message}")]
    Destroy { guid: String, message: String },
}

struct Entry {
    container: Container,
    cancel: CancellationToken,
    /// Where its ports are, once created.
    host_ip: String,
    ports: Vec<PortMapping>,
    /// Whether a backend container may exist (create was attempted).
    created: bool,
    /// Where the CELL lines about its life go (once it is given work to run).
    cell_log: Option<CellLog>,
}

/// The CELL lines of one container: where they go and what they call it.
#[derive(Clone)]
struct CellLog {
    log: LogStreamer,
    /// `instance <guid>` or `task <guid>`.
    what: String,
}

/// How much of a container's steps a run performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// A new container: everything, every process started.
    No,
    /// An adopted container: every step, attaching to the processes that exist.
    Everything,
    /// An adopted container whose setup finished: the action and monitor only.
    SkipSetup,
}

/// The start of the failure reason for a step error with no user-facing text.
const INTERNAL_FAILURE: &str = "container failed";

/// The failure reason when the backend cannot create the container.
const CREATE_FAILURE: &str = "failed to create container";

/// How a [`ContainerStore`] runs its containers.
#[derive(Clone)]
pub struct StoreConfig {
    pub capacity: ResourceCapacity,
    /// SIGTERM → SIGKILL delay for stopped containers (Diego: 10 s,
    /// [`crate::steps::DEFAULT_GRACEFUL_SHUTDOWN`]).
    pub graceful_shutdown: Duration,
    /// How many backend creates run at once; the rest queue (in order). Creating a container
    /// is mostly CPU (runc), so running a batch of 20 all at once on 2 cores makes every one of
    /// them late, where a few at a time lets the first ones start early for the same total.
    pub max_concurrent_creates: usize,
    /// The cell's download cache, for downloads with a `cache_key` (none: never cached).
    pub download_cache: Option<Arc<crate::download_cache::DownloadCache>>,
    /// The cell's id, named in the CELL lines about each container's life.
    pub cell_id: String,
}

impl StoreConfig {
    pub fn new(capacity: ResourceCapacity) -> Self {
        StoreConfig {
            capacity,
            graceful_shutdown: crate::steps::DEFAULT_GRACEFUL_SHUTDOWN,
            max_concurrent_creates: default_concurrent_creates(),
            download_cache: None,
            cell_id: String::new(),
        }
    }
}

/// One create per core (at least 2).
pub fn default_concurrent_creates() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// See the module docs.
pub struct ContainerStore {
    backend: DynBackend,
    resources: Resources,
    sink: Arc<dyn LogSink>,
    graceful_shutdown: Duration,
    creates: tokio::sync::Semaphore,
    entries: Mutex<BTreeMap<String, Entry>>,
    events: broadcast::Sender<ContainerEvent>,
    download_cache: Option<Arc<crate::download_cache::DownloadCache>>,
    cell_id: String,
}

impl ContainerStore {
    /// A store over `backend`, logging to `sink`.
    pub fn new(backend: DynBackend, sink: Arc<dyn LogSink>, config: StoreConfig) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Self {
            backend,
            resources: Resources::new(config.capacity),
            sink,
            graceful_shutdown: config.graceful_shutdown,
            creates: tokio::sync::Semaphore::new(config.max_concurrent_creates.max(1)),
            entries: Mutex::default(),
            events,
            download_cache: config.download_cache,
            cell_id: config.cell_id,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    pub fn total(&self) -> ResourceCapacity {
        self.resources.total()
    }

    pub fn remaining(&self) -> ResourceCapacity {
        self.resources.remaining()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CELL lines of container `guid` running `request`.
    fn cell_log(&self, guid: &str, request: &RunRequest) -> CellLog {
        CellLog {
            log: LogStreamer::new(
                self.sink.clone(),
                request.log_guid.clone(),
                crate::checks::CELL_LOG_SOURCE,
                request.log_instance_index,
            ),
            what: cell_messages::what(guid, request.log_instance_index),
        }
    }

    /// A CELL line about container `guid` (if it was given work, and so a log guid):
    /// `message(cell id, what it is)`.
    fn cell_line(&self, guid: &str, stream: LogStream, message: impl FnOnce(&str, &str) -> String) {
        let log = self.lock().get(guid).and_then(|e| e.cell_log.clone());
        if let Some(c) = log {
            c.log.line(stream, &message(&self.cell_id, &c.what));
        }
    }

    fn emit(&self, event: ContainerEvent) {
        // No subscriber is fine: the rep also polls.
        let _ = self.events.send(event);
    }

    pub fn get(&self, guid: &str) -> Option<Container> {
        self.lock().get(guid).map(|e| e.container.clone())
    }

    /// Where `guid`'s ports are reachable (host address and mappings), once it exists.
    pub fn address(&self, guid: &str) -> Option<(String, Vec<PortMapping>)> {
        let entries = self.lock();
        let e = entries.get(guid)?;
        (!e.host_ip.is_empty()).then(|| (e.host_ip.clone(), e.ports.clone()))
    }

    pub fn list(&self) -> Vec<Container> {
        self.lock().values().map(|e| e.container.clone()).collect()
    }

    /// Reserves resources for `guid`: refused (nothing changes) when they do not fit or the
    /// guid is taken.
    pub fn reserve(&self, guid: &str, memory_mb: u64, disk_mb: u64) -> Result<Container, StoreError> {
        let mut entries = self.lock();
        self.resources.reserve(guid, memory_mb, disk_mb)?;
        let container = Container::reserved(guid, memory_mb, disk_mb);
        entries.insert(
            guid.to_string(),
            Entry {
                container: container.clone(),
                cancel: CancellationToken::new(),
                host_ip: String::new(),
                ports: Vec::new(),
                created: false,
                cell_log: None,
            },
        );
        drop(entries);
        self.emit(ContainerEvent::State {
            guid: guid.to_string(),
            state: ContainerState::Reserved,
        });
        Ok(container)
    }

    /// Moves `guid` to `state` (not completed); false if it cannot (completed or gone meanwhile).
    fn transition(&self, guid: &str, state: ContainerState) -> bool {
        let moved = match self.lock().get_mut(guid) {
            Some(e) => e.container.transition(state).is_ok(),
            None => false,
        };
        if moved {
            self.emit(ContainerEvent::State {
                guid: guid.to_string(),
                state,
            });
        }
        moved
    }

    fn complete(&self, guid: &str, result: RunResult) {
        let completed = match self.lock().get_mut(guid) {
            Some(e) => e.container.complete(result.clone()).is_ok(),
            None => false,
        };
        if completed {
            debug!(guid, ?result, "container completed");
            self.emit(ContainerEvent::State {
                guid: guid.to_string(),
                state: ContainerState::Completed,
            });
            self.emit(ContainerEvent::Completed {
                guid: guid.to_string(),
                result,
            });
        }
    }

    fn running(&self, guid: &str) {
        if self.transition(guid, ContainerState::Running) {
            let (host_ip, ports) = match self.lock().get(guid) {
                Some(e) => (e.host_ip.clone(), e.ports.clone()),
                None => return,
            };
            self.emit(ContainerEvent::Running {
                guid: guid.to_string(),
                host_ip,
                ports,
            });
        }
    }

    /// Creates and runs the reserved container `guid` in the background.
    pub fn run(self: &Arc<Self>, guid: &str, request: RunRequest) -> Result<(), StoreError> {
        let cancel = {
            let mut entries = self.lock();
            let e = entries
                .get_mut(guid)
                .ok_or_else(|| StoreError::NotFound(guid.to_string()))?;
            if e.container.state != ContainerState::Reserved {
                return Err(StoreError::NotReserved {
                    guid: guid.to_string(),
                    state: e.container.state,
                });
            }
            e.created = true;
            e.cell_log = Some(self.cell_log(guid, &request));
            e.cancel.clone()
        };
        let store = self.clone();
        let guid = guid.to_string();
        tokio::spawn(async move {
            let result = store.lifecycle(&guid, request, cancel).await;
            store.complete(&guid, result);
        });
        Ok(())
    }

    async fn lifecycle(
        self: &Arc<Self>,
        guid: &str,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> RunResult {
        if !self.transition(guid, ContainerState::Initializing) {
            return RunResult::stopped();
        }
        let reservation = self.resources.get(guid);
        let mut limits = request.limits;
        if let Some(r) = &reservation {
            if limits.memory_bytes == 0 {
                limits.memory_bytes = r.memory_mb << 20;
            }
            if limits.disk_bytes == 0 {
                limits.disk_bytes = r.disk_mb << 20;
            }
        }
        let spec = ContainerSpec {
            handle: guid.to_string(),
            rootfs: request.rootfs.clone(),
            env: request.env.clone(),
            limits,
            net_in: request
                .ports
                .iter()
                .map(|p| NetIn {
                    host_port: 0,
                    container_port: u32::from(*p),
                })
                .collect(),
            properties: request.properties.clone(),
            privileged: request.privileged,
            ..Default::default()
        };
        // A turn among the creates (a stop meanwhile ends the wait: nothing was created).
        let permit = tokio::select! {
            p = self.creates.acquire() => p.ok(),
            _ = cancel.cancelled() => return RunResult::stopped(),
        };
        self.cell_line(guid, LogStream::Stdout, cell_messages::creating);
        // Not raced with a stop: a backend may finish creating after its caller gave up, and
        // the container must exist (so delete destroys it) before this says stopped.
        let created = self.backend.create(spec).await;
        drop(permit);
        let info = match created {
            Ok(info) => info,
            Err(e) => {
                warn!(guid, error = %e, "creating the container failed");
                let error = e.to_string();
                self.cell_line(guid, LogStream::Stderr, |cell, what| {
                    cell_messages::create_failed(cell, what, &error)
                });
                return RunResult::failed(format!("{CREATE_FAILURE}: {e}"));
            }
        };
        self.cell_line(guid, LogStream::Stdout, cell_messages::created);
        self.perform(guid, request, info, cancel, Resume::No).await
    }

    /// From CREATED on: the container `info` exists; run its steps (or resume them).
    async fn perform(
        self: &Arc<Self>,
        guid: &str,
        request: RunRequest,
        info: ContainerInfo,
        cancel: CancellationToken,
        resume: Resume,
    ) -> RunResult {
        if cancel.is_cancelled() {
            return RunResult::stopped();
        }
        if let Some(e) = self.lock().get_mut(guid) {
            e.host_ip = info.host_ip.clone();
            e.ports = info.mapped_ports.clone();
        }
        if !self.transition(guid, ContainerState::Created) {
            return RunResult::stopped();
        }

        let streamer = LogStreamer::new(
            self.sink.clone(),
            request.log_guid.clone(),
            request.log_source.clone(),
            request.log_instance_index,
        );
        let mut ctx = StepContext::new(self.backend.clone(), guid, streamer);
        ctx.graceful_shutdown = self.graceful_shutdown;
        ctx.extra_env = request.env.clone();
        ctx.extra_env.extend(port_env(&info.host_ip, &info.mapped_ports));
        ctx.resume = resume != Resume::No;
        ctx.download_cache = self.download_cache.clone();

        let action = step_for(&request.action, &ctx.with_process_names("action"));
        let long_lived: Box<dyn Step> = match request.monitor {
            Some(factory) => {
                let store = Arc::downgrade(self);
                let g = guid.to_string();
                let once = std::sync::Once::new();
                let on_healthy: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    once.call_once(|| {
                        if let Some(store) = store.upgrade() {
                            store.running(&g);
                        }
                    })
                });
                let monitor = factory(&ctx, &info.host_ip, &info.mapped_ports, on_healthy);
                Box::new(CodependentStep::new(vec![action, monitor]))
            }
            None => {
                // RUNNING as soon as the action starts: right before it is performed.
                self.running(guid);
                action
            }
        };
        let tree: Box<dyn Step> = match &request.setup {
            Some(setup) if resume != Resume::SkipSetup => Box::new(SerialStep::new(vec![
                step_for(setup, &ctx.with_process_names("setup")),
                long_lived,
            ])),
            _ => long_lived,
        };
        match tree.perform(cancel.clone()).await {
            Ok(()) => RunResult::succeeded(),
            Err(e) if cancel.is_cancelled() && e.is_cancellation() => RunResult::stopped(),
            Err(e) if cancel.is_cancelled() => RunResult {
                stopped: true,
                ..failure(&e)
            },
            Err(e) => failure(&e),
        }
    }

    /// Takes over container `guid`, which the backend still runs from an earlier run of this
    /// cell: reserves its resources again and resumes its steps — processes that still run
    /// (or exited meanwhile) are attached to, not started again; with `skip_setup` the setup
    /// is not performed again (an instance that was RUNNING had finished it). Its life then
    /// goes on as if this store had started it. Refused, changing nothing, when the resources
    /// do not fit or the guid is taken.
    pub async fn adopt(
        self: &Arc<Self>,
        guid: &str,
        memory_mb: u64,
        disk_mb: u64,
        request: RunRequest,
        skip_setup: bool,
    ) -> Result<(), StoreError> {
        let info = self
            .backend
            .info(guid)
            .await
            .map_err(|_| StoreError::NotFound(guid.to_string()))?;
        self.reserve(guid, memory_mb, disk_mb)?;
        let cancel = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(guid) else {
                return Err(StoreError::NotFound(guid.to_string()));
            };
            e.created = true;
            e.cell_log = Some(self.cell_log(guid, &request));
            e.cancel.clone()
        };
        let store = self.clone();
        let guid = guid.to_string();
        let resume = if skip_setup {
            Resume::SkipSetup
        } else {
            Resume::Everything
        };
        tokio::spawn(async move {
            let result = if store.transition(&guid, ContainerState::Initializing) {
                store.perform(&guid, request, info, cancel, resume).await
            } else {
                RunResult::stopped()
            };
            store.complete(&guid, result);
        });
        Ok(())
    }

    /// Cancels `guid`'s steps (or its creation); it completes with `stopped`.
    pub fn stop(&self, guid: &str) -> Result<(), StoreError> {
        let (cancel, never_ran, announce) = {
            let entries = self.lock();
            let e = entries
                .get(guid)
                .ok_or_else(|| StoreError::NotFound(guid.to_string()))?;
            let live =
                e.created && !e.cancel.is_cancelled() && e.container.state != ContainerState::Completed;
            (e.cancel.clone(), !e.created, live)
        };
        if announce {
            self.cell_line(guid, LogStream::Stdout, cell_messages::stopping);
        }
        cancel.cancel();
        if never_ran {
            self.complete(guid, RunResult::stopped());
        }
        Ok(())
    }

    /// Stops `guid`, destroys its backend container and releases its resources.
    pub async fn delete(&self, guid: &str) -> Result<(), StoreError> {
        self.stop(guid)?;
        let created = self.lock().get(guid).is_some_and(|e| e.created);
        if created {
            // The lifecycle task completes the container once its steps have stopped.
            let mut events = self.subscribe();
            let done = |s: &Self| s.get(guid).is_none_or(|c| c.state == ContainerState::Completed);
            while !done(self) {
                let wait = self.graceful_shutdown + crate::steps::EXIT_TIMEOUT + Duration::from_secs(5);
                if tokio::time::timeout(wait, events.recv()).await.is_err() {
                    warn!(
                        guid,
                        "container did not complete after stop; destroying it anyway"
                    );
                    break;
                }
            }
            self.cell_line(guid, LogStream::Stdout, cell_messages::destroying);
            match self.backend.destroy(guid).await {
                Ok(()) | Err(diego_garden::GardenError::NotFound(_)) => {}
                Err(e) => {
                    return Err(StoreError::Destroy {
                        guid: guid.to_string(),
                        message: e.to_string(),
                    })
                }
            }
            self.cell_line(guid, LogStream::Stdout, cell_messages::destroyed);
        }
        self.lock().remove(guid);
        self.resources.release(guid);
        self.emit(ContainerEvent::Deleted {
            guid: guid.to_string(),
        });
        Ok(())
    }
}

/// Diego's CELL lines about a container's life (diego-spec §7.2), each given the cell's id
/// and what the container is (`instance <guid>`, `task <guid>`).
pub mod cell_messages {
    /// What a container is called in its lines: an LRP instance (it has an index) or a task.
    pub fn what(guid: &str, index: Option<u32>) -> String {
        match index {
            Some(_) => format!("instance {guid}"),
            None => format!("task {guid}"),
        }
    }

    pub fn creating(cell: &str, what: &str) -> String {
        format!("Cell {cell} creating container for {what}")
    }

    pub fn created(cell: &str, what: &str) -> String {
        format!("Cell {cell} successfully created container for {what}")
    }

    pub fn create_failed(cell: &str, what: &str, error: &str) -> String {
        format!("Cell {cell} failed to create container for {what}: {error}")
    }

    pub fn stopping(cell: &str, what: &str) -> String {
        format!("Cell {cell} stopping {what}")
    }

    pub fn destroying(cell: &str, what: &str) -> String {
        format!("Cell {cell} destroying container for {what}")
    }

    pub fn destroyed(cell: &str, what: &str) -> String {
        format!("Cell {cell} successfully destroyed container for {what}")
    }
}

/// Where the instance is reachable, as Diego tells its processes (diego-spec §1.7):
/// `CF_INSTANCE_IP`, and for the first port `CF_INSTANCE_PORT` (host port) and
/// `CF_INSTANCE_ADDR`, and every mapping in `CF_INSTANCE_PORTS`.
pub fn port_env(host_ip: &str, ports: &[PortMapping]) -> Vec<String> {
    let mut env = vec![format!("CF_INSTANCE_IP={host_ip}")];
    if let Some(first) = ports.first() {
        env.push(format!("CF_INSTANCE_PORT={}", first.host_port));
        env.push(format!("CF_INSTANCE_ADDR={host_ip}:{}", first.host_port));
    }
    let all: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{{\"external\":{},\"internal\":{}}}",
                p.host_port, p.container_port
            )
        })
        .collect();
    env.push(format!("CF_INSTANCE_PORTS=[{}]", all.join(",")));
    env
}

/// A failed run's result: the step's user-facing error, or a generic reason for internal ones.
fn failure(e: &StepError) -> RunResult {
    RunResult::failed(e.emittable().unwrap_or_else(|| {
        warn!(error = %e, "container failed without a user-facing reason");
        format!("{INTERNAL_FAILURE}: {e}")
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use diego_garden::fake::{FakeBackend, FakeProcess};
    use diego_garden::ContainerBackend;
    use diego_model::RunAction;

    use super::*;
    use diego_logs::MemorySink;

    /// `/bin/fail` exits 3, `/bin/sleep` runs until signalled, anything else exits 0.
    fn backend() -> Arc<FakeBackend> {
        Arc::new(FakeBackend::with_script(Arc::new(|spec| {
            match spec.path.as_str() {
                "/bin/fail" => FakeProcess::exits(3),
                "/bin/sleep" => FakeProcess::runs_forever(),
                _ => FakeProcess {
                    stdout: b"hello\n".to_vec(),
                    ..FakeProcess::exits(0)
                },
            }
        })))
    }

    fn store(backend: Arc<FakeBackend>) -> (Arc<ContainerStore>, Arc<MemorySink>) {
        let sink = MemorySink::new();
        let capacity = ResourceCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 4,
        };
        let config = StoreConfig {
            graceful_shutdown: Duration::from_millis(100),
            max_concurrent_creates: 2,
            cell_id: "cell-7".into(),
            ..StoreConfig::new(capacity)
        };
        let store = ContainerStore::new(backend, sink.clone(), config);
        (store, sink)
    }

    fn run(path: &str) -> Action {
        Action::run(RunAction {
            path: path.into(),
            user: "vcap".into(),
            ..Default::default()
        })
    }

    fn request(action: Action) -> RunRequest {
        RunRequest {
            rootfs: "preloaded:busybox".into(),
            env: vec!["INSTANCE_INDEX=0".into()],
            setup: None,
            action,
            ports: vec![8080],
            limits: Limits::default(),
            privileged: false,
            properties: BTreeMap::new(),
            log_guid: "log-guid".into(),
            log_instance_index: Some(0),
            log_source: String::new(),
            monitor: None,
        }
    }

    /// Events until (and including) the first `Completed`, within 5 s.
    async fn until_completed(events: &mut broadcast::Receiver<ContainerEvent>) -> Vec<ContainerEvent> {
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = events.recv().await.unwrap();
                let done = matches!(e, ContainerEvent::Completed { .. });
                seen.push(e);
                if done {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no completion; saw {seen:?}"));
        seen
    }

    fn states(events: &[ContainerEvent]) -> Vec<ContainerState> {
        events
            .iter()
            .filter_map(|e| match e {
                ContainerEvent::State { state, .. } => Some(*state),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_task_goes_through_every_state_and_succeeds() {
        let backend = backend();
        let (store, sink) = store(backend.clone());
        let mut events = store.subscribe();
        store.reserve("t1", 256, 128).unwrap();
        assert_eq!(store.remaining().memory_mb, 768);
        store.run("t1", request(run("/bin/echo"))).unwrap();
        let seen = until_completed(&mut events).await;
        use ContainerState::*;
        assert_eq!(
            states(&seen),
            [Reserved, Initializing, Created, Running, Completed]
        );
        let running = seen
            .iter()
            .find_map(|e| match e {
                ContainerEvent::Running { ports, .. } => Some(ports.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].container_port, 8080);
        assert_eq!(store.get("t1").unwrap().run_result, Some(RunResult::succeeded()));
        // The backend container got the rootfs, limits from the reservation, the port and env.
        let spec = &backend.specs()[0];
        assert_eq!(spec.rootfs, "preloaded:busybox");
        assert_eq!(
            (spec.limits.memory_bytes, spec.limits.disk_bytes),
            (256 << 20, 128 << 20)
        );
        assert_eq!(spec.net_in[0].container_port, 8080);
        assert!(
            sink.messages().iter().any(|m| m == "hello"),
            "{:?}",
            sink.messages()
        );

        store.delete("t1").await.unwrap();
        assert!(store.get("t1").is_none());
        assert_eq!(store.remaining().memory_mb, 1024);
        assert!(
            backend.info("t1").await.is_err(),
            "the backend container is destroyed"
        );
    }

    #[test]
    fn port_env_names_the_first_port_and_lists_all() {
        let ports = [
            PortMapping {
                host_port: 61001,
                container_port: 8080,
            },
            PortMapping {
                host_port: 61002,
                container_port: 9090,
            },
        ];
        assert_eq!(
            port_env("127.0.0.1", &ports),
            [
                "CF_INSTANCE_IP=127.0.0.1",
                "CF_INSTANCE_PORT=61001",
                "CF_INSTANCE_ADDR=127.0.0.1:61001",
                r#"CF_INSTANCE_PORTS=[{"external":61001,"internal":8080},{"external":61002,"internal":9090}]"#,
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_action_completes_failed_with_diegos_reason() {
        let (store, _) = store(backend());
        let mut events = store.subscribe();
        store.reserve("t2", 64, 64).unwrap();
        store.run("t2", request(run("/bin/fail"))).unwrap();
        until_completed(&mut events).await;
        let result = store.get("t2").unwrap().run_result.unwrap();
        assert!(result.failed && !result.stopped, "{result:?}");
        assert_eq!(result.failure_reason, "Exit status 3");
    }

    #[tokio::test]
    async fn reservations_never_overcommit() {
        let (store, _) = store(backend());
        store.reserve("a", 600, 10).unwrap();
        let err = store.reserve("b", 600, 10).unwrap_err();
        assert!(
            err.to_string().contains("insufficient resources: memory"),
            "{err}"
        );
        assert!(matches!(
            store.reserve("a", 1, 1),
            Err(StoreError::Reserve(ReserveError::GuidTaken(_)))
        ));
        assert_eq!(store.list().len(), 1);
    }

    #[tokio::test]
    async fn stop_ends_a_long_running_action_as_stopped_and_delete_cleans_up() {
        let backend = backend();
        let (store, sink) = store(backend.clone());
        let mut events = store.subscribe();
        store.reserve("lrp", 64, 64).unwrap();
        store.run("lrp", request(run("/bin/sleep"))).unwrap();
        // RUNNING as soon as the action starts (no monitor).
        tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(events.recv().await.unwrap(), ContainerEvent::Running { .. }) {}
        })
        .await
        .unwrap();
        store.stop("lrp").unwrap();
        until_completed(&mut events).await;
        let result = store.get("lrp").unwrap().run_result.unwrap();
        assert!(result.stopped, "{result:?}");
        store.delete("lrp").await.unwrap();
        assert!(backend.info("lrp").await.is_err());
        assert_eq!(store.remaining().containers, 4);

        // Its life in CELL lines, in Diego's words, under its log guid and index.
        let cell: Vec<_> = sink
            .lines()
            .into_iter()
            .filter(|l| l.source_type == "CELL")
            .collect();
        let texts: Vec<&str> = cell.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Cell cell-7 creating container for instance lrp",
                "Cell cell-7 successfully created container for instance lrp",
                "Cell cell-7 stopping instance lrp",
                "Cell cell-7 destroying container for instance lrp",
                "Cell cell-7 successfully destroyed container for instance lrp",
            ]
        );
        assert!(cell
            .iter()
            .all(|l| l.log_guid == "log-guid" && l.instance_index == Some(0)));
    }

    #[test]
    fn a_task_container_is_named_a_task() {
        assert_eq!(
            cell_messages::create_failed("c", &cell_messages::what("t1", None), "no space"),
            "Cell c failed to create container for task t1: no space"
        );
    }

    #[tokio::test]
    async fn deleting_a_reserved_container_completes_and_releases_it() {
        let backend = backend();
        let (store, _) = store(backend.clone());
        let mut events = store.subscribe();
        store.reserve("r", 64, 64).unwrap();
        store.delete("r").await.unwrap();
        let seen = until_completed(&mut events).await;
        assert!(matches!(seen.last(), Some(ContainerEvent::Completed { result, .. }) if result.stopped));
        assert!(store.get("r").is_none());
        assert_eq!(store.remaining().memory_mb, 1024);
        assert!(backend.specs().is_empty(), "nothing was created");
        assert!(matches!(
            store.run("r", request(run("/bin/echo"))),
            Err(StoreError::NotFound(_))
        ));
    }

    /// A monitor that reports healthy after a while and then runs until cancelled.
    fn healthy_after(delay: Duration, built: Arc<AtomicBool>) -> MonitorFactory {
        Box::new(move |_ctx, _host_ip, ports, on_healthy| {
            assert_eq!(ports.len(), 1, "the monitor sees the mapped ports");
            built.store(true, Ordering::SeqCst);
            struct Monitor(Duration, Arc<dyn Fn() + Send + Sync>);
            #[async_trait::async_trait]
            impl Step for Monitor {
                async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(StepError::Cancelled),
                        _ = tokio::time::sleep(self.0) => (self.1)(),
                    }
                    cancel.cancelled().await;
                    Err(StepError::Cancelled)
                }
            }
            Box::new(Monitor(delay, on_healthy))
        })
    }

    #[tokio::test]
    async fn with_a_monitor_running_waits_for_healthy() {
        let (store, _) = store(backend());
        let mut events = store.subscribe();
        store.reserve("web", 64, 64).unwrap();
        let built = Arc::new(AtomicBool::new(false));
        let mut req = request(run("/bin/sleep"));
        req.monitor = Some(healthy_after(Duration::from_millis(200), built.clone()));
        req.setup = Some(run("/bin/echo"));
        store.run("web", req).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.recv().await.unwrap() {
                    ContainerEvent::State {
                        state: ContainerState::Created,
                        ..
                    } => {
                        assert_eq!(store.get("web").unwrap().state, ContainerState::Created);
                    }
                    ContainerEvent::Running { .. } => return,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert!(built.load(Ordering::SeqCst));
        assert_eq!(store.get("web").unwrap().state, ContainerState::Running);
        store.delete("web").await.unwrap();
    }

    #[tokio::test]
    async fn with_a_monitor_the_app_exiting_crashes_the_instance() {
        let (store, _) = store(backend());
        let mut events = store.subscribe();
        store.reserve("crashy", 64, 64).unwrap();
        let mut req = request(run("/bin/fail"));
        req.monitor = Some(healthy_after(Duration::from_secs(60), Arc::default()));
        store.run("crashy", req).unwrap();
        let seen = until_completed(&mut events).await;
        assert!(
            !seen.iter().any(|e| matches!(e, ContainerEvent::Running { .. })),
            "never healthy, never running: {seen:?}"
        );
        let result = store.get("crashy").unwrap().run_result.unwrap();
        assert!(result.failed && !result.stopped, "{result:?}");
        assert_eq!(result.failure_reason, "Exit status 3");
    }

    /// A fresh store over the backend of an earlier one whose container `guid` still runs.
    /// Events until RUNNING (or, with `to_the_end`, until COMPLETED).
    async fn adopted(
        backend: Arc<FakeBackend>,
        guid: &str,
        path: &str,
        to_the_end: bool,
    ) -> (Arc<ContainerStore>, Vec<ContainerEvent>) {
        let (store, _) = store(backend);
        let mut events = store.subscribe();
        store.adopt(guid, 64, 64, request(run(path)), true).await.unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = events.recv().await.unwrap();
                let end = match e {
                    ContainerEvent::Running { .. } => !to_the_end,
                    ContainerEvent::Completed { .. } => true,
                    _ => false,
                };
                seen.push(e);
                if end {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("adopted container neither ran nor completed: {seen:?}"));
        (store, seen)
    }

    fn counting_backend(runs: Arc<std::sync::atomic::AtomicUsize>) -> Arc<FakeBackend> {
        Arc::new(FakeBackend::with_script(Arc::new(move |spec| {
            runs.fetch_add(1, Ordering::SeqCst);
            match spec.path.as_str() {
                "/bin/fail" => FakeProcess::exits(3),
                _ => FakeProcess::runs_forever(),
            }
        })))
    }

    #[tokio::test]
    async fn an_adopted_container_keeps_its_process_and_can_be_stopped() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backend = counting_backend(runs.clone());
        let (first, _) = store(backend.clone());
        let mut events = first.subscribe();
        first.reserve("app", 64, 64).unwrap();
        first.run("app", request(run("/bin/sleep"))).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(events.recv().await.unwrap(), ContainerEvent::Running { .. }) {}
        })
        .await
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        let (second, seen) = adopted(backend.clone(), "app", "/bin/sleep", false).await;
        assert!(
            matches!(seen.last(), Some(ContainerEvent::Running { ports, .. }) if ports.len() == 1),
            "{seen:?}"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the process was attached to, not started again"
        );
        assert_eq!(
            second.remaining().memory_mb,
            1024 - 64,
            "its resources are reserved again"
        );
        second.delete("app").await.unwrap();
        assert!(
            backend.info("app").await.is_err(),
            "deleting the adopted container destroys it"
        );
    }

    #[tokio::test]
    async fn an_adopted_container_whose_process_exited_completes_with_its_status() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backend = counting_backend(runs.clone());
        let (first, _) = store(backend.clone());
        let mut events = first.subscribe();
        first.reserve("gone", 64, 64).unwrap();
        first.run("gone", request(run("/bin/fail"))).unwrap();
        until_completed(&mut events).await;

        let (second, seen) = adopted(backend, "gone", "/bin/fail", true).await;
        let Some(ContainerEvent::Completed { result, .. }) = seen.last() else {
            panic!("{seen:?}")
        };
        assert_eq!(result.failure_reason, "Exit status 3");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the exited process was not run again"
        );
        second.delete("gone").await.unwrap();
    }

    #[tokio::test]
    async fn adopting_a_container_the_backend_does_not_have_changes_nothing() {
        let (store, _) = store(backend());
        let err = store
            .adopt("nope", 64, 64, request(run("/bin/sleep")), true)
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::NotFound("nope".into()));
        assert!(store.list().is_empty());
        assert_eq!(store.remaining().memory_mb, 1024);
    }

    #[tokio::test]
    async fn creates_wait_their_turn_and_a_stop_ends_the_wait() {
        let backend = backend();
        let (store, _) = store(backend.clone());
        let mut events = store.subscribe();
        // Every turn taken: the container waits in INITIALIZING, nothing is created.
        let turns = store.creates.acquire_many(2).await.unwrap();
        store.reserve("queued", 64, 64).unwrap();
        store.run("queued", request(run("/bin/sleep"))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.get("queued").unwrap().state, ContainerState::Initializing);
        assert!(backend.specs().is_empty());
        store.stop("queued").unwrap();
        until_completed(&mut events).await;
        assert!(store.get("queued").unwrap().run_result.unwrap().stopped);
        assert!(
            backend.specs().is_empty(),
            "a stopped queued container is never created"
        );
        store.delete("queued").await.unwrap();
        // A turn freed: the next one goes ahead.
        drop(turns);
        store.reserve("next", 64, 64).unwrap();
        store.run("next", request(run("/bin/echo"))).unwrap();
        until_completed(&mut events).await;
        assert_eq!(
            store.get("next").unwrap().run_result,
            Some(RunResult::succeeded())
        );
        store.delete("next").await.unwrap();
    }
}
