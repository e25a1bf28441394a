//! Cell presences in the BBS: registered at start, renewed every third of the TTL, removed at
//! shutdown. Each pass is one small POST per cell with a bounded number in flight, so 1,000
//! cells renew in a short burst rather than 1,000 connections at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diego_client::BbsClient;
use diego_runtime::{Lease, PassError, Renewal};
use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cell::SimCell;
use crate::error::SimCellsError;
use crate::lifecycle::SimStats;

/// Presence calls in flight at once.
const CONCURRENCY: usize = 32;
/// Shutdown waits this long at most for the presences' removal.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    Lease::new("sim cell presences", ttl).ttl_seconds()
}

/// Registers every cell: the first one is repeated for up to `wait` while the BBS is not
/// serving yet ([`diego_client::startup`]), the others once it has answered. The first
/// failure stops the start (a wrong `--bbs` says so rather than leave cells nobody can see).
pub(crate) async fn register_all(
    bbs: &BbsClient,
    cells: &[Arc<SimCell>],
    ttl: Duration,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<(), SimCellsError> {
    let ttl = ttl_seconds(ttl);
    let Some(first) = cells.first() else {
        return Ok(());
    };
    let request = first.register_request(ttl);
    diego_client::startup::while_starting("registering the simulated cells", wait, stop, || {
        bbs.register_cell(&request)
    })
    .await
    .map_err(|source| SimCellsError::BbsUnavailable {
        cell_id: first.id.clone(),
        bbs_url: bbs.base_url().to_string(),
        source,
    })?;
    let mut results = stream::iter(&cells[1..])
        .map(|cell| async move {
            bbs.register_cell(&cell.register_request(ttl))
                .await
                .map_err(|source| SimCellsError::BbsUnavailable {
                    cell_id: cell.id.clone(),
                    bbs_url: bbs.base_url().to_string(),
                    source,
                })
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// One renewal pass; returns how many failed.
async fn renew_all(bbs: &BbsClient, cells: &[Arc<SimCell>], ttl: i64) -> usize {
    let failed = AtomicUsize::new(0);
    stream::iter(cells)
        .for_each_concurrent(CONCURRENCY, |cell| {
            let failed = &failed;
            async move {
                if let Err(e) = bbs.register_cell(&cell.register_request(ttl)).await {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        warn!(cell_id = %cell.id, error = %e, "renewing cell presence failed");
                    }
                }
            }
        })
        .await;
    failed.into_inner()
}

/// Keeps every presence renewed every third of `ttl` until `stop` (a [`Lease`] over all the
/// cells: held while a whole pass succeeds). A pass in progress is finished, never cut off,
/// so no renewal can land after [`remove_all`] and bring a presence back.
pub(crate) async fn keep(
    bbs: &BbsClient,
    cells: &[Arc<SimCell>],
    ttl: Duration,
    stats: impl Fn() -> SimStats,
    stop: &CancellationToken,
) -> Result<(), PassError> {
    let lease = Lease::new("sim cell presences", ttl);
    let ttl = lease.ttl_seconds();
    lease
        .keep(stop, || async {
            let failed = renew_all(bbs, cells, ttl).await;
            let s = stats();
            info!(
                cells = cells.len(),
                failed,
                lrps_claimed = s.lrps_claimed,
                lrps_started = s.lrps_started,
                lrps_claim_failed = s.lrps_claim_failed,
                lrps_stopped = s.lrps_stopped,
                tasks_completed = s.tasks_completed,
                work_refused = s.work_refused,
                "renewed sim cell presences"
            );
            match failed {
                0 => Ok(Renewal::Held),
                n => Err(PassError::retry(format!(
                    "{n} of {} presences not renewed",
                    cells.len()
                ))),
            }
        })
        .await
}

/// Best effort: a presence not removed lapses after its TTL anyway. Returns how many could
/// not be removed (all of them when the BBS did not answer in time).
pub(crate) async fn remove_all(bbs: &BbsClient, cells: &[Arc<SimCell>]) -> usize {
    let failed = AtomicUsize::new(0);
    let removal = stream::iter(cells).for_each_concurrent(CONCURRENCY, |cell| {
        let failed = &failed;
        async move {
            if let Err(e) = bbs.remove_cell(&cell.id).await {
                if !e.is_not_found() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    if tokio::time::timeout(REMOVE_TIMEOUT, removal).await.is_err() {
        return cells.len();
    }
    failed.into_inner()
}
