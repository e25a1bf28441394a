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
    /// Directory of the SQLite store (created if missing): the default store.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present_any = ["memory", "store"],
        conflicts_with_all = ["memory", "store"]
    )]
    pub data_dir: Option<PathBuf>,

    /// Keep state in an etcd v3 cluster instead: etcd://host:port[,host:port…][/prefix]
    /// (prefix default /diego/). Several BBS processes may share one.
    #[arg(long, value_name = "URL", value_parser = parse_etcd_url, conflicts_with = "memory")]
    pub store: Option<diego_store::etcd::EtcdOptions>,

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

    /// Seconds the BBS lock lives without renewal (Diego's Locket: 15): how long a dead
    /// active BBS is waited for before a passive one takes over. The holder renews it every
    /// third of this.
    #[arg(long, value_name = "SECONDS", default_value_t = diego_bbs::active::DEFAULT_LOCK_TTL.as_secs())]
    pub lock_ttl: u64,

    /// How often a passive BBS tries to take the BBS lock (250ms, 1s, or plain seconds;
    /// Diego: 5s).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = crate::commands::router::parse_duration)]
    pub lock_retry_interval: std::time::Duration,

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
        let store = match (&self.data_dir, &self.store) {
            (_, Some(etcd)) => StoreConfig::Etcd(etcd.clone()),
            (Some(dir), None) if !self.memory => StoreConfig::Sqlite {
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
        config.lock.retry_interval = self.lock_retry_interval;
        if let Some(owner) = &self.owner {
            config.lock.owner = owner.clone();
        }
        config.advertise_url = self.advertise_url.clone();
        config
    }
}

/// `--store`'s value: clap names the option in the error.
fn parse_etcd_url(url: &str) -> Result<diego_store::etcd::EtcdOptions, String> {
    diego_store::etcd::EtcdOptions::from_url(url).map_err(|e| match e {
        diego_store::StoreError::Invalid(m) => m,
        e => e.to_string(),
    })
}

pub async fn run(args: BbsArgs, tls: Option<diego_runtime::tls::Tls>) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let mut config = args.config();
    config.tls = tls;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        bbs: BbsArgs,
    }

    fn parse(argv: &[&str]) -> Result<BbsArgs, String> {
        use clap::Parser as _;
        Wrap::try_parse_from(argv)
            .map(|w| w.bbs)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn store_selects_etcd_and_a_bad_url_names_the_flag() {
        let args = parse(&["x", "--store", "etcd://127.0.0.1:2379,127.0.0.1:2380/apps"]).unwrap();
        match args.config().store {
            StoreConfig::Etcd(o) => {
                assert_eq!(o.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.1:2380"]);
                assert_eq!(o.prefix, "/apps/");
            }
            other => panic!("expected etcd, got {other:?}"),
        }
        assert!(matches!(
            parse(&["x", "--data-dir", "/tmp/d"]).unwrap().config().store,
            StoreConfig::Sqlite { .. }
        ));
        for bad in ["etcd://nohost", "http://127.0.0.1:2379", "etcd://"] {
            let err = parse(&["x", "--store", bad]).expect_err("refused");
            assert!(
                err.contains("--store") && err.contains("etcd://host:port"),
                "{bad}: {err}"
            );
        }
        let err = parse(&["x", "--store", "etcd://a:1", "--data-dir", "/tmp/d"]).expect_err("refused");
        assert!(err.contains("--store"), "{err}");
        assert!(parse(&["x"]).is_err(), "a store is required");
    }
}
