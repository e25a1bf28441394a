//! The BBS lock: which of several BBS processes sharing a store is active.
//!
//! Every BBS serves the API. Only the holder of the [`BBS`](diego_model::locks::BBS) lock
//! runs the background work — convergence, start requests to the auctioneer, task
//! callbacks — and every store write that work makes is fenced on the lock
//! ([`diego_store::Fence`]): once the store has given the lock to another BBS, a deposed one
//! (paused, cut off) cannot write, and steps down on the store's refusal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diego_model::api::PingResponse;
use diego_runtime::{Lease, PassError, Renewal};
use diego_store::{DynStore, Fence, StoreError, Txn};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use diego_model::locks::BBS as BBS_LOCK;

/// How the BBS lock is held.
#[derive(Debug, Clone)]
pub struct LockConfig {
    /// This BBS's name in the lock; empty: its URL, so a BBS restarted on the same address
    /// takes its own lock back at once instead of waiting for it to lapse.
    pub owner: String,
    /// The lock's time to live ([`DEFAULT_LOCK_TTL`]; Diego's Locket: 15 s). The holder
    /// renews it every third of this; a dead holder is replaced within about this.
    pub ttl: Duration,
    /// How often a passive BBS tries to take the lock ([`DEFAULT_LOCK_RETRY_INTERVAL`];
    /// Diego: 5 s).
    pub retry_interval: Duration,
}

/// 4 s: after kill -9 of the active BBS the lock lapses 2.7–4 s later (the last renewal was
/// at most a third of the TTL before); the holder, retrying a failed renewal every retry
/// interval, rides out a store stall until the TTL since its last good renewal has passed. docs/165-high-availability.md weighs it.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(4);
/// 250 ms: a passive BBS notices a lapsed lock this soon. Each try is one read of the lock
/// key while another holds it.
pub const DEFAULT_LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(250);

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            owner: String::new(),
            ttl: DEFAULT_LOCK_TTL,
            retry_interval: DEFAULT_LOCK_RETRY_INTERVAL,
        }
    }
}

/// What a BBS's own tries of the lock say about taking it.
///
/// While the store does not answer (an etcd leader election, a slow disk), nobody can renew
/// the lock, so it may lapse in the store although its holder is alive. When the store
/// answers again, a standby that polls every 250 ms would often write before the holder's
/// next renewal and take the lock from a healthy holder. So a BBS that was not the holder at
/// its last answered try waits until a TTL has passed since its last failed try (or one
/// answered after more than an eighth of the TTL: the store's retries across members and
/// elections show as slowness) — long enough for a live holder to renew — before it takes
/// the lock; a holder renews at once.
/// After kill -9 of the holder the store keeps answering, so takeover is as soon as before.
#[derive(Debug, Default)]
struct Standby {
    /// Whether the last try the store answered gave this BBS the lock.
    held_last: bool,
    /// When the store last failed a try.
    last_failure: Option<Instant>,
}

impl Standby {
    fn may_take(&self, now: Instant, ttl: Duration) -> bool {
        self.held_last || self.last_failure.is_none_or(|f| now >= f + ttl)
    }

    fn answered(&mut self, held: bool) {
        self.held_last = held;
    }

    fn failed(&mut self, at: Instant) {
        self.last_failure = Some(at);
    }
}

/// Whether this BBS is active, shared by the API (ping) and the workers.
pub struct ActiveRole {
    owner: String,
    /// The URL this BBS serves on, stored as the lock's value.
    url: String,
    lease: Lease,
    store: DynStore,
    /// Signalled when a fenced write found the lock gone.
    deposed: Notify,
    /// Set from a refused fenced write until the next successful renewal: this BBS counts as
    /// passive although its own clock says the lease is still held.
    stepped_down: AtomicBool,
    retry_interval: Duration,
    last_step_down: Mutex<Option<String>>,
}

impl ActiveRole {
    pub fn new(store: DynStore, config: &LockConfig, url: String) -> Self {
        let owner = if config.owner.is_empty() {
            url.clone()
        } else {
            config.owner.clone()
        };
        ActiveRole {
            owner,
            url,
            lease: Lease::new("bbs lock", config.ttl).retry_every(config.retry_interval),
            store,
            deposed: Notify::new(),
            stepped_down: AtomicBool::new(false),
            retry_interval: config.retry_interval,
            last_step_down: Mutex::new(None),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn is_active(&self) -> bool {
        self.lease.is_held() && !self.stepped_down.load(Ordering::SeqCst)
    }

    /// The precondition every write of the active BBS's workers carries.
    pub fn fence(&self) -> Fence {
        Fence {
            key: BBS_LOCK.to_string(),
            owner: self.owner.clone(),
        }
    }

    /// Commits `txn` fenced on the lock; a refusal for a lost lock deposes this BBS.
    pub async fn commit(&self, txn: Txn) -> Result<diego_store::Committed, StoreError> {
        let result = self.store.commit(txn.fenced(Some(self.fence()))).await;
        if let Err(StoreError::LockLost { holder, .. }) = &result {
            self.depose(match holder {
                Some(h) => format!("the store refused a write: the lock is held by {h:?}"),
                None => "the store refused a write: the lock lapsed".to_string(),
            });
        }
        result
    }

    fn depose(&self, reason: String) {
        warn!(owner = %self.owner, %reason, "deposed: stepping down");
        *self.last_step_down.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.stepped_down.store(true, Ordering::SeqCst);
        self.deposed.notify_one();
    }

    /// What `/v1/ping` says about this BBS and the lock.
    pub async fn ping(&self) -> PingResponse {
        let holder = self.store.get_lock(BBS_LOCK).await.ok().flatten();
        PingResponse {
            available: true,
            role: Some(if self.is_active() { "active" } else { "passive" }.to_string()),
            owner: Some(self.owner.clone()),
            lock_holder_url: holder.as_ref().map(|h| h.value.clone()).filter(|v| !v.is_empty()),
            lock_holder: holder.map(|h| h.owner),
            last_step_down: self
                .last_step_down
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Takes and keeps the lock until `shutdown`, then releases it if held. A BBS that did
    /// not hold the lock at its last answered try does not take it within a TTL of a try
    /// the store failed ([`Standby::may_take`]): only reads it.
    pub async fn hold_lock(&self, shutdown: CancellationToken) -> Result<(), PassError> {
        let ttl = self.lease.ttl_seconds();
        let standby = Mutex::new(Standby::default());
        let note = |f: &dyn Fn(&mut Standby)| f(&mut standby.lock().unwrap_or_else(|p| p.into_inner()));
        self.lease
            .keep(&shutdown, || async {
                let started = Instant::now();
                // The store's own retries hide a failing member or an election as a slow
                // answer: one slower than this counts as a failure too.
                let slow = |s: &mut Standby| {
                    let now = Instant::now();
                    if now - started > self.lease.ttl() / 8 {
                        s.failed(now);
                    }
                };
                let may_take = standby
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .may_take(Instant::now(), self.lease.ttl());
                if !may_take {
                    match self.store.get_lock(BBS_LOCK).await {
                        // Ours, by the store: renewing it is taking nothing.
                        Ok(Some(h)) if h.owner == self.owner => {}
                        Ok(_) => {
                            note(&slow);
                            return Ok(Renewal::Refused);
                        }
                        Err(e) => {
                            note(&|s| s.failed(Instant::now()));
                            return Err(PassError::retry(e));
                        }
                    }
                }
                match self
                    .store
                    .acquire_lock(BBS_LOCK, &self.owner, &self.url, ttl)
                    .await
                {
                    Ok(_) => {
                        note(&|s| {
                            s.answered(true);
                            slow(s);
                        });
                        self.stepped_down.store(false, Ordering::SeqCst);
                        Ok(Renewal::Held)
                    }
                    Err(StoreError::LockCollision { .. }) => {
                        note(&|s| {
                            s.answered(false);
                            slow(s);
                        });
                        Ok(Renewal::Refused)
                    }
                    Err(e) => {
                        note(&|s| s.failed(Instant::now()));
                        Err(PassError::retry(e))
                    }
                }
            })
            .await?;
        if self.lease.is_held() {
            match self.store.release_lock(BBS_LOCK, &self.owner).await {
                Ok(_) => info!(owner = %self.owner, "released the BBS lock"),
                Err(e) => warn!(error = %e, "releasing the BBS lock"),
            }
        }
        Ok(())
    }

    /// Runs `work` whenever this BBS is active: started on taking the lock with a fresh stop
    /// token, stopped (and awaited) on losing it or being deposed, until `shutdown`.
    pub async fn while_active<F, Fut>(
        &self,
        shutdown: CancellationToken,
        mut work: F,
    ) -> Result<(), PassError>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), PassError>> + Send + 'static,
    {
        let mut held = self.lease.watch();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = held.wait_for(|&h| h) => if r.is_err() { return Ok(()) },
            }
            if self.stepped_down.load(Ordering::SeqCst) {
                // Deposed: active again only once a renewal succeeds (which clears it).
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            info!(owner = %self.owner, "holding the BBS lock: this BBS is active");
            let stop = shutdown.child_token();
            let mut running = tokio::spawn(work(stop.clone()));
            let reason = tokio::select! {
                () = shutdown.cancelled() => None,
                r = held.wait_for(|&h| !h) => {
                    if r.is_err() { None } else { Some("the lock was lost or lapsed".to_string()) }
                }
                () = self.deposed.notified() => Some(String::new()),
                joined = &mut running => {
                    // Active work ends only when asked to; anything else is a failure.
                    return Err(PassError::fatal(match joined {
                        Ok(Ok(())) => "the active BBS's workers stopped on their own".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("the active BBS's workers panicked: {e}"),
                    }));
                }
            };
            stop.cancel();
            let _ = running.await;
            let Some(reason) = reason else {
                return Ok(());
            };
            if !reason.is_empty() {
                warn!(owner = %self.owner, %reason, "no longer active: standing by");
                *self.last_step_down.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            }
            // Deposed or lapsed: wait for the lock loop's next renewal to say where we stand.
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.retry_interval + Duration::from_millis(100)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_takes_the_lock_only_a_ttl_after_the_store_last_failed_it() {
        let ttl = Duration::from_secs(4);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (held at the last answered try, last failed try, now) → may take
        let cases = [
            // Never failed: take at once (a cluster starting, a released or lapsed lock).
            (false, None, 0, true),
            // The holder renews at once, failures or not.
            (true, Some(1_000), 1_100, true),
            (true, None, 0, true),
            // A standby that saw the store fail waits a TTL from that failure.
            (false, Some(1_000), 1_100, false),
            (false, Some(1_000), 4_999, false),
            (false, Some(1_000), 5_000, true),
        ];
        for (held_last, failed, now, want) in cases {
            let s = Standby {
                held_last,
                last_failure: failed.map(at),
            };
            assert_eq!(s.may_take(at(now), ttl), want, "{s:?} at {now} ms");
        }
    }
}
