//! The container API over real HTTP on loopback: one conformance suite, run against a
//! `FakeBackend` directly and against a `GardenClient` talking to a server over another
//! `FakeBackend` (in plain HTTP and in mutual TLS), so the client is shown to behave exactly
//! like a local backend.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diego_garden::fake::{FakeBackend, FakeProcess, FIRST_HOST_PORT};
use diego_garden::http::client::GardenClient;
use diego_garden::http::server::serve;
use diego_garden::{
    ContainerBackend, ContainerSpec, ContainerState, DynBackend, ExitStatus, GardenError, NetIn, PortMapping,
    ProcessEvent, ProcessSpec, Properties, Signal, TarStream,
};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every byte value, so any escaping or text decoding on the way would show.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

fn scripted() -> FakeBackend {
    FakeBackend::with_script(Arc::new(|p: &ProcessSpec| match p.path.as_str() {
        "echo" => FakeProcess {
            stdout: p.args.join(" ").into_bytes(),
            ..FakeProcess::exits(0)
        },
        "binary" => FakeProcess {
            stdout: all_bytes(),
            stderr: all_bytes().into_iter().rev().collect(),
            ..FakeProcess::exits(3)
        },
        _ => FakeProcess::runs_forever(),
    }))
}

struct Server {
    client: GardenClient,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    /// The certificates of a TLS server and its client.
    _certs: Option<tempfile::TempDir>,
}

async fn start(backend: DynBackend) -> Server {
    start_with(backend, false).await
}

/// With `tls`, server and client on mutual TLS with certificates of one CA made for the test.
async fn start_with(backend: DynBackend, tls: bool) -> Server {
    use diego_runtime::tls::{certs, Tls, TlsFiles};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding loopback");
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let dir = tls.then(|| tempfile::tempdir().unwrap());
    let load = |role: &str| {
        let dir = dir.as_ref()?.path();
        Some(
            Tls::load(TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join(format!("{role}.pem")),
                key: dir.join(format!("{role}-key.pem")),
            })
            .unwrap(),
        )
    };
    if let Some(dir) = &dir {
        certs::init(dir.path(), false).unwrap();
        for role in ["garden", "cell"] {
            certs::issue(dir.path(), role, &[], 1).unwrap();
        }
    }
    let task = tokio::spawn(serve(
        listener,
        backend,
        shutdown.clone(),
        Default::default(),
        load("garden"),
    ));
    let cell = load("cell");
    let scheme = diego_runtime::tls::scheme(cell.as_ref());
    let client = GardenClient::with_tls(&format!("{scheme}://{addr}"), cell.as_ref()).unwrap();
    Server {
        client,
        shutdown,
        task,
        _certs: dir,
    }
}

/// Guards against a hang turning into a stuck test run; asserts nothing about time.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in 20s"))
}

fn spec(handle: &str, props: &[(&str, &str)]) -> ContainerSpec {
    ContainerSpec {
        handle: handle.into(),
        rootfs: "preloaded:busybox".into(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn process(id: &str, path: &str) -> ProcessSpec {
    ProcessSpec {
        id: id.into(),
        path: path.into(),
        ..Default::default()
    }
}

fn filter(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn killed(signal: i32) -> ProcessEvent {
    ProcessEvent::Exited(ExitStatus {
        code: 128 + signal,
        signal: Some(signal),
        oom_killed: false,
    })
}

// ---- the conformance suite: any ContainerBackend over a scripted fake must pass ----

async fn containers_lifecycle(g: &dyn ContainerBackend) {
    g.ping().await.unwrap();
    assert_eq!(g.capacity().await.unwrap().max_containers, 100);

    let mut a = spec("a", &[("owner", "cell-1"), ("index", "0")]);
    a.net_in = vec![
        NetIn {
            host_port: 0,
            container_port: 8080,
        },
        NetIn {
            host_port: 7000,
            container_port: 9090,
        },
    ];
    let info = g.create(a).await.unwrap();
    assert_eq!(info.handle, "a");
    assert_eq!(info.state, ContainerState::Active);
    assert_eq!(
        info.mapped_ports,
        [
            PortMapping {
                host_port: FIRST_HOST_PORT,
                container_port: 8080
            },
            PortMapping {
                host_port: 7000,
                container_port: 9090
            }
        ]
    );
    g.create(spec("b", &[("owner", "cell-1"), ("index", "1")]))
        .await
        .unwrap();
    // Handles and properties with characters that mean something in URLs.
    let odd = "odd/handle ?&#%é";
    let odd_props = [("k=&?x", "v with spaces & = / é"), ("owner", "cell-2")];
    g.create(spec(odd, &odd_props)).await.unwrap();
    let generated = g.create(spec("", &[])).await.unwrap().handle;
    assert!(!generated.is_empty());

    assert_eq!(
        g.create(spec("a", &[])).await.unwrap_err(),
        GardenError::Exists("container \"a\"".into())
    );
    assert_eq!(
        g.create(ContainerSpec::default()).await.unwrap_err(),
        GardenError::Invalid("rootfs is required".into())
    );

    assert_eq!(g.list(&filter(&[("owner", "cell-1")])).await.unwrap(), ["a", "b"]);
    assert_eq!(
        g.list(&filter(&[("owner", "cell-1"), ("index", "1")]))
            .await
            .unwrap(),
        ["b"]
    );
    assert_eq!(g.list(&filter(&odd_props)).await.unwrap(), [odd]);
    assert!(g.list(&filter(&[("owner", "nobody")])).await.unwrap().is_empty());
    let mut all = vec!["a".to_string(), "b".into(), odd.into(), generated.clone()];
    all.sort();
    assert_eq!(g.list(&Properties::new()).await.unwrap(), all);

    let info = g.info(odd).await.unwrap();
    assert_eq!(info.handle, odd);
    assert_eq!(info.properties, filter(&odd_props));
    assert_eq!(info.host_ip, "127.0.0.1");

    g.stop("b", false).await.unwrap();
    assert_eq!(g.info("b").await.unwrap().state, ContainerState::Stopped);
    assert_eq!(
        g.run("b", process("", "echo")).await.err().unwrap(),
        GardenError::Invalid("container \"b\" is stopped".into())
    );

    g.destroy("a").await.unwrap();
    g.destroy(odd).await.unwrap();
    assert_eq!(
        g.info("a").await.unwrap_err(),
        GardenError::NotFound("container \"a\"".into())
    );
    assert_eq!(
        g.destroy(odd).await.unwrap_err(),
        GardenError::NotFound(format!("container {odd:?}"))
    );
    assert_eq!(
        g.stop("nope", true).await.unwrap_err(),
        GardenError::NotFound("container \"nope\"".into())
    );
    let mut left = vec!["b".to_string(), generated];
    left.sort();
    assert_eq!(g.list(&Properties::new()).await.unwrap(), left);
}

async fn processes_stream_and_replay(g: &dyn ContainerBackend) {
    g.create(spec("p", &[])).await.unwrap();

    let echo = g
        .run(
            "p",
            ProcessSpec {
                path: "echo".into(),
                args: vec!["hi".into(), "there".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!echo.id.is_empty(), "a generated process id is reported");
    let events: Vec<_> = within("echo", echo.events.collect()).await;
    assert_eq!(
        events,
        [
            ProcessEvent::Stdout("hi there".into()),
            ProcessEvent::Exited(ExitStatus::default())
        ]
    );

    let want_binary = vec![
        ProcessEvent::Stdout(all_bytes().into()),
        ProcessEvent::Stderr(all_bytes().into_iter().rev().collect::<Vec<_>>().into()),
        ProcessEvent::Exited(ExitStatus {
            code: 3,
            ..Default::default()
        }),
    ];
    let id = "bin 1/x";
    let bin = g.run("p", process(id, "binary")).await.unwrap();
    assert_eq!(bin.id, id);
    let events: Vec<_> = within("binary", bin.events.collect()).await;
    assert_eq!(events, want_binary, "output arrives byte for byte");

    let replay = g.attach("p", id).await.unwrap();
    assert_eq!(replay.id, id);
    let events: Vec<_> = within("attach after exit", replay.events.collect()).await;
    assert_eq!(events, want_binary, "attach after exit replays everything");

    assert_eq!(
        g.run("p", process(id, "binary")).await.err().unwrap(),
        GardenError::Exists(format!("process {id:?} in container \"p\""))
    );
    assert_eq!(
        g.run("p", process("", "")).await.err().unwrap(),
        GardenError::Invalid("process path is required".into())
    );
    assert_eq!(
        g.run("nope", process("", "echo")).await.err().unwrap(),
        GardenError::NotFound("container \"nope\"".into())
    );
    assert_eq!(
        g.attach("p", "ghost").await.err().unwrap(),
        GardenError::NotFound("process \"ghost\" in container \"p\"".into())
    );
    assert_eq!(
        g.signal("p", "ghost", Signal::Term).await.unwrap_err(),
        GardenError::NotFound("process \"ghost\" in container \"p\"".into())
    );

    // A process that runs until signalled: its stream stays open, an attacher waits with it,
    // and the signal ends both.
    let daemon = g.run("p", process("daemon", "sleep")).await.unwrap();
    assert_eq!(daemon.id, "daemon");
    let running = tokio::spawn(daemon.events.collect::<Vec<_>>());
    let attached = g.attach("p", "daemon").await.unwrap();
    let attached = tokio::spawn(attached.events.collect::<Vec<_>>());
    let metrics = g.bulk_metrics(&["p".into()]).await.unwrap();
    assert_eq!(metrics["p"].pids, 1, "the daemon is running");
    g.signal("p", "daemon", Signal::Term).await.unwrap();
    assert_eq!(within("signalled run", running).await.unwrap(), [killed(15)]);
    assert_eq!(within("signalled attach", attached).await.unwrap(), [killed(15)]);

    // Stopping with kill ends whatever still runs.
    let worker = g.run("p", process("worker", "sleep")).await.unwrap();
    g.stop("p", true).await.unwrap();
    assert_eq!(
        within("killed", worker.events.collect::<Vec<_>>()).await,
        [killed(9)]
    );

    let ids = g.info("p").await.unwrap().process_ids;
    assert_eq!(ids.len(), 4, "{ids:?}");
    for want in [id, "daemon", "worker"] {
        assert!(ids.iter().any(|i| i == want), "{want} in {ids:?}");
    }
}

async fn files_round_trip(g: &dyn ContainerBackend) {
    g.create(spec("f", &[])).await.unwrap();
    let chunks: Vec<Bytes> = vec![
        all_bytes().into(),
        Bytes::new(),
        Bytes::from(vec![0xAB; 1 << 20]),
        Bytes::from_static(b"tail\r\n\0"),
    ];
    let want: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let tar: TarStream = Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
    g.stream_in("f", "/app", tar).await.unwrap();

    let mut out = g.stream_out("f", "/app").await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = within("stream out", out.next()).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stream_out returns exactly what stream_in took");

    assert_eq!(
        g.stream_out("f", "/missing").await.err().unwrap(),
        GardenError::NotFound("\"/missing\" in container \"f\"".into())
    );
    let empty: TarStream = Box::pin(futures_util::stream::empty());
    assert_eq!(
        g.stream_in("nope", "/app", empty).await.unwrap_err(),
        GardenError::NotFound("container \"nope\"".into())
    );
    // The caller's own tar stream failing is reported as its error, not a transport one.
    let broken: TarStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(GardenError::Unavailable("disk on fire".into())),
    ]));
    assert_eq!(
        g.stream_in("f", "/broken", broken).await.unwrap_err(),
        GardenError::Unavailable("disk on fire".into())
    );
}

async fn metrics_of_existing_containers(g: &dyn ContainerBackend) {
    g.create(spec("m1", &[])).await.unwrap();
    g.create(spec("m2", &[])).await.unwrap();
    let m = g
        .bulk_metrics(&["m1".into(), "nope".into(), "m2".into()])
        .await
        .unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), ["m1", "m2"]);
    assert_eq!(m["m1"].pids, 0);
    assert!(g.bulk_metrics(&[]).await.unwrap().is_empty());
}

/// Runs each suite against a local fake and against a client of a server over another fake.
macro_rules! conformance {
    ($($suite:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $suite() {
                super::$suite(&super::scripted()).await;
            })*
        }
        mod remote {
            $(#[tokio::test]
            async fn $suite() {
                let server = super::start(std::sync::Arc::new(super::scripted())).await;
                super::$suite(&server.client).await;
                server.shutdown.cancel();
                super::within("server shutdown", server.task).await.unwrap().unwrap();
            })*
        }
        mod remote_tls {
            $(#[tokio::test]
            async fn $suite() {
                let server = super::start_with(std::sync::Arc::new(super::scripted()), true).await;
                super::$suite(&server.client).await;
                server.shutdown.cancel();
                super::within("server shutdown", server.task).await.unwrap().unwrap();
            })*
        }
    };
}

conformance!(
    containers_lifecycle,
    processes_stream_and_replay,
    files_round_trip,
    metrics_of_existing_containers,
);

// ---- HTTP specifics ----

#[tokio::test]
async fn errors_are_json_with_their_status() {
    let server = start(Arc::new(scripted())).await;
    let base = server.client.base_url().clone();
    let http = reqwest::Client::new();

    let resp = http
        .post(base.join("containers").unwrap())
        .json(&spec("x", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = http
        .post(base.join("containers").unwrap())
        .json(&spec("x", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"type": "Exists", "message": "container \"x\""})
    );
    let resp = http
        .get(base.join("containers/y/info").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http
        .post(base.join("containers").unwrap())
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(matches!(
        resp.json::<GardenError>().await.unwrap(),
        GardenError::Invalid(m) if m.starts_with("request body")
    ));
    let resp = http
        .get(base.join("containers?owner=me").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a filter must use the property. prefix");
    let resp = http
        .get(base.join("no/such/route").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = GardenClient::new(&format!("http://{addr}")).unwrap();
    assert!(matches!(client.ping().await, Err(GardenError::Unavailable(_))));
    assert!(matches!(
        GardenClient::new("not a url"),
        Err(GardenError::Invalid(_))
    ));
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let server = start(Arc::new(scripted())).await;
    let g = &server.client;
    g.create(spec("s", &[])).await.unwrap();
    let daemon = g.run("s", process("d", "sleep")).await.unwrap();
    server.shutdown.cancel();
    let events: Vec<_> = within("stream end on shutdown", daemon.events.collect()).await;
    assert!(events.is_empty(), "no exit was invented: {events:?}");
    within("server shutdown", server.task).await.unwrap().unwrap();
}
