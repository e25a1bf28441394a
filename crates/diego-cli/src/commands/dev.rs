//! `diego dev`: every role of a Diego in one process, on loopback, over one data directory.
//!
//! Each role gets a subdirectory of the data dir (`bbs/` for the BBS's SQLite), so a
//! restart resumes the same state. Roles are started in dependency order and run until
//! Ctrl-C or until one of them fails, which stops the rest. New roles (auctioneer, cells,
//! router, …) are one more `start_*` returning a [`Role`].

use diego_client::BbsUrls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use diego_bbs::config::DEFAULT_LISTEN;
use diego_bbs::{BbsConfig, StoreConfig};
use diego_runtime::Supervisor;
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::cli::DEFAULT_BBS_URL;
use crate::process;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where state lives [default: $XDG_DATA_HOME/diego/dev or ~/.local/share/diego/dev].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the BBS listens on (loopback only in dev).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Cells to run (each with its own data dir, port and zone z1, z2, …).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cells: usize,

    /// How the cells run containers [default: runc when root and runc are there, else
    /// process, which does not isolate].
    #[arg(long, value_enum)]
    pub backend: Option<crate::commands::garden::Backend>,

    /// Containers each cell creates at once (`diego cell --max-concurrent-creates`).
    #[arg(long, value_name = "N")]
    pub max_concurrent_creates: Option<usize>,

    /// Address the log server listens on (loopback only in dev); its history is kept in
    /// `<data-dir>/logs`.
    #[arg(long, value_name = "ADDR", default_value = diego_logs::server::DEFAULT_LISTEN)]
    pub logs_listen: SocketAddr,

    /// Address the file server listens on (loopback only in dev) [default: 127.0.0.1:8892, or a
    /// free port when that is taken]; its blobs are kept in `<data-dir>/files`.
    #[arg(long, value_name = "ADDR")]
    pub file_server_listen: Option<SocketAddr>,

    /// Bytes one upload to the file server may have (an app's packed directory, a droplet)
    /// [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    pub max_upload_bytes: Option<u64>,

    /// Directory of lifecycle bundles the file server serves (`scripts/build-lifecycle` makes
    /// it) [default: $DIEGO_LIFECYCLE_DIR, else `lifecycle/` beside the directory of this
    /// binary (target/lifecycle for target/release/diego)].
    #[arg(long, value_name = "DIR")]
    pub lifecycle_dir: Option<PathBuf>,

    /// Address the apps service listens on [default: 127.0.0.1:8893, or a free port when that
    /// is taken]; its apps are kept in `<data-dir>/apps`.
    #[arg(long, value_name = "ADDR")]
    pub apps_listen: Option<SocketAddr>,

    /// Address the router listens on [default: 127.0.0.1:8080, or a free port when that is taken].
    #[arg(long, value_name = "ADDR")]
    pub router_listen: Option<SocketAddr>,

    /// Address of the router's admin listener [default: a free loopback port].
    #[arg(long, value_name = "ADDR")]
    pub router_admin: Option<SocketAddr>,

    /// Start from nothing: destroy the containers an earlier run left and delete the data dir.
    #[arg(long)]
    pub reset: bool,

    /// The rootfs cache of `diego rootfs build`: when it holds a built `debian`, every cell
    /// gets it as `--preloaded-dir`, so LRPs and tasks may use `preloaded:debian`.
    #[arg(long, value_name = "DIR", env = "DIEGO_ROOTFS_DIR", default_value = crate::commands::rootfs::DEFAULT_ROOTFS_DIR)]
    pub rootfs_dir: PathBuf,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

/// A running role: what to print about it, its own stop, and the work to wait for.
struct Role {
    name: String,
    /// Where it serves, if it serves anything.
    url: Option<String>,
    /// Printed after the URL (the router's admin listener).
    detail: Option<String>,
    stop: CancellationToken,
    task: BoxFuture<'static, anyhow::Result<()>>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "diego dev binds loopback only (got --listen {}); use `diego bbs` to serve other addresses",
        args.listen
    );
    anyhow::ensure!(
        args.logs_listen.ip().is_loopback(),
        "diego dev binds loopback only (got --logs-listen {}); use `diego logs-server` to serve other addresses",
        args.logs_listen
    );
    process::init_logging();
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir().context(
            "cannot find a data directory (neither XDG_DATA_HOME nor HOME is set); pass --data-dir",
        )?,
    };
    if args.reset {
        reset(&data_dir, &args).await?;
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;

    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());

    let mut roles = Vec::new();
    // The log server first: it outlives the cells, so their last lines reach it.
    let logs = start_logs(&data_dir, args.logs_listen).await?;
    let logs_url = logs.url.clone().unwrap_or_default();
    roles.push(logs);
    let lifecycle = lifecycle_dir(args.lifecycle_dir.clone());
    let files = start_file_server(&data_dir, &args, lifecycle.clone()).await?;
    let files_url = files.url.clone().unwrap_or_default();
    roles.push(files);
    let bbs = start_bbs(&data_dir, args.listen).await?;
    let bbs_url = bbs.url.clone().unwrap_or_default();
    roles.push(bbs);
    roles.push(start_auctioneer(&bbs_url).await?);
    match preloaded_dir(&args) {
        Some(dir) if args.cells > 0 => eprintln!(
            "cells run preloaded:debian from {} (and preloaded:busybox)",
            dir.display()
        ),
        _ => {}
    }
    let mut reps = Vec::new();
    for i in 0..args.cells {
        let (role, rep) = start_cell(&data_dir, &bbs_url, &logs_url, i, &args).await?;
        roles.push(role);
        reps.push(rep);
    }
    let router = start_router(&bbs_url, &logs_url, &args).await?;
    let router_url = router.url.clone().unwrap_or_default();
    roles.push(router);
    let urls = DevUrls {
        bbs: &bbs_url,
        logs: &logs_url,
        files: &files_url,
        router: &router_url,
    };
    roles.push(start_apps(&data_dir, &urls, args.apps_listen, default_stack(&args)).await?);
    if lifecycle.is_none() {
        eprintln!(
            "apps: no lifecycle bundles (run scripts/build-lifecycle, or give --lifecycle-dir): `diego app push` cannot stage"
        );
    }

    // What the hint's web app can run: busybox's httpd in a container, or nothing that listens
    // on a host without it.
    let containers = args.cells > 0
        && args.backend.unwrap_or(if crate::commands::garden::runc_usable() {
            crate::commands::garden::Backend::Runc
        } else {
            crate::commands::garden::Backend::Process
        }) == crate::commands::garden::Backend::Runc;
    crate::output::emit(&summary(&data_dir, &roles, containers));
    let result = supervise(roles, shutdown).await;
    let left: usize = reps.iter().map(|r| r.store.list().len()).sum();
    if left > 0 && containers {
        eprintln!(
            "{left} container{} left running; the next `diego dev` takes them over (`diego dev --reset` removes them)",
            if left == 1 { " is" } else { "s are" }
        );
    } else if left > 0 {
        // The process backend cannot hand processes to another server: they end with it.
        eprintln!(
            "{left} process-backend container{} ended with the cells (the next `diego dev` removes what is left of them)",
            if left == 1 { "" } else { "s" }
        );
    }
    result
}

/// `--reset`: the containers of every cell an earlier run had, then the data dir.
async fn reset(data_dir: &Path, dev: &DevArgs) -> anyhow::Result<()> {
    // A dev still running on this address would lose its containers under it.
    std::net::TcpListener::bind(dev.listen).with_context(|| {
        format!(
            "--reset: {} is in use; stop the diego dev running there first",
            dev.listen
        )
    })?;
    if !data_dir.exists() {
        return Ok(());
    }
    let mut destroyed = 0;
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(i) = name.strip_prefix("cell-").and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        destroyed += crate::commands::cell::destroy_leftovers(&cell_args(data_dir, i, dev, None)?)
            .await
            .with_context(|| format!("--reset: removing the containers of {name}"))?;
    }
    std::fs::remove_dir_all(data_dir).with_context(|| format!("--reset: deleting {}", data_dir.display()))?;
    eprintln!(
        "reset: destroyed {destroyed} container{} and deleted {}",
        if destroyed == 1 { "" } else { "s" },
        data_dir.display()
    );
    Ok(())
}

/// The log server on `listen`, its history in `logs/`.
async fn start_logs(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Role> {
    let stop = CancellationToken::new();
    let mut config = diego_logs::ServerConfig::new(listen);
    config.data_dir = Some(data_dir.join("logs"));
    let running = diego_logs::server::start(config, stop.clone())
        .await
        .with_context(|| format!("starting the log server on {listen} (--logs-listen)"))?;
    let url = running.url.clone();
    let task = async move { Ok(running.task.await.context("log server task")??) }.boxed();
    Ok(Role {
        name: "logs".into(),
        url: Some(url),
        detail: None,
        stop,
        task,
    })
}

/// `--lifecycle-dir`, else `$DIEGO_LIFECYCLE_DIR`, else `lifecycle/` beside the directory of
/// this binary, when it exists.
fn lifecycle_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() {
        return flag;
    }
    if let Some(dir) = std::env::var_os("DIEGO_LIFECYCLE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("lifecycle");
    dir.is_dir().then_some(dir)
}

/// The stack of an app that names none: debian when the cells have that rootfs, else busybox.
fn default_stack(dev: &DevArgs) -> &'static str {
    if preloaded_dir(dev).is_some() {
        "debian"
    } else {
        "busybox"
    }
}

/// Where the roles an apps service talks to are.
struct DevUrls<'a> {
    bbs: &'a str,
    logs: &'a str,
    files: &'a str,
    router: &'a str,
}

/// The apps service on `listen` (else 8893, or a free port when that is taken), its apps in
/// `apps/`.
async fn start_apps(
    data_dir: &Path,
    urls: &DevUrls<'_>,
    listen: Option<SocketAddr>,
    default_stack: &str,
) -> anyhow::Result<Role> {
    use diego_apps::service::{self, AppsConfig};
    let addr = listen.unwrap_or_else(|| {
        diego_apps::routes::DEFAULT_LISTEN
            .parse()
            .expect("a socket address")
    });
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "diego dev binds loopback only (got --apps-listen {addr}); use `diego apps` to serve other addresses"
    );
    let stop = CancellationToken::new();
    let config = |addr| {
        let mut c = AppsConfig::new(addr, data_dir.join("apps"), BbsUrls::one(urls.bbs), urls.files);
        c.logs_url = Some(urls.logs.to_string());
        c.router_url = Some(urls.router.to_string());
        c.default_stack = default_stack.to_string();
        // A dev cluster mends drift sooner than Diego's 30 s.
        c.sync_interval = std::time::Duration::from_secs(5);
        c
    };
    let in_use = |e: &anyhow::Error| {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        })
    };
    let running = on_default_or_free(("apps", "--apps-listen"), addr, listen.is_none(), in_use, |a| {
        service::start(config(a), stop.clone())
    })
    .await
    .with_context(|| format!("starting the apps service on {addr} (--apps-listen)"))?;
    let url = running.url.clone();
    let task = async move { running.task.await.context("apps task")? }.boxed();
    Ok(Role {
        name: "apps".into(),
        url: Some(url),
        detail: None,
        stop,
        task,
    })
}

/// Starts a role (`what`, set by `flag`) on `addr`; when that is its default (`defaulted`) and
/// taken by another process (`in_use` says so of the error), on a free loopback port instead,
/// saying so. An address the user gave is never swapped for another.
async fn on_default_or_free<T, E, Fut>(
    (what, flag): (&str, &str),
    addr: SocketAddr,
    defaulted: bool,
    in_use: impl Fn(&E) -> bool,
    start: impl Fn(SocketAddr) -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    match start(addr).await {
        Err(e) if defaulted && in_use(&e) => {
            eprintln!("{what}: {addr} is in use; listening on a free port instead ({flag} sets it)");
            start(([127, 0, 0, 1], 0).into()).await
        }
        other => other,
    }
}

/// The file server on `listen` (else 8892, or a free port when that is taken), its blobs in
/// `files/`, serving the lifecycle bundles of `lifecycle`.
async fn start_file_server(
    data_dir: &Path,
    dev: &DevArgs,
    lifecycle: Option<PathBuf>,
) -> anyhow::Result<Role> {
    let listen = dev.file_server_listen;
    use diego_fileserver::server::{self, ServerConfig, DEFAULT_LISTEN};
    let addr = listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "diego dev binds loopback only (got --file-server-listen {addr}); use `diego file-server` to serve other addresses"
    );
    let stop = CancellationToken::new();
    let config = |addr| {
        let mut c = ServerConfig::new(addr, data_dir.join("files"));
        c.lifecycle_dir = lifecycle.clone();
        if let Some(n) = dev.max_upload_bytes {
            c.max_upload_bytes = n.max(1);
        }
        c
    };
    let in_use = |e: &server::ServerError| matches!(e, server::ServerError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse);
    let running = on_default_or_free(
        ("file server", "--file-server-listen"),
        addr,
        listen.is_none(),
        in_use,
        |a| server::start(config(a), stop.clone()),
    )
    .await
    .with_context(|| format!("starting the file server on {addr} (--file-server-listen)"))?;
    let url = running.url.clone();
    let task = async move { Ok(running.task.await.context("file server task")??) }.boxed();
    Ok(Role {
        name: "files".into(),
        url: Some(url),
        detail: None,
        stop,
        task,
    })
}

async fn start_bbs(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Role> {
    let stop = CancellationToken::new();
    let dir = data_dir.join("bbs");
    let mut config = BbsConfig::new(
        listen,
        StoreConfig::Sqlite {
            data_dir: dir.clone(),
        },
    );
    // A dev cluster is small: converge and ask again for unplaced work sooner than Diego's
    // 30 s.
    config.convergence.interval = std::time::Duration::from_secs(5);
    config.convergence.rules.stale_unclaimed_ms = 5_000;
    config.convergence.rules.resend_pending_task_ms = 5_000;
    let running = diego_bbs::start(config, stop.clone())
        .await
        .with_context(|| format!("starting the BBS on {listen} with data in {}", dir.display()))?;
    let url = running.url();
    let task = async move { running.task.await.context("BBS task")?.context("BBS") }.boxed();
    Ok(Role {
        name: "bbs".into(),
        url: Some(url),
        detail: None,
        stop,
        task,
    })
}

/// The auctioneer on a free loopback port; the BBS finds it through the auctioneer lock.
async fn start_auctioneer(bbs_url: &str) -> anyhow::Result<Role> {
    let stop = CancellationToken::new();
    let mut config = diego_auction::service::AuctioneerConfig::new(bbs_url, ([127, 0, 0, 1], 0).into());
    // Alone in dev: take the lock over quickly after a restart.
    config.lock_ttl = std::time::Duration::from_secs(5);
    let running = diego_auction::service::start(config, stop.clone())
        .await
        .context("starting the auctioneer")?;
    let url = running.url.clone();
    let task = async move { Ok(running.task.await.context("auctioneer task")??) }.boxed();
    Ok(Role {
        name: "auctioneer".into(),
        url: Some(url),
        detail: None,
        stop,
        task,
    })
}

/// The router, on `--router-listen` or 127.0.0.1:8080 (a free port when that is taken).
async fn start_router(bbs_url: &str, logs_url: &str, dev: &DevArgs) -> anyhow::Result<Role> {
    use diego_routing::router::{self, RouterConfig};
    let admin = dev.router_admin.unwrap_or(([127, 0, 0, 1], 0).into());
    let listen = dev
        .router_listen
        .unwrap_or_else(|| router::DEFAULT_LISTEN.parse().expect("a socket address"));
    for (flag, addr) in [("--router-listen", listen), ("--router-admin", admin)] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "diego dev binds loopback only (got {flag} {addr}); use `diego router` to serve other addresses"
        );
    }
    let stop = CancellationToken::new();
    // Each app gets its RTR lines in the log server.
    let shipping = crate::commands::router::RtrShipping::start(logs_url, None)?;
    let config = |listen| {
        let mut c = RouterConfig::new(bbs_url, listen, admin);
        c.access_hook = Some(shipping.hook.clone());
        c
    };
    let in_use = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    let running = on_default_or_free(
        ("router", "--router-listen"),
        listen,
        dev.router_listen.is_none(),
        in_use,
        |a| router::start(config(a), stop.clone()),
    )
    .await
    .with_context(|| format!("starting the router on {listen} (admin {admin})"))?;
    let url = format!("http://{}", running.addr);
    let detail = format!("(admin http://{})", running.admin_addr);
    let task = async move {
        let ended = running.task.await.context("router task");
        shipping.finish().await;
        Ok(ended??)
    }
    .boxed();
    Ok(Role {
        name: "router".into(),
        url: Some(url),
        detail: Some(detail),
        stop,
        task,
    })
}

/// Cell `i` on a free loopback port, in zone `z<i+1>`, with its data in `cell-<i>/`.
/// Cell `i`'s flags, as `diego cell` would parse them.
/// With `logs_url`, the cell ships its log lines there.
fn cell_args(
    data_dir: &Path,
    i: usize,
    dev: &DevArgs,
    logs_url: Option<&str>,
) -> anyhow::Result<crate::commands::cell::CellArgs> {
    use clap::Parser as _;
    let dir = data_dir.join(format!("cell-{i}"));
    let mut argv = vec![
        "cell".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--zone".into(),
        format!("z{}", i + 1),
        // Dev notices and mends drift sooner than a production cell's 30 s.
        "--sync-interval".into(),
        "5".into(),
    ];
    if let Some(url) = logs_url {
        argv.push("--logs-url".into());
        argv.push(url.into());
    }
    if let Some(dir) = preloaded_dir(dev) {
        argv.push("--preloaded-dir".into());
        argv.push(dir.display().to_string());
    }
    if let Some(n) = dev.max_concurrent_creates {
        argv.push("--max-concurrent-creates".into());
        argv.push(n.to_string());
    }
    if let Some(b) = dev.backend {
        argv.push("--backend".into());
        argv.push(match b {
            crate::commands::garden::Backend::Runc => "runc".into(),
            crate::commands::garden::Backend::Process => "process".into(),
        });
    }
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        cell: crate::commands::cell::CellArgs,
    }
    Ok(Wrap::try_parse_from(&argv).context("cell flags")?.cell)
}

/// `--rootfs-dir` when `diego rootfs build debian` has built its tree there.
fn preloaded_dir(dev: &DevArgs) -> Option<&Path> {
    dev.rootfs_dir
        .join("debian")
        .is_dir()
        .then_some(dev.rootfs_dir.as_path())
}

async fn start_cell(
    data_dir: &Path,
    bbs_url: &str,
    logs_url: &str,
    i: usize,
    dev: &DevArgs,
) -> anyhow::Result<(Role, Arc<diego_rep::Rep>)> {
    let args = cell_args(data_dir, i, dev, Some(logs_url))?;
    let stop = CancellationToken::new();
    let (running, what) = crate::commands::cell::start(&BbsUrls::one(bbs_url), &args, None, stop.clone())
        .await
        .with_context(|| format!("starting cell {i}"))?;
    eprintln!("cell {} uses the {what}", running.rep.config.cell_id);
    let url = running.url.clone();
    let rep = running.rep.clone();
    let task = {
        let (rep, stop) = (rep.clone(), stop.clone());
        async move {
            running.task.await.context("cell task")??;
            if rep.drained() && !stop.is_cancelled() {
                // `diego cell drain`: this cell is done; the rest of the cluster keeps running.
                eprintln!(
                    "cell {} drained; the other roles keep running",
                    rep.config.cell_id
                );
                stop.cancelled().await;
            }
            Ok(())
        }
        .boxed()
    };
    let role = Role {
        name: format!("cell {i}"),
        url: Some(url),
        detail: None,
        stop,
        task,
    };
    Ok((role, rep))
}

/// Runs the roles under one supervisor until Ctrl-C or the first role to stop, then stops
/// them in reverse start order — cells first (their presences leave a BBS that is still
/// there, their last log lines a log server that is still there), then the auctioneer, then
/// the BBS (which releases its lock last), then the log server.
async fn supervise(roles: Vec<Role>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut members = Supervisor::new(shutdown.clone());
    for role in roles {
        let task = role.task.map(|r| r.map_err(|e| format!("{e:#}")));
        members.add(role.name, role.stop, task);
    }
    // The roles stop one after another, each within its own grace.
    let grace = process::SHUTDOWN_GRACE * 3;
    tokio::select! {
        stopped = members.wait() => match stopped {
            Ok(()) => {
                eprintln!("diego dev stopped");
                Ok(())
            }
            Err(e) => anyhow::bail!("diego dev stopped because a role failed: {e}"),
        },
        () = process::grace_expired(&shutdown, grace) => anyhow::bail!(
            "roles still running {grace:?} after the signal; exiting anyway"
        ),
    }
}

fn summary(data_dir: &Path, roles: &[Role], containers: bool) -> String {
    let mut lines =
        vec!["diego dev is running (Ctrl-C to stop; starting it again resumes the same state)".to_string()];
    let mut bbs_url = DEFAULT_BBS_URL.to_string();
    let mut logs_url = crate::commands::logs::DEFAULT_LOGS_URL.to_string();
    let mut apps_url = crate::commands::app::DEFAULT_APPS_URL.to_string();
    for role in roles {
        if let Some(url) = &role.url {
            let detail = role
                .detail
                .as_deref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            lines.push(format!("  {:<12}{url}{detail}", format!("{}:", role.name)));
            match role.name.as_str() {
                "bbs" => bbs_url = url.clone(),
                "logs" => logs_url = url.clone(),
                "apps" => apps_url = url.clone(),
                _ => {}
            }
        }
    }
    lines.push(format!("  {:<12}{}", "data dir:", data_dir.display()));
    let mut flag = if bbs_url == DEFAULT_BBS_URL {
        String::new()
    } else {
        format!(" --bbs {bbs_url}")
    };
    if logs_url != crate::commands::logs::DEFAULT_LOGS_URL {
        flag.push_str(&format!(" --logs {logs_url}"));
    }
    if apps_url != crate::commands::app::DEFAULT_APPS_URL {
        flag.push_str(&format!(" --apps {apps_url}"));
    }
    lines.push(String::new());
    lines.push("try:".to_string());
    lines.push(format!("  diego{flag} task submit hello -- echo hello"));
    lines.push(format!("  diego{flag} task list"));
    lines.push(if containers {
        format!("  diego{flag} lrp create web --instances 2 --port 8080 --route web.diego.localhost -- httpd -f -p 8080")
    } else {
        format!("  diego{flag} lrp create web --instances 2 --port 8080 --health-check none -- sleep 3600")
    });
    lines.push(format!("  diego{flag} logs web"));
    if let Some(router) = roles
        .iter()
        .find(|r| r.name == "router")
        .and_then(|r| r.url.as_deref())
    {
        lines.push(format!("  curl -H 'Host: web.diego.localhost' {router}/"));
    }
    lines.push(format!("  diego{flag} events"));
    lines.push(format!("  diego{flag} app push examples/static-site"));
    lines.join("\n")
}

/// `$XDG_DATA_HOME/diego/dev`, else `~/.local/share/diego/dev`.
pub fn default_data_dir() -> Option<PathBuf> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn data_dir_from(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Option<PathBuf> {
    // The XDG spec says to ignore relative values.
    let base = xdg.map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| {
        home.filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local/share"))
    })?;
    Some(base.join("diego/dev"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving_until_stopped(name: &str) -> Role {
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                Ok(())
            }
            .boxed()
        };
        Role {
            name: name.into(),
            url: None,
            detail: None,
            stop,
            task,
        }
    }

    /// `diego dev` serves until it is told to stop, however long that is; the grace for
    /// stopping starts with the signal.
    #[tokio::test(start_paused = true)]
    async fn roles_run_until_the_signal_however_long() {
        let shutdown = CancellationToken::new();
        let roles = vec![serving_until_stopped("bbs"), serving_until_stopped("cell 0")];
        let dev = tokio::spawn(supervise(roles, shutdown.clone()));
        tokio::time::sleep(process::SHUTDOWN_GRACE * 100).await;
        assert!(!dev.is_finished(), "diego dev stopped on its own");
        shutdown.cancel();
        dev.await.unwrap().expect("stops cleanly on the signal");
    }

    #[tokio::test(start_paused = true)]
    async fn a_role_stuck_after_the_signal_is_given_up_on() {
        let shutdown = CancellationToken::new();
        let stuck = Role {
            task: std::future::pending().boxed(),
            ..serving_until_stopped("stuck")
        };
        let dev = tokio::spawn(supervise(vec![stuck], shutdown.clone()));
        tokio::time::sleep(process::SHUTDOWN_GRACE * 100).await;
        assert!(!dev.is_finished());
        shutdown.cancel();
        let err = dev.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("still running"), "{err}");
    }

    #[test]
    fn data_dir_follows_xdg_then_home() {
        let p = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            data_dir_from(p("/xdg"), p("/home/u")),
            Some(PathBuf::from("/xdg/diego/dev"))
        );
        assert_eq!(
            data_dir_from(p("relative"), p("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/diego/dev"))
        );
        assert_eq!(
            data_dir_from(None, p("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/diego/dev"))
        );
        assert_eq!(data_dir_from(None, None), None);
    }
}
