//! Holding the auctioneer lock in the BBS: only its holder runs auctions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use diego_client::BbsClient;
use diego_model::ErrorType;
use diego_runtime::{Lease, PassError, Renewal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Shared, AUCTIONEER_LOCK};

/// Takes the lock and keeps it renewed every third of `ttl` until `shutdown`. The lock counts
/// as lost on a collision, or when no renewal has succeeded for a whole `ttl` (the BBS may
/// have handed it to another instance meanwhile). Releases it on shutdown.
pub(super) async fn hold(
    shared: Arc<Shared>,
    bbs: BbsClient,
    owner: String,
    url: String,
    ttl: Duration,
    shutdown: CancellationToken,
) -> Result<(), PassError> {
    let lease = Lease::new("auctioneer lock", ttl);
    let ttl_seconds = lease.ttl_seconds();
    let mut held = lease.watch();
    let follow = {
        let shared = shared.clone();
        let owner = owner.clone();
        async move {
            while held.changed().await.is_ok() {
                let now = *held.borrow_and_update();
                if shared.active.swap(now, Ordering::SeqCst) != now {
                    if now {
                        info!(owner, "holding the auctioneer lock: this auctioneer is active");
                        // Run whatever was queued while standing by.
                        shared.work.notify_one();
                    } else {
                        warn!(owner, "no longer holding the auctioneer lock: standing by");
                    }
                }
            }
        }
    };
    let keep = lease.keep(&shutdown, || async {
        match bbs.acquire_lock(AUCTIONEER_LOCK, &owner, &url, ttl_seconds).await {
            Ok(_) => Ok(Renewal::Held),
            Err(e) if e.kind() == Some(ErrorType::LockCollision) => Ok(Renewal::Refused),
            Err(e) => Err(PassError::retry(e)),
        }
    });
    let result = tokio::select! {
        r = keep => r,
        () = follow => Ok(()),
    };
    if shared.active.swap(false, Ordering::SeqCst) {
        match bbs.release_lock(AUCTIONEER_LOCK, &owner).await {
            Ok(()) => info!(owner, "released the auctioneer lock"),
            Err(e) => warn!(error = %e, "releasing the auctioneer lock"),
        }
    }
    result
}
