//! `diego cell`: a cell agent (rep + executor) running work in containers; `diego cell drain`
//! evacuates one.

use diego_client::BbsUrls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use diego_executor::ResourceCapacity;
use diego_garden::http::client::GardenClient;
use diego_garden::{Capacity, DynBackend};
use diego_logs::shipper::DEFAULT_LINES_PER_SECOND;
use diego_logs::{LogLine, LogSink, Shipper, ShipperConfig};
use diego_rep::{RepConfig, RunningRep};
use tokio_util::sync::CancellationToken;

use crate::commands::garden::{self, Backend};
use crate::process;

/// `--presence-ttl`'s default: a lost cell's instances are replaced a few seconds after it
/// stops renewing (Diego: 15 s).
pub const DEFAULT_PRESENCE_TTL_SECS: u64 = 3;

/// `diego cell [FLAGS]` runs a cell; `diego cell drain CELL_ID` evacuates one.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CellCommand {
    #[command(subcommand)]
    pub action: Option<CellAction>,
    #[command(flatten)]
    pub run: Option<CellArgs>,
    /// Beside, not inside, `run`: the arguments of an optional flattened group are taken as
    /// given only when one of its own fields is.
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum CellAction {
    /// Evacuate a cell: its instances move to other cells (each keeps serving until its
    /// replacement runs), its tasks finish, then the cell stops. Waits until it is gone.
    Drain(crate::commands::drain::DrainArgs),
}

#[derive(Debug, clap::Args)]
pub struct CellArgs {
    /// Address the rep listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1801")]
    pub listen: SocketAddr,
    /// Where the cell keeps its containers, root filesystems and id.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The cell's id [default: kept in DATA_DIR/cell_id, made once as cell-<random>].
    #[arg(long, value_name = "ID")]
    pub cell_id: Option<String>,
    #[arg(long, value_name = "ZONE", default_value = "z1")]
    pub zone: String,
    /// A placement tag of this cell (repeatable).
    #[arg(long = "placement-tag", value_name = "TAG")]
    pub placement_tags: Vec<String>,
    /// Memory for containers, in MB [default: the machine's].
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    #[arg(long, value_name = "MB", default_value_t = 64 * 1024)]
    pub disk_mb: u64,
    #[arg(long, value_name = "N", default_value_t = 250)]
    pub max_containers: u64,
    /// Address the instances' host ports listen on and are routed to (runc backend); default:
    /// the --listen address, or 127.0.0.1 when that is 0.0.0.0.
    #[arg(long, value_name = "IP")]
    pub host_ip: Option<std::net::IpAddr>,
    /// How containers run [default: runc when root and runc are there, else process].
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Use a remote `diego garden` instead of a backend in this process.
    #[arg(long, value_name = "URL", conflicts_with = "backend")]
    pub garden: Option<String>,
    /// Directory of configured root filesystems (runc backend; `preloaded:NAME`).
    #[arg(long, value_name = "DIR")]
    pub preloaded_dir: Option<PathBuf>,
    /// Seconds between comparisons of the BBS with the cell's containers.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub sync_interval: u64,
    /// Seconds the cell's presence lives without renewal (renewed every third of it). A cell
    /// that stops renewing is missing after this: its instances are replaced elsewhere.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PRESENCE_TTL_SECS)]
    pub presence_ttl: u64,
    /// Seconds the start keeps trying while no BBS is serving yet (nothing listens, or a
    /// 5xx answer), so cells and the BBS may start in any order. A refusal fails at once.
    #[arg(long, value_name = "SECS", default_value_t = diego_client::startup::DEFAULT_BBS_WAIT.as_secs())]
    pub bbs_wait: u64,
    /// Seconds between self-checks (create, run, destroy a container; 503 while failing).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub self_check_interval: u64,
    /// Containers created at once; more wait their turn [default: one per core, at least 2].
    #[arg(long, value_name = "N")]
    pub max_concurrent_creates: Option<usize>,
    /// How long an evacuation (SIGTERM, `diego cell drain`) waits for instances to move and
    /// tasks to finish before it stops what is left.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub evacuation_timeout: u64,
    /// Ship app and cell log lines to this log server (`diego logs-server`), in batches over
    /// one kept-alive connection; never blocks an app: while the server is away lines are
    /// dropped, counted and reported in a notice when it is back [default: print them on stderr].
    #[arg(long, value_name = "URL")]
    pub logs_url: Option<String>,
    /// Log lines per second per log guid shipped from this cell; excess lines are dropped with a
    /// notice every 5 s (0 = no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LINES_PER_SECOND)]
    pub log_lines_per_second: u32,
}

/// App and platform log lines of a cell without `--logs-url`, printed on stderr as
/// `LOG_GUID [SOURCE/INDEX] OUT|ERR message`.
struct PrintSink;

impl LogSink for PrintSink {
    fn emit(&self, line: LogLine) {
        eprintln!(
            "{} [{}] {} {}",
            line.log_guid,
            line.source_label(),
            line.stream.short(),
            line.message
        );
    }
}

/// The cell id kept in `data_dir`, made on first use.
fn cell_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("cell_id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("cell-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The backend the flags ask for, and a line saying what it is.
async fn backend(
    args: &CellArgs,
    capacity: Capacity,
    tls: Option<&diego_runtime::tls::Tls>,
) -> anyhow::Result<(DynBackend, String)> {
    if let Some(url) = &args.garden {
        let url = &crate::commands::role_url("--garden", url, "", tls)?;
        let client = GardenClient::with_tls(url, tls).with_context(|| format!("garden URL {url}"))?;
        return Ok((Arc::new(client), format!("remote garden at {url}")));
    }
    let kind = args.backend.unwrap_or(if garden::runc_usable() {
        Backend::Runc
    } else {
        Backend::Process
    });
    let depot = args.data_dir.join("depot");
    let backend = garden::open_backend(
        kind,
        &depot,
        args.preloaded_dir.clone(),
        capacity,
        garden::host_ip(args.host_ip, args.listen),
    )
    .await?;
    let what = match kind {
        Backend::Runc => "runc backend (isolated containers)".to_string(),
        Backend::Process => {
            "process backend: NO isolation, processes run on this host as this user (runc needs root and runc)"
                .to_string()
        }
    };
    Ok((backend, what))
}

/// Destroys every container the cell with these flags left in its depot (for `diego dev
/// --reset`); how many there were. The cell must not be running.
pub async fn destroy_leftovers(args: &CellArgs) -> anyhow::Result<usize> {
    let depot = args.data_dir.join("depot");
    if !depot.exists() {
        return Ok(0);
    }
    let capacity = Capacity {
        memory_bytes: args.memory_mb.unwrap_or(1024) << 20,
        disk_bytes: args.disk_mb << 20,
        max_containers: args.max_containers,
    };
    let (backend, _) = backend(args, capacity, None).await?;
    let handles = backend
        .list(&Default::default())
        .await
        .with_context(|| format!("listing the containers in {}", depot.display()))?;
    for h in &handles {
        backend
            .destroy(h)
            .await
            .with_context(|| format!("destroying container {h}"))?;
    }
    Ok(handles.len())
}

/// Starts a cell; it runs until `shutdown` is cancelled. With `tls`, its API, its BBS client,
/// its log shipping and its garden client (`--garden`) are mutual TLS.
pub async fn start(
    bbs: &BbsUrls,
    args: &CellArgs,
    tls: Option<diego_runtime::tls::Tls>,
    shutdown: CancellationToken,
) -> anyhow::Result<(RunningRep, String)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let memory_mb = match args.memory_mb {
        Some(mb) => mb,
        None => garden::machine_memory_bytes().context("reading /proc/meminfo")? >> 20,
    };
    let capacity = Capacity {
        memory_bytes: memory_mb << 20,
        disk_bytes: args.disk_mb << 20,
        max_containers: args.max_containers,
    };
    let (backend, what) = backend(args, capacity, tls.as_ref()).await?;
    let id = match &args.cell_id {
        Some(id) => id.clone(),
        None => cell_id(&args.data_dir)?,
    };
    let mut config = RepConfig::new(id, bbs, args.listen);
    config.zone = args.zone.clone();
    config.placement_tags = args.placement_tags.clone();
    config.capacity = ResourceCapacity {
        memory_mb,
        disk_mb: args.disk_mb,
        containers: args.max_containers,
    };
    config.graceful_shutdown = Duration::from_secs(10);
    config.sync_interval = Duration::from_secs(args.sync_interval.max(1));
    config.presence_ttl = Duration::from_secs(args.presence_ttl.max(1));
    config.bbs_wait = Duration::from_secs(args.bbs_wait);
    config.self_check_interval = Duration::from_secs(args.self_check_interval.max(1));
    if let Some(n) = args.max_concurrent_creates {
        config.max_concurrent_creates = n.max(1);
    }
    if args.garden.is_none() {
        if let Some(dir) = &args.preloaded_dir {
            config.preloaded_rootfs = diego_garden_runc::rootfs::preloaded_names(dir);
        }
    }
    config.download_cache_dir = Some(args.data_dir.join("cache"));
    config.evacuation_timeout = Duration::from_secs(args.evacuation_timeout);
    config.tls = tls.clone();
    let Some(url) = &args.logs_url else {
        let rep = diego_rep::start(config, backend, Arc::new(PrintSink), shutdown)
            .await
            .context("starting the rep")?;
        return Ok((rep, what));
    };
    // The shipper outlives the rep, so the last lines of a stopping cell go out too.
    let ship_stop = CancellationToken::new();
    let url = &crate::commands::role_url("--logs-url", url, "", tls.as_ref())?;
    let mut ship = ShipperConfig::new(url);
    ship.lines_per_second = args.log_lines_per_second;
    ship.tls = tls;
    let (shipper, shipping) = Shipper::start(ship, ship_stop.clone()).context("--logs-url")?;
    let mut rep = match diego_rep::start(config, backend, shipper, shutdown).await {
        Ok(rep) => rep,
        Err(e) => {
            ship_stop.cancel();
            return Err(anyhow::Error::new(e).context("starting the rep"));
        }
    };
    let rep_task = rep.task;
    rep.task = tokio::spawn(async move {
        let ended = rep_task.await;
        ship_stop.cancel();
        let _ = shipping.await;
        match ended {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    });
    Ok((rep, format!("{what}; logs to {url}")))
}

/// Runs a cell until Ctrl-C (stops at once; its containers keep running for the next start to
/// take over) or SIGTERM
/// (evacuates first, then exits 0). A second signal exits at once.
pub async fn run(bbs: &BbsUrls, args: CellArgs, tls: Option<diego_runtime::tls::Tls>) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    let started: Arc<OnceLock<Arc<diego_rep::Rep>>> = Arc::default();
    {
        let (shutdown, started) = (shutdown.clone(), started.clone());
        tokio::spawn(async move {
            let signal = process::wait_for_signal().await;
            match started.get() {
                Some(rep) if signal == "SIGTERM" => {
                    tracing::info!("SIGTERM: evacuating (SIGTERM or SIGINT again exits at once)");
                    rep.evacuate();
                }
                _ => {
                    tracing::info!(signal, "stopping (send the signal again to exit at once)");
                    shutdown.cancel();
                }
            }
            let signal = process::wait_for_signal().await;
            eprintln!("{signal} again: exiting without waiting");
            std::process::exit(130);
        });
    }
    let (rep, what) = start(bbs, &args, tls, shutdown).await?;
    let _ = started.set(rep.rep.clone());
    eprintln!(
        "diego cell {} listening on {} ({what}), BBS {bbs}",
        rep.rep.config.cell_id, rep.url
    );
    rep.task.await.context("cell task")??;
    if rep.rep.drained() {
        eprintln!("diego cell {} evacuated", rep.rep.config.cell_id);
    }
    Ok(())
}

/// `diego cell …`: run a cell, or one of its subcommands.
pub async fn dispatch(ctx: &crate::commands::Ctx, cmd: CellCommand) -> anyhow::Result<()> {
    match (cmd.action, cmd.run) {
        (Some(CellAction::Drain(args)), _) => crate::commands::drain::run(ctx, args).await,
        (None, Some(args)) => run(ctx.client.urls(), args, ctx.tls.clone()).await,
        (None, None) => anyhow::bail!(
            "diego cell needs --data-dir DIR to run a cell (see `diego cell --help`), or a subcommand such as `diego cell drain CELL_ID`"
        ),
    }
}
