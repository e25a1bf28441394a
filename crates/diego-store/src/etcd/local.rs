//! [`LocalEtcd`]: a real etcd (Debian's `etcd-server`, 3.4) on free loopback ports, as child
//! processes — one member or a cluster whose members can be killed — for the tests
//! (`diego_testkit::Etcd` wraps it) and the benchmarks that start their own etcd.
//!
//! Every member runs from a temporary data directory with fast election timings and is
//! killed by its PID when the value is dropped, so a failed run leaves nothing behind.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a fresh member (or cluster) may take to report healthy (~60 ms for one member,
/// ~1.3 s for three, here).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd on loopback: one member, or a cluster.
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
    /// A cluster of `members` members (1 or more), healthy (it has a leader). `Err` says why
    /// not: etcd is not installed, or it did not start on free ports in 5 tries (with its log).
    pub async fn launch(members: usize) -> Result<LocalEtcd, String> {
        let n = members.max(1);
        // Another process may take a port between finding it and etcd binding it: try a few.
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("diego-etcd-")
                .tempdir()
                .map_err(|e| format!("creating etcd's data directory: {e}"))?;
            let members = (1..=n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                })
                .collect();
            let mut etcd = LocalEtcd { members, dir };
            for i in 0..n {
                etcd.spawn(i)?;
            }
            if etcd.ready().await {
                return Ok(etcd);
            }
            last_log = etcd.logs();
        }
        Err(format!(
            "etcd did not start on free loopback ports in 5 tries; its log:\n{last_log}"
        ))
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
    fn spawn(&mut self, i: usize) -> Result<(), String> {
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
            .map_err(|e| format!("opening etcd's log file: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning etcd's log file: {e}"))?;
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "diego-test"])
            .arg(format!("--heartbeat-interval={heartbeat}"))
            .arg(format!("--election-timeout={election}"))
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log_err)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd (apt-get install etcd-server): {e}"))?;
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

    /// SIGKILLs member `i` (by its PID) and reaps it: the others carry on with a quorum.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again from its data directory (after [`LocalEtcd::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// How many members it was started with.
    pub fn members(&self) -> usize {
        self.members.len()
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

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Whether the member on `port` answers `/health` with `"health":"true"`.
async fn is_healthy(port: u16) -> bool {
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
