//! The server loop: accept, bound, serve, refuse, shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::body_idle::{IdleTimeoutBody, Stalled};
use super::limits::ServeLimits;
use crate::tls::Tls;

/// How long a refused connection stays open after its 503, reading what the client sends,
/// so that closing it does not reset the connection before the client reads the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections lingering at once; past it a connection is closed without an answer
/// rather than holding one more file open.
const REFUSALS_IN_FLIGHT: usize = 256;

/// Pause after an accept error such as running out of open files, so the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Refusals are logged at most this often, with how many there were.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What [`serve`] calls for every request: an [`axum::Router`] (every role's API), or a
/// handler of its own where a router's layers would only cost time (the router's proxy).
pub trait Handler: Clone + Send + Sync + 'static {
    /// The answer to `request`, which came from `peer`.
    fn call(
        &self,
        request: Request<axum::body::Body>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static;
}

/// A router's handlers see the client's address as [`ConnectInfo<SocketAddr>`].
impl Handler for axum::Router {
    fn call(
        &self,
        mut request: Request<axum::body::Body>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = self.clone();
        async move {
            match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled, then stops
/// accepting and lets open connections finish their requests.
///
/// Only reading a request is bounded (see [`ServeLimits`]): a response, such as an event
/// stream, lasts as long as the handler keeps it going. Every request comes with the client's
/// address (a router's as [`axum::extract::ConnectInfo<SocketAddr>`]), and HTTP/1.1 upgrades are served:
/// a handler that answers `101 Switching Protocols` takes the connection over through
/// `hyper::upgrade::on(&mut request)` (the router's WebSocket tunnels do).
///
/// With `tls`, every connection is TLS and must present a client certificate signed by the
/// CA of `tls`; a client without one is refused at the handshake. The handshake runs in the
/// connection's own task, so a slow one never holds up accepting, and it counts against
/// [`ServeLimits::header_read_timeout`] like a slow request head.
pub async fn serve(
    listener: TcpListener,
    app: impl Handler,
    shutdown: CancellationToken,
    limits: ServeLimits,
    tls: Option<Tls>,
) -> io::Result<()> {
    let acceptor = tls.map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config()));
    let limit = limits.connection_limit();
    if limit < limits.max_connections {
        tracing::info!(
            configured = limits.max_connections,
            limit,
            "connection limit lowered to half the open-file limit (ulimit -n)"
        );
    }
    let slots = Arc::new(Semaphore::new(limit));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut refusal_log = RefusalLog::default();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we accepted: nothing to do.
            Err(e) if is_client_gone(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; pausing");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        // Small JSON answers and event-stream lines go out at once.
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                connections.spawn(connection(
                    stream,
                    acceptor.clone(),
                    peer,
                    app.clone(),
                    limits,
                    shutdown.clone(),
                    slot,
                ));
            }
            Err(_) => {
                refusal_log.refused(limit);
                if let Ok(lingering) = refusals.clone().try_acquire_owned() {
                    connections.spawn(refuse(stream, limit, lingering));
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One connection: the TLS handshake when `acceptor` is given, then [`http1`].
async fn connection(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    app: impl Handler,
    limits: ServeLimits,
    shutdown: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    let Some(acceptor) = acceptor else {
        return http1(stream, peer, app, limits, shutdown, slot).await;
    };
    // A plain HTTP request to a TLS listener (an `http://` URL) gets an answer saying so
    // rather than a closed connection.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => return not_tls(stream).await,
        Ok(Ok(1)) => {}
        _ => return,
    }
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => http1(stream, peer, app, limits, shutdown, slot).await,
        // A client without a certificate of our CA, or not speaking TLS: its operator sees
        // why in its own error; this side says who was refused.
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, timeout = ?limits.header_read_timeout, "TLS handshake timed out"),
    }
}

/// HTTP/1.1 on one connection with a bounded wait for each request head, until the client
/// closes, a limit is hit, or `shutdown` (then the request in flight finishes first).
async fn http1<I>(
    stream: I,
    peer: SocketAddr,
    app: impl Handler,
    limits: ServeLimits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        respond(app.clone(), peer, limits, request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Slow or vanished clients end here; they are the client's problem, not ours.
        tracing::debug!(error = %e, "connection ended");
    }
}

/// `app`'s answer to `request`, or 408 when the request body stalled.
async fn respond(
    app: impl Handler,
    peer: SocketAddr,
    limits: ServeLimits,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    let stalled = Stalled::default();
    let request = request.map(|body| {
        axum::body::Body::new(IdleTimeoutBody::new(
            body,
            limits.body_idle_timeout,
            stalled.clone(),
        ))
    });
    let response = app.call(request, peer).await;
    if stalled.get() {
        return Ok(body_stalled(limits.body_idle_timeout));
    }
    Ok(response)
}

fn body_stalled(idle: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        format!("request timeout: no part of the request body arrived for {idle:?}\n"),
    )
        .into_response()
}

/// Answers a connection beyond the limit `503 too many connections (limit N)` and closes
/// it, without reading its request.
async fn refuse(mut stream: TcpStream, limit: usize, _lingering: OwnedSemaphorePermit) {
    let body = format!("too many connections (limit {limit})\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n\
         retry-after: 1\r\n\
         {}: true\r\n\
         connection: close\r\n\
         \r\n\
         {body}",
        body.len(),
        super::UNPROCESSED_HEADER,
    );
    answer_and_close(&mut stream, &answer).await;
}

/// Writes `answer` (a whole raw HTTP response) and closes, for at most [`REFUSAL_LINGER`].
async fn answer_and_close(stream: &mut TcpStream, answer: &str) {
    let close = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with unread input would reset the connection, and a reset can discard
        // the answer before the client reads it: read until the client closes.
        let mut discard = [0u8; 1024];
        while stream.read(&mut discard).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, close).await;
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Answers a plain HTTP client of a TLS listener `400` saying it needs TLS, and closes.
async fn not_tls(mut stream: TcpStream) {
    let body = "this server speaks HTTPS only, with a client certificate of its CA: use https:// and --tls-ca/--tls-cert/--tls-key\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\n\
         content-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n\
         connection: close\r\n\
         \r\n\
         {body}",
        body.len()
    );
    answer_and_close(&mut stream, &answer).await;
}

/// One log line per [`REFUSAL_LOG_INTERVAL`] however many connections are refused.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, limit: usize) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < REFUSAL_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            limit,
            refused = self.unlogged,
            "refusing connections: too many connections open"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}
