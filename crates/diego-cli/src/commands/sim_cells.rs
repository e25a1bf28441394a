//! `diego sim-cells`: many simulated cells in one process, for scale tests of the BBS and
//! the auctioneer (see docs/075-sim-cells.md).

use diego_client::BbsUrls;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use diego_simcells::config::{
    zone_names, DEFAULT_CELL_ID_PREFIX, DEFAULT_CONTAINERS, DEFAULT_DISK_MB, DEFAULT_MAX_IN_FLIGHT_BBS_CALLS,
    DEFAULT_MEMORY_MB, DEFAULT_PRESENCE_TTL,
};
use diego_simcells::{SimCells, SimCellsConfig};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct SimCellsArgs {
    /// How many cells to simulate.
    #[arg(long, value_name = "N")]
    pub count: usize,
    /// Address of the one listener serving every cell (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The host in the cells' rep URLs (default: the listen address, or 127.0.0.1).
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Number of zones (z0, z1, …); cells are spread over them round-robin [default: 3 when
    /// the count divides by 3, else 2 when even, else 1 — equal zones keep Diego's zone
    /// balancing and per-cell balancing in agreement].
    #[arg(long, value_name = "N")]
    pub zones: Option<usize>,
    /// Memory of each cell, in MB.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_MEMORY_MB)]
    pub memory_mb: i32,
    /// Disk of each cell, in MB.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_DISK_MB)]
    pub disk_mb: i32,
    /// Container slots of each cell.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONTAINERS)]
    pub containers: i32,
    /// A required placement tag of every cell (repeatable).
    #[arg(long = "placement-tag", value_name = "TAG")]
    pub placement_tags: Vec<String>,
    /// An optional placement tag of every cell (repeatable).
    #[arg(long = "optional-placement-tag", value_name = "TAG")]
    pub optional_placement_tags: Vec<String>,
    /// Cell ids are PREFIX-0000, PREFIX-0001, …
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_CELL_ID_PREFIX)]
    pub cell_id_prefix: String,
    /// Seconds a cell presence lives without renewal (renewed every third of it).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PRESENCE_TTL.as_secs())]
    pub presence_ttl: u64,
    /// Seconds the start keeps trying while no BBS is serving yet (nothing listens, or a
    /// 5xx answer). A refusal fails at once.
    #[arg(long, value_name = "SECS", default_value_t = diego_client::startup::DEFAULT_BBS_WAIT.as_secs())]
    pub bbs_wait: u64,
    /// How long a simulated task runs before it completes, in ms.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub task_run_time_ms: u64,
    /// BBS calls in flight at once across all cells.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_IN_FLIGHT_BBS_CALLS)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl SimCellsArgs {
    pub fn config(&self, bbs: &BbsUrls) -> SimCellsConfig {
        let mut c = SimCellsConfig::new(bbs, self.count);
        c.listen = self.listen;
        c.advertise_host = self.advertise_host.clone();
        c.zones = zone_names(
            self.zones
                .unwrap_or_else(|| diego_simcells::config::default_zones(self.count)),
        );
        c.memory_mb = self.memory_mb;
        c.disk_mb = self.disk_mb;
        c.containers = self.containers;
        c.placement_tags = self.placement_tags.clone();
        c.optional_placement_tags = self.optional_placement_tags.clone();
        c.cell_id_prefix = self.cell_id_prefix.clone();
        c.presence_ttl = Duration::from_secs(self.presence_ttl);
        c.bbs_wait = Duration::from_secs(self.bbs_wait);
        c.task_run_time = Duration::from_millis(self.task_run_time_ms);
        c.max_in_flight_bbs_calls = self.max_in_flight;
        c
    }
}

/// Runs until Ctrl-C or SIGTERM, then removes the presences and exits.
pub async fn run(
    args: SimCellsArgs,
    bbs: &BbsUrls,
    tls: Option<diego_runtime::tls::Tls>,
) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let mut config = args.config(bbs);
    config.tls = tls;
    let zones = config.zones.join(",");
    let running = SimCells::start(config, shutdown.clone())
        .await
        .context("starting the simulated cells")?;
    let (first, last) = (
        running.cell_ids.first().cloned().unwrap_or_default(),
        running.cell_ids.last().cloned().unwrap_or_default(),
    );
    println!(
        "diego sim-cells: {} cells ({first} … {last}) listening on {}, rep URLs {}, zones {}, registered with {bbs}",
        running.cell_ids.len(),
        running.base_url,
        running.rep_url("{cell_id}"),
        if zones.is_empty() { "none" } else { &zones },
    );
    tokio::select! {
        joined = running.task => joined
            .context("sim-cells task")?
            .context("the simulated cells stopped with an error"),
        () = process::grace_expired(&shutdown, process::SHUTDOWN_GRACE) => anyhow::bail!(
            "the simulated cells did not stop within {:?} of the signal; exiting anyway",
            process::SHUTDOWN_GRACE
        ),
    }
}
