//! [`LocalEtcd`]: real etcd members (Debian's `etcd-server`, 3.4) as child processes on free
//! loopback ports, each from a temporary data directory, killed by PID when the value is
//! dropped. The tests (through `diego_testkit::Etcd`) and `diego bench … --start-etcd` start
//! etcd with it; a cluster's members can be killed and restarted one by one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a fresh member (or cluster) may take to report healthy (~60 ms for one member,
/// ~1.3 s for three, here).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts with fresh ports: another process may take a port between finding it and etcd
/// binding it.
const ATTEMPTS: usize = 5;

/// Why local etcd members did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error("etcd is not installed (no `etcd` on PATH; Debian: apt-get install etcd-server)")]
    NotInstalled,
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd did not start on free loopback ports in {ATTEMPTS} tries; its log:\n{log}")]
    NotReady { log: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalEtcdError {
    let what = what.into();
    move |source| LocalEtcdError::Io { what, source }
}

/// Running etcd members: one, or a cluster.
pub struct LocalEtcd {
    members: Vec<Member>,
    dir: TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl LocalEtcd {
    /// Whether an `etcd` binary is on `PATH`.
    pub fn installed() -> bool {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("etcd").is_file()))
    }

    /// `members` members (1 or more), healthy (the cluster has a leader).
    pub async fn launch(members: usize) -> Result<LocalEtcd, LocalEtcdError> {
        if !Self::installed() {
            return Err(LocalEtcdError::NotInstalled);
        }
        let n = members.max(1);
        let mut log = String::new();
        for _ in 0..ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("diego-etcd-")
                .tempdir()
                .map_err(io("creating etcd's data directory"))?;
            let mut members = Vec::with_capacity(n);
            for i in 1..=n {
                members.push(Member {
                    name: format!("m{i}"),
                    client_port: free_port()?,
                    peer_port: free_port()?,
                    child: None,
                });
            }
            let mut etcd = LocalEtcd { members, dir };
            for i in 0..n {
                etcd.spawn(i)?;
            }
            if etcd.ready().await {
                return Ok(etcd);
            }
            log = etcd.logs();
        }
        Err(LocalEtcdError::NotReady { log })
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    /// Starts member `i` (from its data directory, if it ran before).
    fn spawn(&mut self, i: usize) -> Result<(), LocalEtcdError> {
        let cluster = self.initial_cluster();
        // One member elects itself at once with fast timings; a cluster needs room for
        // heartbeats between three processes on two cores.
        let (heartbeat, election) = if self.members.len() == 1 {
            (10, 100)
        } else {
            (50, 500)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(io("opening etcd's log file"))?;
        let err_log = log.try_clone().map_err(io("opening etcd's log file"))?;
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = member_command(
            &m.name,
            &self.dir.path().join(&m.name),
            &client,
            &peer,
            &cluster,
            (heartbeat, election),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(io("starting etcd"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// True once every running member reports healthy; false if one exited (a port taken).
    async fn ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let mut healthy = true;
            for m in &mut self.members {
                let Some(child) = m.child.as_mut() else { continue };
                if let Ok(Some(_exited)) = child.try_wait() {
                    m.child = None;
                    self.stop();
                    return false;
                }
                healthy &= is_healthy(m.client_port).await;
            }
            if healthy {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop();
        false
    }

    /// `etcd://127.0.0.1:<port>[,…]`: every member, for `diego bbs --store`.
    pub fn url(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// `http://127.0.0.1:<port>` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// How many members the cluster was made with (running or not).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The directory holding every member's data directory and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs member `i` (by its PID) and reaps it: the others carry on with a quorum.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again from its data directory (after [`LocalEtcd::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), LocalEtcdError> {
        self.kill(i);
        self.spawn(i)
    }

    /// The members' logs, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                format!("--- {}\n{log}", self.members[i].name)
            })
            .collect()
    }

    fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback TCP port that was free a moment ago.
fn free_port() -> Result<u16, LocalEtcdError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("binding an ephemeral loopback port"))
}

/// Whether the member on `port` answers `/health` with `"health":"true"`.
pub async fn is_healthy(port: u16) -> bool {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body.contains(r#""health":"true""#))
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The command line of etcd member `name` of a new cluster `initial_cluster`
/// (`m1=http://…:2380,…`), listening for clients at `client` and for peers at `peer` (each
/// `http://ip:port`, also advertised), with its data in `data_dir` (a member restarted on the
/// same directory rejoins), raft timings `(heartbeat, election)` in ms, pre-vote on, and
/// warnings only.
pub fn member_command(
    name: &str,
    data_dir: &Path,
    client: &str,
    peer: &str,
    initial_cluster: &str,
    (heartbeat, election): (u32, u32),
) -> Command {
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client, "--advertise-client-urls", client])
        .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
        .args([
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
        ])
        .args(["--initial-cluster-token", "diego-local"])
        .arg(format!("--heartbeat-interval={heartbeat}"))
        .arg(format!("--election-timeout={election}"))
        // A member back from a partition asks before it starts an election rather than
        // deposing a healthy leader (on by default from etcd 3.5).
        .arg("--pre-vote")
        .args(["--logger", "zap", "--log-level", "warn"]);
    cmd
}
