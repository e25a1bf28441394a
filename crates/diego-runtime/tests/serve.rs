//! The server loop's limits over real sockets on 127.0.0.1: slow clients are cut off, normal
//! ones served, connections beyond the limit refused, long responses left alone.
//!
//! Real sockets rule out paused time, so the limits are configured short and every wait for
//! "eventually" is bounded by [`BOUND`]; no test measures how long anything took.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use axum::Router;
use diego_runtime::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// The header and body timeouts of the tests that exercise them.
const SHORT: Duration = Duration::from_millis(250);
/// The longest a test waits for something that must happen.
const BOUND: Duration = Duration::from_secs(5);
/// The streaming route's pause between lines: longer than [`SHORT`].
const TICK: Duration = Duration::from_millis(500);
const TICKS: usize = 3;

fn short_timeouts() -> ServeLimits {
    ServeLimits {
        header_read_timeout: SHORT,
        body_idle_timeout: SHORT,
        ..ServeLimits::default()
    }
}

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/echo", post(|body: Bytes| async move { body.len().to_string() }))
        .route("/stream", get(stream))
}

/// A line every [`TICK`], like an event stream with quiet spells.
async fn stream() -> Body {
    Body::from_stream(futures_util::stream::unfold(0, |n| async move {
        if n == TICKS {
            return None;
        }
        tokio::time::sleep(TICK).await;
        Some((Ok::<_, Infallible>(format!("tick {n}\n")), n + 1))
    }))
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: ServeLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app(), stop.clone(), limits, None));
        Server { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Stops the server and checks it returns once its connections are gone.
    async fn stop(self) {
        self.stop.cancel();
        timeout(BOUND, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A normal client, as a role would make one.
async fn get_ok(server: &Server) {
    let response = timeout(BOUND, reqwest::get(server.url("/ok")))
        .await
        .expect("a normal client is answered")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

/// Everything the server sends until it closes the connection; fails if it stays open.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("connection still open after {BOUND:?}"))
        .unwrap();
    String::from_utf8(got).unwrap()
}

/// `GET path` on a kept-alive connection: the status line and the body.
async fn get_on(stream: &mut TcpStream, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    timeout(BOUND, read_response(stream)).await.expect("an answer")
}

async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-answer: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(got[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = got[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap().to_string();
    (status, String::from_utf8(body).unwrap())
}

const HALF_A_BODY: &[u8] = b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\n0123456789";
const HALF_THE_HEADERS: &[u8] = b"GET /ok HTTP/1.1\r\nhost: test\r\n";

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408_and_is_disconnected() {
    let server = Server::start(short_timeouts()).await;
    let mut slow = server.connect().await;
    slow.write_all(HALF_A_BODY).await.unwrap();

    let got = until_closed(&mut slow).await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
    assert!(
        got.contains("no part of the request body arrived for 250ms"),
        "{got}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_mid_headers_is_disconnected() {
    let server = Server::start(short_timeouts()).await;
    let mut slow = server.connect().await;
    slow.write_all(HALF_THE_HEADERS).await.unwrap();

    let got = until_closed(&mut slow).await;
    assert!(!got.contains("200 OK"), "a half request is not answered: {got}");
    server.stop().await;
}

#[tokio::test]
async fn stalled_clients_do_not_keep_a_normal_client_waiting() {
    let server = Server::start(short_timeouts()).await;
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut slow = server.connect().await;
        let half = if i % 2 == 0 { HALF_A_BODY } else { HALF_THE_HEADERS };
        slow.write_all(half).await.unwrap();
        stalled.push(slow);
    }

    get_ok(&server).await;
    let echoed = reqwest::Client::new()
        .post(server.url("/echo"))
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.unwrap(), "100");
    for slow in &mut stalled {
        until_closed(slow).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_keeps_arriving_slowly_is_not_cut() {
    let server = Server::start(short_timeouts()).await;
    let mut client = server.connect().await;
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 8\r\n\r\n")
        .await
        .unwrap();
    // Eight bytes over longer than the idle timeout, none of the gaps as long.
    for _ in 0..8 {
        tokio::time::sleep(SHORT / 3).await;
        client.write_all(b"x").await.unwrap();
    }

    let (status, body) = timeout(BOUND, read_response(&mut client)).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "8");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let server = Server::start(short_timeouts()).await;
    let mut client = server.connect().await;
    let (status, _) = get_on(&mut client, "/ok").await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    assert_eq!(until_closed(&mut client).await, "");
    server.stop().await;
}

#[tokio::test]
async fn a_response_streaming_longer_than_the_timeouts_is_not_cut() {
    let server = Server::start(short_timeouts()).await;
    let response = reqwest::get(server.url("/stream")).await.unwrap();
    assert_eq!(response.status(), 200);

    let text = timeout(BOUND, response.text()).await.unwrap().unwrap();
    assert_eq!(text, "tick 0\ntick 1\ntick 2\n");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_beyond_the_limit_is_refused_with_503_until_one_closes() {
    let server = Server::start(ServeLimits {
        max_connections: 4,
        ..ServeLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut client = server.connect().await;
        assert_eq!(get_on(&mut client, "/ok").await.0, "HTTP/1.1 200 OK");
        held.push(client);
    }

    let mut fifth = server.connect().await;
    fifth
        .write_all(b"GET /ok HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let refused = until_closed(&mut fifth).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(
        refused.ends_with("\r\n\r\ntoo many connections (limit 4)\n"),
        "{refused}"
    );
    drop(fifth);

    for client in &mut held {
        assert_eq!(
            get_on(client, "/ok").await.0,
            "HTTP/1.1 200 OK",
            "held connections still work"
        );
    }
    drop(held);
    timeout(BOUND, async {
        loop {
            let mut client = server.connect().await;
            let request = b"GET /ok HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
            client.write_all(request).await.unwrap();
            if until_closed(&mut client).await.starts_with("HTTP/1.1 200 OK") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("served again once the held connections closed");
    server.stop().await;
}
