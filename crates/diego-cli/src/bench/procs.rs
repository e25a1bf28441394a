//! Child `diego` processes for benchmarks: each runs its role in a process of its own (so its
//! RSS and CPU are its own) and is killed when dropped, whatever happens to the benchmark.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Microseconds per clock tick of `/proc/<pid>/stat` (`USER_HZ` is 100 on every mainstream
/// architecture).
pub const US_PER_TICK: f64 = 10_000.0;

/// A running `diego` role; killed (by its PID) and reaped on drop.
pub struct Role {
    pub child: Child,
    pub url: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `diego ARGS` with stdout silenced and warnings on stderr.
pub fn spawn(args: &[&str], url: String) -> anyhow::Result<Role> {
    let exe = std::env::current_exe().context("finding the diego binary")?;
    let child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DIEGO_BBS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting diego {}", args.first().copied().unwrap_or("")))?;
    Ok(Role { child, url })
}

/// Waits until `GET {url}{path}` answers 2xx, for up to 30 s.
pub async fn wait_ready(http: &reqwest::Client, role: &mut Role, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{}{path}", role.url)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = role.child.try_wait() {
            bail!("{} exited with {status} before answering {path}", role.url);
        }
        if Instant::now() > deadline {
            bail!("{} did not answer {path} within 30 s", role.url);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `diego bbs` on a free port over `data_dir`, with `extra` flags, once it answers /v1/ping.
pub async fn start_bbs(http: &reqwest::Client, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Role> {
    let dir = data_dir.to_string_lossy().into_owned();
    start_bbs_on(http, &["--data-dir", &dir], extra).await
}

/// `diego bbs` on a free port with `store` (`--data-dir D` or `--store etcd://…`) and `extra`
/// flags, once it answers /v1/ping.
pub async fn start_bbs_on(http: &reqwest::Client, store: &[&str], extra: &[&str]) -> anyhow::Result<Role> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["bbs"];
    args.extend_from_slice(store);
    args.extend_from_slice(&["--listen", &listen]);
    args.extend_from_slice(extra);
    let mut bbs = spawn(&args, format!("http://{listen}"))?;
    wait_ready(http, &mut bbs, "/v1/ping").await?;
    Ok(bbs)
}

/// Polls `ok` every 10 ms until it says yes (an error counts as no), for up to `timeout`.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut ok: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ok().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
