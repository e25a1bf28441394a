//! Health checks against real TCP listeners and tiny HTTP servers on 127.0.0.1. Intervals are
//! a few milliseconds so the suite stays fast; timing is asserted only as generous probe
//! counts, never as wall-clock durations.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_executor::checks::{
    health_steps, CheckContext, CheckTiming, LivenessCheckStep, Probe, ReadinessCheckStep, StartupCheckStep,
};
use diego_executor::{Step, StepError};
use diego_logs::{LogStream, LogStreamer, MemorySink};
use diego_model::{Check, CheckDefinition, HttpCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

const APP_PORT: u16 = 8080;
fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn fast() -> CheckTiming {
    CheckTiming {
        initial_interval: ms(5),
        unhealthy_interval: ms(40),
        healthy_interval: ms(30),
    }
}

/// A context whose resolver maps each `(container port, host addr)` pair, logging to a
/// memory sink.
fn context(map: &[(u16, SocketAddr)]) -> (CheckContext, Arc<MemorySink>) {
    let map = map.to_vec();
    let sink = MemorySink::new();
    let streamer = LogStreamer::new(sink.clone(), "app-guid", "APP/PROC/WEB", Some(0));
    let resolver = Arc::new(move |port: u16| map.iter().find(|(p, _)| *p == port).map(|(_, a)| *a));
    let ctx = CheckContext::new(resolver, &streamer).with_timing(fast());
    (ctx, sink)
}

/// An address nothing listens on (bound once to get a free port, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A TCP listener that accepts and drops connections until the handle is aborted.
async fn tcp_server_at(addr: SocketAddr) -> JoinHandle<()> {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    })
}

/// A minimal HTTP/1.1 server answering every request with `status` (0 = never answer),
/// counting requests and keeping their request lines.
struct HttpServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    async fn start(status: u16) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let hits = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (st, h, r) = (status.clone(), hits.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let (st, r) = (st.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf);
                    r.lock()
                        .unwrap()
                        .push(text.lines().next().unwrap_or("").to_string());
                    let code = st.load(Ordering::SeqCst);
                    if code == 0 {
                        sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self {
            addr,
            status,
            hits,
            requests,
            task,
        }
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn probes(checks: &[Check]) -> Vec<Probe> {
    checks.iter().map(|c| Probe::from_check(c).unwrap()).collect()
}

/// Messages logged under `source` on `stream`.
fn logged(sink: &MemorySink, source: &str, stream: LogStream) -> Vec<String> {
    sink.lines()
        .into_iter()
        .filter(|l| l.source_type == source && l.stream == stream)
        .map(|l| l.message)
        .collect()
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        sleep(ms(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[tokio::test]
async fn startup_passes_once_a_listener_appears_and_reports_healthy_once() {
    let addr = closed_port().await;
    let (ctx, sink) = context(&[(APP_PORT, addr)]);
    let healthy = counter();
    let h = healthy.clone();
    let ctx = ctx.with_on_healthy(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let server = tokio::spawn(async move {
        sleep(ms(150)).await;
        let l = TcpListener::bind(addr).await.unwrap();
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let step = StartupCheckStep::new(probes(&[Check::tcp(8080)]), Duration::from_secs(10), ctx);
    assert_eq!(step.perform(CancellationToken::new()).await, Ok(()));
    assert_eq!(healthy.load(Ordering::SeqCst), 1);
    assert_eq!(
        logged(&sink, "CELL", LogStream::Stdout),
        [
            "Starting health monitoring of container",
            "Container became healthy"
        ]
    );
    assert!(logged(&sink, "HEALTH", LogStream::Stderr).is_empty());
    server.abort();
}

#[tokio::test]
async fn startup_that_never_passes_fails_with_diegos_texts() {
    let addr = closed_port().await;
    let (ctx, sink) = context(&[(APP_PORT, addr)]);
    let healthy = counter();
    let h = healthy.clone();
    let ctx = ctx.with_on_healthy(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let step = StartupCheckStep::new(probes(&[Check::tcp(8080)]), ms(300), ctx);
    let err = step.perform(CancellationToken::new()).await.unwrap_err();
    assert_eq!(
        err,
        StepError::Emittable(
            "Instance never healthy after 300ms: Failed to make TCP connection to port 8080: connection refused"
                .into()
        )
    );
    assert_eq!(healthy.load(Ordering::SeqCst), 0);
    assert_eq!(
        logged(&sink, "HEALTH", LogStream::Stderr),
        ["Failed to make TCP connection to port 8080: connection refused"]
    );
    let cell_err = logged(&sink, "CELL", LogStream::Stderr);
    assert_eq!(cell_err.len(), 1, "{cell_err:?}");
    assert!(cell_err[0].starts_with("Failed after "), "{}", cell_err[0]);
    assert!(
        cell_err[0].ends_with(": startup health check never passed."),
        "{}",
        cell_err[0]
    );
}

#[tokio::test]
async fn startup_waits_for_every_check() {
    let up = closed_port().await;
    let _server = tcp_server_at(up).await;
    let down = closed_port().await;
    let (ctx, _sink) = context(&[(8080, up), (9090, down)]);
    let step = StartupCheckStep::new(probes(&[Check::tcp(8080), Check::tcp(9090)]), ms(200), ctx);
    assert_eq!(
        step.perform(CancellationToken::new()).await,
        Err(StepError::Emittable(
            "Instance never healthy after 200ms: Failed to make TCP connection to port 9090: connection refused"
                .into()
        ))
    );
}

#[tokio::test]
async fn startup_polls_fast_at_first_then_backs_off() {
    let server = HttpServer::start(503).await;
    let (ctx, _sink) = context(&[(APP_PORT, server.addr)]);
    let ctx = ctx.with_timing(CheckTiming {
        initial_interval: ms(5),
        unhealthy_interval: ms(100),
        healthy_interval: ms(100),
    });
    // No start timeout: polls until cancelled.
    let step = Arc::new(StartupCheckStep::new(
        probes(&[Check::http(8080, "/")]),
        Duration::ZERO,
        ctx,
    ));
    let cancel = CancellationToken::new();
    let run = {
        let (step, cancel) = (step.clone(), cancel.clone());
        tokio::spawn(async move { step.perform(cancel).await })
    };
    // Delays 5, 5.5, 6.05, … ms (growing by a tenth): over 20 probes in the first 200 ms (plus
    // probe time). Polling at the steady 100 ms from the start would give at most 3.
    sleep(ms(200)).await;
    let early = server.hits();
    assert!(early >= 10, "{early} probes in the first 200 ms");
    // The wait reaches 100 ms after about a second; from then on half a second holds about 5
    // probes, where with no backoff at 5 ms it would be close to 100.
    sleep(ms(1300)).await;
    let before = server.hits();
    sleep(ms(500)).await;
    let steady = server.hits() - before;
    assert!((2..=10).contains(&steady), "{steady} probes in 500 ms");
    cancel.cancel();
    assert_eq!(run.await.unwrap(), Err(StepError::Cancelled));
}

#[tokio::test]
async fn liveness_fails_when_the_server_goes_away() {
    let addr = closed_port().await;
    let server = tcp_server_at(addr).await;
    let (ctx, sink) = context(&[(APP_PORT, addr)]);
    let step = LivenessCheckStep::new(probes(&[Check::tcp(8080)]), ctx);
    let killer = tokio::spawn(async move {
        sleep(ms(150)).await;
        server.abort();
    });
    let err = step.perform(CancellationToken::new()).await.unwrap_err();
    assert_eq!(
        err,
        StepError::Emittable(
            "Instance became unhealthy: Failed to make TCP connection to port 8080: connection refused"
                .into()
        )
    );
    assert_eq!(
        logged(&sink, "CELL", LogStream::Stdout),
        ["Container became unhealthy"]
    );
    assert_eq!(
        logged(&sink, "HEALTH", LogStream::Stderr),
        ["Failed to make TCP connection to port 8080: connection refused"]
    );
    killer.await.unwrap();
}

#[tokio::test]
async fn http_probes_pass_only_on_200() {
    let server = HttpServer::start(503).await;
    let (ctx, _sink) = context(&[(APP_PORT, server.addr)]);
    let probe = Probe::from_check(&Check::http(8080, "/health")).unwrap();
    let err = probe.run(&ctx).await.unwrap_err();
    assert!(err.starts_with("Received status code 503 in "), "{err}");
    assert!(err.ends_with("ms"), "{err}");
    server.set_status(204);
    assert!(probe
        .run(&ctx)
        .await
        .unwrap_err()
        .starts_with("Received status code 204 in "));
    server.set_status(200);
    assert_eq!(probe.run(&ctx).await, Ok(()));
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert!(
        requests.iter().all(|r| r == "GET /health HTTP/1.1"),
        "{requests:?}"
    );
    // A fresh connection per probe.
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn http_probe_failures_name_the_path_and_port() {
    let addr = closed_port().await;
    let (ctx, _sink) = context(&[(APP_PORT, addr)]);
    let refused = Probe::from_check(&Check::http(8080, "")).unwrap();
    assert_eq!(
        refused.run(&ctx).await,
        Err("Failed to make HTTP request to '/' on port 8080: connection refused".into())
    );

    let silent = HttpServer::start(0).await;
    let (ctx, _sink) = context(&[(APP_PORT, silent.addr)]);
    let slow = Probe::from_check(&Check {
        tcp_check: None,
        http_check: Some(HttpCheck {
            port: 8080,
            request_timeout_ms: 100,
            path: "/ready".into(),
            interval_ms: 0,
        }),
    })
    .unwrap();
    assert_eq!(
        slow.run(&ctx).await,
        Err("Failed to make HTTP request to '/ready' on port 8080: timed out after 0.10 seconds".into())
    );

    let unmapped = Probe::from_check(&Check::tcp(9999)).unwrap();
    assert_eq!(
        unmapped.run(&ctx).await,
        Err("Failed to make TCP connection to port 9999: port is not mapped to the host".into())
    );
}

#[tokio::test]
async fn liveness_over_http_fails_on_non_200() {
    let server = HttpServer::start(200).await;
    let (ctx, _sink) = context(&[(APP_PORT, server.addr)]);
    let step = LivenessCheckStep::new(probes(&[Check::http(8080, "/")]), ctx);
    let flip = tokio::spawn({
        let status = server.status.clone();
        async move {
            sleep(ms(120)).await;
            status.store(500, Ordering::SeqCst);
        }
    });
    let err = step.perform(CancellationToken::new()).await.unwrap_err();
    let text = err.emittable().unwrap();
    assert!(
        text.starts_with("Instance became unhealthy: Received status code 500 in "),
        "{text}"
    );
    // It passed a few times before the flip.
    assert!(server.hits() >= 2, "{}", server.hits());
    flip.await.unwrap();
}

#[tokio::test]
async fn readiness_flips_true_then_false_without_failing() {
    let server = HttpServer::start(503).await;
    let (ctx, sink) = context(&[(APP_PORT, server.addr)]);
    let flips = Arc::new(Mutex::new(Vec::new()));
    let f = flips.clone();
    let ctx = ctx.with_on_ready(move |ready| f.lock().unwrap().push(ready));
    let step = Arc::new(ReadinessCheckStep::new(
        probes(&[Check::http(8080, "/ready")]),
        ctx,
    ));
    let cancel = CancellationToken::new();
    let run = {
        let (step, cancel) = (step.clone(), cancel.clone());
        tokio::spawn(async move { step.perform(cancel).await })
    };
    eventually("a few failed readiness probes", || server.hits() >= 3).await;
    assert!(flips.lock().unwrap().is_empty(), "not ready is the initial state");

    server.set_status(200);
    eventually("ready", || *flips.lock().unwrap() == [true]).await;
    server.set_status(503);
    eventually("not ready", || *flips.lock().unwrap() == [true, false]).await;
    server.set_status(200);
    eventually("ready again", || *flips.lock().unwrap() == [true, false, true]).await;
    assert!(!run.is_finished(), "readiness never ends by itself");

    cancel.cancel();
    assert_eq!(run.await.unwrap(), Err(StepError::Cancelled));
    let out = logged(&sink, "HEALTH", LogStream::Stdout);
    assert_eq!(
        out[..3],
        [
            "Container passed the readiness health check. Container marked ready and added to route pool.",
            "Container failed the readiness health check. Container marked not ready and removed from route pool.",
            "Container passed the readiness health check. Container marked ready and added to route pool.",
        ]
    );
}

#[tokio::test]
async fn cancellation_stops_every_check_step_promptly() {
    let up = closed_port().await;
    let _server = tcp_server_at(up).await;
    let down = closed_port().await;
    let (ctx, _sink) = context(&[(8080, up), (9090, down)]);
    let steps: Vec<(&str, Box<dyn Step>)> = vec![
        (
            "startup",
            Box::new(StartupCheckStep::new(
                probes(&[Check::tcp(9090)]),
                Duration::ZERO,
                ctx.clone(),
            )),
        ),
        (
            "liveness",
            Box::new(LivenessCheckStep::new(probes(&[Check::tcp(8080)]), ctx.clone())),
        ),
        (
            "liveness, no checks",
            Box::new(LivenessCheckStep::new(vec![], ctx.clone())),
        ),
        (
            "readiness",
            Box::new(ReadinessCheckStep::new(probes(&[Check::tcp(9090)]), ctx.clone())),
        ),
    ];
    for (name, step) in steps {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            sleep(ms(60)).await;
            c.cancel();
        });
        let res = tokio::time::timeout(Duration::from_secs(5), step.perform(cancel)).await;
        assert_eq!(res, Ok(Err(StepError::Cancelled)), "{name}");
    }
}

#[tokio::test]
async fn no_checks_no_monitor() {
    let (ctx, _sink) = context(&[]);
    assert!(health_steps(&CheckDefinition::default(), Duration::from_secs(60), &ctx).is_none());
}

#[tokio::test]
async fn the_monitor_tree_reports_healthy_and_ready_then_crashes_on_liveness() {
    let app = closed_port().await;
    let app_server = tcp_server_at(app).await;
    let ready = HttpServer::start(200).await;
    let (ctx, sink) = context(&[(8080, app), (8081, ready.addr)]);
    let (healthy, flips) = (counter(), Arc::new(Mutex::new(Vec::new())));
    let (h, f) = (healthy.clone(), flips.clone());
    let ctx = ctx
        .with_on_healthy(move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .with_on_ready(move |r| f.lock().unwrap().push(r));
    let def = CheckDefinition {
        checks: vec![Check::tcp(8080)],
        readiness_checks: vec![Check::http(8081, "/ready")],
        log_source: "MY-HEALTH".into(),
        ..Default::default()
    };
    let tree = health_steps(&def, Duration::from_secs(10), &ctx).unwrap();
    let run = tokio::spawn(async move { tree.perform(CancellationToken::new()).await });
    eventually("healthy and ready", || {
        healthy.load(Ordering::SeqCst) == 1 && *flips.lock().unwrap() == [true]
    })
    .await;
    app_server.abort();
    let err = run.await.unwrap().unwrap_err();
    assert_eq!(
        err.emittable().as_deref(),
        Some("Instance became unhealthy: Failed to make TCP connection to port 8080: connection refused")
    );
    assert_eq!(healthy.load(Ordering::SeqCst), 1);
    assert_eq!(
        logged(&sink, "MY-HEALTH", LogStream::Stderr),
        ["Failed to make TCP connection to port 8080: connection refused"]
    );
    assert_eq!(
        logged(&sink, "CELL", LogStream::Stdout),
        [
            "Starting health monitoring of container",
            "Container became healthy",
            "Container became unhealthy"
        ]
    );
}

#[tokio::test]
async fn startup_checks_take_precedence_over_liveness_checks() {
    let app = closed_port().await;
    let _app_server = tcp_server_at(app).await;
    let (ctx, _sink) = context(&[(8080, app)]);
    let def = CheckDefinition {
        checks: vec![Check::tcp(8080)],
        startup_checks: vec![Check::tcp(9000)],
        ..Default::default()
    };
    let tree = health_steps(&def, ms(200), &ctx).unwrap();
    assert_eq!(
        tree.perform(CancellationToken::new()).await,
        Err(StepError::Emittable(
            "Instance never healthy after 200ms: Failed to make TCP connection to port 9000: port is not mapped to the host"
                .into()
        ))
    );
}

#[tokio::test]
async fn readiness_only_definitions_are_healthy_at_once() {
    let ready = HttpServer::start(200).await;
    let (ctx, sink) = context(&[(8081, ready.addr)]);
    let healthy = counter();
    let h = healthy.clone();
    let ctx = ctx.with_on_healthy(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let def = CheckDefinition {
        readiness_checks: vec![Check::http(8081, "/")],
        ..Default::default()
    };
    let tree = health_steps(&def, Duration::from_secs(10), &ctx).unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { tree.perform(cancel).await }
    });
    eventually("healthy", || healthy.load(Ordering::SeqCst) == 1).await;
    eventually("ready", || !logged(&sink, "HEALTH", LogStream::Stdout).is_empty()).await;
    assert!(!run.is_finished(), "the tree runs until cancelled");
    cancel.cancel();
    assert_eq!(run.await.unwrap(), Err(StepError::Cancelled));
}

#[tokio::test]
async fn malformed_checks_fail_at_once() {
    let (ctx, _sink) = context(&[]);
    let def = CheckDefinition {
        checks: vec![Check::default()],
        ..Default::default()
    };
    let tree = health_steps(&def, Duration::from_secs(60), &ctx).unwrap();
    let err = tree.perform(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, StepError::Invalid(_)), "{err:?}");
}

/// A dialer standing in for a backend that connects into containers: container port →
/// `addr` on the host.
fn dialer_to(map: &[(u16, SocketAddr)]) -> diego_executor::checks::ContainerDialer {
    let map = map.to_vec();
    Arc::new(move |port: u16| {
        let addr = map.iter().find(|(p, _)| *p == port).map(|(_, a)| *a);
        Box::pin(async move {
            match addr {
                Some(a) => tokio::net::TcpStream::connect(a).await,
                None => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            }
        })
    })
}

#[tokio::test]
async fn with_a_dialer_probes_connect_into_the_container_not_to_an_accepting_proxy() {
    // The host port accepts everything (like a userspace proxy); inside, nothing listens.
    let proxy = closed_port().await;
    let _accepts_all = tcp_server_at(proxy).await;
    let inside = closed_port().await;
    let (ctx, _) = context(&[(APP_PORT, proxy)]);
    let probe = Probe::from_check(&Check::tcp(u32::from(APP_PORT))).unwrap();
    assert_eq!(
        probe.run(&ctx).await,
        Ok(()),
        "through the proxy the probe is fooled"
    );
    let ctx = ctx.with_dialer(dialer_to(&[(APP_PORT, inside)]));
    assert_eq!(
        probe.run(&ctx).await,
        Err("Failed to make TCP connection to port 8080: connection refused".to_string())
    );
    // Once the app listens inside, the probe passes.
    let _app = tcp_server_at(inside).await;
    assert_eq!(probe.run(&ctx).await, Ok(()));
}

#[tokio::test]
async fn http_checks_over_a_dialer_read_the_status() {
    let server = HttpServer::start(200).await;
    let (ctx, _) = context(&[]);
    let ctx = ctx.with_dialer(dialer_to(&[(APP_PORT, server.addr)]));
    let probe = Probe::from_check(&Check::http(u32::from(APP_PORT), "/health")).unwrap();
    assert_eq!(probe.run(&ctx).await, Ok(()));
    assert_eq!(server.requests.lock().unwrap()[0], "GET /health HTTP/1.1");
    server.status.store(503, Ordering::SeqCst);
    let err = probe.run(&ctx).await.unwrap_err();
    assert!(err.starts_with("Received status code 503 in "), "{err}");
    let refused = context(&[]).0.with_dialer(dialer_to(&[]));
    assert_eq!(
        probe.run(&refused).await,
        Err("Failed to make HTTP request to '/health' on port 8080: connection refused".to_string())
    );
}
