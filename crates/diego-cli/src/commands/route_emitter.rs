//! `diego route-emitter`: the routing table over NATS in gorouter's protocol, for an
//! existing Cloud Foundry routing tier (docs/130-route-emitter.md).

use diego_client::BbsUrls;
use std::net::SocketAddr;

use anyhow::Context as _;
use diego_routing::emitter::{self, EmitterConfig};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct RouteEmitterArgs {
    /// A NATS server, `nats://[USER:PASSWORD@]HOST:PORT`; repeat for the servers of one
    /// cluster (the client uses one and fails over to the others).
    #[arg(long = "nats", value_name = "URL", default_value = emitter::DEFAULT_NATS, value_parser = parse_nats)]
    pub nats: Vec<emitter::NatsServerAddr>,
    /// Address for `/health` and `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = emitter::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

fn parse_nats(s: &str) -> Result<emitter::NatsServerAddr, String> {
    emitter::parse_nats_url(s).map_err(|e| e.to_string())
}

pub async fn run(
    bbs: &BbsUrls,
    args: RouteEmitterArgs,
    tls: Option<diego_runtime::tls::Tls>,
) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let scheme = diego_runtime::tls::scheme(tls.as_ref());
    let mut config = EmitterConfig::new(bbs, args.nats.clone(), args.listen);
    config.tls = tls;
    let running = emitter::start(config, shutdown)
        .await
        .with_context(|| format!("starting the route-emitter on {}", args.listen))?;
    let servers: Vec<String> = args
        .nats
        .iter()
        .map(|a| format!("{}:{}", a.host(), a.port()))
        .collect();
    eprintln!(
        "diego route-emitter: BBS {bbs} -> NATS {}; /health and /metrics on {scheme}://{}",
        servers.join(", "),
        running.addr
    );
    running.task.await.context("route-emitter task")??;
    Ok(())
}
