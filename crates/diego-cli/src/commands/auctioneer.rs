//! `diego auctioneer`: the auction service (one active instance per BBS, by lock).

use diego_client::BbsUrls;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use diego_auction::service::{self, AuctioneerConfig};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct AuctioneerArgs {
    /// Address to listen on (Diego's auctioneer port is 9016).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9016")]
    pub listen: SocketAddr,
    /// URL the BBS uses to reach this auctioneer [default: http://<listen address>].
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Seconds the auctioneer lock lives without renewal: how fast a standby takes over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lock_ttl: u64,
    /// Per-cell timeout for fetching state and sending work, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub cell_timeout_ms: u64,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl AuctioneerArgs {
    pub fn config(&self, bbs: &BbsUrls) -> AuctioneerConfig {
        let mut config = AuctioneerConfig::new(bbs, self.listen);
        config.advertise_url = self.advertise_url.clone();
        config.lock_ttl = Duration::from_secs(self.lock_ttl.max(1));
        config.cell_timeout = Duration::from_millis(self.cell_timeout_ms.max(1));
        config
    }
}

pub async fn run(
    bbs: &BbsUrls,
    args: AuctioneerArgs,
    tls: Option<diego_runtime::tls::Tls>,
) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let mut config = args.config(bbs);
    config.tls = tls;
    let scheme = diego_runtime::tls::scheme(config.tls.as_ref());
    let running = service::start(config, shutdown)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "diego auctioneer listening on {}://{} (advertised as {}), BBS {bbs}; active while it holds the BBS lock \"{}\"",
        scheme,
        running.addr,
        running.url,
        service::AUCTIONEER_LOCK
    );
    running.task.await.context("auctioneer task")??;
    Ok(())
}
