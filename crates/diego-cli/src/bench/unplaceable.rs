//! `diego bench unplaceable`: an LRP no cell can take, at the largest count allowed.
//!
//! Its own `diego dev` (BBS, auctioneer and one process-backend cell in one child process).
//! An LRP of `--instances` (100,000) instances asking for 1,000,000 MB is desired; the
//! benchmark holds it for `--hold` seconds while every auction round fails it, sampling the
//! dev process's resident memory (`/proc/<pid>/status`: VmRSS and its anonymous part) every
//! 500 ms, then deletes it and times the answer and until no instance row is left. It does the
//! same with a scale to zero. The baseline in the same run is the idle process's memory before
//! the LRP, and the delete of an LRP of 1,000 such instances.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::{ActualLrpQuery, BbsClient};
use diego_garden::procfs;
use diego_model::{Action, DesiredLrp, DesiredLrpUpdate, RunAction};
use serde_json::json;

use super::procs::{self, until};

pub struct Options {
    pub json: bool,
    pub instances: i32,
    pub hold: Duration,
}

/// Resident memory of `pid` in MB: (all, anonymous).
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let mb = |field| Some(procfs::status_kb(pid, field)? as f64 / 1024.0);
    Some((mb("VmRSS")?, mb("RssAnon")?))
}

/// An LRP of `instances` that no cell can take (each asks for 1,000,000 MB).
pub fn unplaceable_lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "bench".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb: 1_000_000,
        action: Some(Action::run(RunAction {
            path: "sleep".into(),
            args: vec!["600".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn rows(client: &BbsClient, guid: &str) -> anyhow::Result<usize> {
    Ok(client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await?
        .len())
}

/// Waits (up to two minutes) until index 0 of `guid` carries a placement error.
async fn until_failing(client: &BbsClient, guid: &str) -> anyhow::Result<()> {
    let what = format!("a placement failure recorded for {guid}");
    until(&what, Duration::from_secs(120), || async {
        let query = ActualLrpQuery {
            process_guid: Some(guid.into()),
            index: Some(0),
            ..Default::default()
        };
        Ok(client
            .actual_lrps(&query)
            .await?
            .iter()
            .any(|a| !a.placement_error.is_empty()))
    })
    .await
}

/// Times `remove` (the request) and until no row of `guid` is left.
async fn timed_removal<F, Fut>(client: &BbsClient, guid: &str, remove: F) -> anyhow::Result<(f64, f64)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    remove().await?;
    let answered = started.elapsed().as_secs_f64() * 1000.0;
    let what = format!("no instance of {guid} left");
    until(&what, Duration::from_secs(120), || async {
        Ok(rows(client, guid).await? == 0)
    })
    .await?;
    Ok((answered, started.elapsed().as_secs_f64() * 1000.0))
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let http = diego_runtime::http_client(None).build()?;
    let port = procs::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let data = root.path().join("dev").display().to_string();
    let mut dev = procs::spawn(
        &[
            "dev",
            "--backend",
            "process",
            "--data-dir",
            &data,
            "--listen",
            &listen,
            "--logs-listen",
            "127.0.0.1:0",
        ],
        format!("http://{listen}"),
    )?;
    procs::wait_ready(&http, &mut dev, "/v1/ping").await?;
    let pid = dev.child.id();
    let client = BbsClient::with_http(dev.url.clone(), http.clone());
    until("the dev cell registered", Duration::from_secs(60), || async {
        Ok(!client.cells().await?.is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, idle_anon) = rss_mb(pid).context("reading the dev process's memory")?;

    // Baseline: the same delete, of a thousand instances.
    client.desire_lrp(&unplaceable_lrp("small", 1_000)).await?;
    until_failing(&client, "small").await?;
    let (small_delete, small_gone) = timed_removal(&client, "small", || async {
        Ok(client.remove_desired_lrp("small").await?)
    })
    .await?;

    let started = Instant::now();
    client.desire_lrp(&unplaceable_lrp("huge", o.instances)).await?;
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    until_failing(&client, "huge").await?;
    eprintln!(
        "{} unplaceable instances desired in {create_ms:.0} ms; holding {:?} while the auction fails them",
        o.instances, o.hold
    );
    let (mut max_rss, mut max_anon, mut samples) = (0f64, 0f64, Vec::new());
    let hold_until = Instant::now() + o.hold;
    while Instant::now() < hold_until {
        if let Some((rss, anon)) = rss_mb(pid) {
            max_rss = max_rss.max(rss);
            max_anon = max_anon.max(anon);
            samples.push(rss);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last_rss = samples.last().copied().unwrap_or(0.0);
    // The peak of each 30 s of the hold: memory that stays bounded does not climb from one
    // window to the next.
    let windows: Vec<f64> = samples
        .chunks(60)
        .map(|w| w.iter().copied().fold(0.0, f64::max).round())
        .collect();
    let (delete_ms, gone_ms) = timed_removal(&client, "huge", || async {
        Ok(client.remove_desired_lrp("huge").await?)
    })
    .await?;

    client.desire_lrp(&unplaceable_lrp("huge", o.instances)).await?;
    until_failing(&client, "huge").await?;
    let (scale_ms, scale_gone_ms) = timed_removal(&client, "huge", || async {
        let update = DesiredLrpUpdate {
            instances: Some(0),
            ..Default::default()
        };
        client.update_desired_lrp("huge", &update).await?;
        Ok(())
    })
    .await?;
    client.remove_desired_lrp("huge").await?;
    if let Ok(Some(status)) = dev.child.try_wait() {
        bail!("diego dev exited with {status} during the benchmark");
    }

    eprintln!("idle dev process: RSS {idle_rss:.0} MB ({idle_anon:.0} MB anonymous)");
    eprintln!(
        "while failing {} instances for {:?}: RSS max {max_rss:.0} MB ({max_anon:.0} MB anonymous), last {last_rss:.0} MB",
        o.instances, o.hold
    );
    eprintln!("RSS peak per 30 s of the hold (MB): {windows:?}");
    eprintln!(
        "delete: answered in {delete_ms:.0} ms, no instance left after {gone_ms:.0} ms \
         (baseline, 1,000 instances: {small_delete:.0} / {small_gone:.0} ms)"
    );
    eprintln!("scale to 0: answered in {scale_ms:.0} ms, no instance left after {scale_gone_ms:.0} ms");
    if o.json {
        println!(
            "{}",
            json!({
                "instances": o.instances,
                "hold_seconds": o.hold.as_secs(),
                "create_ms": create_ms.round(),
                "idle_rss_mb": idle_rss.round(),
                "idle_rss_anon_mb": idle_anon.round(),
                "failing_rss_max_mb": max_rss.round(),
                "failing_rss_anon_max_mb": max_anon.round(),
                "failing_rss_last_mb": last_rss.round(),
                "failing_rss_max_per_30s_mb": windows,
                "delete_ms": delete_ms.round(),
                "delete_gone_ms": gone_ms.round(),
                "baseline_1k_delete_ms": small_delete.round(),
                "baseline_1k_delete_gone_ms": small_gone.round(),
                "scale_to_zero_ms": scale_ms.round(),
                "scale_to_zero_gone_ms": scale_gone_ms.round(),
            })
        );
    }
    Ok(())
}
