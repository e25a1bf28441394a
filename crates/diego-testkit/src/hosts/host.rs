//! One host of a [`Net`](super::Net): a network namespace with `lo` and `eth0` (a veth whose
//! peer is a port of the net's bridge), the processes started in it, and the verbs a test
//! needs — kill the host, cut its link, restore it.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use diego_garden_runc::netin::{Dialer, Forwarder};

use super::ip::ip_in;
use super::netns;
use super::process::HostProcess;

/// How long the processes of a killed host may take to leave its namespace.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A host of a [`Net`](super::Net). Clones are handles of the same host; the net kills its
/// processes and deletes its namespace when dropped.
#[derive(Clone)]
pub struct Host(Arc<Inner>);

struct Inner {
    name: String,
    netns: String,
    /// The net's switch namespace and this host's port on its bridge there.
    switch: String,
    port: String,
    addr: Ipv4Addr,
    /// Where its processes' output goes.
    logs: PathBuf,
    processes: Mutex<Vec<HostProcess>>,
    /// A thread inside the namespace that connects for the test (made on first use).
    dialer: Mutex<Option<Dialer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A name a file and a namespace name may carry: `a-z`, `0-9` and inner `-`, 1 to 20 bytes.
pub(super) fn check_name(field: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 20 || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        bail!("{field} {name:?}: must be 1 to 20 of a-z, 0-9 and inner '-'");
    }
    Ok(())
}

impl Host {
    /// Makes namespace `netns` with `lo` up and `eth0` at `addr/24`, its peer `port` a port of
    /// bridge `bridge` in namespace `switch`. On error, whatever was made is deleted.
    pub(super) fn create(
        name: &str,
        netns: String,
        switch: &str,
        bridge: &str,
        port: String,
        addr: Ipv4Addr,
        logs: PathBuf,
    ) -> Result<Host> {
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        super::ip::ip(&["netns", "add", &netns])?;
        let host = Host(Arc::new(Inner {
            name: name.to_string(),
            netns,
            switch: switch.to_string(),
            port,
            addr,
            logs,
            processes: Mutex::new(Vec::new()),
            dialer: Mutex::new(None),
        }));
        if let Err(e) = host.wire(bridge) {
            let _ = host.delete();
            return Err(e.context(format!("wiring host {name}")));
        }
        Ok(host)
    }

    fn wire(&self, bridge: &str) -> Result<()> {
        let (ns, switch, port) = (&self.0.netns, &self.0.switch, &self.0.port);
        ip_in(ns, &["link", "set", "lo", "up"])?;
        // Made in the switch namespace with its peer moved straight into the host's: the root
        // namespace never holds either end.
        ip_in(
            switch,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ip_in(switch, &["link", "set", port, "master", bridge, "up"])?;
        ip_in(
            ns,
            &["addr", "add", &format!("{}/24", self.0.addr), "dev", "eth0"],
        )?;
        ip_in(ns, &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Its address on the net (on `eth0`, inside its namespace only).
    pub fn addr(&self) -> Ipv4Addr {
        self.0.addr
    }

    /// `addr():port`.
    pub fn socket(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.0.addr, port))
    }

    /// Its network namespace's name (`ip netns list` shows it).
    pub fn netns(&self) -> &str {
        &self.0.netns
    }

    /// Its network namespace's file, `/var/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.0.netns)
    }

    /// The directory its processes' output files are in.
    pub fn log_dir(&self) -> &Path {
        &self.0.logs
    }

    /// Starts `cmd` inside the host: in its network namespace, leading a process group of its
    /// own, stdin from `/dev/null`, stdout and stderr appended to `<name>.stdout` and
    /// `<name>.stderr` in [`Host::log_dir`] (so a restarted process adds to its predecessor's).
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<HostProcess> {
        check_name("process name", name)?;
        let stdout = self.0.logs.join(format!("{name}.stdout"));
        let stderr = self.0.logs.join(format!("{name}.stderr"));
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))
        };
        use std::os::unix::process::CommandExt as _;
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout)?)
            .stderr(open(&stderr)?)
            .process_group(0);
        let child = netns::spawn_in(&self.netns_path(), &mut cmd)
            .with_context(|| format!("host {}: spawning {name} ({:?})", self.0.name, cmd.get_program()))?;
        let process = HostProcess::new(name, child, stdout, stderr);
        lock(&self.0.processes).push(process.clone());
        Ok(process)
    }

    /// Starts the `diego` binary at `bin` with `args` inside the host (see [`Host::spawn`]),
    /// with the environment of [`crate::diego_command`]. Tests of `diego-cli` pass
    /// `env!("CARGO_BIN_EXE_diego")`.
    pub fn spawn_diego<S: AsRef<OsStr>>(
        &self,
        bin: impl AsRef<Path>,
        name: &str,
        args: &[S],
    ) -> Result<HostProcess> {
        self.spawn(name, crate::diego_command(bin.as_ref(), args))
    }

    /// The processes started here ([`Host::spawn`]) so far, running or not.
    pub fn spawned(&self) -> Vec<HostProcess> {
        lock(&self.0.processes).clone()
    }

    /// The ids of every process in the host's network namespace now: those started here and
    /// whatever they started.
    pub fn processes(&self) -> Result<Vec<u32>> {
        netns::processes_in(&self.netns_path())
            .with_context(|| format!("listing the processes of host {}", self.0.name))
    }

    /// Kills the whole host: SIGKILLs every process it started with its process group, then
    /// anything else still in its network namespace (a descendant that left the group), and
    /// waits until none is left. The namespace and its link stay: the host can start
    /// processes again, as a rebooted machine would.
    pub fn kill(&self) -> Result<()> {
        let started = self.spawned();
        for p in &started {
            p.kill();
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let left = self.processes()?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "host {}: processes {left:?} still in its network namespace {KILL_TIMEOUT:?} after SIGKILL",
                    self.0.name
                );
            }
            netns::kill_all(&left);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cuts the host off the net, as a pulled cable would: its port on the bridge goes down,
    /// so nothing passes between it and the other hosts (connections time out; nothing is
    /// refused). Its processes keep running and its own interfaces stay as they were.
    pub fn partition(&self) -> Result<()> {
        ip_in(&self.0.switch, &["link", "set", &self.0.port, "down"])
            .with_context(|| format!("partitioning host {}", self.0.name))
    }

    /// Puts the host back on the net after [`Host::partition`].
    pub fn heal(&self) -> Result<()> {
        ip_in(&self.0.switch, &["link", "set", &self.0.port, "up"])
            .with_context(|| format!("healing host {}", self.0.name))
    }

    fn dialer(&self) -> std::io::Result<Dialer> {
        let mut slot = lock(&self.0.dialer);
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Dialer::open(&self.netns_path())?;
        *slot = Some(d.clone());
        Ok(d)
    }

    /// A TCP connection to `addr` made from inside the host (across the net for another
    /// host's address; its own services on its address or `127.0.0.1`). Gives up after 5 s.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        self.dialer()?.connect_to(addr).await
    }

    /// A listener on `127.0.0.1:<ephemeral>` in the test's own namespace relaying each
    /// connection to `target` as seen from inside the host — how the test reaches the host's
    /// services (a `BbsClient` at `http://<local_addr>`). It is the test's console cable: a
    /// partition does not cut it. Stops when dropped; drop it before the [`Net`](super::Net).
    pub async fn forward(&self, target: SocketAddr) -> Result<Forwarder> {
        let dialer = self
            .dialer()
            .with_context(|| format!("joining host {}", self.0.name))?;
        Forwarder::start_to(SocketAddr::from(([127, 0, 0, 1], 0)), target, dialer)
            .await
            .with_context(|| format!("forwarding from loopback to {target} in host {}", self.0.name))
    }

    /// Prints the last lines of each of its processes' stderr (for a failing test).
    pub(super) fn print_log_tails(&self) {
        for p in self.spawned() {
            eprintln!(
                "---- host {}: last lines of {} (pid {}) ----",
                self.0.name,
                p.name(),
                p.pid()
            );
            for line in p.stderr_tail(60) {
                eprintln!("{line}");
            }
        }
    }

    /// Kills its processes, ends the dialer thread and deletes the namespace (with `eth0`,
    /// and so its veth peer on the bridge).
    pub(super) fn delete(&self) -> Result<()> {
        let killed = self.kill();
        lock(&self.0.dialer).take();
        super::ip::ip(&["netns", "del", &self.0.netns])?;
        killed
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.0.name)
            .field("netns", &self.0.netns)
            .field("addr", &self.0.addr)
            .finish()
    }
}
