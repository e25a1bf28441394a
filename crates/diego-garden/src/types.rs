//! The records of the container API (diego-spec §3.7), serialisable so the HTTP server and
//! client exchange exactly these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Free-form labels on a container; `list` filters by them. The executor stores its own
/// bookkeeping here (owner, process guid, index, …) so it can rediscover containers after a
/// restart.
pub type Properties = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMountMode {
    #[default]
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path on the host.
    pub src_path: String,
    /// Absolute path inside the container.
    pub dst_path: String,
    #[serde(default)]
    pub mode: BindMountMode,
}

/// Resource limits of a whole container; 0 means "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub memory_bytes: u64,
    /// Total of the root filesystem's writable layer.
    #[serde(default)]
    pub disk_bytes: u64,
    #[serde(default)]
    pub pids: u64,
    /// cgroup CPU shares; Diego maps `cpu_weight` 1–100 to `1024 × weight / 100`.
    #[serde(default)]
    pub cpu_shares: u64,
}

impl Limits {
    /// Diego's mapping of a 1–100 CPU weight to cgroup shares (0 = the default).
    pub fn cpu_shares_for_weight(weight: u32) -> u64 {
        1024 * u64::from(weight.min(100)) / 100
    }
}

/// A host port forwarded to a container port. `host_port` 0 asks the backend to pick one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetIn {
    #[serde(default)]
    pub host_port: u32,
    pub container_port: u32,
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique name; empty asks the backend to generate one.
    #[serde(default)]
    pub handle: String,
    /// `preloaded:NAME`, or a local OCI image (`oci:///path/to/layout` or
    /// `docker-archive:///path/to/image.tar`).
    pub rootfs: String,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub bind_mounts: Vec<BindMount>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub net_in: Vec<NetIn>,
    #[serde(default)]
    pub properties: Properties,
    /// Destroy the container after this long without a client using it; 0 = never.
    #[serde(default)]
    pub grace_time_ms: u64,
    /// Run without a user namespace (real root inside). Off by default.
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Active,
    Stopped,
}

/// A host port the backend forwards into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub handle: String,
    pub state: ContainerState,
    pub properties: Properties,
    /// Address on which mapped host ports listen (127.0.0.1 by default).
    pub host_ip: String,
    /// The container's own address, when it has one reachable from the host.
    #[serde(default)]
    pub container_ip: String,
    #[serde(default)]
    pub mapped_ports: Vec<PortMapping>,
    /// Processes started in the container, running or exited, by id.
    #[serde(default)]
    pub process_ids: Vec<String>,
    /// Things that happened to the container as a whole, e.g. `"out of memory"`.
    #[serde(default)]
    pub events: Vec<String>,
}

/// What the backend can hold in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub max_containers: u64,
}

/// Per-process resource limits (rlimits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
}

/// A process to run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Unique within the container; empty asks the backend to generate one.
    #[serde(default)]
    pub id: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, layered over the container's env.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; empty = the user's home (or `/`).
    #[serde(default)]
    pub dir: String,
    /// User name in the container's `/etc/passwd`; empty = the container's default
    /// (non-root) user.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub limits: ProcessLimits,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal number when killed by a signal (as a shell reports it).
    pub code: i32,
    /// The signal that killed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The container's memory limit was hit (the kernel's OOM killer fired in its cgroup).
    #[serde(default)]
    pub oom_killed: bool,
}

/// One piece of a process's life: output chunks (bytes exactly as written, in order), then
/// exactly one `Exited`. The HTTP layer chooses its own wire encoding for these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    Exited(ExitStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
        }
    }
}

/// Usage of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    pub memory_bytes: u64,
    pub cpu_usage_ns: u64,
    pub disk_bytes: u64,
    pub pids: u64,
    pub age_ms: u64,
}
