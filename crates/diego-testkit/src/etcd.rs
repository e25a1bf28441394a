//! A real etcd for tests: [`diego_store::etcd::local::LocalEtcd`] (members as child processes
//! on free loopback ports, killed by PID on drop) with the tests' skip rule. One member
//! ([`Etcd::start`]) or a cluster ([`Etcd::cluster`]) whose members can be killed.
//!
//! Absent locally, `start` returns `None` after printing why; under CI (`CI` set), where
//! `scripts/test` installs the package, its absence is a failure ([`crate::host::tool_for`]).

use diego_store::etcd::local::LocalEtcd;

/// A running etcd: one member, or a cluster.
pub struct Etcd {
    local: LocalEtcd,
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
        match LocalEtcd::launch(n).await {
            Ok(local) => Some(Etcd { local }),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// `etcd://127.0.0.1:<port>[,…]`: every member, for `diego bbs --store`.
    pub fn url(&self) -> String {
        self.local.url()
    }

    /// `http://127.0.0.1:<port>` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.local.endpoints()
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.local.pid(i)
    }

    /// SIGKILLs member `i` (by its PID) and reaps it: the others carry on with a quorum.
    pub fn kill(&mut self, i: usize) {
        self.local.kill(i);
    }

    /// Starts member `i` again from its data directory (after [`Etcd::kill`]).
    pub fn restart(&mut self, i: usize) {
        if let Err(e) = self.local.restart(i) {
            panic!("restarting etcd member {i}: {e}");
        }
    }

    /// The members' logs, for a failure message.
    pub fn logs(&self) -> String {
        self.local.logs()
    }
}

#[cfg(test)]
mod tests {
    use diego_store::etcd::local::is_healthy;

    use super::*;

    #[tokio::test]
    async fn a_member_starts_answers_and_dies_with_its_handle() {
        let Some(etcd) = Etcd::start("a_member_starts_answers_and_dies_with_its_handle").await else {
            return;
        };
        let pid = etcd.pid(0).unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(etcd.url().starts_with("etcd://127.0.0.1:"));
        let port = etcd.local.client_port(0);
        assert!(is_healthy(port).await);
        let dir = etcd.local.dir().to_path_buf();
        drop(etcd);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd outlived its handle"
        );
        assert!(!is_healthy(port).await);
        assert!(!dir.exists(), "the data directory is removed");
    }
}
