//! One proxy thread's connections to backends: HTTP/1.1, kept alive and reused.
//!
//! A request first takes a connection ([`Pool::checkout`]): an idle one to its backend, or a
//! new one. Only then is the request built and sent, so a backend that refuses connections
//! is found before the request is handed over, and the request can go to another instance
//! whole (body included) without being copied. A connection goes back to the pool when its
//! response body has been read to the end ([`Pool::give_back`]); one whose response was cut
//! short, or that switched protocols, is dropped with its request.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::retry::Failure;

/// How a pool connects and how many connections it keeps.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolSettings {
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    pub max_idle_per_backend: usize,
}

/// Why no connection to a backend could be had.
#[derive(Debug)]
pub(super) struct ConnectError {
    pub failure: Failure,
    pub reason: String,
}

impl ConnectError {
    fn io(e: &io::Error) -> Self {
        let failure = match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
            io::ErrorKind::TimedOut => Failure::ConnectTimeout,
            _ => Failure::ConnectFailed,
        };
        ConnectError {
            failure,
            reason: format!("tcp connect error: {e}"),
        }
    }
}

/// A connection ready to take a request.
pub(super) struct Checkout {
    pub sender: SendRequest<Body>,
    /// Whether it served a request before (and so may have been closed by the backend
    /// meanwhile, which only sending tells).
    pub reused: bool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Idle connections by backend. The lock is only ever taken by one thread's tasks.
pub(super) struct Pool {
    settings: PoolSettings,
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Pool {
            settings,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Authority, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection to `backend` ready for a request: the newest idle one that still is,
    /// else a new one.
    pub async fn checkout(&self, backend: &Authority) -> Result<Checkout, ConnectError> {
        while let Some(mut sender) = self.take_idle(backend) {
            // Ready at once unless the connection is still finishing its last exchange;
            // an error means the backend closed it.
            if sender.ready().await.is_ok() {
                return Ok(Checkout { sender, reused: true });
            }
        }
        Ok(Checkout {
            sender: self.connect(backend).await?,
            reused: false,
        })
    }

    fn take_idle(&self, backend: &Authority) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        let list = idle.get_mut(backend)?;
        let timeout = self.settings.idle_timeout;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    /// A new connection to `backend`, driven by a task of its own on this thread.
    pub async fn connect(&self, backend: &Authority) -> Result<SendRequest<Body>, ConnectError> {
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, connect_tcp(backend)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ConnectError::io(&e)),
            Err(_) => {
                return Err(ConnectError {
                    failure: Failure::ConnectTimeout,
                    reason: format!("tcp connect error: no connection within {timeout:?}"),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ConnectError {
                    failure: Failure::ConnectFailed,
                    reason: format!("http handshake: {e}"),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "routing: a backend connection ended");
            }
        });
        sender.ready().await.map_err(|e| ConnectError {
            failure: Failure::ConnectFailed,
            reason: format!("http handshake: {e}"),
        })?;
        Ok(sender)
    }

    /// Keeps `sender`, whose last response was read to the end, for the next request to
    /// `backend`; beyond the per-backend limit it is closed.
    pub fn give_back(&self, backend: &Authority, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(backend.clone()).or_default();
        if list.len() < self.settings.max_idle_per_backend {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections past the idle timeout or closed by their backend, and forgets
    /// backends left with none.
    pub fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        self.idle().retain(|_, list| {
            list.retain(|e| !e.sender.is_closed() && e.since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    #[cfg(test)]
    fn idle_count(&self, backend: &Authority) -> usize {
        self.idle().get(backend).map_or(0, Vec::len)
    }
}

async fn connect_tcp(backend: &Authority) -> io::Result<tokio::net::TcpStream> {
    let port = backend.port_u16().unwrap_or(80);
    match backend.host().parse::<std::net::IpAddr>() {
        Ok(ip) => tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await,
        Err(_) => tokio::net::TcpStream::connect((backend.host(), port)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt as _;

    fn settings() -> PoolSettings {
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            max_idle_per_backend: 2,
        }
    }

    /// A loopback backend answering `ok` to every request, counting its connections.
    async fn backend() -> (Authority, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let connections = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::from("ok")))
                    }),
                ));
            }
        });
        (authority, connections)
    }

    async fn get(sender: &mut SendRequest<Body>, backend: &Authority) -> String {
        let req = hyper::Request::get(format!("http://{backend}/"))
            .body(Body::empty())
            .unwrap();
        let body = sender.send_request(req).await.unwrap().into_body();
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_given_back_is_reused_and_the_idle_list_is_bounded() {
        let (backend, connections) = backend().await;
        let pool = Pool::new(settings());
        let mut first = pool.checkout(&backend).await.unwrap();
        assert!(!first.reused);
        assert_eq!(get(&mut first.sender, &backend).await, "ok");
        pool.give_back(&backend, first.sender);
        let mut again = pool.checkout(&backend).await.unwrap();
        assert!(again.reused, "the idle connection is taken again");
        assert_eq!(get(&mut again.sender, &backend).await, "ok");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Three at once need three connections; only two are kept.
        let mut three = Vec::new();
        three.push(again.sender);
        for _ in 0..2 {
            three.push(pool.checkout(&backend).await.unwrap().sender);
        }
        for s in three {
            pool.give_back(&backend, s);
        }
        assert_eq!(pool.idle_count(&backend), 2);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_closed_or_expired_connection_is_not_reused() {
        let (backend, connections) = backend().await;
        let pool = Pool::new(PoolSettings {
            idle_timeout: Duration::ZERO,
            ..settings()
        });
        let mut c = pool.checkout(&backend).await.unwrap();
        assert_eq!(get(&mut c.sender, &backend).await, "ok");
        pool.give_back(&backend, c.sender);
        let c = pool.checkout(&backend).await.unwrap();
        assert!(!c.reused, "an idle connection past the timeout is not taken");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        pool.give_back(&backend, c.sender);
        pool.sweep();
        assert_eq!(
            pool.idle_count(&backend),
            0,
            "the sweep closes expired connections"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let gone: Authority = format!("127.0.0.1:{port}").parse().unwrap();
        let pool = Pool::new(settings());
        let e = pool.checkout(&gone).await.err().expect("nothing listens there");
        assert_eq!(e.failure, Failure::ConnectRefused);
        assert!(e.reason.contains("Connection refused"), "{}", e.reason);
    }
}
