//! `diego file-server`: content-addressed blobs (app packages, build caches, droplets) over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use diego_fileserver::server::{self, ServerConfig, DEFAULT_LISTEN, DEFAULT_MAX_UPLOAD_BYTES};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct FileServerArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the blobs are kept (`DIR/blobs/sha256/…`; uploads in progress in `DIR/tmp`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Bytes one upload may have; a larger one is refused with 413 and leaves nothing.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Serve each subdirectory NAME of this directory as the lifecycle bundle
    /// `/v1/lifecycle/NAME.tgz` (`scripts/build-lifecycle` makes one: `lifecycle/` with the
    /// builder, launcher and healthcheck, `buildpacks/`).
    #[arg(long, value_name = "DIR")]
    pub lifecycle_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

impl FileServerArgs {
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        anyhow::ensure!(
            self.max_upload_bytes >= 1,
            "--max-upload-bytes must be at least 1 (got {})",
            self.max_upload_bytes
        );
        let mut config = ServerConfig::new(self.listen, self.data_dir.clone());
        config.max_upload_bytes = self.max_upload_bytes;
        config.lifecycle_dir = self.lifecycle_dir.clone();
        Ok(config)
    }
}

pub async fn run(args: FileServerArgs, tls: Option<diego_runtime::tls::Tls>) -> anyhow::Result<()> {
    process::init_logging();
    let mut config = args.config()?;
    config.tls = tls;
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let running = server::start(config, shutdown)
        .await
        .with_context(|| format!("starting the file server on {}", args.listen))?;
    eprintln!(
        "diego file-server listening on {} ({} blobs, {} bytes in {}; uploads up to {} bytes)",
        running.url,
        running.held.blobs,
        running.held.bytes,
        args.data_dir.display(),
        args.max_upload_bytes
    );
    running.task.await.context("file server task")??;
    Ok(())
}
