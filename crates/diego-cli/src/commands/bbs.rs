//! `diego bbs`: the BBS server role.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use diego_bbs::config::{DEFAULT_EVENT_RETENTION, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES};
use diego_bbs::{BbsConfig, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct BbsArgs {
    /// Directory of the SQLite store (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "memory",
        conflicts_with = "memory"
    )]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Keep state in memory only (lost on exit).
    #[arg(long)]
    pub memory: bool,

    /// Largest accepted request body, in bytes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Changes kept for event subscribers that reconnect.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EVENT_RETENTION)]
    pub event_retention: usize,

    /// Placement retries before a rejected task fails.
    #[arg(long, value_name = "N", default_value_t = diego_model::task::DEFAULT_MAX_TASK_RETRIES)]
    pub max_task_retries: u32,

    /// Send start requests to this auctioneer instead of the holder of the auctioneer lock.
    #[arg(long, value_name = "URL")]
    pub auctioneer_url: Option<String>,

    /// Seconds an instance may stay UNCLAIMED (or a task PENDING) before it is sent to the
    /// auctioneer again (Diego: 30).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub auction_stale_after: u64,

    /// Seconds between convergence passes (Diego: 30). A cell's presence appearing or
    /// lapsing starts a pass at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub convergence_interval: u64,

    /// Seconds the BBS lock lives without renewal (Diego: 15): how long a dead active BBS
    /// is waited for before a passive one takes over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lock_ttl: u64,

    /// Seconds between renewals of the BBS lock, and between a passive BBS's attempts to take
    /// it (Diego: 5).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub lock_retry_interval: u64,

    /// This BBS's name in the lock [default: its URL, so a restart on the same address takes
    /// its lock back at once].
    #[arg(long, value_name = "NAME")]
    pub owner: Option<String>,

    /// The URL other roles reach this BBS at, stored in the lock [default: http://<listen>].
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl BbsArgs {
    pub fn config(&self) -> BbsConfig {
        let store = match &self.data_dir {
            Some(dir) if !self.memory => StoreConfig::Sqlite {
                data_dir: dir.clone(),
            },
            _ => StoreConfig::Memory,
        };
        let mut config = BbsConfig::new(self.listen, store);
        config.max_body_bytes = self.max_body_bytes;
        config.event_retention = self.event_retention;
        config.max_task_retries = self.max_task_retries;
        config.auction.auctioneer_url = self.auctioneer_url.clone();
        let stale_ms = i64::try_from(self.auction_stale_after.saturating_mul(1000)).unwrap_or(i64::MAX);
        config.convergence.rules.stale_unclaimed_ms = stale_ms;
        config.convergence.rules.resend_pending_task_ms = stale_ms;
        config.convergence.interval = std::time::Duration::from_secs(self.convergence_interval.max(1));
        config.lock.ttl = std::time::Duration::from_secs(self.lock_ttl.max(1));
        config.lock.retry_interval = std::time::Duration::from_secs(self.lock_retry_interval.max(1));
        if let Some(owner) = &self.owner {
            config.lock.owner = owner.clone();
        }
        config.advertise_url = self.advertise_url.clone();
        config
    }
}

pub async fn run(args: BbsArgs) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let config = args.config();
    let running = diego_bbs::start(config, shutdown.clone())
        .await
        .context("starting the BBS")?;
    tokio::select! {
        joined = running.task => joined.context("BBS task")?.context("BBS stopped with an error"),
        () = process::grace_expired(&shutdown, process::SHUTDOWN_GRACE) => anyhow::bail!(
            "the BBS did not stop within {:?} of the signal (connections still open?); exiting anyway",
            process::SHUTDOWN_GRACE
        ),
    }
}
