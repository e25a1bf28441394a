//! The proxy's request path: look the host up, pick an instance, forward, stream the answer
//! back. The decisions are the pure modules beside this one; this is the IO around them.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{ACCEPT, CONTENT_TYPE, HOST, SET_COOKIE};
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, Version};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access::{AccessHook, AccessRecord, BackendInfo};
use super::answer::{self, Refusal};
use super::balance::Balance;
use super::headers::{self, Cidr};
use super::metrics::RouterMetrics;
use super::pool::{Checkout, Pool};
use super::retry::{self, Failure};
use super::routes::{Backend, InFlight, PoolState, Routes};
use super::sticky;
use crate::table::normalize_host;

const X_CF_ROUTERERROR: HeaderName = HeaderName::from_static("x-cf-routererror");

/// How the proxy forwards, fixed at start.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub balance: Balance,
    pub backend_timeout: Duration,
    pub max_attempts: usize,
    pub trusted_proxies: Vec<Cidr>,
}

/// Everything the request path shares.
pub(super) struct Proxy {
    pub routes: ArcSwap<Routes>,
    pub metrics: RouterMetrics,
    pub settings: Settings,
    pub hook: Option<AccessHook>,
    /// WebSocket (upgrade) tunnels, waited for on drain.
    pub tunnels: TaskTracker,
    /// Cancelled when the drain timeout has passed: whatever still waits gives up.
    pub hard_stop: CancellationToken,
}

/// One proxy thread's share: its own client, so connections to backends are made, pooled and
/// driven on the thread that uses them.
pub(super) struct Lane {
    pub proxy: Arc<Proxy>,
    pub pool: Pool,
}

/// What `serve` calls on one proxy thread.
#[derive(Clone)]
pub(super) struct LaneHandler(pub Arc<Lane>);

impl diego_runtime::Handler for LaneHandler {
    fn call(
        &self,
        request: Request,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        handle(self.0.clone(), peer, request)
    }
}

impl Proxy {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.settings.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The router's own answer, logged like any other.
    fn refuse(
        &self,
        refusal: Refusal,
        mut record: Pending,
        accept: Option<&HeaderValue>,
        started: Instant,
    ) -> Response {
        let (content_type, body) = answer::body(&refusal, accept.and_then(|v| v.to_str().ok()));
        let status = refusal.status();
        record.status = status.as_u16();
        record.bytes = body.len() as u64;
        record.duration = started.elapsed();
        record.emit(self.hook.as_ref());
        self.metrics.response(status.as_u16());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(X_CF_ROUTERERROR, HeaderValue::from_static(refusal.router_error()));
        response
    }
}

/// The request's host: an absolute URI's, else the `Host` header's.
fn host_of(req: &Request) -> Option<HeaderValue> {
    if let Some(h) = req.uri().authority() {
        return HeaderValue::from_str(h.as_str()).ok();
    }
    let h = req.headers().get(HOST)?;
    (!h.is_empty() && h.to_str().is_ok()).then(|| h.clone())
}

/// What the access record will say, kept in cheap forms until the request ends: the record
/// is built only when it is logged or a hook wants it.
struct Pending {
    host: HeaderValue,
    method: axum::http::Method,
    path: PathAndQuery,
    client: IpAddr,
    request_id: Option<HeaderValue>,
    backend: Option<Arc<Backend>>,
    retries: u32,
    status: u16,
    bytes: u64,
    duration: Duration,
}

impl Pending {
    fn emit(&self, hook: Option<&AccessHook>) {
        if hook.is_none() && !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let record = AccessRecord {
            host: normalize_host(self.host.to_str().unwrap_or_default()).into_owned(),
            method: self.method.to_string(),
            path: self.path.as_str().to_string(),
            status: self.status,
            bytes: self.bytes,
            duration: self.duration,
            client: self.client.to_canonical().to_string(),
            request_id: self
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            backend: self.backend.as_deref().map(info),
            retries: self.retries,
        };
        record.emit(hook);
    }
}

/// Every request on the proxy listener ends here.
pub(super) async fn handle(lane: Arc<Lane>, peer: SocketAddr, mut req: Request) -> Response {
    let started = Instant::now();
    let proxy = &lane.proxy;
    let accept = req.headers().get(ACCEPT).cloned();
    let mut record = Pending {
        host: HeaderValue::from_static(""),
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        client: peer.ip(),
        request_id: None,
        backend: None,
        retries: 0,
        status: 0,
        bytes: 0,
        duration: Duration::ZERO,
    };
    let Some(host_value) = host_of(&req) else {
        return proxy.refuse(Refusal::NoHost, record, accept.as_ref(), started);
    };
    record.host = host_value.clone();
    let host = host_value.to_str().unwrap_or_default();
    let pool: Arc<PoolState> = match proxy.routes.load().lookup(host) {
        Some(p) => p.clone(),
        None => {
            let refusal = Refusal::UnknownRoute {
                host: normalize_host(host).into_owned(),
            };
            return proxy.refuse(refusal, record, accept.as_ref(), started);
        }
    };
    if pool.backends.is_empty() {
        let refusal = Refusal::NoInstances {
            host: normalize_host(host).into_owned(),
        };
        return proxy.refuse(refusal, record, accept.as_ref(), started);
    }

    let upgrade = headers::upgrade_of(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let requested = sticky::requested_instance(req.headers()).map(str::to_string);
    let (parts, body) = req.into_parts();
    let mut out_headers = parts.headers;
    let client = headers::Client {
        ip: peer.ip(),
        trusted: proxy.trusted(peer.ip()),
    };
    let id = headers::to_backend(&mut out_headers, client, upgrade, || {
        uuid::Uuid::new_v4().to_string()
    });
    record.request_id = Some(id);

    // Connect first: a backend that refuses is found before the request is handed over, so
    // the request can go to another instance whole.
    let mut tried_at = [0usize; retry::MAX_ATTEMPTS];
    let mut attempts = 0;
    let (backend, checkout) = loop {
        let Some(pick) = pool.pick(
            proxy.settings.balance,
            requested.as_deref(),
            &tried_at[..attempts],
        ) else {
            // Only reached when every endpoint refused within the attempts allowed.
            let refusal = Refusal::BackendFailed {
                backend: record
                    .backend
                    .as_ref()
                    .map_or_else(String::new, |b| b.authority.to_string()),
                reason: "every instance refused the connection".into(),
            };
            return proxy.refuse(refusal, record, accept.as_ref(), started);
        };
        tried_at[attempts] = pick.index;
        attempts += 1;
        let backend = pool.backends[pick.index].clone();
        record.backend = Some(backend.clone());
        let connected = tokio::select! {
            c = lane.pool.checkout(&backend.authority) => c,
            () = proxy.hard_stop.cancelled() => {
                return proxy.refuse(Refusal::ShuttingDown, record, accept.as_ref(), started);
            }
        };
        match connected {
            Ok(checkout) => break (backend, checkout),
            Err(e) => {
                proxy.metrics.backend_error(e.failure);
                let untried = pool.backends.len().saturating_sub(attempts);
                if retry::again(e.failure, attempts, proxy.settings.max_attempts, untried) {
                    proxy.metrics.retry();
                    record.retries += 1;
                    tracing::info!(
                        backend = %backend.authority,
                        index = backend.endpoint.index,
                        error = %e.reason,
                        "routing: connecting to an instance failed; trying another"
                    );
                    continue;
                }
                let refusal = Refusal::BackendFailed {
                    backend: backend.authority.to_string(),
                    reason: e.reason,
                };
                return proxy.refuse(refusal, record, accept.as_ref(), started);
            }
        }
    };

    // Origin form (`GET /path HTTP/1.1`): a connection of hyper's writes the URI as given, and
    // app servers such as busybox httpd refuse the absolute form. The host travels in `Host`,
    // set from an absolute request URI when the client sent no `Host`.
    if !out_headers.contains_key(HOST) {
        out_headers.insert(HOST, record.host.clone());
    }
    let mut outgoing = hyper::Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = Uri::from(record.path.clone());
    *outgoing.version_mut() = Version::HTTP_11;
    *outgoing.headers_mut() = out_headers;

    let in_flight = backend.begin();
    let sent = Instant::now();
    let Checkout {
        mut sender,
        mut reused,
    } = checkout;
    let result = loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(proxy.settings.backend_timeout, sender.try_send_request(outgoing)) => r,
            () = proxy.hard_stop.cancelled() => {
                return proxy.refuse(Refusal::ShuttingDown, record, accept.as_ref(), started);
            }
        };
        match attempt {
            // A kept-alive connection the backend closed while it sat idle took nothing of
            // the request: it goes again, on a new connection to the same instance.
            Ok(Err(mut e)) if reused && e.message().is_some() => {
                outgoing = e.take_message().expect("checked above");
                match lane.pool.connect(&backend.authority).await {
                    Ok(fresh) => {
                        (sender, reused) = (fresh, false);
                    }
                    Err(e) => {
                        proxy.metrics.backend_error(e.failure);
                        let refusal = Refusal::BackendFailed {
                            backend: backend.authority.to_string(),
                            reason: e.reason,
                        };
                        return proxy.refuse(refusal, record, accept.as_ref(), started);
                    }
                }
            }
            other => break other,
        }
    };
    let failure = match result {
        Ok(Ok(response)) => {
            proxy.metrics.backend_latency(sent.elapsed());
            let ctx = Answered {
                backend,
                in_flight,
                record,
                started,
                requested,
                client_upgrade,
                connection: Some((lane.clone(), sender)),
            };
            return forward(proxy, response, ctx, accept.as_ref());
        }
        Ok(Err(e)) => {
            proxy.metrics.backend_error(Failure::AfterSend);
            Refusal::BackendFailed {
                backend: backend.authority.to_string(),
                reason: describe(&e.into_error()),
            }
        }
        Err(_) => {
            proxy.metrics.backend_error(Failure::Timeout);
            Refusal::BackendTimeout {
                backend: backend.authority.to_string(),
                timeout: proxy.settings.backend_timeout,
            }
        }
    };
    proxy.refuse(failure, record, accept.as_ref(), started)
}

fn info(b: &Backend) -> BackendInfo {
    BackendInfo {
        address: b.authority.to_string(),
        process_guid: b.endpoint.process_guid.clone(),
        index: b.endpoint.index,
        instance_guid: b.endpoint.instance_guid.clone(),
        log_guid: b.endpoint.log_guid.clone(),
    }
}

/// What the proxy carries from the attempt that got an answer to the response.
struct Answered {
    backend: Arc<Backend>,
    in_flight: InFlight,
    record: Pending,
    started: Instant,
    requested: Option<String>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The connection the answer came on, to go back to the lane's pool once its body is read.
    connection: Option<(Arc<Lane>, SendRequest<Body>)>,
}

/// The backend's answer, to the client: headers rewritten, the sticky cookie added, the body
/// streamed and counted; a `101` becomes a tunnel.
fn forward(
    proxy: &Arc<Proxy>,
    mut response: hyper::Response<Incoming>,
    ctx: Answered,
    accept: Option<&HeaderValue>,
) -> Response {
    let Answered {
        backend,
        in_flight,
        mut record,
        started,
        requested,
        client_upgrade,
        connection,
    } = ctx;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && client_upgrade.is_none() {
        let refusal = Refusal::BackendFailed {
            backend: backend.authority.to_string(),
            reason: "it switched protocols on a request that asked for no upgrade".into(),
        };
        return proxy.refuse(refusal, record, accept, started);
    }
    let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    headers::to_client(&mut parts.headers, switching);
    if let Some(cookie) = sticky::cookie_for(
        &parts.headers,
        &backend.endpoint.instance_guid,
        requested.as_deref(),
    ) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            parts.headers.append(SET_COOKIE, v);
        }
    }
    record.status = parts.status.as_u16();
    proxy.metrics.response(record.status);

    if let (Some(client_side), Some(backend_side)) = (client_upgrade, backend_upgrade) {
        proxy.metrics.upgrade();
        let (hook, stop) = (proxy.hook.clone(), proxy.hard_stop.clone());
        proxy.tunnels.spawn(async move {
            let bytes = tunnel(client_side, backend_side, stop).await;
            drop(in_flight);
            record.bytes = bytes;
            record.duration = started.elapsed();
            record.emit(hook.as_ref());
        });
        return Response::from_parts(parts, Body::empty());
    }
    let body = Tracked {
        inner: body,
        bytes: 0,
        ended: false,
        done: Some(Done {
            record,
            started,
            hook: proxy.hook.clone(),
            _in_flight: in_flight,
            connection: connection.map(|(lane, sender)| (lane, backend.authority.clone(), sender)),
        }),
    };
    Response::from_parts(parts, Body::new(body))
}

/// Copies bytes both ways between an upgraded client and backend until either closes, or
/// the router's hard stop. Returns the bytes sent to the client.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    stop: CancellationToken,
) -> u64 {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "routing: an upgrade did not complete");
            return 0;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut backend) => match r {
            Ok((_, to_client)) => to_client,
            Err(e) => {
                tracing::debug!(error = %e, "routing: a tunnel ended with an error");
                0
            }
        },
        () = stop.cancelled() => 0,
    }
}

/// The error and its causes, innermost last: `connection closed before message completed`.
fn describe(e: &hyper::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

/// The response body on its way to the client, counting bytes; when it ends (or the client
/// goes) the request is logged and stops counting as in flight.
struct Tracked {
    inner: Incoming,
    bytes: u64,
    /// Whether the backend's body was read to its end.
    ended: bool,
    done: Option<Done>,
}

struct Done {
    record: Pending,
    started: Instant,
    hook: Option<AccessHook>,
    _in_flight: InFlight,
    connection: Option<(Arc<Lane>, Authority, SendRequest<Body>)>,
}

impl Tracked {
    fn finish(&mut self) {
        if let Some(mut done) = self.done.take() {
            // A connection whose answer was read whole serves the next request; one cut
            // short is dropped (and closed) with it.
            if let Some((lane, backend, sender)) = done.connection.take() {
                if self.ended || self.inner.is_end_stream() {
                    lane.pool.give_back(&backend, sender);
                }
            }
            done.record.bytes = self.bytes;
            done.record.duration = done.started.elapsed();
            done.record.emit(done.hook.as_ref());
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.ended = true;
                    this.finish();
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish();
    }
}
