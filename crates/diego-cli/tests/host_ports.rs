//! Host ports outlive the cell agent (issue 11), on real runc containers (root; runc and
//! busybox-static): one `diego cell` under `diego dev --cells 0`, an LRP of 2 busybox httpd
//! instances, and the cell SIGKILLed and started again while an HTTP poller hits every
//! instance's host port every 50 ms — not one request may fail, while the agent is down or
//! after it took its containers over. Each container's net-in proxy process holds its ports:
//! the new agent adopts the same proxies, and deleting the LRP ends them and frees the ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_model::{ActualLrp, ActualLrpState};
use diego_testkit::eventually;

mod common;
use common::cluster::{answers, web_rows, Cluster};
use common::{alive, diego, netin_proxies, netin_proxy, rss_kb};

const WAIT: Duration = Duration::from_secs(60);

/// GETs every instance's host port every 50 ms until `stop` (60 s at most), noting each
/// failure with the phase it happened in: (rounds, failures).
fn poll(
    http: reqwest::Client,
    instances: Vec<ActualLrp>,
    stop: Arc<AtomicBool>,
    phase: Arc<std::sync::Mutex<&'static str>>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut rounds, mut failures) = (0, Vec::new());
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            for a in &instances {
                if !answers(&http, a).await {
                    let phase = *phase.lock().unwrap();
                    failures.push(format!(
                        "{:.2} s ({phase}): index {} at {}:{} did not answer",
                        started.elapsed().as_secs_f64(),
                        a.index,
                        a.address,
                        a.ports[0].host_port
                    ));
                }
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (rounds, failures)
    })
}

/// How many times `needle` is in the log file at `path`.
fn occurrences(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_keep_answering_while_the_cell_agent_is_killed_and_restarted() {
    if !common::runc_usable("host_ports_keep_answering_while_the_cell_agent_is_killed_and_restarted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &[("cell-a", "z1")], &[]).await;
    let mut before = cluster.desire_web(2).await;
    before.sort_by_key(|a| a.index);
    let depot = cluster.depot("cell-a");
    let proxies: Vec<_> = before
        .iter()
        .map(|a| netin_proxy(&depot.join(&a.instance_guid)))
        .collect();
    // A new connection per request: each poll is a fresh accept on the host port.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for a in &before {
        assert!(answers(&http, a).await, "{a:?} does not answer");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(std::sync::Mutex::new("agent up"));
    let poller = poll(http.clone(), before.clone(), stop.clone(), phase.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kill -9 of the agent; its containers (and their proxies) stay for the next one.
    *phase.lock().unwrap() = "agent killed";
    let cell = cluster.cell("cell-a");
    cell.child.start_kill().unwrap();
    cell.child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    *phase.lock().unwrap() = "agent restarting";
    let fresh = Cluster::spawn_cell(&cluster.root, &cluster.bbs, "cell-a", "z1", &[]);
    let slot = cluster.cell("cell-a");
    // The dead agent's cleanup must not remove the containers: the new one's does, at the end.
    std::mem::forget(slot.leftovers.take());
    drop(std::mem::replace(slot, fresh));
    let log = cluster.cell("cell-a").log.clone();
    eventually(WAIT, || async {
        let n = occurrences(&log, "recovered the depot");
        (n >= 2).then_some(()).ok_or(format!("{n} recoveries logged"))
    })
    .await;
    *phase.lock().unwrap() = "agent restarted";
    // Through the new agent's first syncs with the BBS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let (rounds, failures) = poller.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}",
        failures.len(),
        rounds * 2
    );
    assert!(rounds >= 40, "the poller barely ran: {rounds} rounds");

    // The BBS still has the same instances, RUNNING at the same addresses.
    let mut after: Vec<ActualLrp> = web_rows(&cluster.client).await.unwrap();
    after.sort_by_key(|a| a.index);
    let summary = |rows: &[ActualLrp]| -> Vec<_> {
        rows.iter()
            .map(|a| {
                (
                    a.index,
                    a.instance_guid.clone(),
                    a.state,
                    a.address.clone(),
                    a.ports.clone(),
                    a.crash_count,
                )
            })
            .collect()
    };
    assert_eq!(summary(&after), summary(&before));
    assert!(after.iter().all(|a| a.state == ActualLrpState::Running));

    // The same proxy processes serve them: adopted, not started again.
    for (a, proxy) in before.iter().zip(&proxies) {
        let proxy = proxy.unwrap_or_else(|| panic!("no net-in proxy recorded for {}", a.instance_guid));
        assert!(alive(&proxy), "the proxy of {} is gone", a.instance_guid);
        assert_eq!(netin_proxy(&depot.join(&a.instance_guid)), Some(proxy));
        eprintln!(
            "net-in proxy of index {} (pid {}): VmRSS {} KiB",
            a.index,
            proxy.0,
            rss_kb(proxy.0).unwrap_or_default()
        );
    }
    let mut running = netin_proxies(&depot);
    running.sort();
    let mut expected: Vec<_> = proxies.iter().flatten().copied().collect();
    expected.sort();
    assert_eq!(running, expected, "one proxy per container, no other");

    // Deleting the LRP destroys the containers: the proxies end and the ports are free.
    let (ok, out) = diego(&cluster.bbs, &["lrp", "delete", "web"]).await;
    assert!(ok, "{out}");
    eventually(WAIT, || async {
        let n = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(()).ok_or(format!("{n} containers left"))
    })
    .await;
    for proxy in proxies.iter().flatten() {
        assert!(!alive(proxy), "proxy {proxy:?} outlived its container");
    }
    assert_eq!(
        netin_proxies(&depot),
        Vec::new(),
        "a proxy outlived its container"
    );
    for a in &before {
        let port = a.ports[0].host_port as u16;
        let refused = tokio::net::TcpStream::connect((a.address.as_str(), port)).await;
        assert!(refused.is_err(), "{}:{port} still accepts", a.address);
    }
    drop(cluster);
}
