//! Holding the auctioneer lock in the BBS: only its holder runs auctions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use diego_client::BbsClient;
use diego_model::ErrorType;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Shared, AUCTIONEER_LOCK};

/// Tries to take the lock and, once held, renews it every third of `ttl`. The lock counts as
/// lost on a collision, or when no renewal has succeeded for a whole `ttl` (the BBS may have
/// handed it to another instance meanwhile). Releases it on shutdown.
pub(super) async fn hold(
    shared: Arc<Shared>,
    bbs: BbsClient,
    owner: String,
    url: String,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let ttl_seconds = ttl.as_secs().max(1) as i64;
    let ttl = Duration::from_secs(ttl_seconds as u64);
    let period = ttl / 3;
    let mut held_until: Option<Instant> = None;
    loop {
        let attempt = Instant::now();
        match bbs.acquire_lock(AUCTIONEER_LOCK, &owner, &url, ttl_seconds).await {
            Ok(_) => {
                held_until = Some(attempt + ttl);
                if !shared.active.swap(true, Ordering::SeqCst) {
                    info!(
                        owner,
                        url, "holding the auctioneer lock: this auctioneer is active"
                    );
                    // Run whatever was queued while standing by.
                    shared.work.notify_one();
                }
            }
            Err(e) if e.kind() == Some(ErrorType::LockCollision) => {
                held_until = None;
                if shared.active.swap(false, Ordering::SeqCst) {
                    warn!(
                        owner,
                        "lost the auctioneer lock to another auctioneer: standing by"
                    );
                }
            }
            Err(e) => {
                warn!(error = %e, "renewing the auctioneer lock");
                if held_until.is_some_and(|until| Instant::now() >= until) {
                    held_until = None;
                    if shared.active.swap(false, Ordering::SeqCst) {
                        warn!(owner, "the auctioneer lock lapsed: standing by");
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    if shared.active.swap(false, Ordering::SeqCst) {
        match bbs.release_lock(AUCTIONEER_LOCK, &owner).await {
            Ok(()) => info!(owner, "released the auctioneer lock"),
            Err(e) => warn!(error = %e, "releasing the auctioneer lock"),
        }
    }
}
