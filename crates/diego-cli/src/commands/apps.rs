//! `diego apps`: the apps service — apps staged by buildpacks into droplets and run as LRPs
//! (docs/210-apps.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use diego_apps::service::{self, AppsConfig, DEFAULT_BUILDPACK_ORDER, DEFAULT_DOMAIN};
use diego_client::BbsUrls;
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = diego_apps::routes::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the apps are kept (`apps.json`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The file server (packages, droplets, the lifecycle), as this service and the cells
    /// reach it.
    #[arg(long, value_name = "URL")]
    pub file_server: String,
    /// This service's URL as the BBS reaches it, for staging callbacks [default: http://<listen
    /// address>].
    #[arg(long, value_name = "URL")]
    pub external_url: Option<String>,
    /// The router apps are reached through (told to `diego app push` to print the app's URL).
    #[arg(long, value_name = "URL")]
    pub router_url: Option<String>,
    /// The domain of apps' default routes (`NAME.DOMAIN`).
    #[arg(long, value_name = "DOMAIN", default_value = DEFAULT_DOMAIN)]
    pub domain: String,
    /// The stack (`preloaded:STACK` rootfs) of an app that names none: debian or busybox.
    #[arg(long, value_name = "STACK", default_value = "debian")]
    pub default_stack: String,
    /// The buildpacks detection tries, in order (names of the lifecycle's buildpacks).
    #[arg(long, value_name = "NAME,…", value_delimiter = ',', default_values_t = DEFAULT_BUILDPACK_ORDER.map(String::from))]
    pub buildpack_order: Vec<String>,
    /// Seconds between syncs of the BBS's LRPs with the apps.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub sync_interval: u64,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl AppsArgs {
    pub fn config(&self, bbs: &BbsUrls, logs_url: &str) -> anyhow::Result<AppsConfig> {
        anyhow::ensure!(
            diego_apps::model::STACKS.contains(&self.default_stack.as_str()),
            "--default-stack {}: there are {}",
            self.default_stack,
            diego_apps::model::STACKS.join(", ")
        );
        let mut config = AppsConfig::new(self.listen, self.data_dir.clone(), bbs.clone(), &self.file_server);
        config.external_url = self.external_url.clone();
        config.router_url = self.router_url.clone();
        config.logs_url = Some(logs_url.to_string());
        config.domain = self.domain.clone();
        config.default_stack = self.default_stack.clone();
        config.buildpack_order = self.buildpack_order.clone();
        config.sync_interval = Duration::from_secs(self.sync_interval.max(1));
        Ok(config)
    }
}

pub async fn run(
    bbs: &BbsUrls,
    logs_url: &str,
    args: AppsArgs,
    tls: Option<diego_runtime::tls::Tls>,
) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let mut config = args.config(bbs, logs_url)?;
    config.tls = tls;
    let running = service::start(config, shutdown)
        .await
        .with_context(|| format!("starting the apps service on {}", args.listen))?;
    eprintln!(
        "diego apps listening on {} (apps in {}), BBS {bbs}, file server {}",
        running.url,
        args.data_dir.display(),
        args.file_server
    );
    running.task.await.context("apps task")??;
    Ok(())
}
