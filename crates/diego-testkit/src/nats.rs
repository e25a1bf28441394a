//! A real `nats-server` (Debian's package) on a free loopback port, as a child process.
//!
//! [`NatsServer::start`] returns `None`, printing why, when the binary is not installed —
//! except under CI (`CI` set), where `scripts/test` installs it and its absence is a
//! failure. The server is killed by its PID when the value is dropped, so a failing test
//! leaves no server behind.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian's package puts the binary; `PATH` is searched too.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// How long a fresh server may take to accept connections (it takes ~15 ms here).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` on `127.0.0.1:port`.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    binary: String,
    child: Option<Child>,
}

fn binary() -> Option<String> {
    if crate::host::on_path("nats-server") {
        return Some("nats-server".into());
    }
    crate::host::on_path(DEBIAN_BINARY).then(|| DEBIAN_BINARY.to_string())
}

impl NatsServer {
    /// A server on a free loopback port, ready for connections; `None` (after printing why)
    /// when `nats-server` is not installed and this is not CI.
    pub async fn start(test: &str) -> Option<Self> {
        let Some(binary) = binary() else {
            crate::host::tool_for(
                test,
                "nats-server",
                "apt-get install nats-server; scripts/test installs it",
            );
            return None;
        };
        // Another process may take the port between finding it and the server binding it:
        // try a few.
        for _ in 0..5 {
            let port = crate::free_port();
            let mut server = NatsServer {
                url: format!("nats://127.0.0.1:{port}"),
                port,
                binary: binary.clone(),
                child: None,
            };
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!("{test}: nats-server did not start on a free loopback port in 5 tries");
    }

    /// Starts the binary on `self.port`; true once it accepts connections.
    async fn spawn(&mut self) -> bool {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.binary));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_exited)) = child.try_wait() {
                    // Most likely the port was taken meanwhile.
                    self.child = None;
                    return false;
                }
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop();
        false
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (by its PID) and reaps it. Clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`NatsServer::stop`]).
    ///
    /// # Panics
    ///
    /// When it does not come up (the port was taken meanwhile).
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn().await,
            "nats-server did not start again on port {}",
            self.port
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_stops_and_restarts_on_its_port() {
        let Some(mut nats) = NatsServer::start("starts_stops_and_restarts_on_its_port").await else {
            return;
        };
        let pid = nats.pid().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        nats.stop();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", nats.port))
                .await
                .is_err(),
            "still accepting after stop"
        );
        nats.restart().await;
        let again = nats.pid().unwrap();
        assert_ne!(again, pid);
        // The server speaks NATS: its first line is INFO.
        use tokio::io::AsyncReadExt as _;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", nats.port))
            .await
            .unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"INFO ");
        drop(nats);
        assert!(
            !std::path::Path::new(&format!("/proc/{again}")).exists(),
            "the server outlived its handle"
        );
    }
}
