//! `diego bench failover`: kill -9 the active BBS under load, time the takeover.
//!
//! Starts its own etcd (3 members on loopback, or `--etcd-members 1`) and two `diego bbs
//! --store etcd://…` child processes with the default lock settings (unless `--lock-ttl`).
//! A writer desires tasks through one failing-over `BbsClient` given both URLs, at a steady
//! `--rate` per second, while a subscriber follows the task event stream through the same
//! kind of client. Each of `--rounds` rounds: `--load` seconds of writes, then SIGKILL of the
//! BBS holding the `bbs` lock (found with `/v1/ping`'s `lock_holder`), polling the other's
//! `/v1/ping` until it says it is active and holds the lock (`bbs_failover_ms`), then the
//! killed one started again on its address as the new passive. Afterwards every task is read
//! back: acknowledged writes not stored are `lost_writes`; tasks whose creation the event
//! stream showed more than once are `duplicate_writes` (a guid cannot be stored twice, so
//! "applied twice" shows as a second creation event); acknowledged tasks whose creation the
//! stream never showed are `events_missed`. Bounded: rounds × (load + 30 s) at most.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::{BbsClient, BbsUrls, TaskQuery};
use diego_model::{Action, DesireTaskRequest, Event, RunAction, TaskDefinition};
use diego_store::etcd::LocalEtcd;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::procs::{self, Role};
use super::say;

pub struct Options {
    pub json: bool,
    pub etcd_members: usize,
    pub rounds: usize,
    /// Writes per second.
    pub rate: u32,
    /// Writes before each kill.
    pub load: Duration,
    /// `--lock-ttl` for both BBS; `None`: the BBS's default.
    pub lock_ttl: Option<u64>,
}

const DOMAIN: &str = "bench-failover";
/// Longest wait for a takeover before the round is a failure.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

fn task(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: DOMAIN.into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(Action::run(RunAction {
                path: "true".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
    }
}

/// One BBS child: its address stays the same across restarts, so its owner name does too.
struct Bbs {
    listen: String,
    role: Option<Role>,
}

impl Bbs {
    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

async fn start_bbs(
    http: &reqwest::Client,
    store: &str,
    listen: &str,
    lock_ttl: Option<u64>,
) -> anyhow::Result<Role> {
    let mut args = vec!["bbs", "--store", store, "--listen", listen];
    let ttl = lock_ttl.map(|t| t.to_string());
    if let Some(t) = &ttl {
        args.extend(["--lock-ttl", t]);
    }
    let mut role = procs::spawn(&args, format!("http://{listen}"))?;
    procs::wait_ready(http, &mut role, "/v1/ping").await?;
    Ok(role)
}

async fn ping(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}/v1/ping"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

fn is_active(p: &Value) -> bool {
    p["role"] == "active" && p["lock_holder"] == p["owner"]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The longest gap between consecutive acknowledgements that spans `at`, in ms.
fn gap_around(acks: &[Instant], at: Instant) -> f64 {
    acks.windows(2)
        .filter(|w| w[0] <= at && at <= w[1])
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .fold(0.0, f64::max)
}

#[derive(Default)]
struct Writes {
    /// Acknowledged guids with when.
    acked: Vec<(String, Instant)>,
    /// Guids whose desire returned an error.
    failed: Vec<(String, String)>,
}

async fn write_loop(client: BbsClient, rate: u32, writes: Arc<Mutex<Writes>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let guid = format!("fo-{n:07}");
        let result = client.desire_task(&task(&guid)).await;
        let mut w = writes.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => w.acked.push((guid, Instant::now())),
            Err(e) => w.failed.push((guid, e.to_string())),
        }
    }
}

#[derive(Default)]
struct Seen {
    created: BTreeMap<String, u32>,
    resyncs: u32,
    reconnects: u32,
}

/// Follows task events, reconnecting after the last id (through the failing-over client).
async fn follow(client: BbsClient, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let mut last: Option<u64> = None;
    let mut first = true;
    while !stop.is_cancelled() {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            s = client.events_tasks(last) => s,
        };
        let Ok(mut stream) = stream else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !first {
            seen.lock().unwrap_or_else(|p| p.into_inner()).reconnects += 1;
        }
        first = false;
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => return,
                f = stream.next() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            if let Some(id) = frame.id {
                last = Some(id);
            }
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            match frame.decode() {
                Ok(Event::TaskCreated { task }) if task.domain == DOMAIN => {
                    *s.created.entry(task.task_guid.clone()).or_default() += 1;
                }
                Ok(Event::Resync { .. }) => s.resyncs += 1,
                _ => {}
            }
        }
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let http = diego_runtime::http_client(None).build()?;
    say(
        o.json,
        &format!("starting etcd ({} member(s)) on loopback", o.etcd_members),
    );
    let etcd = LocalEtcd::launch(o.etcd_members)
        .await
        .map_err(anyhow::Error::msg)
        .context("starting etcd")?;
    let store = etcd.url();
    let mut bbs = Vec::new();
    for _ in 0..2 {
        let listen = format!("127.0.0.1:{}", procs::free_port()?);
        let role = start_bbs(&http, &store, &listen, o.lock_ttl).await?;
        bbs.push(Bbs {
            listen,
            role: Some(role),
        });
    }
    let urls = BbsUrls::new(bbs.iter().map(Bbs::url))?;
    procs::until("one BBS active", TAKEOVER_TIMEOUT, || async {
        for b in &bbs {
            if ping(&http, &b.url()).await.is_some_and(|p| is_active(&p)) {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await?;
    let lock_ttl_s = match o.lock_ttl {
        Some(t) => t,
        None => diego_bbs::active::DEFAULT_LOCK_TTL.as_secs(),
    };
    say(
        o.json,
        &format!(
            "two BBS on {store} ({}), lock TTL {lock_ttl_s} s; writing {} tasks/s",
            urls, o.rate
        ),
    );

    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let writes = Arc::new(Mutex::new(Writes::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let follow_stop = CancellationToken::new();
    let _follow_stop = follow_stop.clone().drop_guard();
    let follower = tokio::spawn(follow(
        BbsClient::new(urls.clone()),
        seen.clone(),
        follow_stop.clone(),
    ));
    // Let the subscriber connect before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writer = tokio::spawn(write_loop(
        BbsClient::new(urls.clone()),
        o.rate,
        writes.clone(),
        stop.clone(),
    ));

    let mut failovers_ms = Vec::new();
    let mut kills = Vec::new();
    for round in 1..=o.rounds {
        tokio::time::sleep(o.load).await;
        let mut active = None;
        for (i, b) in bbs.iter().enumerate() {
            if ping(&http, &b.url()).await.is_some_and(|p| is_active(&p)) {
                active = Some(i);
            }
        }
        let Some(active) = active else {
            bail!("round {round}: no BBS says it is active");
        };
        let survivor = 1 - active;
        let mut killed = bbs[active].role.take().context("the active BBS runs")?;
        let killed_at = Instant::now();
        killed.child.kill().context("kill -9 of the active BBS")?;
        let _ = killed.child.wait();
        drop(killed);
        let survivor_url = bbs[survivor].url();
        procs::until("the other BBS takes over", TAKEOVER_TIMEOUT, || async {
            Ok(ping(&http, &survivor_url).await.is_some_and(|p| is_active(&p)))
        })
        .await
        .with_context(|| format!("round {round}"))?;
        let ms = killed_at.elapsed().as_secs_f64() * 1e3;
        failovers_ms.push(ms);
        kills.push(killed_at);
        say(
            o.json,
            &format!(
                "round {round}: killed {}, {survivor_url} active after {ms:.0} ms",
                bbs[active].url()
            ),
        );
        // The killed one comes back on its address as the new passive.
        let role = start_bbs(&http, &store, &bbs[active].listen, o.lock_ttl).await?;
        bbs[active].role = Some(role);
    }
    // Writes after the last takeover, so the gap around it is closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let _ = writer.await;
    let writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|p| p.into_inner()));

    // Read back, and wait (bounded) for the stream to show every stored task.
    let reader = BbsClient::new(urls.clone());
    let stored: BTreeSet<String> = reader
        .tasks(&TaskQuery {
            domain: Some(DOMAIN.into()),
            ..Default::default()
        })
        .await
        .context("reading the tasks back")?
        .into_iter()
        .map(|t| t.task_guid)
        .collect();
    let caught_up = procs::until(
        "the event stream shows every stored task",
        Duration::from_secs(10),
        || async {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            Ok(stored.iter().all(|g| s.created.contains_key(g)))
        },
    )
    .await;
    if let Err(e) = caught_up {
        say(o.json, &format!("{e}: counting what it showed"));
    }
    follow_stop.cancel();
    let _ = follower.await;
    let acked: Vec<&str> = writes.acked.iter().map(|(g, _)| g.as_str()).collect();
    let lost: Vec<&str> = acked.iter().copied().filter(|g| !stored.contains(*g)).collect();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let duplicates: Vec<&String> = seen
        .created
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(g, _)| g)
        .collect();
    let missed: Vec<&str> = acked
        .iter()
        .copied()
        .filter(|g| !seen.created.contains_key(*g))
        .collect();
    let unacked_stored = writes.failed.iter().filter(|(g, _)| stored.contains(g)).count();
    let ack_times: Vec<Instant> = writes.acked.iter().map(|(_, t)| *t).collect();
    let mut gaps: Vec<f64> = kills.iter().map(|&k| gap_around(&ack_times, k)).collect();

    let mut sorted = failovers_ms.clone();
    sorted.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    let p50 = percentile(&sorted, 0.5);
    say(
        o.json,
        &format!(
            "bbs_failover_ms p50 {p50:.0} (rounds: {}), writes unavailable at most {:.0} ms; {} acknowledged, {} lost, {} duplicated, {} failed ({} of them stored anyway), events: {} missed, {} reconnects, {} resyncs",
            failovers_ms.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
            gaps.last().copied().unwrap_or(0.0),
            acked.len(),
            lost.len(),
            duplicates.len(),
            writes.failed.len(),
            unacked_stored,
            missed.len(),
            seen.reconnects,
            seen.resyncs,
        ),
    );
    for (g, e) in writes.failed.iter().take(5) {
        say(o.json, &format!("  failed write {g}: {e}"));
    }
    if o.json {
        println!(
            "{}",
            json!({
                "bench": "failover",
                "etcd_members": etcd.members(),
                "rounds": failovers_ms.len(),
                "lock_ttl_s": lock_ttl_s,
                "lock_retry_interval_ms": diego_bbs::active::DEFAULT_LOCK_RETRY_INTERVAL.as_millis() as u64,
                "write_rate_per_s": o.rate,
                "bbs_failover_ms": p50.round(),
                "bbs_failover_ms_p99": percentile(&sorted, 0.99).round(),
                "bbs_failover_ms_rounds": failovers_ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
                "writes_unavailable_ms": gaps.last().copied().unwrap_or(0.0).round(),
                "writes_unavailable_ms_p50": percentile(&gaps, 0.5).round(),
                "acknowledged_writes": acked.len(),
                "lost_writes": lost.len(),
                "duplicate_writes": duplicates.len(),
                "failed_writes": writes.failed.len(),
                "failed_writes_stored": unacked_stored,
                "events_missed": missed.len(),
                "event_reconnects": seen.reconnects,
                "event_resyncs": seen.resyncs,
            })
        );
    }
    if !lost.is_empty() {
        bail!(
            "{} acknowledged writes were lost (first: {})",
            lost.len(),
            lost[0]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_one_spanning_the_kill() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let acks = [at(0), at(100), at(200), at(3_200), at(3_300)];
        assert_eq!(gap_around(&acks, at(250)), 3_000.0);
        assert_eq!(gap_around(&acks, at(50)), 100.0);
        assert_eq!(gap_around(&acks, at(9_000)), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
