//! Throughput of the SQLite store: concurrent single-write transactions, then full listings.
//!
//! `cargo run --release -p diego-store --example sqlite_bench -- [DATA_DIR] [RECORDS] [WRITERS]`
//! (defaults: a temporary directory, 100000 actual LRPs, 64 writers). Prints numbers; asserts
//! nothing about time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use diego_model::{ActualLrp, ActualLrpKey, ActualLrpState, PortMapping, SystemClock};
use diego_store::sqlite::{SqliteOptions, SqliteStore};
use diego_store::{ActualLrpFilter, Record, Store, Txn, Write};

/// An actual LRP shaped like a running instance (~400 bytes of JSON).
fn instance(n: usize) -> ActualLrp {
    // Scattered like the uuids of real process guids, so inserts land all over the B-trees.
    let p = (n / 10).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    let key = ActualLrpKey {
        process_guid: format!("{:08x}-7b7e-4c4e-9f1b-{:012x}", p as u32, p & 0xffff_ffff_ffff),
        index: (n % 10) as i32,
        domain: "cf-apps".into(),
    };
    let mut a = ActualLrp::unclaimed(key, 1_700_000_000_000_000_000, uuid::Uuid::new_v4().to_string());
    a.instance_guid = uuid::Uuid::new_v4().to_string();
    a.cell_id = format!("cell-{:03}", n % 200);
    a.address = format!("10.0.{}.{}", (n / 250) % 250, n % 250);
    a.ports = vec![PortMapping {
        container_port: 8080,
        host_port: 61000 + (n % 1000) as u32,
        ..Default::default()
    }];
    a.state = ActualLrpState::Running;
    a
}

/// CPU seconds used so far by threads named `name` (Linux; 0 elsewhere). Wall time on a
/// shared machine is noisy; the writer's CPU time per transaction is what group commit and
/// the SQL cost.
fn thread_cpu_secs(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks = 100.0; // USER_HZ on Linux
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let records: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let writers: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);

    let store = Arc::new(
        SqliteStore::open(&dir, Arc::new(SystemClock), SqliteOptions::default())
            .with_context(|| format!("opening store in {}", dir.display()))?,
    );
    println!(
        "record JSON: {} bytes; {records} records, {writers} writers, dir {}",
        serde_json::to_string(&instance(0))?.len(),
        dir.display()
    );

    // Inserts: one actual LRP per transaction.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu = thread_cpu_secs("sqlite-writer");
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= records {
                        return Ok::<_, diego_store::StoreError>(());
                    }
                    store
                        .commit(Txn::one(Write::insert(Record::ActualLrp(instance(n)))))
                        .await?;
                }
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs("sqlite-writer") - cpu;
    println!(
        "insert: {records} txns in {secs:.2} s = {:.0} txns/s (writer thread CPU {:.1} us/txn)",
        records as f64 / secs,
        cpu * 1e6 / records as f64
    );

    // CAS updates: each writer claims a disjoint slice of records (read, modify, compare-and-swap).
    let updates = records.min(50_000);
    let listed = store.list_actual_lrps(&ActualLrpFilter::default()).await?;
    let listed = Arc::new(listed);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu = thread_cpu_secs("sqlite-writer");
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (store, next, listed) = (store.clone(), next.clone(), listed.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= updates {
                        return Ok::<_, diego_store::StoreError>(());
                    }
                    // A stride permutation: updates hit the key space in scattered order.
                    let mut a = listed[(n * 7_919) % listed.len()].clone();
                    a.crash_count += 1;
                    store
                        .commit(Txn::one(Write::update(Record::ActualLrp(a))))
                        .await?;
                }
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs("sqlite-writer") - cpu;
    println!(
        "update: {updates} CAS txns in {secs:.2} s = {:.0} txns/s (writer thread CPU {:.1} us/txn)",
        updates as f64 / secs,
        cpu * 1e6 / updates as f64
    );

    // Full listings.
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let all = store.list_actual_lrps(&ActualLrpFilter::default()).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(all.len() == records, "listed {} of {records}", all.len());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "list {records} actual LRPs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        times[0], times[2], times[4]
    );

    let started = Instant::now();
    let one_cell = store
        .list_actual_lrps(&ActualLrpFilter {
            cell_id: Some("cell-007".into()),
            ..Default::default()
        })
        .await?;
    println!(
        "list by cell_id: {} records in {:.2} ms",
        one_cell.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
