//! The etcd side of `diego bench bbs|control-plane --store etcd://… | --start-etcd N`: the
//! cluster the BBS runs on (named, or started by the benchmark with
//! [`diego_store::etcd::local::LocalEtcd`]), etcd's own durable write rates measured with
//! etcd-client before the BBS workload (the baseline, as `fsync_per_sec` is SQLite's), and
//! the CPU time of processes over a phase, read from `/proc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use diego_garden::procfs::Stat;
use diego_store::etcd::local::LocalEtcd;
use diego_store::etcd::EtcdOptions;
use etcd_client::{Client, Compare, CompareOp, TxnOp};
use serde_json::{json, Map, Value};

use super::procs::US_PER_TICK;

/// Largest etcd transaction (compares, and operations, each) of an etcd with default flags:
/// `--max-txn-ops` 128.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Where the etcd figures come from: the `--store` and `--start-etcd` flags.
#[derive(Debug, Clone, Default)]
pub struct EtcdChoice {
    /// `etcd://…` of a running cluster.
    pub store: Option<String>,
    /// Members of a cluster the benchmark starts (and kills on exit).
    pub start: Option<usize>,
}

impl EtcdChoice {
    pub fn wanted(&self) -> bool {
        self.store.is_some() || self.start.is_some()
    }
}

/// The cluster a run uses; a started one is killed when this is dropped.
pub struct Cluster {
    local: Option<LocalEtcd>,
    options: EtcdOptions,
    /// The URL as given (or made), without a per-run prefix.
    url: String,
}

impl Cluster {
    pub async fn open(choice: &EtcdChoice) -> anyhow::Result<Cluster> {
        let (local, url) = match (&choice.store, choice.start) {
            (Some(url), _) => (None, url.clone()),
            (None, Some(n)) => {
                let local = LocalEtcd::launch(n)
                    .await
                    .with_context(|| format!("--start-etcd {n}: starting etcd"))?;
                let url = local.url();
                (Some(local), url)
            }
            (None, None) => anyhow::bail!("no etcd: give --store etcd://… or --start-etcd N"),
        };
        let options = EtcdOptions::from_url(&url).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
        Ok(Cluster { local, options, url })
    }

    /// Members: of the started cluster, or named in the URL.
    pub fn members(&self) -> usize {
        self.options.endpoints.len()
    }

    /// What the run says it ran on.
    pub fn describe(&self) -> String {
        match &self.local {
            Some(l) => format!(
                "etcd started by the benchmark ({} member(s) on loopback, data in {})",
                l.members(),
                l.dir().display()
            ),
            None => format!("etcd at {}", self.url),
        }
    }

    /// The members' PIDs when the benchmark started them (empty for a named cluster: its CPU
    /// time is not ours to read).
    pub fn pids(&self) -> Vec<u32> {
        self.local
            .as_ref()
            .map(|l| (0..l.members()).filter_map(|i| l.pid(i)).collect())
            .unwrap_or_default()
    }

    /// A `--store` URL whose keys start under a prefix of their own, so runs do not meet.
    pub fn store_url(&self, run: &str) -> String {
        let hosts: Vec<&str> = self
            .options
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}{}{run}/", hosts.join(","), self.options.prefix)
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.options.endpoints, None)
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// The largest backend database of the members, in MB (etcd's quota counts it; 2 GiB by
    /// default).
    pub async fn db_size_mb(&self) -> anyhow::Result<f64> {
        let mut largest = 0i64;
        for endpoint in &self.options.endpoints {
            let mut client = Client::connect([endpoint.as_str()], None)
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            let status = client
                .status()
                .await
                .with_context(|| format!("etcd status of {endpoint}"))?;
            largest = largest.max(status.db_size());
        }
        Ok(largest as f64 / (1024.0 * 1024.0))
    }

    /// Deletes every key under the run's prefix (what [`Cluster::store_url`] gave it).
    pub async fn clear(&self, run: &str) -> anyhow::Result<()> {
        let prefix = format!("{}{run}/", self.options.prefix);
        self.client()
            .await?
            .delete(prefix, Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .context("deleting the run's keys")?;
        Ok(())
    }
}

/// etcd's own durable write rates, each for at most `seconds` and `max_ops` operations.
pub struct Baseline {
    /// Sequential single-key puts (each waits for the one before: one raft round + WAL fsync).
    pub put_per_sec: f64,
    /// Sequential compare-and-swap transactions shaped like the store's commit of one record:
    /// `If` the record's and the head's mod revisions are unchanged `Then` put the record, a
    /// feed entry and the head.
    pub txn_per_sec: f64,
    /// Puts from 64 concurrent requests on one connection: what etcd does when it can batch
    /// many proposals into one raft round and fsync.
    pub put_concurrent_per_sec: f64,
    /// The members' CPU time per put of those (when the benchmark started them): etcd's own
    /// cost of a durable write, the floor of a workload's etcd CPU per write.
    pub put_concurrent_cpu_us: Option<f64>,
}

impl Baseline {
    pub fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("etcd_put_per_sec".into(), json!(self.put_per_sec.round()));
        m.insert("etcd_txn_per_sec".into(), json!(self.txn_per_sec.round()));
        m.insert(
            "etcd_put_concurrent_per_sec".into(),
            json!(self.put_concurrent_per_sec.round()),
        );
        if let Some(us) = self.put_concurrent_cpu_us {
            m.insert("etcd_put_concurrent_cpu_us_per_put".into(), json!(us.round()));
        }
        m
    }
}

/// What both benchmarks do before their etcd run: open the cluster, name the run (`bench`
/// and a random suffix: its keys' prefix), measure etcd's own write rates on the same members
/// and say them. The run, the baseline, and the summary begun with `store`, `etcd_members`
/// and the baseline's figures.
pub async fn begin(
    choice: &EtcdChoice,
    bench: &str,
    say: impl Fn(&str),
) -> anyhow::Result<(Cluster, String, Baseline, Map<String, Value>)> {
    let cluster = Cluster::open(choice).await?;
    say(&format!("store: {}", cluster.describe()));
    let run = format!("{bench}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let base = baseline(&cluster, &format!("{run}-baseline"), 2.0, 20_000).await?;
    say(&format!(
        "etcd baseline: {:.0} sequential puts/s, {:.0} sequential compare-and-swap txns/s, \
         {:.0} puts/s from 64 concurrent requests{}",
        base.put_per_sec,
        base.txn_per_sec,
        base.put_concurrent_per_sec,
        base.put_concurrent_cpu_us
            .map(|us| format!(" ({us:.0} µs of etcd CPU each)"))
            .unwrap_or_default()
    ));
    let mut summary = Map::new();
    summary.insert("store".into(), json!("etcd"));
    summary.insert("etcd_members".into(), json!(cluster.members()));
    summary.extend(base.json());
    Ok((cluster, run, base, summary))
}

/// A record-sized value (a task's stored JSON is about this long).
fn value(i: u64) -> Vec<u8> {
    let mut v = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    v.resize(600, b'x');
    v.extend_from_slice(b"\"}");
    v
}

pub async fn baseline(cluster: &Cluster, run: &str, seconds: f64, max_ops: u64) -> anyhow::Result<Baseline> {
    let mut client = cluster.client().await?;
    let prefix = format!("{}{run}/", cluster.options.prefix);
    let budget = Duration::from_secs_f64(seconds);

    let key = format!("{prefix}put");
    let started = Instant::now();
    let mut puts = 0u64;
    while started.elapsed() < budget && puts < max_ops {
        client
            .put(key.clone(), value(puts), None)
            .await
            .context("etcd put (baseline)")?;
        puts += 1;
    }
    let put_per_sec = puts as f64 / started.elapsed().as_secs_f64();

    let (record, head) = (format!("{prefix}record"), format!("{prefix}head"));
    let mut revision = 0i64;
    let started = Instant::now();
    let mut txns = 0u64;
    while started.elapsed() < budget && txns < max_ops {
        let compare = |k: &str| {
            if revision == 0 {
                Compare::version(k, CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(k, CompareOp::Equal, revision)
            }
        };
        let txn = etcd_client::Txn::new()
            .when([compare(&record), compare(&head)])
            .and_then([
                TxnOp::put(record.clone(), value(txns), None),
                TxnOp::put(format!("{prefix}feed/{txns:016}"), value(txns), None),
                TxnOp::put(head.clone(), format!("{{\"head\":{txns}}}"), None),
            ]);
        let resp = client.txn(txn).await.context("etcd txn (baseline)")?;
        anyhow::ensure!(
            resp.succeeded(),
            "the baseline's compare-and-swap failed: another writer under {prefix}?"
        );
        revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        txns += 1;
    }
    let txn_per_sec = txns as f64 / started.elapsed().as_secs_f64();

    let pids = cluster.pids();
    let ticks = cpu_ticks(&pids);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + budget;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..64 {
        let (mut kv, done, prefix) = (client.kv_client(), done.clone(), prefix.clone());
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline && done.load(Ordering::Relaxed) < max_ops {
                kv.put(format!("{prefix}concurrent/{c}"), value(i), None)
                    .await
                    .context("etcd put (concurrent baseline)")?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let concurrent = done.load(Ordering::Relaxed);
    let put_concurrent_per_sec = concurrent as f64 / started.elapsed().as_secs_f64();
    let put_concurrent_cpu_us = (!pids.is_empty() && concurrent > 0)
        .then(|| cpu_ticks(&pids).saturating_sub(ticks) as f64 * US_PER_TICK / concurrent as f64);
    cluster.clear(run).await?;
    Ok(Baseline {
        put_per_sec,
        txn_per_sec,
        put_concurrent_per_sec,
        put_concurrent_cpu_us,
    })
}

/// CPU time (user + system) of a set of processes, summed; gone processes count 0.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| Stat::read(pid).ok())
        .map(|s| s.cpu_ticks)
        .sum()
}

/// Where a phase's CPU went: named groups of processes, sampled before and after.
pub struct CpuMeter {
    groups: Vec<(&'static str, Vec<u32>, u64)>,
}

impl CpuMeter {
    pub fn start(groups: &[(&'static str, Vec<u32>)]) -> CpuMeter {
        CpuMeter {
            groups: groups
                .iter()
                .map(|(name, pids)| (*name, pids.clone(), cpu_ticks(pids)))
                .collect(),
        }
    }

    /// Each group's CPU microseconds per operation over the phase, as `<prefix>_<group>_cpu_us_per_<unit>`;
    /// groups without processes (a named etcd) are left out.
    pub fn per_op(&self, ops: u64, prefix: &str, unit: &str, out: &mut Map<String, Value>) {
        for (name, pids, before) in &self.groups {
            if pids.is_empty() {
                continue;
            }
            let used = cpu_ticks(pids).saturating_sub(*before) as f64 * US_PER_TICK;
            let per = used / ops.max(1) as f64;
            out.insert(
                format!("{prefix}_{name}_cpu_us_per_{unit}"),
                json!((per * 10.0).round() / 10.0),
            );
        }
    }
}

/// Copies `figures` into `out` with `prefix_` before each key.
pub fn prefixed(prefix: &str, figures: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (k, v) in figures {
        out.insert(format!("{prefix}_{k}"), v.clone());
    }
}
