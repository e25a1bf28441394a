//! Net-in port mapping: a userspace TCP proxy from a host port into a container's network
//! namespace (environment.md §2, R6/R7) — no host routes, veths or iptables.
//!
//! - [`Dialer`]: a dedicated std thread that joins the container's network namespace once
//!   (`setns(2)` on an open `/proc/<pid>/ns/net`, which moves only that thread) and then serves
//!   "connect to ADDR" requests from a channel (a container's `127.0.0.1:PORT`; a test host's
//!   own address, `diego_testkit::hosts`). A socket keeps the namespace it was
//!   created in, so the connected stream is handed back and relayed from any tokio thread. The
//!   thread ends when the last [`Dialer`] clone is dropped (its channel closes).
//! - [`Forwarder`]: a tokio `TcpListener` on `host_ip:host_port` in the host namespace; each
//!   accepted connection gets a stream from the [`Dialer`] and is relayed both ways with
//!   `copy_bidirectional` until either side closes. [`Forwarder::stop`] (or drop) closes the
//!   listener and every relay, and drops its [`Dialer`] clone.
//! - [`proxy`]: the process that runs them for one container, apart from the server, so that
//!   host ports outlive a crash of the server (or of the cell agent it runs in).

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

pub mod proxy;

/// How long a connect inside the namespace may take (loopback: refusals are immediate; an
/// unreachable address of a test host's network is given up on after this).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<io::Result<TcpStream>>;

/// Connects to addresses inside one network namespace; see the module docs.
#[derive(Clone)]
pub struct Dialer {
    requests: mpsc::Sender<(SocketAddr, Reply)>,
}

impl Dialer {
    /// A dialer for the network namespace of host process `pid` (`/proc/<pid>/ns/net`); its
    /// thread is named `netns-<pid>` (cut to 15 bytes).
    pub fn for_pid(pid: u32) -> io::Result<Dialer> {
        let ns = Path::new("/proc").join(pid.to_string()).join("ns/net");
        Self::spawn(&ns, format!("netns-{pid}"))
    }

    /// A dialer for the network namespace file `ns` (e.g. `/proc/<pid>/ns/net`). The file is
    /// opened here, so the namespace is held even if that process goes away before the thread
    /// joins it. Fails if the thread cannot join the namespace.
    pub fn open(ns: &Path) -> io::Result<Dialer> {
        Self::spawn(ns, "netns".into())
    }

    fn spawn(ns: &Path, name: String) -> io::Result<Dialer> {
        let file = File::open(ns)?;
        let (requests, rx) = mpsc::channel::<(SocketAddr, Reply)>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let joined = setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
                drop(file);
                let ok = joined.is_ok();
                let _ = ready_tx.send(joined);
                if !ok {
                    return;
                }
                for (addr, reply) in rx {
                    let _ = reply.send(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT));
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Dialer { requests }),
            Ok(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!("joining network namespace {}: {e}", ns.display()),
            )),
            Err(_) => Err(io::Error::other("the network namespace thread died")),
        }
    }

    /// A non-blocking stream connected to `127.0.0.1:port` in the namespace.
    pub async fn connect(&self, port: u16) -> io::Result<tokio::net::TcpStream> {
        self.connect_to(loopback(port)).await
    }

    /// A non-blocking stream connected to `addr` as seen from inside the namespace.
    pub async fn connect_to(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((addr, tx))
            .map_err(|_| io::Error::other("the network namespace thread is gone"))?;
        let stream = rx
            .await
            .map_err(|_| io::Error::other("the network namespace thread is gone"))??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// One host port relayed to one address inside a namespace (a container port on its
/// `127.0.0.1`); see the module docs.
pub struct Forwarder {
    local: SocketAddr,
    target: SocketAddr,
    /// The accept loop; `None` once stopped.
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on `host_ip:host_port` (0: the kernel picks) and relays each connection to
    /// `127.0.0.1:container_port` through `dialer`. A taken port fails with `AddrInUse`.
    /// Must be called inside a tokio runtime.
    pub async fn start(
        host_ip: IpAddr,
        host_port: u16,
        container_port: u16,
        dialer: Dialer,
    ) -> io::Result<Forwarder> {
        Self::start_to(
            SocketAddr::new(host_ip, host_port),
            loopback(container_port),
            dialer,
        )
        .await
    }

    /// Listens on `listen` in the host namespace and relays each connection to `target` as
    /// seen from inside `dialer`'s namespace. A taken port fails with `AddrInUse`. Must be
    /// called inside a tokio runtime.
    pub async fn start_to(listen: SocketAddr, target: SocketAddr, dialer: Dialer) -> io::Result<Forwarder> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, dialer, target));
        debug!(%local, %target, "net-in forwarder listening");
        Ok(Forwarder {
            local,
            target,
            task: Some(task),
        })
    }

    /// The address listened on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn host_port(&self) -> u16 {
        self.local.port()
    }

    pub fn container_port(&self) -> u16 {
        self.target.port()
    }

    /// The address connected to inside the namespace.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Closes the listener and every relay, and waits until they are gone.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Accepts until aborted; dropping this future drops the listener and (through the
/// [`JoinSet`]) aborts every relay.
async fn serve(listener: TcpListener, dialer: Dialer, target: SocketAddr) {
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let dialer = dialer.clone();
                    relays.spawn(relay(client, peer, dialer, target));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "net-in accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

async fn relay(mut client: tokio::net::TcpStream, peer: SocketAddr, dialer: Dialer, target: SocketAddr) {
    let mut upstream = match dialer.connect_to(target).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, %target, error = %e, "net-in: connecting inside the namespace failed");
            return;
        }
    };
    drop(dialer);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(%peer, %target, error = %e, "net-in relay ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A dialer into this thread's own namespace, or `None` when setns is not permitted.
    fn own_namespace() -> Option<Dialer> {
        match Dialer::open(Path::new("/proc/thread-self/ns/net")) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("SKIPPED: cannot join a network namespace: {e}");
                None
            }
        }
    }

    #[tokio::test]
    async fn relays_both_ways_and_stops() {
        let Some(dialer) = own_namespace() else { return };
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let fwd = Forwarder::start(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, echo_port, dialer)
            .await
            .unwrap();
        let addr = fwd.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(fwd.container_port(), echo_port);

        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        // A taken port is AddrInUse.
        let taken = Forwarder::start(addr.ip(), addr.port(), echo_port, own_namespace().unwrap()).await;
        assert_eq!(taken.err().map(|e| e.kind()), Some(io::ErrorKind::AddrInUse));

        fwd.stop().await;
        // The open relay is closed, and new connections are refused.
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_closed_container_port_closes_the_client() {
        let Some(dialer) = own_namespace() else { return };
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = unused.local_addr().unwrap().port();
        drop(unused);
        let fwd = Forwarder::start(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, port, dialer)
            .await
            .unwrap();
        let mut c = tokio::net::TcpStream::connect(fwd.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
