//! A multi-host test harness (docs/140-multihost-tests.md): hosts as network namespaces the
//! test makes, joined by a bridge in a namespace of their own, each host running its roles as
//! child processes.
//!
//! - [`Net`]: one test's network — a "switch" namespace `dg<pid>-<n>` holding bridge `br0`,
//!   and the subnet `10.X.Y.0/24` its hosts are on. Nothing is added to the test's own
//!   namespace but the namespace files under `/var/run/netns`. Dropped (also when the test
//!   panics): every host's processes are killed, their output printed if panicking, and every
//!   namespace deleted. Made, it first deletes the namespaces of test processes that died
//!   without cleaning up.
//! - [`Host`]: a namespace `dg<pid>-<n>-<name>` with `lo` up and `eth0` at `10.X.Y.<i>` whose
//!   veth peer is a port of the bridge; [`Host::spawn`] starts processes in it,
//!   [`Host::kill`] kills all of them, [`Host::partition`] and [`Host::heal`] take its port
//!   down and up, [`Host::forward`] and [`Host::connect`] let the test reach its services.
//! - [`HostProcess`]: a started process — PID, output files, exit.
//!
//! Needs root; [`Net::new`] skips (returns `None`, printing why) without it, except under CI.

mod host;
mod ip;
mod netns;
mod process;

pub use host::Host;
pub use process::HostProcess;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context as _, Result};
use tempfile::TempDir;

/// The bridge's name inside the switch namespace (alone there, so it needs no unique name).
const BRIDGE: &str = "br0";

/// Nets made by this process so far: the `<n>` of their names.
static NETS: AtomicU32 = AtomicU32::new(0);

/// One test's network of hosts; see the module docs.
pub struct Net {
    /// `dg<pid>-<n>`: the switch namespace, and the prefix of every host's.
    id: String,
    subnet: [u8; 3],
    hosts: Vec<Host>,
    /// The hosts' output files, `<dir>/<host>/<process>.std{out,err}`.
    dir: TempDir,
}

impl Net {
    /// A new net with no hosts yet. Without root it prints why `test` is skipped and returns
    /// `None` — under CI (`CI` set, as root) that is a failure instead, as is a missing `ip`.
    pub fn new(test: &str) -> Result<Option<Net>> {
        if !crate::host::is_root() {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: needs root (network namespaces), and CI runs tests as root");
            }
            println!("SKIPPED {test}: needs root (network namespaces)");
            return Ok(None);
        }
        if !crate::host::tool_for(test, "ip", "apt-get install iproute2") {
            return Ok(None);
        }
        for name in netns::sweep_stale() {
            println!("removed network namespace {name}: the test process that made it is gone");
        }
        let pid = std::process::id();
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{pid}-{n}", netns::PREFIX);
        let subnet = subnet(pid, n);
        let dir = tempfile::Builder::new()
            .prefix("diego-net-")
            .tempdir()
            .context("creating the net's log directory")?;
        ip::ip(&["netns", "add", &id])?;
        let net = Net {
            id,
            subnet,
            hosts: Vec::new(),
            dir,
        };
        // From here on, dropping `net` deletes the switch namespace again.
        ip::ip_in(&net.id, &["link", "set", "lo", "up"])?;
        ip::ip_in(&net.id, &["link", "add", BRIDGE, "type", "bridge"])?;
        ip::ip_in(&net.id, &["link", "set", BRIDGE, "up"])?;
        Ok(Some(net))
    }

    /// Adds host `name` (`a-z`, `0-9`, inner `-`; unique in the net) at the next address:
    /// `10.X.Y.1` for the first host, `.2` for the second, and so on up to 254 hosts.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        host::check_name("host name", name)?;
        if self.hosts.iter().any(|h| h.name() == name) {
            bail!("host name {name:?}: the net already has a host of that name");
        }
        let i = self.hosts.len() + 1;
        if i > 254 {
            bail!("host name {name:?}: the net is full (254 hosts on a /24)");
        }
        let [a, b, c] = self.subnet;
        let host = Host::create(
            name,
            format!("{}-{name}", self.id),
            &self.id,
            BRIDGE,
            format!("p{i}"),
            Ipv4Addr::new(a, b, c, i as u8),
            self.dir.path().join(name),
        )?;
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// The hosts, in the order they were added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name() == name)
    }

    /// The switch namespace's name; every host's namespace name starts with it and `-`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The net's subnet, `10.X.Y.0/24`.
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        let [a, b, c] = self.subnet;
        (Ipv4Addr::new(a, b, c, 0), 24)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for host in &self.hosts {
            if panicking {
                host.print_log_tails();
            }
            if let Err(e) = host.delete() {
                eprintln!("net {}: {e:#}", self.id);
            }
        }
        if let Err(e) = ip::ip(&["netns", "del", &self.id]) {
            eprintln!("net {}: {e:#}", self.id);
        }
    }
}

/// `10.X.Y` for net `n` of test process `pid`, X in 100..=199. The hosts' addresses exist only
/// inside the net's namespaces, so two nets could share a subnet unharmed; distinct subnets
/// make an address that leaked from one test into another fail to connect instead of reaching
/// the wrong host.
fn subnet(pid: u32, n: u32) -> [u8; 3] {
    let k = (pid.wrapping_mul(7).wrapping_add(n)) % (100 * 256);
    [10, 100 + (k / 256) as u8, (k % 256) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_differ_between_nets_and_neighbouring_pids() {
        let mut seen = std::collections::HashSet::new();
        for pid in 1000..1010 {
            for n in 0..3 {
                let s = subnet(pid, n);
                assert_eq!(s[0], 10);
                assert!((100..=199).contains(&s[1]), "{s:?}");
                assert!(seen.insert(s), "{s:?} twice");
            }
        }
    }

    #[test]
    fn names_are_checked_naming_the_field() {
        assert!(host::check_name("host name", "cell-z1").is_ok());
        for bad in ["", "A", "a_b", "-a", "a-", "a/b", "abcdefghijklmnopqrstu"] {
            let e = host::check_name("host name", bad).unwrap_err().to_string();
            assert!(e.starts_with("host name "), "{e}");
        }
    }
}
