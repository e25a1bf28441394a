//! Net-in port mapping end to end: busybox `httpd` in real runc containers, reached through
//! the container's proxy process on host 127.0.0.1 (root; needs runc and busybox-static). Every
//! test's [`Env`] removes whatever it made (proxies included), even on failure.

mod common;

use std::fs;
use std::time::Duration;

use diego_garden::{
    ContainerBackend, ContainerSpec, GardenError, NetIn, PortMapping, ProcessEvent, ProcessSpec,
};
use diego_garden_runc::netin::proxy::ProxyRecord;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount", "kill"];

/// A [`common::Sandbox`] with this file's helpers.
struct Env(common::Sandbox);

impl std::ops::Deref for Env {
    type Target = common::Sandbox;

    fn deref(&self) -> &common::Sandbox {
        &self.0
    }
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        common::Sandbox::new(test, TOOLS, 5).map(Env)
    }

    /// A busybox container mapping `host_port` to container port 8080.
    async fn create(&self, prefix: &str, host_port: u32) -> Result<(String, PortMapping), GardenError> {
        let handle = common::unique(prefix);
        let info = self
            .backend
            .create(ContainerSpec {
                handle: handle.clone(),
                rootfs: "preloaded:busybox".into(),
                net_in: vec![NetIn {
                    host_port,
                    container_port: 8080,
                }],
                ..Default::default()
            })
            .await?;
        assert_eq!(info.host_ip, "127.0.0.1");
        assert_eq!(info.mapped_ports.len(), 1, "{info:?}");
        let mapping = info.mapped_ports[0];
        assert_eq!(mapping.container_port, 8080);
        assert_ne!(mapping.host_port, 0);
        if host_port != 0 {
            assert_eq!(mapping.host_port, host_port);
        }
        assert_eq!(
            self.backend.info(&handle).await.unwrap().mapped_ports,
            vec![mapping]
        );
        Ok((handle, mapping))
    }

    /// Serves `/tmp/www/index.html` containing `content` with busybox httpd on port 8080.
    async fn serve(&self, handle: &str, content: &str) {
        let write = self
            .backend
            .run(
                handle,
                sh(&format!(
                    "mkdir -p /tmp/www && echo {content} > /tmp/www/index.html"
                )),
            )
            .await
            .unwrap();
        let events: Vec<_> = tokio::time::timeout(Duration::from_secs(60), write.events.collect())
            .await
            .expect("writing the index did not finish");
        assert!(
            matches!(events.last(), Some(ProcessEvent::Exited(s)) if s.code == 0),
            "writing the index: {events:?}"
        );
        self.backend.run(handle, common::httpd("/tmp/www")).await.unwrap();
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

/// One HTTP/1.0 GET of `/index.html` on 127.0.0.1:`port`: the whole response.
async fn get_once(port: u32) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).await?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("timed out reading the response"))??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// GETs until a 200 arrives (httpd may still be starting), for up to 20 s.
async fn get(port: u32) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = get_once(port).await;
        match &last {
            Ok(r) if r.starts_with("HTTP/1.") && r.contains(" 200 ") => return r.clone(),
            _ if tokio::time::Instant::now() >= deadline => panic!("no 200 from port {port}: {last:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The host pid of the container's init.
fn init_pid(env: &Env, handle: &str) -> String {
    fs::read_to_string(env.depot.join(handle).join("init.pid"))
        .unwrap()
        .trim()
        .to_string()
}

/// Names of the threads of process `pid` (`self`: this test process).
fn thread_names_of(pid: &str) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

fn thread_names() -> Vec<String> {
    thread_names_of("self")
}

/// The container's net-in proxy, which must be running.
fn proxy(env: &Env, handle: &str) -> ProxyRecord {
    let record = ProxyRecord::read(&env.depot.join(handle)).expect("no netin.json: no proxy process");
    assert!(record.alive(), "the proxy {record:?} is not running");
    record
}

/// How many live processes are net-in proxies of a container in the depot (by command line).
fn proxies_in(env: &Env) -> usize {
    let depot = env.depot.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| diego_garden::procfs::live_start_time(*pid).is_some())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                // (A shim has a `--dir` under the depot too, but no `--map`.)
                args.contains(&&b"--map"[..])
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"--dir" && w[1].starts_with(depot))
            })
        })
        .count()
}

/// Waits (5 s at most) until the proxy process has ended.
async fn assert_proxy_ends(record: &ProxyRecord) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while record.alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy {record:?} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The container's netns thread (named `netns-<init pid>`) exits soon after destroy.
async fn assert_no_netns_thread(pid: &str) {
    let name: String = format!("netns-{pid}").chars().take(15).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while thread_names().contains(&name) {
        assert!(tokio::time::Instant::now() < deadline, "thread {name} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_refused(port: u32) {
    let err = TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .expect_err("the host port still accepts connections after destroy");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_a_host_port_to_httpd_in_the_container() {
    let Some(env) = Env::new("netin_httpd") else {
        return;
    };
    let (h, mapping) = env.create("n", 0).await.unwrap();
    let pid = init_pid(&env, &h);
    // The proxy process, not this server, joined the container's namespace and holds the port.
    let proxy = proxy(&env, &h);
    assert_eq!(proxy.ports, vec![mapping]);
    assert_eq!(proxy.host_ip.to_string(), "127.0.0.1");
    let thread: String = format!("netns-{pid}").chars().take(15).collect();
    assert!(
        thread_names_of(&proxy.pid.to_string()).contains(&thread),
        "no {thread} thread in the proxy"
    );
    assert!(
        !thread_names().contains(&thread),
        "the server joined the namespace"
    );
    env.serve(&h, "hello").await;
    let response = get(mapping.host_port).await;
    assert!(response.ends_with("hello\n"), "{response}");

    // An open connection that has not sent anything yet is cut by destroy.
    let mut idle = TcpStream::connect(("127.0.0.1", mapping.host_port as u16))
        .await
        .unwrap();
    env.backend.destroy(&h).await.unwrap();
    // Destroy has killed the proxy and freed the port by the time it returns.
    assert!(!proxy.alive(), "the proxy {proxy:?} outlived destroy");
    assert_refused(mapping.host_port).await;
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the relay outlived destroy")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_no_netns_thread(&pid).await;
    // The port is free again: anyone can listen on it.
    std::net::TcpListener::bind(("127.0.0.1", mapping.host_port as u16)).expect("the port is still taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_container_died_exits_by_itself() {
    let Some(env) = Env::new("netin_orphan") else {
        return;
    };
    let (h, mapping) = env.create("o", 0).await.unwrap();
    env.serve(&h, "hello").await;
    assert!(get(mapping.host_port).await.ends_with("hello\n"));
    let proxy = proxy(&env, &h);
    // The container dies behind the backend's back (its init killed): nothing destroys it.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &init_pid(&env, &h)])
        .status()
        .unwrap();
    assert!(status.success());
    assert_proxy_ends(&proxy).await;
    assert_refused(mapping.host_port).await;
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_their_own_host_ports_and_a_taken_port_is_invalid() {
    let Some(env) = Env::new("netin_two") else {
        return;
    };
    let (a, pa) = env.create("a", 0).await.unwrap();
    let (b, pb) = env.create("b", 0).await.unwrap();
    assert_ne!(pa.host_port, pb.host_port);
    env.serve(&a, "from-a").await;
    env.serve(&b, "from-b").await;
    assert!(get(pa.host_port).await.ends_with("from-a\n"));
    assert!(get(pb.host_port).await.ends_with("from-b\n"));

    // Asking for a's host port fails, naming it, and leaves nothing behind.
    let err = env.create("c", pa.host_port).await.unwrap_err();
    assert!(matches!(err, GardenError::Invalid(_)), "{err}");
    assert!(err.to_string().contains(&pa.host_port.to_string()), "{err}");
    let mut handles = env.backend.list(&Default::default()).await.unwrap();
    handles.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(handles, expected);
    assert_eq!(fs::read_dir(&env.depot).unwrap().count(), 2);
    assert_eq!(env.runc.list().unwrap().len(), 2);
    assert_eq!(proxies_in(&env), 2, "the failed proxy is gone");
    // a still answers.
    assert!(get(pa.host_port).await.ends_with("from-a\n"));

    // A free port asked for by number is used.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = u32::from(free.local_addr().unwrap().port());
    drop(free);
    let (c, pc) = env.create("c", port).await.unwrap();
    assert_eq!(pc.host_port, port);

    for (h, p) in [(&a, &pa), (&b, &pb), (&c, &pc)] {
        let pid = init_pid(&env, h);
        let proxy = proxy(&env, h);
        env.backend.destroy(h).await.unwrap();
        assert!(!proxy.alive(), "the proxy of {h} outlived destroy");
        assert_refused(p.host_port).await;
        assert_no_netns_thread(&pid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reaches_a_container_port_only_when_something_listens_there() {
    let Some(env) = Env::new("netin_connect") else {
        return;
    };
    let (h, mapping) = env.create("c", 0).await.unwrap();
    assert!(env.backend.can_connect());
    // Nothing listens yet: the host port (a proxy) accepts, but connect says refused.
    assert!(TcpStream::connect(("127.0.0.1", mapping.host_port as u16))
        .await
        .is_ok());
    let err = env.backend.connect(&h, 8080).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err:?}");
    env.serve(&h, "hello").await;
    let mut ok = false;
    for _ in 0..100 {
        if env.backend.connect(&h, 8080).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "httpd never became reachable through connect");
    assert!(env.backend.connect(&h, 9999).await.is_err());
    let missing = env.backend.connect("no-such-container", 8080).await.unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "{missing:?}");
    env.backend.destroy(&h).await.unwrap();
}
