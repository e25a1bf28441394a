//! `diego garden`: serve a container backend over HTTP.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use diego_garden::process::ProcessBackend;
use diego_garden::{Capacity, DynBackend};
use diego_garden_runc::{RuncBackend, RuncConfig, ShimCommand};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Real isolation with runc (root only).
    Runc,
    /// Processes on the host, no isolation (any user).
    Process,
}

#[derive(Debug, clap::Args)]
pub struct GardenArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7777")]
    pub listen: SocketAddr,
    /// Which backend runs the containers.
    #[arg(long, value_enum, default_value_t = Backend::Process)]
    pub backend: Backend,
    /// Directory for containers' state. With the runc backend, also holds the root
    /// filesystem cache (`<depot>/../<depot name>.rootfs`) and runc's state.
    #[arg(long, value_name = "DIR")]
    pub depot: PathBuf,
    /// Directory of configured root filesystems (`preloaded:NAME` = `DIR/NAME` or
    /// `DIR/NAME.tar`; `preloaded:busybox` is always available). runc backend only.
    #[arg(long, value_name = "DIR")]
    pub preloaded_dir: Option<PathBuf>,
    /// Memory the backend offers, in MB (default: the machine's).
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    /// Disk the backend offers, in MB.
    #[arg(long, value_name = "MB", default_value_t = 64 * 1024)]
    pub disk_mb: u64,
    /// Most containers at once (Diego's default is 250).
    #[arg(long, value_name = "N", default_value_t = 250)]
    pub max_containers: u64,
    /// Address the containers' host ports listen on and are reported at (runc backend);
    /// default: the --listen address, or 127.0.0.1 when that is 0.0.0.0.
    #[arg(long, value_name = "IP")]
    pub host_ip: Option<IpAddr>,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

/// Where a backend's containers are reached: `explicit` (`--host-ip`), else the IP the role
/// listens on, else loopback when it listens on every address (then only this machine
/// reaches them; a cluster sets `--host-ip`).
pub fn host_ip(explicit: Option<IpAddr>, listen: SocketAddr) -> IpAddr {
    match explicit {
        Some(ip) => ip,
        None if listen.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        None => listen.ip(),
    }
}

/// MemTotal of /proc/meminfo, in bytes.
pub fn machine_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Processes' supervisors are this same binary: `diego garden-shim …`.
pub fn shim_command() -> anyhow::Result<ShimCommand> {
    let exe = std::env::current_exe().context("finding this executable for the process shims")?;
    Ok(ShimCommand::new(exe, ["garden-shim"]))
}

/// Containers' net-in proxies are this same binary too: `diego garden-netin …`.
pub fn netin_proxy_command() -> anyhow::Result<ShimCommand> {
    let exe = std::env::current_exe().context("finding this executable for the net-in proxies")?;
    Ok(ShimCommand::new(exe, ["garden-netin"]))
}

/// A container backend over `depot`. The runc backend keeps its rootfs cache and runc state
/// beside the depot (`<depot>.rootfs`, `<depot>.runc`: the depot holds exactly one directory
/// per container) and takes over the containers an earlier run left there; the process
/// backend ends them (kills their process groups) and removes them.
pub async fn open_backend(
    kind: Backend,
    depot: &Path,
    preloaded_dir: Option<PathBuf>,
    capacity: Capacity,
    host_ip: IpAddr,
) -> anyhow::Result<DynBackend> {
    Ok(match kind {
        Backend::Process => {
            // Opening ends an earlier run's containers and waits for their processes to die.
            let dir = depot.to_path_buf();
            let opened = tokio::task::spawn_blocking(move || ProcessBackend::new(dir, capacity))
                .await
                .context("opening the process backend")?;
            Arc::new(opened.with_context(|| format!("opening the depot {}", depot.display()))?)
        }
        Backend::Runc => {
            let name = depot
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "depot".into());
            let sibling = |suffix: &str| depot.with_file_name(format!("{name}.{suffix}"));
            let config = RuncConfig {
                depot: depot.to_path_buf(),
                store: sibling("rootfs"),
                preloaded_dir,
                runc_root: sibling("runc"),
                capacity,
                host_ip: host_ip.to_string(),
                shim: shim_command()?,
                netin_proxy: netin_proxy_command()?,
            };
            Arc::new(
                RuncBackend::open(config)
                    .await
                    .context("starting the runc backend (it needs root and runc)")?,
            )
        }
    })
}

/// Whether the runc backend can work here: root, and `runc` runs.
pub fn runc_usable() -> bool {
    process::is_root()
        && std::process::Command::new("runc")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

pub async fn run(args: GardenArgs, tls: Option<diego_runtime::tls::Tls>) -> anyhow::Result<()> {
    process::init_logging();
    let capacity = Capacity {
        memory_bytes: match args.memory_mb {
            Some(mb) => mb << 20,
            None => machine_memory_bytes().context("reading /proc/meminfo")?,
        },
        disk_bytes: args.disk_mb << 20,
        max_containers: args.max_containers,
    };
    let backend = open_backend(
        args.backend,
        &args.depot,
        args.preloaded_dir.clone(),
        capacity,
        host_ip(args.host_ip, args.listen),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    eprintln!(
        "diego garden ({:?} backend{}) listening on {}://{}, depot {}",
        args.backend,
        if args.backend == Backend::Process {
            ": NO isolation, processes run on this host as this user"
        } else {
            ""
        },
        diego_runtime::tls::scheme(tls.as_ref()),
        listener.local_addr()?,
        args.depot.display()
    );
    diego_garden::http::server::serve(listener, backend, shutdown, Default::default(), tls)
        .await
        .context("serving the garden API")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_reached_at_the_flag_else_the_listen_ip_else_loopback() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            (Some(ip("10.1.2.3")), addr("0.0.0.0:1801"), ip("10.1.2.3")),
            (Some(ip("10.1.2.3")), addr("10.9.9.9:1801"), ip("10.1.2.3")),
            (None, addr("10.9.9.9:1801"), ip("10.9.9.9")),
            (None, addr("127.0.0.1:1801"), ip("127.0.0.1")),
            (None, addr("0.0.0.0:1801"), ip("127.0.0.1")),
            (None, addr("[::]:1801"), ip("127.0.0.1")),
        ];
        for (explicit, listen, want) in cases {
            assert_eq!(host_ip(explicit, listen), want, "{explicit:?} {listen}");
        }
    }
}
