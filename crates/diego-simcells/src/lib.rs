//! Many simulated cells in one process: each implements the rep's side of the auction
//! (diego-spec §3.5, §6.4) against a real BBS — presence, `/state`, `/work`, stop and cancel —
//! and claims, starts and completes its work in the BBS without running any container.
//!
//! For scale tests and benchmarks of the real control plane (BBS + auctioneer) with a
//! thousand cells on one machine. One listener serves every cell under `/cells/{cell_id}`.
//!
//! Depends on `diego-model` and `diego-client` only (never on a server crate): it talks to
//! the BBS over HTTP like any cell. Key types: [`SimCellsConfig`], [`SimCells::start`] →
//! [`RunningSimCells`], [`SimStats`].

mod cell;
pub mod config;
pub mod error;
pub mod holdings;
mod lifecycle;
mod presence;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use diego_client::BbsClient;
use diego_runtime::Supervisor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::SimCellsConfig;
pub use error::SimCellsError;
pub use lifecycle::{SimStats, TASK_RESULT};
pub use server::CELL_PREFIX;

use cell::SimCell;
use lifecycle::Lifecycle;

/// The entry point.
pub struct SimCells;

/// Simulated cells serving and registered; they stop when the shutdown token is cancelled.
pub struct RunningSimCells {
    /// Where the listener is bound.
    pub addr: SocketAddr,
    /// `http://HOST:PORT`: a cell's rep URL is this + `/cells/{cell_id}`.
    pub base_url: String,
    /// In order: `sim-0000`, `sim-0001`, …
    pub cell_ids: Vec<String>,
    /// Ends after shutdown, once the presences are removed and the server has stopped.
    pub task: JoinHandle<Result<(), SimCellsError>>,
    lifecycle: Arc<Lifecycle>,
}

impl RunningSimCells {
    /// The rep URL `cell_id` registered with.
    pub fn rep_url(&self, cell_id: &str) -> String {
        format!("{}/cells/{cell_id}", self.base_url)
    }

    /// Counts since start, across all cells.
    pub fn stats(&self) -> SimStats {
        self.lifecycle.counters.snapshot()
    }
}

impl SimCells {
    /// Binds `config.listen`, serves every cell, registers their presences (failing if the
    /// BBS refuses any) and keeps them renewed until `shutdown` is cancelled; then removes
    /// the presences (best effort) and stops.
    pub async fn start(
        config: SimCellsConfig,
        shutdown: CancellationToken,
    ) -> Result<RunningSimCells, SimCellsError> {
        config.validate()?;
        let bind = |source| SimCellsError::Bind {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let base_url = config.advertised_base_url(addr);
        let cell_ids = config.cell_ids();
        let cells: Vec<Arc<SimCell>> = cell_ids
            .iter()
            .enumerate()
            .map(|(i, id)| Arc::new(SimCell::new(&config, i, id.clone(), &base_url)))
            .collect();

        let http = diego_runtime::http_client(config.tls.as_ref())
            .pool_max_idle_per_host(config.max_in_flight_bbs_calls + 64)
            .build()
            // Only fails when the TLS backend cannot initialise; its configuration is loaded.
            .expect("building the HTTP client");
        let bbs = BbsClient::with_http(config.bbs.clone(), http);
        // Our own token, so a failed start can stop the server it already started.
        let stop = shutdown.child_token();
        let lifecycle = Arc::new(Lifecycle::new(
            bbs.clone(),
            config.max_in_flight_bbs_calls,
            config.task_run_time,
            stop.clone(),
        ));
        let app = Arc::new(server::App {
            cells: cells
                .iter()
                .map(|c| (c.id.clone(), c.clone()))
                .collect::<HashMap<_, _>>(),
            lifecycle: lifecycle.clone(),
        });
        let mut members = Supervisor::new(stop.clone());
        let app = server::router(app);
        members.spawn("sim-cells http", |stop| {
            diego_runtime::serve(listener, app, stop, config.serve_limits, config.tls.clone())
        });

        // Serving first: the BBS may hand a cell work the moment its presence appears.
        if let Err(e) =
            presence::register_all(&bbs, &cells, config.presence_ttl, config.bbs_wait, &stop).await
        {
            stop.cancel();
            // Those that did register go again (the rest are not there to remove).
            presence::remove_all(&bbs, &cells).await;
            let _ = members.wait().await;
            return Err(e);
        }
        info!(
            %addr,
            cells = cells.len(),
            zones = config.zones.len(),
            bbs = %config.bbs,
            "simulated cells registered"
        );

        let ttl = config.presence_ttl;
        let lc = lifecycle.clone();
        members.spawn("sim-cells presence", move |stop| async move {
            let stats_of = lc.clone();
            let kept = presence::keep(&bbs, &cells, ttl, move || stats_of.counters.snapshot(), &stop).await;
            // Presences first, so the BBS stops sending work and stops here.
            match presence::remove_all(&bbs, &cells).await {
                0 => info!(cells = cells.len(), "removed cell presences"),
                failed => warn!(failed, "cell presences not removed; they lapse after their TTL"),
            }
            lc.drain().await;
            kept
        });
        let task = tokio::spawn(async move { members.wait().await.map_err(SimCellsError::Member) });
        Ok(RunningSimCells {
            addr,
            base_url,
            cell_ids,
            task,
            lifecycle,
        })
    }
}
