//! The BBS: Diego's API server and the only writer of the store.
//!
//! Layers (never the other way): `handlers` (parse, call one controller, map errors) →
//! `controllers` (lifecycle rules over the model's pure transitions, compare-and-swap
//! retries) → `diego_store::Store`. `events` turns the store's change feed into Diego's
//! event stream over SSE. Depends on `diego-model`, `diego-store` and `diego-client` (route
//! constants, rep client); never on `diego-cli`.

pub mod config;

pub use config::{BbsConfig, StoreConfig};

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BbsError {
    #[error("opening the store: {0}")]
    Store(#[from] diego_store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// A BBS serving in the background.
pub struct RunningBbs {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Finishes when `shutdown` is cancelled and in-flight requests have drained.
    pub task: JoinHandle<Result<(), BbsError>>,
}

impl RunningBbs {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Opens the store, binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn start(config: BbsConfig, shutdown: CancellationToken) -> Result<RunningBbs, BbsError> {
    let _ = (config, shutdown);
    unimplemented!("BBS server is being written")
}

/// [`start`], then wait for it to finish.
pub async fn run(config: BbsConfig, shutdown: CancellationToken) -> Result<(), BbsError> {
    let running = start(config, shutdown).await?;
    running.task.await.unwrap_or(Ok(()))
}
