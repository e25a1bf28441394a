//! [`Etcd`]: a real etcd for tests ([`diego_store::etcd::LocalEtcd`]: one member or a
//! cluster on free loopback ports, killed by PID on drop).
//!
//! Absent locally, `start` returns `None` after printing why; under CI (`CI` set), where
//! `scripts/test` installs the package, its absence is a failure ([`crate::host::tool_for`]).

use std::ops::{Deref, DerefMut};

use diego_store::etcd::LocalEtcd;

/// A running etcd: one member, or a cluster. Derefs to [`LocalEtcd`] (`url`, `endpoints`,
/// `pid`, `kill`, `restart`, `logs`).
pub struct Etcd(LocalEtcd);

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
            Ok(etcd) => Some(Etcd(etcd)),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Starts member `i` again from its data directory (after `kill`).
    pub fn restart(&mut self, i: usize) {
        if let Err(e) = self.0.restart(i) {
            panic!("restarting etcd member {i}: {e}");
        }
    }
}

impl Deref for Etcd {
    type Target = LocalEtcd;

    fn deref(&self) -> &LocalEtcd {
        &self.0
    }
}

impl DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut LocalEtcd {
        &mut self.0
    }
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
        let endpoint = etcd.endpoints()[0].clone();
        let health = || async {
            let addr = endpoint.trim_start_matches("http://").to_string();
            tokio::net::TcpStream::connect(addr).await.is_ok()
        };
        assert!(health().await);
        drop(etcd);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd outlived its handle"
        );
        assert!(!health().await, "nothing listens after the drop");
    }
}
