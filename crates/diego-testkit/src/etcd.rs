//! A real etcd (Debian's `etcd-server`, 3.4) on free loopback ports, as child processes: one
//! member ([`Etcd::start`]) or a cluster ([`Etcd::cluster`]) whose members can be killed.
//!
//! Absent locally, `start` returns `None` after printing why; under CI (`CI` set), where
//! `scripts/test` installs the package, its absence is a failure ([`crate::host::tool_for`]).
//! Every member runs from a temporary data directory with fast election timings and is
//! killed by its PID when the value is dropped, so a failing test leaves nothing behind.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a fresh member (or cluster) may take to report healthy (~60 ms for one member,
/// ~1.3 s for three, here).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd: one member, or a cluster.
pub struct Etcd {
    members: Vec<Member>,
    dir: TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// One member, ready for clients; `None` (after printing why) when etcd is not
    /// installed and this is not CI.
    pub async fn start(test: &str) -> Option<Etcd> {
        Self::launch(test, 1).await
    }

    /// A cluster of `members` members, healthy (it has a leader); `None` as for [`Etcd::start`].
    pub async fn cluster(test: &str, members: usize) -> Option<Etcd> {
        Self::launch(test, members).await
    }

    async fn launch(test: &str, n: usize) -> Option<Etcd> {
        if !crate::host::tool_for(
            test,
            "etcd",
            "apt-get install etcd-server; scripts/test installs it",
        ) {
            return None;
        }
        // Another process may take a port between finding it and etcd binding it: try a few.
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("diego-etcd-")
                .tempdir()
                .expect("creating etcd's data directory");
            let members = (1..=n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: crate::free_port(),
                    peer_port: crate::free_port(),
                    child: None,
                })
                .collect();
            let mut etcd = Etcd { members, dir };
            for i in 0..n {
                etcd.spawn(i);
            }
            if etcd.ready().await {
                return Some(etcd);
            }
            last_log = etcd.logs();
        }
        panic!("{test}: etcd did not start on free loopback ports in 5 tries; its log:\n{last_log}");
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
    fn spawn(&mut self, i: usize) {
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
            .expect("opening etcd's log file");
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
            .stdout(log.try_clone().expect("cloning etcd's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning etcd: {e}"));
        self.members[i].child = Some(child);
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

    /// Starts member `i` again from its data directory (after [`Etcd::kill`]).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
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

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_starts_answers_and_dies_with_its_handle() {
        let Some(etcd) = Etcd::start("a_member_starts_answers_and_dies_with_its_handle").await else {
            return;
        };
        let pid = etcd.pid(0).unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(etcd.url().starts_with("etcd://127.0.0.1:"));
        let port = etcd.members[0].client_port;
        assert!(is_healthy(port).await);
        let dir = etcd.dir.path().to_path_buf();
        drop(etcd);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd outlived its handle"
        );
        assert!(!is_healthy(port).await);
        assert!(!dir.exists(), "the data directory is removed");
    }
}
