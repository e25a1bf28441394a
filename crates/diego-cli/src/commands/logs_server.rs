//! `diego logs-server`: the log server cells ship lines to and `diego logs` reads from.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use diego_logs::server::{self, ServerConfig, DEFAULT_LISTEN};
use diego_logs::store::DEFAULT_RETENTION_LINES;
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct LogsServerArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Lines kept per log guid; older ones are evicted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETENTION_LINES)]
    pub retention_lines: usize,
    /// Keep the history in DIR so it outlives a restart [default: memory only].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl LogsServerArgs {
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        anyhow::ensure!(
            self.retention_lines >= 1,
            "--retention-lines must be at least 1 (got {})",
            self.retention_lines
        );
        let mut config = ServerConfig::new(self.listen);
        config.retention_lines = self.retention_lines;
        config.data_dir = self.data_dir.clone();
        Ok(config)
    }
}

/// What the server keeps, in words.
pub fn describe(config: &ServerConfig) -> String {
    let kept = match &config.data_dir {
        Some(dir) => format!("history in {}", dir.display()),
        None => "history in memory only".to_string(),
    };
    format!("{} lines per log guid, {kept}", config.retention_lines)
}

pub async fn run(args: LogsServerArgs, tls: Option<diego_runtime::tls::Tls>) -> anyhow::Result<()> {
    process::init_logging();
    let mut config = args.config()?;
    config.tls = tls;
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let running = server::start(config.clone(), shutdown)
        .await
        .with_context(|| format!("starting the log server on {}", args.listen))?;
    let loaded = running
        .loaded
        .map(|l| format!("; {} lines read back", l.records - l.evicted))
        .unwrap_or_default();
    eprintln!(
        "diego logs-server listening on {} ({}{loaded})",
        running.url,
        describe(&config)
    );
    running.task.await.context("log server task")??;
    Ok(())
}
