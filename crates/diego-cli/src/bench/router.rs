//! `diego bench router`: the router against nginx in front of the same 4 loopback backends.
//!
//! - Throughput: `wrk` (same threads, connections and duration) through each proxy, and the
//!   CPU time each proxy spent per request meanwhile (from `/proc`: the router's proxy threads,
//!   nginx's master and workers), which a busy machine disturbs far less than requests/s.
//! - Latency: an open-loop generator at a fixed rate, half nginx's measured maximum, timing
//!   each request from when it was due (so a stall counts against the proxy).
//! - Route removal: under load, an instance is crashed in the BBS; the figure is from that
//!   call until the last request its backend sees.
//!
//! The router runs in this process behind a real BBS (memory store), on the process's runtime
//! (one worker per core); nginx runs from Debian's package as a child with `daemon off` and
//! `worker_processes auto` (one per core), configured in a temp dir with keep-alive upstreams,
//! stopped by its PID. Neither writes an access log. The backends and the open-loop generator
//! run on runtimes of their own (2 threads each), so the router's threads, like nginx's
//! workers, do nothing but proxy and the two compete for the cores on equal terms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use diego_client::BbsClient;
use diego_model::api::StartActualLrpRequest;
use diego_model::{ActualLrpInstanceKey, ActualLrpNetInfo, DesiredLrp, PortMapping};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::procs::US_PER_TICK;

pub struct Options {
    pub json: bool,
    pub duration: Duration,
    pub connections: usize,
    pub threads: usize,
}

const HOST: &str = "bench.diego.localhost";
const BACKENDS: usize = 4;

/// A backend's counters: hits, and when the last one arrived (ns since the bench began).
#[derive(Default)]
struct Hits {
    count: AtomicU64,
    last_ns: AtomicU64,
}

async fn start_backend(epoch: Instant, stop: CancellationToken) -> anyhow::Result<(SocketAddr, Arc<Hits>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(Hits::default());
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.count.fetch_add(1, Ordering::Relaxed);
            h.last_ns
                .fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            "hello from a bench backend\n"
        }
    });
    tokio::spawn(diego_runtime::serve(
        listener,
        app,
        stop,
        Default::default(),
        None,
    ));
    Ok((addr, hits))
}

fn key(index: usize) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey::new(format!("bench-{index}"), "bench-cell")
}

async fn run_instance(c: &BbsClient, index: usize, port: u16) -> anyhow::Result<()> {
    let i = index as i32;
    c.claim_actual_lrp("bench", i, &key(index)).await?;
    let req = StartActualLrpRequest {
        instance_key: key(index),
        net_info: ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: u32::from(port),
                ..Default::default()
            }],
            instance_address: String::new(),
        },
        routable: None,
        availability_zone: "z1".into(),
    };
    c.start_actual_lrp("bench", i, &req).await?;
    Ok(())
}

fn nginx_conf(dir: &std::path::Path, listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let servers: String = backends.iter().map(|b| format!("    server {b};\n")).collect();
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 75s;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream backends {{\n{servers}    keepalive 64;\n  }}\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://backends;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
    )
}

/// nginx as a child, stopped by its PID when dropped: SIGTERM (the master stops its workers,
/// then itself), and SIGKILL if it is still there 5 s later.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_nginx(dir: &std::path::Path, backends: &[SocketAddr]) -> anyhow::Result<(Nginx, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, listen, backends))?;
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light or nginx)")?;
    let nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nginx did not listen on {listen} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((nginx, listen))
}

/// What one `wrk` run measured.
struct Throughput {
    rps: f64,
    requests: u64,
    /// CPU time (user + system) the proxy's own threads spent during the run, in µs per request.
    cpu_us_per_request: f64,
}

/// The CPU time, in clock ticks, of a proxy: the router's proxy threads in this process, or
/// nginx's master and workers.
enum Proxy {
    Router,
    Nginx(u32),
}

impl Proxy {
    fn cpu_ticks(&self) -> u64 {
        use diego_garden::procfs::{children, threads_named, Stat};
        let me = std::process::id();
        match self {
            Proxy::Router => threads_named(me, "router-proxy")
                .into_iter()
                .filter_map(|tid| Stat::read_thread(me, tid).ok())
                .map(|s| s.cpu_ticks)
                .sum(),
            Proxy::Nginx(master) => std::iter::once(*master)
                .chain(children(*master))
                .filter_map(|pid| Stat::read(pid).ok())
                .map(|s| s.cpu_ticks)
                .sum(),
        }
    }
}

/// `wrk` through `addr`, and the CPU time `proxy` spent meanwhile.
async fn wrk(o: &Options, addr: SocketAddr, proxy: Proxy) -> anyhow::Result<Throughput> {
    let cpu_before = proxy.cpu_ticks();
    let out = tokio::process::Command::new("wrk")
        .args([
            format!("-t{}", o.threads),
            format!("-c{}", o.connections),
            format!("-d{}s", o.duration.as_secs().max(1)),
            "-H".into(),
            format!("Host: {HOST}"),
            format!("http://{addr}/"),
        ])
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let cpu_ticks = proxy.cpu_ticks().saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["Non-2xx or 3xx responses", "Socket errors"] {
        anyhow::ensure!(!text.contains(bad), "wrk through {addr} saw errors:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    // "  163210 requests in 8.00s, 20.58MB read"
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
    Ok(Throughput {
        rps,
        requests,
        cpu_us_per_request: cpu_ticks as f64 * US_PER_TICK / requests.max(1) as f64,
    })
}

type BenchClient = Client<HttpConnector, Body>;

fn client() -> BenchClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(c)
}

async fn get(client: &BenchClient, addr: SocketAddr) -> anyhow::Result<u16> {
    let req = hyper::Request::get(format!("http://{addr}/"))
        .header("host", HOST)
        .body(Body::empty())?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// Connections the open-loop generator sends on.
const OPEN_LOOP_CONNECTIONS: usize = 64;

/// Open loop: `rate` requests per second for `duration` over [`OPEN_LOOP_CONNECTIONS`]
/// kept-alive connections. Request `i` is due at `start + i / rate`; a connection takes the
/// next request when it is free, and each is timed from when it was due, so a proxy that
/// falls behind is charged for the wait (as wrk2 does). Returns (p50, p99) in ms and how many
/// requests failed.
async fn open_loop(addr: SocketAddr, rate: f64, duration: Duration) -> anyhow::Result<(f64, f64, usize)> {
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let period = Duration::from_secs_f64(1.0 / rate);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..OPEN_LOOP_CONNECTIONS {
        let next = next.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + period.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                if conn.is_none() {
                    conn = connect(addr).await.ok();
                }
                let Some(sender) = conn.as_mut() else {
                    failed += 1;
                    continue;
                };
                match send(sender).await {
                    Ok(200) => latencies.push(due.elapsed().as_secs_f64() * 1e3),
                    Ok(_) => failed += 1,
                    Err(_) => {
                        failed += 1;
                        conn = None;
                    }
                }
            }
            (latencies, failed)
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut failed = 0;
    while let Some(r) = workers.join_next().await {
        let (l, f) = r?;
        latencies.extend(l);
        failed += f;
    }
    anyhow::ensure!(
        failed as u64 * 100 <= total && !latencies.is_empty(),
        "{failed} of {total} open-loop requests through {addr} failed"
    );
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((at(0.50), at(0.99), failed))
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(sender: &mut Sender) -> anyhow::Result<u16> {
    sender.ready().await?;
    let req = hyper::Request::get("/")
        .header("host", HOST)
        .body(Body::empty())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// A runtime apart from the router's, shut down without waiting when dropped.
struct Apart(Option<tokio::runtime::Runtime>);

impl Apart {
    fn new(name: &str) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(Apart(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    let backend_rt = Apart::new("bench-backend")?;
    let load_rt = Apart::new("bench-load")?;
    let mut backends = Vec::new();
    for _ in 0..BACKENDS {
        backends.push(
            backend_rt
                .handle()
                .spawn(start_backend(epoch, stop.clone()))
                .await??,
        );
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|(a, _)| *a).collect();

    let bbs = diego_bbs::start(
        diego_bbs::BbsConfig::new(([127, 0, 0, 1], 0).into(), diego_bbs::StoreConfig::Memory),
        stop.clone(),
    )
    .await
    .context("starting the BBS")?;
    let c = BbsClient::new(bbs.url());
    c.register_cell(&diego_model::RegisterCellRequest {
        cell_presence: diego_model::CellPresence {
            cell_id: "bench-cell".into(),
            rep_url: "http://127.0.0.1:9".into(),
            zone: "z1".into(),
            capacity: Default::default(),
            rootfs_providers: vec![],
            placement_tags: vec![],
            optional_placement_tags: vec![],
        },
        ttl_seconds: 3600,
    })
    .await?;
    let mut lrp = DesiredLrp {
        process_guid: "bench".into(),
        log_guid: "bench".into(),
        domain: "bench".into(),
        rootfs: "preloaded:busybox".into(),
        instances: BACKENDS as i32,
        ports: vec![8080],
        action: crate::commands::command_action(&["true".to_string()]),
        ..Default::default()
    };
    lrp.routes
        .insert("cf-router".into(), json!([{"hostnames": [HOST], "port": 8080}]));
    c.desire_lrp(&lrp).await?;
    for (i, (addr, _)) in backends.iter().enumerate() {
        run_instance(&c, i, addr.port()).await?;
    }

    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let router = diego_routing::router::start(
        diego_routing::router::RouterConfig::new(bbs.url(), loopback, loopback),
        stop.clone(),
    )
    .await?;
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routed = get(&http, router.addr).await.ok() == Some(200);
        let table: serde_json::Value = reqwest::get(format!("http://{}/routes", router.admin_addr))
            .await?
            .json()
            .await?;
        if routed && table[HOST].as_array().map(Vec::len) == Some(BACKENDS) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the router did not route to the {BACKENDS} backends within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = tempfile::Builder::new().prefix("diego-bench-nginx").tempdir()?;
    let (nginx, nginx_addr) = start_nginx(dir.path(), &addrs).await?;
    anyhow::ensure!(get(&http, nginx_addr).await? == 200, "nginx does not answer 200");
    say(
        &o,
        &format!(
            "router http://{}, nginx http://{nginx_addr}, {BACKENDS} backends; wrk -t{} -c{} -d{}s",
            router.addr,
            o.threads,
            o.connections,
            o.duration.as_secs()
        ),
    );

    let nginx_run = wrk(&o, nginx_addr, Proxy::Nginx(nginx.0.id())).await?;
    let router_run = wrk(&o, router.addr, Proxy::Router).await?;
    for (name, run) in [("nginx: ", &nginx_run), ("router:", &router_run)] {
        say(
            &o,
            &format!(
                "{name} {:.0} requests/s ({} requests), {:.1} µs of CPU per request",
                run.rps, run.requests, run.cpu_us_per_request
            ),
        );
    }
    let (nginx_rps, router_rps) = (nginx_run.rps, router_run.rps);
    let ratio = router_rps / nginx_rps;
    say(&o, &format!("router / nginx: {ratio:.3}"));

    let rate = (nginx_rps / 2.0).max(1.0);
    let (nginx_p50, nginx_p99, nginx_failed) = load_rt
        .handle()
        .spawn(open_loop(nginx_addr, rate, o.duration))
        .await??;
    say(
        &o,
        &format!("nginx at {rate:.0}/s open loop: p50 {nginx_p50:.3} ms, p99 {nginx_p99:.3} ms, {nginx_failed} failed"),
    );
    let (router_p50, router_p99, router_failed) = load_rt
        .handle()
        .spawn(open_loop(router.addr, rate, o.duration))
        .await??;
    say(
        &o,
        &format!("router at {rate:.0}/s open loop: p50 {router_p50:.3} ms, p99 {router_p99:.3} ms, {router_failed} failed"),
    );
    drop(nginx);

    // Route removal under load: crash instances 3, 2, 1 in turn.
    let load_stop = CancellationToken::new();
    let mut load = Vec::new();
    for _ in 0..8 {
        let (addr, s) = (router.addr, load_stop.clone());
        load.push(load_rt.handle().spawn(async move {
            // Made here, so its connections are driven on the load runtime.
            let http = client();
            let mut n = 0u64;
            // Bounded: at most 10 minutes of requests, or until told to stop.
            let until = Instant::now() + Duration::from_secs(600);
            while !s.is_cancelled() && Instant::now() < until {
                if get(&http, addr).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut removals = Vec::new();
    for index in (1..BACKENDS).rev() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hits = &backends[index].1;
        anyhow::ensure!(
            hits.last_ns.load(Ordering::Relaxed) > 0,
            "backend {index} got no requests"
        );
        let t0 = epoch.elapsed().as_nanos() as u64;
        c.crash_actual_lrp("bench", index as i32, &key(index), "bench removes it")
            .await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let count = hits.count.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        anyhow::ensure!(
            hits.count.load(Ordering::Relaxed) == count,
            "backend {index} still gets requests 1.5 s after its instance was removed"
        );
        let last = hits.last_ns.load(Ordering::Relaxed);
        let ms = last.saturating_sub(t0) as f64 / 1e6;
        say(
            &o,
            &format!("instance {index} removed: its last request arrived {ms:.1} ms after the BBS call"),
        );
        removals.push(ms);
    }
    load_stop.cancel();
    let mut served = 0;
    for task in load {
        served += task.await?;
    }
    let route_removal_ms = removals.iter().copied().fold(0.0, f64::max);
    say(
        &o,
        &format!(
            "route removal: worst {route_removal_ms:.1} ms of {} ({served} requests during it)",
            removals.len()
        ),
    );

    let round = |x: f64, d: f64| (x * d).round() / d;
    let summary = json!({
        "router_rps": router_rps.round(),
        "nginx_rps": nginx_rps.round(),
        "router_to_nginx_ratio": round(ratio, 1000.0),
        "router_cpu_us_per_request": round(router_run.cpu_us_per_request, 10.0),
        "nginx_cpu_us_per_request": round(nginx_run.cpu_us_per_request, 10.0),
        "open_loop_rate": rate.round(),
        "router_p50_ms": round(router_p50, 1000.0),
        "router_p99_ms": round(router_p99, 1000.0),
        "nginx_p50_ms": round(nginx_p50, 1000.0),
        "nginx_p99_ms": round(nginx_p99, 1000.0),
        "p99_added_ms": round(router_p99 - nginx_p99, 1000.0),
        "route_removal_ms": round(route_removal_ms, 10.0),
        "open_loop_failed": router_failed + nginx_failed,
        "wrk_threads": o.threads,
        "wrk_connections": o.connections,
        "duration_s": o.duration.as_secs(),
    });
    if o.json {
        println!("{summary}");
    }
    Ok(())
}

fn say(o: &Options, line: &str) {
    super::say(o.json, line);
}
