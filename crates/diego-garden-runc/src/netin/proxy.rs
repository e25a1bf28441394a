//! The per-container net-in proxy: a small process of its own that holds a container's host
//! ports, so that they keep serving while the garden server (or the cell agent it runs in) is
//! killed and started again — the ports live exactly as long as the container.
//!
//! The server starts one proxy per container that has `net_in` mappings (`diego garden-netin …`,
//! or the crate's `diego-garden-netin` binary), once the container's init runs, and the proxy:
//! 1. leaves the server's session (`setsid`), so a Ctrl-C or a signal to the server's process
//!    group never reaches it (a SIGKILL of the server never reaches a child anyway);
//! 2. joins the network namespace of the init in `DIR/init.pid` with a [`Dialer`] and listens
//!    on every `host_ip:host_port` with a [`Forwarder`] (the same relay the server used to run
//!    in-process: one implementation);
//! 3. writes [`ProxyRecord`] (its pid and start time, the ports as bound) to `DIR/netin.json`
//!    atomically, then tells the server one line of JSON on stdout ([`Report`]): the ports, or
//!    which one was taken, or what failed (and exits);
//! 4. relays until the container is gone — its init no longer the process it was (pid and
//!    start time), or `DIR` removed — and exits by itself; the server ends it sooner with
//!    SIGKILL at destroy (see `backend/net_in.rs`).
//!
//! A restarted server finds the proxy by its record and takes it over: nothing is bound again,
//! so there is no window in which the port refuses connections and no port conflict. Its own
//! diagnostics go to `DIR/netin.log`.
//!
//! The proxy runs a current-thread tokio runtime plus the namespace thread: its resident memory
//! (measured in `crates/diego-cli/tests/host_ports.rs`) is the per-container cost of net-in.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diego_garden::procfs::live_start_time;
use diego_garden::PortMapping;

use super::{Dialer, Forwarder};

/// The proxy's record in the container directory.
pub const RECORD: &str = "netin.json";

/// The proxy's own diagnostics in the container directory.
pub const LOG: &str = "netin.log";

/// How often the proxy checks that its container still exists.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What the proxy is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    /// The container's directory (with `init.pid`; the record and log are written there).
    pub dir: PathBuf,
    pub host_ip: IpAddr,
    /// `(host port, container port)`; host port 0: the kernel picks.
    pub ports: Vec<(u16, u16)>,
}

impl ProxyArgs {
    /// The arguments that [`ProxyArgs::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--dir".into(),
            self.dir.clone().into(),
            "--host-ip".into(),
            self.host_ip.to_string().into(),
        ];
        for (host, container) in &self.ports {
            args.push("--map".into());
            args.push(format!("{host}:{container}").into());
        }
        args
    }

    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let (mut dir, mut host_ip, mut ports) = (None, None, Vec::new());
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let value = match flag.as_str() {
                "--dir" | "--host-ip" | "--map" => {
                    args.next().ok_or_else(|| format!("{flag} needs a value"))?
                }
                _ => return Err(format!("unknown argument {flag:?}")),
            };
            let text = value.to_string_lossy();
            match flag.as_str() {
                "--dir" => dir = Some(PathBuf::from(value)),
                "--host-ip" => {
                    host_ip = Some(
                        text.parse::<IpAddr>()
                            .map_err(|e| format!("--host-ip {text:?}: {e}"))?,
                    )
                }
                _ => {
                    let bad = || format!("--map {text:?}: expected HOST_PORT:CONTAINER_PORT");
                    let (host, container) = text.split_once(':').ok_or_else(bad)?;
                    let host: u16 = host.parse().map_err(|_| bad())?;
                    let container: u16 = container.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
                    ports.push((host, container));
                }
            }
        }
        if ports.is_empty() {
            return Err("missing --map".into());
        }
        Ok(ProxyArgs {
            dir: dir.ok_or("missing --dir")?,
            host_ip: host_ip.ok_or("missing --host-ip")?,
            ports,
        })
    }
}

/// What a running proxy leaves in `<container dir>/netin.json`, for a restarted server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyRecord {
    pub pid: u32,
    /// The proxy's start time (field 22 of `/proc/<pid>/stat`): with the pid it names the
    /// process, so a reused pid is never taken for the proxy (nor signalled).
    pub start_time: u64,
    pub host_ip: IpAddr,
    /// The mappings as bound (host ports chosen when 0 was asked for), in order.
    pub ports: Vec<PortMapping>,
}

impl ProxyRecord {
    /// The record in container directory `dir`, if there is a readable one.
    pub fn read(dir: &Path) -> Option<ProxyRecord> {
        let bytes = std::fs::read(dir.join(RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes it to `dir` atomically (temp file + rename): a reader finds all of it or none.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, dir.join(RECORD))
    }

    /// Whether the recorded process still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        live_start_time(self.pid) == Some(self.start_time)
    }
}

/// The one line the proxy writes on stdout, once it listens or has failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Report {
    /// Every port listens (host ports chosen when 0 was asked for), in order; the record is
    /// written.
    Listening { ports: Vec<PortMapping> },
    /// `host_port` was taken; nothing listens, and the proxy has exited.
    InUse { host_port: u16 },
    /// Anything else; the proxy has exited.
    Failed { message: String },
}

/// The proxy's entry point: serves the mappings described by `args` until the container is
/// gone and returns the proxy's exit code (0 then; 1 if it could not start; 2 for bad
/// arguments).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = match ProxyArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("diego garden-netin: {e}");
            return 2;
        }
    };
    // Our own session: terminal signals and the server's process group no longer reach us.
    let _ = nix::unistd::setsid();
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(args.dir.join(LOG))
        .ok();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let message = format!("starting a runtime: {e}");
            note(&mut log, &message);
            report(&Report::Failed { message });
            return 1;
        }
    };
    runtime.block_on(run(&args, &mut log))
}

async fn run(args: &ProxyArgs, log: &mut Option<File>) -> i32 {
    let (init, forwarders) = match listen(args).await {
        Ok(started) => started,
        Err(failure) => {
            note(log, &format!("not started: {failure:?}"));
            report(&failure);
            return 1;
        }
    };
    let ports: Vec<PortMapping> = forwarders
        .iter()
        .map(|f| PortMapping {
            host_port: u32::from(f.host_port()),
            container_port: u32::from(f.container_port()),
        })
        .collect();
    let me = std::process::id();
    let Some(started) = live_start_time(me) else {
        let message = "reading this process's start time from /proc".to_string();
        note(log, &message);
        report(&Report::Failed { message });
        return 1;
    };
    let record = ProxyRecord {
        pid: me,
        start_time: started,
        host_ip: args.host_ip,
        ports: ports.clone(),
    };
    // Recorded before the server hears of it: a server killed right now still finds us.
    if let Err(e) = record.write(&args.dir) {
        let message = format!("writing {}: {e}", args.dir.join(RECORD).display());
        note(log, &message);
        report(&Report::Failed { message });
        return 1;
    }
    report(&Report::Listening { ports });
    note(log, &format!("pid {me} listening: {:?}", record.ports));
    container_gone(&args.dir, init).await;
    note(log, "the container is gone; exiting");
    for f in forwarders {
        f.stop().await;
    }
    0
}

/// The container's init, as (pid, start time).
type Init = (u32, u64);

/// Joins the init's namespace and listens on every port (all or nothing).
async fn listen(args: &ProxyArgs) -> Result<(Init, Vec<Forwarder>), Report> {
    let failed = |message: String| Report::Failed { message };
    let pid_file = args.dir.join("init.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| failed(format!("reading {}: {e}", pid_file.display())))?
        .trim()
        .parse()
        .map_err(|e| failed(format!("{}: {e}", pid_file.display())))?;
    let started = live_start_time(pid)
        .ok_or_else(|| failed(format!("the container's init (pid {pid}) is not running")))?;
    let dialer = Dialer::for_pid(pid).map_err(|e| failed(e.to_string()))?;
    let mut forwarders = Vec::with_capacity(args.ports.len());
    for &(host_port, container_port) in &args.ports {
        match Forwarder::start(args.host_ip, host_port, container_port, dialer.clone()).await {
            Ok(f) => forwarders.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(Report::InUse { host_port }),
            Err(e) => return Err(failed(format!("listening on {}:{host_port}: {e}", args.host_ip))),
        }
    }
    Ok(((pid, started), forwarders))
}

/// Returns once the container's init is no longer the process it was, or `dir` is gone.
async fn container_gone(dir: &Path, (pid, started): Init) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !dir.is_dir() || live_start_time(pid) != Some(started) {
            return;
        }
    }
}

/// Tells the server; a server that went away meanwhile is no error (it reads the record).
fn report(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn note(log: &mut Option<File>, message: &str) {
    if let Some(log) = log {
        let _ = writeln!(log, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let args = ProxyArgs {
            dir: "/depot/c1".into(),
            host_ip: "127.0.0.1".parse().unwrap(),
            ports: vec![(0, 8080), (61001, 2222)],
        };
        assert_eq!(ProxyArgs::parse(args.to_args()).unwrap(), args);
        let parse = |a: &[&str]| ProxyArgs::parse(a.iter().map(OsString::from));
        assert_eq!(
            parse(&["--dir", "/d", "--host-ip", "127.0.0.1"]).unwrap_err(),
            "missing --map"
        );
        assert_eq!(
            parse(&["--host-ip", "127.0.0.1", "--map", "1:2"]).unwrap_err(),
            "missing --dir"
        );
        for bad in ["8080", "x:1", "1:0", "70000:1", "1:"] {
            let err = parse(&["--dir", "/d", "--host-ip", "127.0.0.1", "--map", bad]).unwrap_err();
            assert!(err.contains("HOST_PORT:CONTAINER_PORT"), "{bad}: {err}");
        }
        assert!(parse(&["--dir", "/d", "--host-ip", "localhost", "--map", "1:2"]).is_err());
        assert!(parse(&["--bogus", "x"]).is_err());
        assert!(parse(&["--dir"]).is_err());
    }

    #[test]
    fn records_round_trip_and_name_a_live_process() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ProxyRecord::read(dir.path()), None);
        let me = std::process::id();
        let record = ProxyRecord {
            pid: me,
            start_time: live_start_time(me).unwrap(),
            host_ip: "127.0.0.1".parse().unwrap(),
            ports: vec![PortMapping {
                host_port: 61001,
                container_port: 8080,
            }],
        };
        record.write(dir.path()).unwrap();
        assert_eq!(ProxyRecord::read(dir.path()), Some(record.clone()));
        assert!(!dir.path().join(format!("{RECORD}.tmp")).exists());
        assert!(record.alive());
        // The same pid with another start time is another process.
        let reused = ProxyRecord {
            start_time: record.start_time + 1,
            ..record
        };
        assert!(!reused.alive());
    }

    #[test]
    fn reports_are_one_tagged_json_line() {
        let r = Report::InUse { host_port: 61001 };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"outcome":"in_use","host_port":61001}"#);
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), r);
    }
}
