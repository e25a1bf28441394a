//! The cell's self-check (Diego's executor "garden healthcheck"): on a timer the rep creates a
//! small container, runs a process in it and destroys it. While the last check failed the cell
//! is unhealthy: `/ping`, `/state` and `/work` answer 503 with the reason, so the auctioneer
//! places nothing here, and an operator sees why. The next passing check makes it healthy again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_garden::{ContainerSpec, ProcessEvent, ProcessSpec};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::work::prop;
use crate::Rep;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Checks every `rep.config.self_check_interval` until `shutdown`.
pub(crate) async fn run(rep: Arc<Rep>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(rep.config.self_check_interval) => {}
        }
        check(&rep).await;
    }
}

/// The handles of this cell's self-check containers start with this.
pub(crate) fn handle_prefix(rep: &Rep) -> String {
    format!("selfcheck-{}-", rep.config.cell_id)
}

/// One check; records the outcome on `rep`.
pub(crate) async fn check(rep: &Rep) {
    let handle = format!("{}{}", handle_prefix(rep), NEXT.fetch_add(1, Ordering::Relaxed));
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, attempt(rep, &handle)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())),
    };
    // Whatever happened, nothing stays behind.
    let _ = rep.backend.destroy(&handle).await;
    let was = rep.unhealthy_reason();
    match outcome {
        Ok(()) => {
            if was.is_some() {
                info!("cell self-check passes again");
            }
            rep.set_unhealthy(None);
        }
        Err(why) => {
            warn!(
                why,
                "cell self-check failed: the cell refuses work until it passes"
            );
            rep.set_unhealthy(Some(format!("cell self-check failed: {why}")));
        }
    }
}

async fn attempt(rep: &Rep, handle: &str) -> Result<(), String> {
    let spec = ContainerSpec {
        handle: handle.to_string(),
        rootfs: "preloaded:busybox".into(),
        // Labelled with the cell, so one a crash left behind is destroyed when the cell starts
        // again (the sync's reaper leaves a live check alone, by its handle).
        properties: [
            (prop::KIND.to_string(), "self-check".to_string()),
            (prop::CELL_ID.to_string(), rep.config.cell_id.clone()),
        ]
        .into(),
        ..Default::default()
    };
    rep.backend
        .create(spec)
        .await
        .map_err(|e| format!("creating a container: {e}"))?;
    let process = rep
        .backend
        .run(
            handle,
            ProcessSpec {
                path: "/bin/sh".into(),
                args: vec!["-c".into(), "exit 0".into()],
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("running a process: {e}"))?;
    let mut events = process.events;
    while let Some(event) = events.next().await {
        if let ProcessEvent::Exited(status) = event {
            return match status.code {
                0 => Ok(()),
                code => Err(format!("a process exited with status {code}")),
            };
        }
    }
    Err("a process's output ended without an exit status".into())
}
