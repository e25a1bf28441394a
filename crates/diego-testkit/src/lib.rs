//! Dev-only helpers for tests: start real components on loopback, poll until a condition
//! holds, find free ports.
//!
//! Used only as a dev-dependency; nothing in a shipped binary may depend on it. Key items:
//! [`TestBbs`] (a real BBS on an ephemeral port, stopped on drop), [`eventually`],
//! [`free_port`], [`host::root_with`] (skip, saying why, without root or a host tool),
//! [`NatsServer`] (a real `nats-server` child process on a free loopback port),
//! [`Etcd`] (real etcd members on free loopback ports, one or a cluster),
//! [`exposition::parse`] (a strict parser of a role's `/metrics`), [`hosts::Net`] (hosts as
//! network namespaces on a private bridge, each running child processes; root only),
//! [`diego_command`] (a `diego` role as the tests run it).

mod etcd;
pub mod exposition;
pub mod host;
pub mod hosts;
mod nats;

pub use etcd::Etcd;
pub use nats::NatsServer;

use std::ffi::OsStr;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use diego_bbs::{BbsConfig, StoreConfig};
use diego_client::BbsClient;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A BBS serving on `127.0.0.1:<ephemeral>` for the duration of a test.
///
/// Dropping it cancels the shutdown token, so the server stops even when a test panics.
pub struct TestBbs {
    pub url: String,
    pub addr: SocketAddr,
    pub client: BbsClient,
    /// The SQLite data directory, kept alive by this struct (`None` for the memory store).
    pub dir: Option<TempDir>,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), diego_bbs::BbsError>>>,
}

impl TestBbs {
    /// A BBS with the in-memory store.
    pub async fn start() -> Self {
        Self::start_with(Self::config(StoreConfig::Memory), None).await
    }

    /// A BBS with the in-memory store on `addr` (a port chosen before the BBS starts).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let mut config = Self::config(StoreConfig::Memory);
        config.listen = addr;
        Self::start_with(config, None).await
    }

    /// A BBS with the SQLite store in a fresh temporary directory.
    pub async fn start_sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("diego-test-bbs-")
            .tempdir()
            .expect("creating a temp dir");
        let store = StoreConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        };
        Self::start_with(Self::config(store), Some(dir)).await
    }

    /// The default test configuration for `store`, listening on an ephemeral loopback port;
    /// adjust it and pass it to [`TestBbs::start_with`].
    pub fn config(store: StoreConfig) -> BbsConfig {
        BbsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), store)
    }

    /// A BBS with an explicit configuration. `dir`, when given, is kept alive with it.
    pub async fn start_with(config: BbsConfig, dir: Option<TempDir>) -> Self {
        let shutdown = CancellationToken::new();
        let running = diego_bbs::start(config, shutdown.clone())
            .await
            .expect("starting the test BBS");
        let url = running.url();
        Self {
            client: BbsClient::new(url.clone()),
            url,
            addr: running.addr,
            dir,
            shutdown,
            task: Some(running.task),
        }
    }

    /// The SQLite data directory, if this BBS has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    /// Stops the server, waits until it has finished, and hands back its data directory so
    /// a test can start another BBS over the same state.
    pub async fn stop(mut self) -> Option<TempDir> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("test BBS failed while stopping: {e}"),
                Err(e) => panic!("test BBS task panicked: {e}"),
            }
        }
        self.dir.take()
    }

    /// Stops this BBS and starts a new one over the same SQLite directory (on a new port).
    pub async fn restart(self) -> Self {
        let dir = self.stop().await.expect("restart needs a SQLite-backed TestBbs");
        let store = StoreConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        };
        Self::start_with(Self::config(store), Some(dir)).await
    }
}

impl Drop for TestBbs {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `diego` binary at `bin` with `args`, in the environment tests run roles in: no
/// `DIEGO_BBS_URL` from the caller's shell, `RUST_LOG=info`, stdin from `/dev/null`. The
/// caller decides where its output goes.
pub fn diego_command<S: AsRef<OsStr>>(bin: &Path, args: &[S]) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Polls `check` every 20 ms until it returns `Ok`, and returns that value. Panics after
/// `timeout` with the last error, so a failing test says what it was waiting for.
///
/// Uses `tokio::time`, so it also works under paused time.
pub async fn eventually<T, E, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("condition not met within {timeout:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process can take it before
/// the caller binds it; prefer binding port 0 where the component allows it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_success() {
        let mut n = 0;
        let got = eventually(Duration::from_secs(1), || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("only {n}"))
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "condition not met within 100ms: still 0")]
    async fn eventually_panics_with_the_last_error() {
        eventually(Duration::from_millis(100), || async { Err::<(), _>("still 0") }).await;
    }

    #[tokio::test]
    async fn sqlite_bbs_keeps_state_across_restart() {
        let bbs = TestBbs::start_sqlite().await;
        assert!(bbs.client.ping().await.unwrap().available);
        let dir = bbs.data_dir().unwrap().to_path_buf();
        let req = diego_model::DesireTaskRequest {
            task_guid: "kept".into(),
            domain: "d".into(),
            task_definition: diego_model::TaskDefinition {
                rootfs: "preloaded:busybox".into(),
                action: Some(diego_model::Action::run(diego_model::RunAction {
                    path: "true".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        };
        bbs.client.desire_task(&req).await.unwrap();
        let bbs = bbs.restart().await;
        assert_eq!(bbs.data_dir(), Some(dir.as_path()));
        assert_eq!(bbs.client.task("kept").await.unwrap().task_guid, "kept");
    }

    #[tokio::test]
    async fn dropping_stops_the_server() {
        let bbs = TestBbs::start().await;
        let client = bbs.client.clone();
        let token = bbs.shutdown.clone();
        drop(bbs);
        assert!(token.is_cancelled());
        eventually(Duration::from_secs(5), || async {
            match client.ping().await {
                Err(e) if e.is_connect() => Ok(()),
                other => Err(format!("still answering: {other:?}")),
            }
        })
        .await;
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port should be free");
    }
}
