//! Diego's container API ("Garden", diego-spec §3.7): one trait, [`ContainerBackend`], that
//! every backend implements — the runc backend (real isolation), the process backend (no
//! isolation, for machines without root), the HTTP client (a backend served elsewhere) and
//! [`fake::FakeBackend`] for unit tests of the layers above.
//!
//! Knows nothing of tasks or LRPs: only containers and processes. Must not depend on the BBS,
//! the store or the executor. Key types: [`ContainerSpec`], [`ContainerInfo`],
//! [`ProcessSpec`], [`ProcessEvent`], [`GardenError`].

pub mod error;
pub mod event_log;
pub mod fake;
pub mod http;
pub mod process;
pub mod procfs;
pub mod tar;
pub mod types;

pub use error::GardenError;
pub use types::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// A process's events from its start (output written before the caller attached is replayed)
/// followed by live ones, ending with [`ProcessEvent::Exited`].
pub struct ProcessStream {
    pub id: String,
    pub events: BoxStream<'static, ProcessEvent>,
}

/// A tar stream (in or out of a container).
pub type TarStream = BoxStream<'static, Result<Bytes, GardenError>>;

#[async_trait]
pub trait ContainerBackend: Send + Sync + 'static {
    /// Healthy and able to create containers?
    async fn ping(&self) -> Result<(), GardenError>;
    async fn capacity(&self) -> Result<Capacity, GardenError>;

    /// Creates a container (its root filesystem, limits and port mappings) with no process
    /// running in it yet.
    async fn create(&self, spec: ContainerSpec) -> Result<ContainerInfo, GardenError>;
    /// Handles of the containers whose properties include every pair of `filter`.
    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError>;
    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError>;
    /// Stops every process: SIGTERM, then SIGKILL after the grace period (at once if `kill`).
    /// The container stays until destroyed.
    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError>;
    /// Kills everything in it and removes every trace of it. Destroying a container that does
    /// not exist is `NotFound`.
    async fn destroy(&self, handle: &str) -> Result<(), GardenError>;

    /// Starts a process in the container and streams its events.
    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<ProcessStream, GardenError>;
    /// Streams the events of a process started earlier (also one that already exited, which
    /// yields its output and exit status), possibly by an earlier instance of the server.
    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError>;
    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError>;

    /// Extracts a tar stream into the container at `dst_path`.
    async fn stream_in(&self, handle: &str, dst_path: &str, tar: TarStream) -> Result<(), GardenError>;
    /// A tar stream of `src_path` (a file or directory) in the container.
    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError>;

    /// Usage of each named container that exists (missing handles are left out).
    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError>;

    /// Whether [`ContainerBackend::connect`] works here (a cell's health checks then connect
    /// straight into containers instead of through their mapped host ports).
    fn can_connect(&self) -> bool {
        false
    }

    /// A TCP connection to `port` inside container `handle`, as a process in the container
    /// would make to `127.0.0.1:port` — refused when nothing listens there. Unlike a mapped
    /// host port (which a userspace proxy may accept first), this says whether the container
    /// really listens. The error keeps its kind (`ConnectionRefused` when nothing listens,
    /// `NotFound` for an unknown container, `Unsupported` from backends that cannot do it), so
    /// health checks report it as the probe's own connect error.
    async fn connect(&self, handle: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let _ = (handle, port);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this backend cannot connect into containers",
        ))
    }
}

/// A shared handle to any backend.
pub type DynBackend = Arc<dyn ContainerBackend>;

/// Whether a container's properties include every pair of `filter`.
pub fn properties_match(properties: &Properties, filter: &Properties) -> bool {
    filter.iter().all(|(k, v)| properties.get(k) == Some(v))
}

/// A fresh handle or process id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
