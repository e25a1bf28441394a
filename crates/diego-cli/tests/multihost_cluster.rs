//! The whole cluster across three hosts of the multi-host harness (`diego_testkit::hosts`; root,
//! runc, busybox-static and etcd): a three-member etcd (one member per host), two BBS on it, an
//! auctioneer, a router, and a cell in each of three zones. An LRP of 6 serving through the
//! router is spread over the zones; then the cluster loses, in turn, the active BBS (kill -9),
//! a whole cell host, a cell host's network (partition, then heal) and an etcd member, and after
//! each every index runs exactly once and answers through the router.
//!
//! | host   | roles                                         |
//! |--------|-----------------------------------------------|
//! | host-a | etcd m1 (killed last), BBS 1, auctioneer, cell-z1 |
//! | host-b | etcd m2, BBS 2, router, cell-z2, the CLI      |
//! | host-c | etcd m3, cell-z3 (killed, then partitioned)   |

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use common::RuncLeftovers;
use diego_client::{ActualLrpQuery, BbsClient};
use diego_garden_runc::netin::Forwarder;
use diego_model::{ActualLrp, ActualLrpState, Presence};
use diego_testkit::eventually;
use diego_testkit::hosts::{Host, HostProcess, Net};
use futures_util::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_diego");
const WAIT: Duration = Duration::from_secs(120);
const ROUTE: &str = "web.diego.localhost";
const START: &str = r#"mkdir -p /tmp/www && echo "instance $INSTANCE_INDEX" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"#;

const ETCD_CLIENT: u16 = 2379;
const ETCD_PEER: u16 = 2380;
const BBS: u16 = 8889;
const AUCTIONEER: u16 = 9016;
const REP: u16 = 1801;
const ROUTER: u16 = 8080;
const ROUTER_ADMIN: u16 = 8081;
/// Short, so a lost or partitioned cell lapses within seconds.
const PRESENCE_TTL: &str = "10";

/// The three hosts and what runs on them.
struct Cluster {
    hosts: Vec<Host>,
    root: PathBuf,
    bbs: Vec<HostProcess>,
    /// The test's way in to each BBS, the router and its admin listener.
    bbs_fwd: Vec<Forwarder>,
    router: Forwarder,
    router_admin: Forwarder,
    http: reqwest::Client,
    cli_runs: usize,
}

impl Cluster {
    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name() == name).unwrap()
    }

    /// `http://a:8889,http://b:8889`: every role's `--bbs`.
    fn bbs_urls(&self) -> String {
        self.hosts[..2]
            .iter()
            .map(|h| format!("http://{}", h.socket(BBS)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn etcd_url(&self) -> String {
        let members: Vec<String> = self
            .hosts
            .iter()
            .map(|h| h.socket(ETCD_CLIENT).to_string())
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// etcd member `i` on host `i`, from its data directory when it ran before.
    fn spawn_etcd(&self, i: usize) -> Result<HostProcess> {
        let host = &self.hosts[i];
        let peers: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(j, h)| format!("m{}=http://{}", j + 1, h.socket(ETCD_PEER)))
            .collect();
        let client = format!("http://{}", host.socket(ETCD_CLIENT));
        let peer = format!("http://{}", host.socket(ETCD_PEER));
        let cmd = diego_store::etcd::local::member_command(
            &format!("m{}", i + 1),
            &self.root.join(format!("etcd-m{}", i + 1)),
            &client,
            &peer,
            &peers.join(","),
            (50, 500),
        );
        host.spawn("etcd", cmd)
    }

    /// BBS `i` on host `i` (0 or 1), over the etcd cluster.
    fn spawn_bbs(&self, i: usize) -> Result<HostProcess> {
        let host = &self.hosts[i];
        let listen = host.socket(BBS).to_string();
        host.spawn_diego(
            BIN,
            "bbs",
            &[
                "bbs",
                "--store",
                &self.etcd_url(),
                "--listen",
                &listen,
                "--advertise-url",
                &format!("http://{listen}"),
                "--convergence-interval",
                "2",
            ],
        )
    }

    /// The cell of zone `z{i+1}` on host `i`.
    fn spawn_cell(&self, i: usize) -> Result<HostProcess> {
        let host = &self.hosts[i];
        let id = format!("cell-z{}", i + 1);
        host.spawn_diego(
            BIN,
            "cell",
            &[
                "cell",
                "--backend",
                "runc",
                "--bbs",
                &self.bbs_urls(),
                "--cell-id",
                &id,
                "--zone",
                &format!("z{}", i + 1),
                "--memory-mb",
                "2048",
                "--presence-ttl",
                PRESENCE_TTL,
                "--listen",
                &host.socket(REP).to_string(),
                "--data-dir",
                &self.root.join(&id).display().to_string(),
            ],
        )
    }

    /// Runs the CLI on host-b (an operator's shell on a cluster machine) with every BBS URL:
    /// whether it succeeded, and its output.
    async fn cli(&mut self, args: &[&str]) -> (bool, String) {
        self.cli_runs += 1;
        let urls = self.bbs_urls();
        let mut all = vec!["--bbs", &urls];
        all.extend_from_slice(args);
        let name = format!("cli-{}", self.cli_runs);
        let p = self
            .host("host-b")
            .spawn_diego(BIN, &name, &all)
            .expect("spawning the CLI");
        let status = p.exited(Duration::from_secs(60)).await;
        let out = format!("{}{}", p.stdout(), p.stderr());
        (status.is_some_and(|s| s.success()), out)
    }

    /// A client of BBS `i` through the test's forwarder.
    fn client(&self, i: usize) -> BbsClient {
        BbsClient::new(format!("http://{}", self.bbs_fwd[i].local_addr()))
    }

    /// `web`'s rows, from whichever BBS answers.
    async fn rows(&self) -> Result<Vec<ActualLrp>> {
        let query = ActualLrpQuery {
            process_guid: Some("web".into()),
            ..Default::default()
        };
        let mut last = anyhow!("no BBS");
        for i in 0..self.bbs_fwd.len() {
            match self.client(i).actual_lrps(&query).await {
                Ok(rows) => return Ok(rows),
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    /// Waits until `web` has exactly one RUNNING ORDINARY row for each of `0..n`, none on
    /// `not_on`, and nothing else; the rows.
    async fn settled(&self, n: i32, not_on: &[&str]) -> Vec<ActualLrp> {
        eventually(WAIT, || async {
            let rows = self.rows().await?;
            let indices: BTreeSet<i32> = rows.iter().map(|a| a.index).collect();
            let ok = rows.len() == n as usize
                && indices == (0..n).collect()
                && rows.iter().all(|a| {
                    a.state == ActualLrpState::Running
                        && a.presence == Presence::Ordinary
                        && !not_on.contains(&a.cell_id.as_str())
                });
            ensure!(ok, "rows: {}", describe(&rows));
            Ok::<_, anyhow::Error>(rows)
        })
        .await
    }

    /// Which BBS (0 or 1) says it is active, once exactly one does.
    async fn active_bbs(&self) -> usize {
        eventually(WAIT, || async {
            let mut active = Vec::new();
            for i in 0..self.bbs_fwd.len() {
                if let Ok(p) = self.client(i).ping().await {
                    if p.role.as_deref() == Some("active") {
                        active.push(i);
                    }
                }
            }
            ensure!(active.len() == 1, "active BBS: {active:?}");
            Ok::<_, anyhow::Error>(active[0])
        })
        .await
    }

    /// The router's table for [`ROUTE`]: index → backend address.
    async fn routes(&self) -> Result<BTreeMap<i64, String>> {
        let url = format!("http://{}/routes", self.router_admin.local_addr());
        let v: serde_json::Value = self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let entries = v[ROUTE].as_array().cloned().unwrap_or_default();
        Ok(entries
            .iter()
            .map(|e| {
                (
                    e["index"].as_i64().unwrap_or(-1),
                    e["address"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Waits until the router sends [`ROUTE`] to exactly `0..n`, none at an address of `not_at`,
    /// and requests through it reach every one of them.
    async fn routed(&self, n: i64, not_at: Option<&Host>) {
        let banned = not_at.map(|h| h.addr().to_string());
        eventually(WAIT, || async {
            let table = self.routes().await?;
            ensure!(
                table.keys().copied().eq(0..n),
                "routed indices {:?}",
                table.keys().collect::<Vec<_>>()
            );
            if let Some(b) = &banned {
                ensure!(
                    table.values().all(|a| !a.starts_with(&format!("{b}:"))),
                    "still routed to {b}: {table:?}"
                );
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        let want: BTreeSet<String> = (0..n).map(|i| format!("instance {i}")).collect();
        let mut seen = BTreeSet::new();
        for _ in 0..(n * 4) {
            let (status, body) = self.get().await.expect("a request through the router");
            assert_eq!(status, 200, "through the router: {body}");
            seen.insert(body.trim().to_string());
        }
        assert_eq!(
            seen, want,
            "round robin through the router reaches every instance"
        );
    }

    /// `GET /` for [`ROUTE`] through the router.
    async fn get(&self) -> Result<(u16, String)> {
        let r = self
            .http
            .get(format!("http://{}/", self.router.local_addr()))
            .header("host", ROUTE)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// The value of counter `name` on BBS `i`'s `/metrics`.
    async fn counter(&self, i: usize, name: &str) -> Result<f64> {
        let url = format!("http://{}/metrics", self.bbs_fwd[i].local_addr());
        let text = self.http.get(url).send().await?.text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("{name} not on BBS {i}'s /metrics"))
    }
}

fn describe(rows: &[ActualLrp]) -> String {
    let mut v: Vec<String> = rows
        .iter()
        .map(|a| format!("{}:{:?}/{:?}@{}", a.index, a.state, a.presence, a.cell_id))
        .collect();
    v.sort();
    v.join(" ")
}

/// Cell `i`'s depot under the test's directory `root`.
fn depot(root: &Path, i: usize) -> PathBuf {
    root.join(format!("cell-z{}", i + 1)).join("depot")
}

/// Instances per cell.
fn per_cell(rows: &[ActualLrp]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for a in rows {
        *n.entry(a.cell_id.clone()).or_default() += 1;
    }
    n
}

async fn start(root: &Path, net: &mut Net) -> Result<Cluster> {
    let hosts = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|n| net.add_host(n))
        .collect::<Result<Vec<_>>>()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let (b0, b1) = (
        hosts[0].forward(hosts[0].socket(BBS)).await?,
        hosts[1].forward(hosts[1].socket(BBS)).await?,
    );
    let router = hosts[1].forward(hosts[1].socket(ROUTER)).await?;
    let router_admin = hosts[1].forward(hosts[1].socket(ROUTER_ADMIN)).await?;
    let mut c = Cluster {
        hosts,
        root: root.to_path_buf(),
        bbs: Vec::new(),
        bbs_fwd: vec![b0, b1],
        router,
        router_admin,
        http,
        cli_runs: 0,
    };
    for i in 0..3 {
        c.spawn_etcd(i)?;
    }
    for i in 0..2 {
        let bbs = c.spawn_bbs(i)?;
        c.bbs.push(bbs);
    }
    for i in 0..2 {
        eventually(WAIT, || async {
            ensure!(c.bbs[i].is_running(), "BBS {i} exited: {}", c.bbs[i].stderr());
            c.client(i).ping().await?;
            Ok::<_, anyhow::Error>(())
        })
        .await;
    }
    let urls = c.bbs_urls();
    let a = &c.hosts[0];
    let auctioneer = a.socket(AUCTIONEER).to_string();
    a.spawn_diego(
        BIN,
        "auctioneer",
        &[
            "auctioneer",
            "--bbs",
            &urls,
            "--listen",
            &auctioneer,
            "--advertise-url",
            &format!("http://{auctioneer}"),
        ],
    )?;
    let b = &c.hosts[1];
    b.spawn_diego(
        BIN,
        "router",
        &[
            "router",
            "--bbs",
            &urls,
            "--listen",
            &b.socket(ROUTER).to_string(),
            "--admin",
            &b.socket(ROUTER_ADMIN).to_string(),
        ],
    )?;
    for i in 0..3 {
        c.spawn_cell(i)?;
    }
    eventually(WAIT, || async {
        let cells = c.client(0).cells().await?;
        ensure!(cells.len() == 3, "{} cells registered", cells.len());
        Ok::<_, anyhow::Error>(())
    })
    .await;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_host_cluster_keeps_every_instance_through_bbs_host_network_and_etcd_loss() -> Result<()> {
    let test = "a_three_host_cluster_keeps_every_instance_through_bbs_host_network_and_etcd_loss";
    if !common::runc_usable(test)
        || !diego_testkit::host::tool_for(test, "etcd", "apt-get install etcd-server")
    {
        return Ok(());
    }
    // Dropped in reverse: the hosts' processes die with the net, then their containers go,
    // then the directory.
    let dir = tempfile::Builder::new().prefix("diego-multihost-").tempdir()?;
    let mut leftovers: Vec<Option<RuncLeftovers>> = (0..3)
        .map(|i| Some(RuncLeftovers::for_depot(&depot(dir.path(), i))))
        .collect();
    let Some(mut net) = Net::new(test)? else {
        return Ok(());
    };
    let mut c = start(dir.path(), &mut net).await?;

    // An LRP of 6, routed, spread evenly over the three zones.
    let (ok, out) = c
        .cli(&[
            "lrp",
            "create",
            "web",
            "--instances",
            "6",
            "--image",
            "preloaded:busybox",
            "--port",
            "8080",
            "--route",
            ROUTE,
            "--",
            "sh",
            "-c",
            START,
        ])
        .await;
    assert!(ok, "lrp create: {out}");
    let rows = c.settled(6, &[]).await;
    let spread = per_cell(&rows);
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "6 instances over 3 zones: {spread:?}"
    );
    c.routed(6, None).await;

    // kill -9 the active BBS: the other takes the lock, places and converges.
    let gone = c.active_bbs().await;
    let other = 1 - gone;
    c.bbs[gone].kill();
    eventually(WAIT, || async {
        let p = c.client(other).ping().await?;
        ensure!(p.role.as_deref() == Some("active"), "BBS {other} is {:?}", p.role);
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let passes = c.counter(other, "bbs_convergence_passes_total").await?;
    let (ok, out) = c.cli(&["lrp", "scale", "web", "7"]).await;
    assert!(ok, "lrp scale with BBS {gone} dead: {out}");
    c.settled(7, &[]).await;
    eventually(WAIT, || async {
        let now = c.counter(other, "bbs_convergence_passes_total").await?;
        ensure!(
            now > passes,
            "BBS {other} has not converged since it took over ({now})"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    c.routed(7, None).await;
    c.bbs[gone] = c.spawn_bbs(gone)?;
    eventually(WAIT, || async {
        let p = c.client(gone).ping().await?;
        ensure!(
            p.role.as_deref() == Some("passive"),
            "restarted BBS {gone} is {:?}",
            p.role
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;

    // Kill host-c whole (its cell, its etcd member and its containers, as a machine dies):
    // its instances run again elsewhere and the router sends nothing there.
    let host_c = c.host("host-c").clone();
    host_c.kill()?;
    drop(leftovers[2].take());
    c.settled(7, &["cell-z3"]).await;
    c.routed(7, Some(&host_c)).await;
    // The machine comes back.
    leftovers[2] = Some(RuncLeftovers::for_depot(&depot(dir.path(), 2)));
    c.spawn_etcd(2)?;
    c.spawn_cell(2)?;
    eventually(WAIT, || async {
        let cells = c.client(0).cells().await?;
        ensure!(cells.len() == 3, "{} cells registered", cells.len());
        Ok::<_, anyhow::Error>(())
    })
    .await;

    // Two more instances: the empty zone takes them. Cut host-c off: its instances turn
    // SUSPECT and are replaced; after healing, each index runs exactly once.
    let (ok, out) = c.cli(&["lrp", "scale", "web", "9"]).await;
    assert!(ok, "lrp scale: {out}");
    let rows = c.settled(9, &[]).await;
    let on_c: BTreeSet<i32> = rows
        .iter()
        .filter(|a| a.cell_id == "cell-z3")
        .map(|a| a.index)
        .collect();
    assert!(
        !on_c.is_empty(),
        "no instance went to the empty zone: {}",
        describe(&rows)
    );
    // The replacement's start retires a SUSPECT row in the same transaction, so the state
    // may be brief: the event stream shows it.
    let mut events = c.client(1 - c.active_bbs().await).events_lrps(None).await?;
    let watched = on_c.clone();
    let suspects = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        while let Some(Ok(frame)) = events.next().await {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&frame.data) else {
                continue;
            };
            for row in [&v["after"], &v["actual_lrp"]] {
                if row["presence"] == "SUSPECT" && row["cell_id"] == "cell-z3" {
                    seen.insert(row["index"].as_i64().unwrap_or(-1) as i32);
                }
            }
            if seen.is_superset(&watched) {
                break;
            }
        }
        seen
    });
    host_c.partition()?;
    c.settled(9, &["cell-z3"]).await;
    let seen = tokio::time::timeout(WAIT, suspects).await??;
    assert!(
        seen.is_superset(&on_c),
        "SUSPECT seen for {seen:?}, want {on_c:?}"
    );
    host_c.heal()?;
    c.settled(9, &[]).await;
    c.routed(9, None).await;

    // Kill one etcd member under traffic: nothing notices. host-a's: the one every BBS
    // uses (each starts on the first member listed), so the active BBS's store moves to
    // another member mid-traffic, and it keeps its lock through the move (and through a
    // raft election when that member was the leader).
    let active = c.active_bbs().await;
    let etcd_a = c
        .host("host-a")
        .spawned()
        .into_iter()
        .find(|p| p.name() == "etcd" && p.is_running())
        .expect("host-a's etcd member");
    etcd_a.kill();
    for _ in 0..50 {
        let (status, body) = c.get().await?;
        assert_eq!(status, 200, "through the router with an etcd member down: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out) = c.cli(&["lrp", "scale", "web", "8"]).await;
    assert!(ok, "lrp scale with an etcd member down: {out}");
    c.settled(8, &[]).await;
    c.routed(8, None).await;
    assert_eq!(
        c.active_bbs().await,
        active,
        "the active BBS changed when an etcd member died"
    );

    let (ok, out) = c.cli(&["lrp", "delete", "web"]).await;
    assert!(ok, "lrp delete: {out}");
    eventually(WAIT, || async {
        let rows = c.rows().await?;
        ensure!(rows.is_empty(), "left: {}", describe(&rows));
        Ok::<_, anyhow::Error>(())
    })
    .await;
    drop(c);
    drop(net);
    Ok(())
}
