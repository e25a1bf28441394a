//! A backend that goes away (its shims, net-in proxies and containers do not) and a new one
//! opened on the same depot: containers, processes, output, exit statuses and net-in all come
//! back, and the host ports never stop answering (root; needs runc and busybox-static). The
//! CLI's `garden` and `host_ports` tests do the same with SIGKILL.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_garden::{ContainerBackend, ContainerSpec, ProcessEvent, ProcessSpec, Signal};
use diego_garden_runc::netin::proxy::ProxyRecord;
use diego_garden_runc::RuncBackend;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount"];

fn sh(id: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        id: id.into(),
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

/// Reads stdout from `events` until it contains `needle`; returns all stdout read.
async fn stdout_until(events: &mut BoxStream<'static, ProcessEvent>, needle: &str) -> String {
    let mut out = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            match e {
                ProcessEvent::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
                ProcessEvent::Stderr(_) => {}
                ProcessEvent::Exited(s) => panic!("exited ({s:?}) before {needle:?}; stdout {out:?}"),
            }
            if out.contains(needle) {
                return;
            }
        }
        panic!("stream ended before {needle:?}; stdout {out:?}");
    })
    .await;
    assert!(found.is_ok(), "no {needle:?} within 20 s; stdout {out:?}");
    out
}

/// Stdout, stderr and exit code of the rest of a stream.
async fn rest(events: BoxStream<'static, ProcessEvent>) -> (String, String, i32) {
    let events: Vec<ProcessEvent> = tokio::time::timeout(Duration::from_secs(30), events.collect())
        .await
        .expect("no exit within 30 s");
    let (mut out, mut err, mut code) = (String::new(), String::new(), None);
    for e in events {
        match e {
            ProcessEvent::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
            ProcessEvent::Stderr(b) => err.push_str(&String::from_utf8_lossy(&b)),
            ProcessEvent::Exited(s) => code = Some(s.code),
        }
    }
    (out, err, code.expect("no Exited event"))
}

async fn http_status_line(port: u32) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// An HTTP status line from busybox httpd on `port`, retrying while it starts.
async fn http_answers(port: u32) -> String {
    for _ in 0..100 {
        if let Ok(line) = http_status_line(port).await {
            if line.starts_with("HTTP/1.") {
                return line;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing answered HTTP on 127.0.0.1:{port}");
}

/// GETs `/` on `port` every 50 ms until `stop` (120 s at most): (answers, failures).
fn poll_http(port: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut failures) = (0, Vec::new());
        let started = tokio::time::Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
            match http_status_line(port).await {
                Ok(line) if line.starts_with("HTTP/1.") => ok += 1,
                other => failures.push(format!("{:?}: {other:?}", started.elapsed())),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_takes_over_containers_processes_output_and_ports() {
    let Some(mut env) = common::Sandbox::new("restart_takeover", TOOLS, 10) else {
        return;
    };
    let handle = common::unique("restart");
    let info = env
        .backend
        .create(common::busybox_on_8080(&handle))
        .await
        .unwrap();
    let port = info.mapped_ports[0].host_port;

    // A long runner that prints its pid inside the container, then ticks.
    let mut ticker = env
        .backend
        .run(
            &handle,
            sh(
                "ticker",
                "echo pid=$$; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
            ),
        )
        .await
        .unwrap()
        .events;
    let before = stdout_until(&mut ticker, "tick 2\n").await;
    let pid: u32 = before
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid line in {before:?}"));
    // One that ends while no backend is there.
    let _quitter = env
        .backend
        .run(&handle, sh("quitter", "sleep 1; echo done; echo bye >&2; exit 7"))
        .await
        .unwrap();
    env.backend.run(&handle, common::httpd("/tmp")).await.unwrap();
    assert!(http_answers(port).await.starts_with("HTTP/1."));
    let proxy = ProxyRecord::read(&env.depot.join(&handle)).expect("a net-in proxy process");
    assert!(proxy.alive());

    // The backend goes away; nothing of it stops the processes, nor the host port, which
    // answers every poll while no backend is there and after the next one took over.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_http(port, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(ticker);
    let config = env.config.clone();
    env.backend = RuncBackend::new(config.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let backend = RuncBackend::new(config).unwrap();
    let recovered = backend.recover().await.unwrap();
    env.backend = backend;
    assert_eq!(
        (recovered.containers, recovered.proxies_started),
        (1, 0),
        "{recovered:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (answers, failures) = poller.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} polls failed: {failures:?}",
        failures.len()
    );
    assert!(answers >= 20, "only {answers} polls");
    // Taken over, not replaced.
    assert_eq!(ProxyRecord::read(&env.depot.join(&handle)), Some(proxy.clone()));
    assert!(proxy.alive());

    assert_eq!(
        env.backend.list(&Default::default()).await.unwrap(),
        vec![handle.clone()]
    );
    let info = env.backend.info(&handle).await.unwrap();
    assert_eq!(info.process_ids, ["httpd", "quitter", "ticker"]);
    assert_eq!(info.mapped_ports[0].host_port, port, "net-in keeps its host port");
    assert!(http_answers(port).await.starts_with("HTTP/1."));

    // The ticker's output is replayed from the start and keeps coming: the same process.
    let mut ticker = env.backend.attach(&handle, "ticker").await.unwrap().events;
    let again = stdout_until(&mut ticker, "tick 30\n").await;
    assert!(
        again.starts_with(&before),
        "replay {again:?} does not start with {before:?}"
    );
    let (out, err, code) = rest(
        env.backend
            .run(&handle, sh("probe", &format!("kill -0 {pid} && echo alive")))
            .await
            .unwrap()
            .events,
    )
    .await;
    assert_eq!((out.as_str(), code), ("alive\n", 0), "stderr {err}");

    // The quitter's end was recorded while nobody listened.
    let (out, err, code) = rest(env.backend.attach(&handle, "quitter").await.unwrap().events).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("done\n", "bye\n", 7));

    // Signals still reach the taken-over process.
    env.backend.signal(&handle, "ticker", Signal::Term).await.unwrap();
    let (_, _, code) = rest(ticker).await;
    assert_eq!(code, 143);

    env.backend.destroy(&handle).await.unwrap();
    assert!(!env.depot.join(&handle).exists());
    assert!(!proxy.alive(), "the taken-over proxy outlived destroy");
    assert!(
        http_status_line(port).await.is_err(),
        "the forwarder outlived destroy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_died_is_started_again_on_the_same_port() {
    let Some(mut env) = common::Sandbox::new("restart_dead_proxy", TOOLS, 10) else {
        return;
    };
    let handle = common::unique("proxy");
    let info = env
        .backend
        .create(common::busybox_on_8080(&handle))
        .await
        .unwrap();
    let port = info.mapped_ports[0].host_port;
    env.backend.run(&handle, common::httpd("/tmp")).await.unwrap();
    assert!(http_answers(port).await.starts_with("HTTP/1."));
    let old = ProxyRecord::read(&env.depot.join(&handle)).unwrap();

    // While no backend runs, someone kills the proxy: the next backend starts a new one.
    env.backend = RuncBackend::new(env.config.clone()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &old.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while old.alive() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(http_status_line(port).await.is_err(), "nothing holds the port");
    let backend = RuncBackend::new(env.config.clone()).unwrap();
    let recovered = backend.recover().await.unwrap();
    env.backend = backend;
    assert_eq!(recovered.proxies_started, 1, "{recovered:?}");
    let new = ProxyRecord::read(&env.depot.join(&handle)).unwrap();
    assert_ne!(new.pid, old.pid);
    assert!(new.alive());
    assert_eq!(new.ports, old.ports);
    assert_eq!(
        env.backend.info(&handle).await.unwrap().mapped_ports,
        info.mapped_ports
    );
    assert!(http_answers(port).await.starts_with("HTTP/1."));
    env.backend.destroy(&handle).await.unwrap();
    assert!(!new.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_removes_half_made_and_dead_containers() {
    let Some(mut env) = common::Sandbox::new("restart_leftovers", TOOLS, 10) else {
        return;
    };
    // A create cut short: a directory without a record.
    let half = env.depot.join("half-made");
    std::fs::create_dir_all(half.join("upper")).unwrap();
    // A container whose init died (as after a host reboot).
    let dead = common::unique("dead");
    env.backend
        .create(ContainerSpec {
            handle: dead.clone(),
            rootfs: "preloaded:busybox".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let kept = common::unique("kept");
    env.backend
        .create(ContainerSpec {
            handle: kept.clone(),
            rootfs: "preloaded:busybox".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    env.runc.kill(&dead).unwrap();
    for _ in 0..200 {
        let states = env.runc.list_states().unwrap();
        if states.iter().any(|(id, s)| id == &dead && s == "stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let backend = RuncBackend::new(env.config.clone()).unwrap();
    let recovered = backend.recover().await.unwrap();
    env.backend = backend;
    assert_eq!(recovered.containers, 1);
    let mut removed = recovered.removed.clone();
    removed.sort();
    let mut expected = vec![dead.clone(), "half-made".to_string()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!half.exists());
    assert!(!env.depot.join(&dead).exists());
    assert_eq!(common::mounted(&env.depot.join(&dead).join("merged")), 0);
    assert!(!env.runc.list().unwrap().contains(&dead));
    assert_eq!(
        env.backend.list(&Default::default()).await.unwrap(),
        vec![kept.clone()]
    );
    env.backend.destroy(&kept).await.unwrap();
}
