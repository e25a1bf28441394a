//! `diego bench logs`: log lines from many instances through the real shipper to one log
//! server, read back by one follower over SSE, all in this process on loopback.
//!
//! `--instances` (100) writers share one log guid (one app), each writing its share of
//! `--rate` lines per second for `--seconds`, through one [`Shipper`] (a cell's, rate limit
//! off) to a log server (memory only). One follower follows the log guid from the start.
//! Figures: lines per second the follower received (from the first write to the last line
//! received), follow latency (write to receipt, per line) and lines lost (written minus
//! received). The shipper's own counts say where any loss happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diego_logs::server::{self, ServerConfig};
use diego_logs::{FollowEvent, LogQuery, LogStreamer, LogsClient, Shipper, ShipperConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LOG_GUID: &str = "bench-logs";
const SOURCE: &str = "APP/PROC/WEB";

pub struct Options {
    pub json: bool,
    pub instances: usize,
    /// Lines per second offered, all writers together.
    pub rate: u64,
    pub seconds: f64,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let server = server::start(ServerConfig::new(([127, 0, 0, 1], 0).into()), stop.clone())
        .await
        .context("starting the log server")?;
    let mut ship = ShipperConfig::new(&server.url);
    ship.lines_per_second = 0;
    let (shipper, shipping) = Shipper::start(ship, stop.clone()).context("starting the shipper")?;

    // The follower, counting the writers' lines and their latency.
    let client = LogsClient::new(&server.url)?;
    let mut follow = client
        .follow(LOG_GUID, &LogQuery::default(), None)
        .await
        .context("opening the follow stream")?;
    let received = Arc::new(AtomicU64::new(0));
    let follower = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut dropped_by_server = 0;
            let mut last_at = Instant::now();
            while let Ok(Some(event)) = follow.next().await {
                match event {
                    FollowEvent::Lines(lines) => {
                        let now = diego_logs::line::now_ns();
                        let mut n = 0;
                        for l in lines.iter().filter(|l| l.source_type == SOURCE) {
                            latencies_us.push(now.saturating_sub(l.timestamp_ns) / 1_000);
                            n += 1;
                        }
                        if n > 0 {
                            last_at = Instant::now();
                            received.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    FollowEvent::Dropped(n) => dropped_by_server += n,
                }
            }
            (latencies_us, dropped_by_server, last_at)
        })
    };

    let total = (o.rate as f64 * o.seconds) as u64;
    let per_writer = total / o.instances as u64;
    let written = per_writer * o.instances as u64;
    let rate_per_writer = o.rate as f64 / o.instances as f64;
    eprintln!(
        "{} instances writing {} lines/s for {:.1} s ({written} lines) through one shipper to {}",
        o.instances, o.rate, o.seconds, server.url
    );
    let started = Instant::now();
    let mut writers = Vec::new();
    for i in 0..o.instances {
        let streamer = LogStreamer::new(shipper.clone(), LOG_GUID, SOURCE, Some(i as u32));
        writers.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while done < per_writer {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate_per_writer) as u64).min(per_writer);
                while done < due {
                    streamer.stdout(&format!(
                        "instance {i} line {done} lorem ipsum dolor sit amet, consectetur adipiscing elit"
                    ));
                    done += 1;
                }
            }
        }));
    }
    for w in writers {
        w.await.context("a writer panicked")?;
    }
    let wrote_in = started.elapsed();
    // Wait for the tail: until everything arrived, or nothing more did for 5 s.
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    while received.load(Ordering::Relaxed) < written {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let counts = shipper.counts();
    stop.cancel();
    let (mut latencies, dropped_by_server, last_at) = follower.await.context("the follower panicked")?;
    let _ = shipping.await;
    let _ = server.task.await;

    let got = latencies.len() as u64;
    let elapsed = last_at.saturating_duration_since(started).as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let report = json!({
        "instances": o.instances,
        "offered_lines_per_sec": o.rate,
        "written": written,
        "received": got,
        "lost_lines": written.saturating_sub(got),
        "lines_per_sec": got as f64 / elapsed,
        "write_seconds": wrote_in.as_secs_f64(),
        "follow_latency_p50_ms": pct(0.50),
        "follow_latency_p99_ms": pct(0.99),
        "follow_latency_max_ms": pct(1.0),
        "shipper_sent": counts.sent,
        "shipper_dropped_buffer_full": counts.buffer_full,
        "shipper_dropped_unreachable": counts.unreachable,
        "server_dropped_for_follower": dropped_by_server,
    });
    eprintln!(
        "received {got} of {written} lines in {elapsed:.2} s: {:.0} lines/s; follow latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; lost {} (shipper: {} dropped on a full buffer, {} while unreachable; server: {} evicted before the follower read them)",
        got as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        written.saturating_sub(got),
        counts.buffer_full,
        counts.unreachable,
        dropped_by_server
    );
    if o.json {
        println!("{report}");
    }
    Ok(())
}
