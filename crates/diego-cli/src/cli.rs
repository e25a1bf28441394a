//! The top-level command line: global options and the command tree.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use diego_client::{BbsUrlError, BbsUrls};

use crate::commands::{
    actual, app, apps, auctioneer, bbs, bench, cell, certs, dev, events, file_server, garden, logs,
    logs_server, lrp, rootfs, route_emitter, router, sim_cells, task,
};
use crate::output::OutputFormat;

/// Where the CLI looks for a BBS unless told otherwise (`diego dev` listens here).
pub const DEFAULT_BBS_URL: &str = "http://127.0.0.1:8889";

#[derive(Debug, Parser)]
#[command(
    name = "diego",
    version,
    about = "Diego in Rust: a scheduler for tasks and long-running processes"
)]
pub struct Cli {
    /// The BBS to talk to: one URL, or several BBS processes sharing a store
    /// (`URL,URL…`, or the flag repeated; in a config file a string or an array), tried in
    /// order and failed over between.
    #[arg(long, global = true, env = "DIEGO_BBS_URL", default_value = DEFAULT_BBS_URL, value_name = "URL[,URL…]", value_parser = BbsUrls::parse)]
    pub bbs: Vec<BbsUrls>,

    /// The log server to read from (`diego logs`).
    #[arg(long, global = true, env = "DIEGO_LOGS_URL", default_value = logs::DEFAULT_LOGS_URL, value_name = "URL")]
    pub logs: String,

    /// The apps service (`diego app …`).
    #[arg(long, global = true, env = "DIEGO_APPS_URL", default_value = app::DEFAULT_APPS_URL, value_name = "URL")]
    pub apps: String,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Mutual TLS: the CA (PEM) whose certificates peers must present, and the only one
    /// trusted. Needs --tls-cert and --tls-key too; with the three, every listener of a role
    /// speaks TLS and requires a client certificate of this CA, and every client presents
    /// --tls-cert. URLs are then https://. Reloaded when the file changes.
    #[arg(long, global = true, env = "DIEGO_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Mutual TLS: this process's certificate (PEM, from `diego certs issue`), presented as
    /// server and as client. Reloaded when the file changes.
    #[arg(long, global = true, env = "DIEGO_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Mutual TLS: the private key (PEM) of --tls-cert. Reloaded when the file changes.
    #[arg(long, global = true, env = "DIEGO_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Every `--bbs` given, as one list.
    pub fn bbs_urls(&self) -> Result<BbsUrls, BbsUrlError> {
        BbsUrls::new(self.bbs.iter().flat_map(BbsUrls::iter))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the BBS server.
    Bbs(bbs::BbsArgs),
    /// Run the auctioneer (places LRP instances and tasks on cells; one active per BBS).
    Auctioneer(auctioneer::AuctioneerArgs),
    /// Publish the routing table over NATS in gorouter's protocol (router.register/unregister).
    RouteEmitter(route_emitter::RouteEmitterArgs),
    /// Run a cell: the rep and executor, running tasks and LRP instances in containers.
    Cell(cell::CellCommand),
    /// Run a whole Diego on this machine, on loopback, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Submit and manage one-off tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Create and manage long-running processes (desired LRPs).
    #[command(subcommand)]
    Lrp(lrp::LrpCommand),
    /// Inspect actual LRPs (running instances).
    #[command(subcommand)]
    Actual(actual::ActualCommand),
    /// List live cells.
    Cells,
    /// List fresh domains.
    Domains,
    /// Follow the BBS event stream.
    Events(events::EventsArgs),
    /// Show an LRP's or task's log lines: recent ones then new ones as they arrive (like `cf logs`).
    Logs(logs::LogsArgs),
    /// Run the log server: keeps a bounded history per log guid, serves recent lines and follow streams.
    LogsServer(logs_server::LogsServerArgs),
    /// Run the apps service: apps pushed as directories, staged by buildpacks, run as LRPs.
    Apps(apps::AppsArgs),
    /// Push and manage apps (through the apps service, `--apps`).
    #[command(subcommand)]
    App(app::AppCommand),
    /// Run the file server: content-addressed blobs (app packages, build caches, droplets) over HTTP.
    FileServer(file_server::FileServerArgs),
    /// Run the HTTP router: sends each request to an instance of the app its Host names.
    Router(router::RouterArgs),
    /// Serve a container backend (Garden) over HTTP.
    Garden(garden::GardenArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Simulate many cells in this process (no containers) against the BBS, until Ctrl-C.
    SimCells(sim_cells::SimCellsArgs),
    /// Make a cluster's TLS certificates: a CA, and a certificate per component.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Build root filesystems for cells' `preloaded:NAME` (`diego rootfs build debian`).
    #[command(subcommand)]
    Rootfs(rootfs::RootfsCommand),
}

/// Parses `KEY=VALUE` (for `--env`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE (got {s:?})")),
    }
}
