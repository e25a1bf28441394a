//! A container's net-in, as the server sees it: a [proxy process](crate::netin::proxy) per
//! container holds the host ports, so the server holds none and its death closes none.
//!
//! - [`start`] launches the proxy once the container's init runs and waits for its one-line
//!   report: the ports as bound, or which one was taken (`Invalid`).
//! - [`adopt`] (after a restart) takes over the proxy recorded in the container's
//!   `netin.json` if it still runs with the same mappings — nothing is bound again — and starts
//!   a new one on the recorded ports otherwise.
//! - [`stop`] SIGKILLs the recorded proxy (pid and start time checked) and waits until it is
//!   gone: its ports are closed when it returns.
//!
//! A proxy this server started is its child: a task reaps it when it exits. One taken over is
//! not; whoever it was re-parented to reaps it.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use diego_garden::{GardenError, PortMapping};
use tokio::io::AsyncBufReadExt as _;
use tracing::{debug, info, warn};

use crate::netin::proxy::{self, ProxyArgs, ProxyRecord, Report};
use crate::shim::ShimCommand;

/// How long a starting proxy may take to listen (it joins a namespace and binds sockets).
const START_WAIT: Duration = Duration::from_secs(10);

/// How long [`stop`] waits for a killed proxy to be gone.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Starts the proxy for the container in `dir` (whose init must run), listening on `host_ip`
/// (an IP address; 127.0.0.1 keeps the traffic on loopback) for each `(host port, container
/// port)`; the mappings as bound. No ports, no proxy. All or nothing: a proxy that fails has
/// bound nothing and has exited.
pub(super) async fn start(
    command: &ShimCommand,
    host_ip: &str,
    ports: &[(u16, u16)],
    dir: &Path,
) -> Result<Vec<PortMapping>, GardenError> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let host_ip: IpAddr = host_ip
        .parse()
        .map_err(|e| GardenError::Unavailable(format!("net_in: configured host_ip {host_ip:?}: {e}")))?;
    let args = ProxyArgs {
        dir: dir.to_path_buf(),
        host_ip,
        ports: ports.to_vec(),
    };
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .args(args.to_args())
        // A long-lived process keeps no directory of ours busy.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            GardenError::Unavailable(format!(
                "net_in: starting the proxy {}: {e}",
                command.program.display()
            ))
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read = tokio::time::timeout(START_WAIT, tokio::io::BufReader::new(stdout).read_line(&mut line)).await;
    let report = match read {
        Ok(Ok(n)) if n > 0 => serde_json::from_str::<Report>(&line).ok(),
        _ => None,
    };
    if let Some(Report::Listening { ports }) = report {
        debug!(dir = %dir.display(), pid = child.id(), ?ports, "net-in proxy listening");
        tokio::spawn(reap(child, dir.display().to_string()));
        return Ok(ports);
    }
    // It exits by itself after a failure; one that said nothing in time is ended here.
    let _ = child.start_kill();
    let _ = child.wait().await;
    Err(match report {
        Some(Report::InUse { host_port }) => GardenError::Invalid(format!(
            "net_in host port {host_port} on {host_ip} is already in use"
        )),
        Some(Report::Failed { message }) => GardenError::Unavailable(format!("net_in: {message}")),
        _ => GardenError::Unavailable(format!(
            "net_in: the proxy {} did not report within {START_WAIT:?} (see {})",
            command.program.display(),
            dir.join(proxy::LOG).display()
        )),
    })
}

/// Waits for a proxy this server started, so that it leaves no zombie.
async fn reap(mut child: tokio::process::Child, dir: String) {
    use std::os::unix::process::ExitStatusExt as _;
    match child.wait().await {
        // Its container went away (0), or destroy killed it.
        Ok(s) if s.code() == Some(0) || s.signal() == Some(9) => {
            debug!(dir, status = %s, "net-in proxy exited")
        }
        status => warn!(dir, ?status, "the net-in proxy died: its host ports are closed"),
    }
}

/// How [`adopt`] got the container's proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Adopted {
    /// No mappings, no proxy.
    None,
    /// The recorded proxy still ran with these mappings: taken over as it is.
    Running,
    /// There was none (or one with other mappings, or dead): a new one was started.
    Started,
}

/// After a restart: the container in `dir` keeps its mappings `ports` — through the proxy
/// that still serves them if there is one, else through a new one on the same host ports.
pub(super) async fn adopt(
    command: &ShimCommand,
    host_ip: &str,
    ports: &[PortMapping],
    dir: &Path,
) -> Result<Adopted, GardenError> {
    if ports.is_empty() {
        return Ok(Adopted::None);
    }
    if let Some(record) = ProxyRecord::read(dir) {
        let same_ip = host_ip.parse::<IpAddr>().is_ok_and(|ip| ip == record.host_ip);
        if same_ip && record.ports == ports && record.alive() {
            info!(dir = %dir.display(), pid = record.pid, "took over the net-in proxy");
            return Ok(Adopted::Running);
        }
    }
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || stop(&owned))
        .await
        .map_err(|e| GardenError::Unavailable(format!("background task failed: {e}")))??;
    let wanted: Vec<(u16, u16)> = ports
        .iter()
        .filter_map(|m| {
            Some((
                u16::try_from(m.host_port).ok()?,
                u16::try_from(m.container_port).ok()?,
            ))
        })
        .collect();
    let bound = start(command, host_ip, &wanted, dir).await?;
    info!(dir = %dir.display(), ports = ?bound, "started a new net-in proxy");
    Ok(Adopted::Started)
}

/// Ends the proxy recorded in `dir`, if it runs, and removes its record; when this returns its
/// host ports are closed (blocking).
pub(super) fn stop(dir: &Path) -> Result<(), GardenError> {
    let Some(record) = ProxyRecord::read(dir) else {
        return Ok(());
    };
    if record.alive() {
        let pid = nix::unistd::Pid::from_raw(record.pid as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            debug!(pid = record.pid, error = %e, "killing the net-in proxy");
        }
        // A process's sockets are closed before it becomes a zombie, which `alive` ignores.
        let deadline = Instant::now() + STOP_WAIT;
        while record.alive() {
            if Instant::now() >= deadline {
                return Err(GardenError::Unavailable(format!(
                    "the net-in proxy (pid {}) of {} is still running {STOP_WAIT:?} after SIGKILL",
                    record.pid,
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    match std::fs::remove_file(dir.join(proxy::RECORD)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GardenError::Unavailable(format!(
            "removing {}: {e}",
            dir.join(proxy::RECORD).display()
        ))),
    }
}
