//! The router over a real BBS on loopback, in front of the test's own HTTP servers: routing,
//! balancing, the router's own answers, retries, timeouts, WebSockets, headers, sticky
//! sessions, following the BBS, and drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use diego_routing::router::{self, RouterConfig, RunningRouter};
use diego_testkit::{eventually, TestBbs};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

mod common;
use common::{register_cell, run_instance, web};

const WAIT: Duration = Duration::from_secs(15);
const HOST: &str = "web.diego.localhost";

/// One of the test's backends: answers JSON naming its index and the headers it got.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct BackendState {
    index: i32,
    hits: Arc<AtomicUsize>,
}

/// `/` answers `{"index": i, "headers": {…}}`; `/slow?ms=N` waits N ms first; `/login` sets
/// `JSESSIONID`; `/ws` is a WebSocket that echoes what it gets, prefixed with the index.
async fn backend(index: i32) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let app = axum::Router::new().fallback(answer).with_state(BackendState {
        index,
        hits: hits.clone(),
    });
    tokio::spawn(diego_runtime::serve(
        listener,
        app,
        stop.clone(),
        Default::default(),
        None,
    ));
    Backend { addr, hits, stop }
}

async fn answer(State(s): State<BackendState>, mut req: Request) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path == "/ws" {
        return websocket(s.index, &mut req);
    }
    if path == "/slow" {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    // The request line's target, under a key no header can have.
    headers.insert("(target)".into(), req.uri().to_string());
    let body = serde_json::json!({"index": s.index, "headers": headers}).to_string();
    let mut response = Response::new(Body::from(body));
    if path == "/login" {
        response.headers_mut().insert(
            header::SET_COOKIE,
            "JSESSIONID=session-1; Path=/; HttpOnly".parse().unwrap(),
        );
    }
    response
}

fn websocket(index: i32, req: &mut Request) -> Response {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .unwrap()
        .as_bytes()
        .to_vec();
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                ws.send(Message::text(format!("{index}: {t}"))).await.unwrap();
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(&key))
        .body(Body::empty())
        .unwrap()
}

/// A BBS with `web` routed at [`HOST`], and a router following it.
struct Setup {
    bbs: TestBbs,
    router: RunningRouter,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Setup {
    async fn start(instances: i32, tune: impl FnOnce(&mut RouterConfig)) -> Setup {
        let bbs = TestBbs::start().await;
        register_cell(&bbs.client).await;
        bbs.client.desire_lrp(&web(instances, HOST)).await.unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = RouterConfig::new(bbs.url.clone(), loopback, loopback);
        tune(&mut config);
        let stop = CancellationToken::new();
        let router = router::start(config, stop.clone()).await.unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Setup {
            bbs,
            router,
            stop,
            http,
        }
    }

    fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("http://{}{path}", self.router.addr))
            .header(header::HOST, host)
    }

    async fn admin(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("http://{}{path}", self.router.admin_addr))
            .send()
            .await
            .unwrap()
    }

    /// Waits until the router's table sends [`HOST`] to exactly `ports`.
    async fn routes_to(&self, ports: &[u16]) {
        let want: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        eventually(WAIT, || async {
            let table: serde_json::Value = self
                .admin("/routes")
                .await
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let mut got: Vec<String> = table[HOST]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| e["address"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            got.sort();
            let mut want = want.clone();
            want.sort();
            if got == want {
                Ok(())
            } else {
                Err(format!("{HOST} routes to {got:?}, want {want:?}"))
            }
        })
        .await
    }

    async fn metrics(&self) -> String {
        self.admin("/metrics").await.text().await.unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The answer of a backend through the router: (index, headers it got).
async fn served(resp: reqwest::Response) -> (i32, BTreeMap<String, String>) {
    assert_eq!(resp.status(), 200, "through the router");
    let v: serde_json::Value = resp.json().await.unwrap();
    let headers = serde_json::from_value(v["headers"].clone()).unwrap();
    (v["index"].as_i64().unwrap() as i32, headers)
}

/// A port nothing listens on (bound a moment ago, then closed).
fn refusing_port() -> u16 {
    diego_testkit::free_port()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn requests_reach_every_instance_with_the_forwarding_headers() {
    let s = Setup::start(3, |_| {}).await;
    let backends = [backend(0).await, backend(1).await, backend(2).await];
    for (i, b) in backends.iter().enumerate() {
        run_instance(&s.bbs.client, i as i32, u32::from(b.addr.port())).await;
    }
    // Not ready until the first listing; then the health check says so.
    eventually(WAIT, || async {
        let r = s.admin("/health").await;
        if r.status() == 200 {
            Ok(())
        } else {
            Err(r.text().await.unwrap())
        }
    })
    .await;
    assert!(s.router.is_ready());
    s.routes_to(&backends.each_ref().map(|b| b.addr.port())).await;

    let mut hits = [0; 3];
    for _ in 0..30 {
        let (index, _) = served(s.get(HOST, "/").send().await.unwrap()).await;
        hits[index as usize] += 1;
    }
    assert_eq!(hits, [10, 10, 10], "round robin spreads evenly");
    for (i, b) in backends.iter().enumerate() {
        assert_eq!(b.hits.load(Ordering::SeqCst), 10, "backend {i}");
    }
    // Any case, with a port: the same route.
    let (_, _) = served(s.get("WEB.diego.localhost:8080", "/").send().await.unwrap()).await;

    // Headers: the client's address appended, an id kept or made, the same id for gorouter.
    let (_, h) = served(
        s.get(HOST, "/")
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-request-id", "my-id-1")
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-request-id"], "my-id-1");
    assert_eq!(h["x-vcap-request-id"], "my-id-1");
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "the test client is no trusted hop"
    );
    assert_eq!(h["host"], HOST, "the client's Host reaches the app");
    assert_eq!(
        h["(target)"], "/",
        "the request line is in origin form, which every app server takes"
    );
    let (_, h) = served(s.get(HOST, "/").send().await.unwrap()).await;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    let made = &h["x-request-id"];
    uuid::Uuid::parse_str(made).unwrap_or_else(|e| panic!("{made:?} is no UUID: {e}"));
    assert_eq!(&h["x-vcap-request-id"], made);

    let table: serde_json::Value = s.admin("/routes").await.json().await.unwrap();
    let e = &table[HOST][0];
    assert_eq!(e["process_guid"], "web");
    assert!(
        e["instance_guid"].as_str().unwrap().starts_with("instance-"),
        "{e}"
    );
    assert_eq!(e["presence"], "ORDINARY");
    let m = s.metrics().await;
    assert!(
        metric(
            &m,
            "router_proxied_requests_total{status_class=\"2xx\",status=\"200\"}"
        ) >= 33.0,
        "{m}"
    );
    assert_eq!(metric(&m, "router_routes"), 1.0, "{m}");
    assert_eq!(metric(&m, "router_endpoints"), 3.0, "{m}");
    assert!(metric(&m, "router_sync_listings_total") >= 1.0, "{m}");
    assert!(metric(&m, "router_backend_latency_seconds_count") >= 33.0, "{m}");
}

#[tokio::test]
async fn unknown_hosts_and_routes_without_instances_are_answered_clearly() {
    let s = Setup::start(1, |_| {}).await;
    s.routes_to(&[]).await;

    let r = s.get("foo.diego.localhost", "/").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-cf-routererror"], "unknown_route");
    assert_eq!(
        r.text().await.unwrap(),
        "unknown route: no app is routed at \"foo.diego.localhost\"\n"
    );
    let r = s
        .get("foo.diego.localhost", "/")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "UnknownRoute");
    assert!(
        v["message"].as_str().unwrap().contains("foo.diego.localhost"),
        "{v}"
    );

    // Known, nothing running: 503 naming the host.
    let r = s.get(HOST, "/").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("no instances") && text.contains(HOST), "{text}");
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_another_instance() {
    let s = Setup::start(2, |_| {}).await;
    let live = backend(1).await;
    let dead = refusing_port();
    run_instance(&s.bbs.client, 0, u32::from(dead)).await;
    run_instance(&s.bbs.client, 1, u32::from(live.addr.port())).await;
    s.routes_to(&[dead, live.addr.port()]).await;

    for _ in 0..10 {
        let (index, _) = served(s.get(HOST, "/").send().await.unwrap()).await;
        assert_eq!(index, 1);
    }
    let m = s.metrics().await;
    assert!(
        metric(&m, "router_retries_total") >= 4.0,
        "half the requests first went to the dead port:\n{m}"
    );
    assert!(
        metric(&m, "router_backend_errors_total{kind=\"connect_refused\"}") >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "router_proxied_requests_total{status_class=\"5xx\",status=\"502\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_pool_whose_every_port_refuses_gets_502_naming_the_failure() {
    let s = Setup::start(1, |_| {}).await;
    let dead = refusing_port();
    run_instance(&s.bbs.client, 0, u32::from(dead)).await;
    s.routes_to(&[dead]).await;
    let r = s.get(HOST, "/").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("127.0.0.1:{dead}")) && text.to_lowercase().contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn a_backend_that_hangs_past_the_timeout_gets_504() {
    let s = Setup::start(1, |c| c.backend_timeout = Duration::from_millis(300)).await;
    let slow = backend(0).await;
    run_instance(&s.bbs.client, 0, u32::from(slow.addr.port())).await;
    s.routes_to(&[slow.addr.port()]).await;
    let r = s.get(HOST, "/slow?ms=5000").send().await.unwrap();
    assert_eq!(r.status(), 504);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("backend timeout") && text.contains(&slow.addr.to_string()),
        "{text}"
    );
    assert_eq!(
        slow.hits.load(Ordering::SeqCst),
        1,
        "a request that was sent is not retried"
    );
    // A quick answer on the same route is still fine.
    served(s.get(HOST, "/").send().await.unwrap()).await;
}

#[tokio::test]
async fn a_websocket_echoes_through_the_router() {
    let s = Setup::start(1, |_| {}).await;
    let b = backend(0).await;
    run_instance(&s.bbs.client, 0, u32::from(b.addr.port())).await;
    s.routes_to(&[b.addr.port()]).await;

    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/ws", s.router.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(header::HOST, HOST.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(response.status(), 101);
    for word in ["hello", "again"] {
        ws.send(Message::text(word)).await.unwrap();
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text(format!("0: {word}")));
    }
    ws.close(None).await.unwrap();
    let m = s.metrics().await;
    assert_eq!(metric(&m, "router_websocket_upgrades_total"), 1.0, "{m}");
}

#[tokio::test]
async fn sticky_sessions_follow_the_vcap_id_cookie() {
    let s = Setup::start(3, |_| {}).await;
    let backends = [backend(0).await, backend(1).await, backend(2).await];
    for (i, b) in backends.iter().enumerate() {
        run_instance(&s.bbs.client, i as i32, u32::from(b.addr.port())).await;
    }
    s.routes_to(&backends.each_ref().map(|b| b.addr.port())).await;

    // The session starts: the router adds __VCAP_ID__ for the instance that answered.
    let r = s.get(HOST, "/login").send().await.unwrap();
    let cookies: Vec<String> = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let (index, _) = served(r).await;
    let vcap = format!("__VCAP_ID__=instance-{index}; Path=/; HttpOnly");
    assert!(cookies.contains(&vcap), "{cookies:?} lacks {vcap}");

    // Every request of the session goes back to it.
    for _ in 0..9 {
        let r = s
            .get(HOST, "/")
            .header(
                header::COOKIE,
                format!("JSESSIONID=session-1; __VCAP_ID__=instance-{index}"),
            )
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get(header::SET_COOKIE).is_none(),
            "nothing to refresh"
        );
        assert_eq!(served(r).await.0, index);
    }

    // An instance that is not in the pool: balanced normally and the cookie moves.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = s
            .get(HOST, "/")
            .header(header::COOKIE, "JSESSIONID=session-1; __VCAP_ID__=instance-9")
            .send()
            .await
            .unwrap();
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
        let (i, _) = served(r).await;
        assert_eq!(cookie, format!("__VCAP_ID__=instance-{i}; Path=/; HttpOnly"));
        seen.insert(i);
    }
    assert_eq!(seen.len(), 3, "balanced over every instance: {seen:?}");
}

#[tokio::test]
async fn an_instance_removed_in_the_bbs_stops_getting_requests() {
    let s = Setup::start(2, |_| {}).await;
    let (b0, b1) = (backend(0).await, backend(1).await);
    run_instance(&s.bbs.client, 0, u32::from(b0.addr.port())).await;
    run_instance(&s.bbs.client, 1, u32::from(b1.addr.port())).await;
    s.routes_to(&[b0.addr.port(), b1.addr.port()]).await;

    s.bbs
        .client
        .crash_actual_lrp("web", 1, &common::key(1), "gone")
        .await
        .unwrap();
    // Eventually every request goes to instance 0 and none reaches 1.
    eventually(WAIT, || async {
        let before = b1.hits.load(Ordering::SeqCst);
        for _ in 0..10 {
            served(s.get(HOST, "/").send().await.unwrap()).await;
        }
        let after = b1.hits.load(Ordering::SeqCst);
        if after == before {
            Ok(())
        } else {
            Err(format!(
                "{} of 10 requests still reached instance 1",
                after - before
            ))
        }
    })
    .await;
    s.routes_to(&[b0.addr.port()]).await;
}

#[tokio::test]
async fn draining_lets_an_in_flight_request_finish() {
    let mut s = Setup::start(1, |c| c.drain_timeout = Duration::from_secs(20)).await;
    let b = backend(0).await;
    run_instance(&s.bbs.client, 0, u32::from(b.addr.port())).await;
    s.routes_to(&[b.addr.port()]).await;

    let slow = tokio::spawn(s.get(HOST, "/slow?ms=1500").send());
    eventually(WAIT, || async {
        if b.hits.load(Ordering::SeqCst) == 1 {
            Ok(())
        } else {
            Err("the slow request has not reached the backend")
        }
    })
    .await;
    s.stop.cancel();
    // New connections are refused once the listener is closed…
    let addr = s.router.addr;
    eventually(WAIT, || async {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => Ok(()),
            Ok(_) => Err("the router still accepts"),
        }
    })
    .await;
    // …while the one in flight gets its answer.
    let r = slow.await.unwrap().unwrap();
    assert_eq!(served(r).await.0, 0);
    let task = &mut s.router.task;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn least_connections_sends_to_the_idle_instance() {
    let s = Setup::start(2, |c| c.balance = router::Balance::LeastConnections).await;
    let (b0, b1) = (backend(0).await, backend(1).await);
    run_instance(&s.bbs.client, 0, u32::from(b0.addr.port())).await;
    run_instance(&s.bbs.client, 1, u32::from(b1.addr.port())).await;
    s.routes_to(&[b0.addr.port(), b1.addr.port()]).await;

    // One long request holds an instance; the quick ones all go to the other.
    let slow = tokio::spawn(s.get(HOST, "/slow?ms=3000").send());
    eventually(WAIT, || async {
        if b0.hits.load(Ordering::SeqCst) + b1.hits.load(Ordering::SeqCst) == 1 {
            Ok(())
        } else {
            Err("the slow request has not arrived")
        }
    })
    .await;
    let busy = if b0.hits.load(Ordering::SeqCst) == 1 { 0 } else { 1 };
    for _ in 0..6 {
        let (index, _) = served(s.get(HOST, "/").send().await.unwrap()).await;
        assert_eq!(index, 1 - busy);
    }
    served(slow.await.unwrap().unwrap()).await;
}

/// The proxy's threads share their port (SO_REUSEPORT), but a second router cannot take it.
#[tokio::test]
async fn a_second_router_cannot_take_the_port_of_the_first() {
    let config = |listen| RouterConfig::new("http://127.0.0.1:9", listen, ([127, 0, 0, 1], 0).into());
    let stop = CancellationToken::new();
    let first = router::start(config(([127, 0, 0, 1], 0).into()), stop.clone())
        .await
        .unwrap();
    let err = router::start(config(first.addr), stop.clone()).await.err();
    assert_eq!(
        err.map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse),
        "a second router bound {}",
        first.addr
    );
    stop.cancel();
}
