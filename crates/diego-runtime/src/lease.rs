//! Keeping a TTL'd registration — a lock, a cell presence — renewed.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::PassError;

/// The outcome of one renewal the store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Taken or renewed for another TTL.
    Held,
    /// Someone else holds it (a lock collision).
    Refused,
}

/// A registration with a TTL, renewed every third of it. It counts as held from a successful
/// renewal until `ttl` after that renewal was *sent* (the store may count from any moment
/// after), so a holder never believes it holds what the store already gave away.
pub struct Lease {
    name: &'static str,
    ttl: Duration,
    period: Duration,
    /// How soon to try again while not held (another owner has it, or renewals fail).
    retry: Duration,
    held: watch::Sender<bool>,
}

impl Lease {
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        let period = (ttl / 3).max(Duration::from_millis(100));
        Lease {
            name,
            ttl,
            period,
            retry: period,
            held: watch::Sender::new(false),
        }
    }

    /// Renew this often instead of every third of the TTL (and try this often while not
    /// held, unless [`Lease::retry_every`] says otherwise).
    pub fn renew_every(mut self, period: Duration) -> Self {
        self.period = period;
        self.retry = period;
        self
    }

    /// While not held, try this often instead: a standby that asks often takes over soon
    /// after the holder's registration lapses, without the holder renewing more often.
    pub fn retry_every(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The TTL in whole seconds (at least 1), as the store's API takes it.
    pub fn ttl_seconds(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Follows whether the lease is held.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// Renews at once and then every period until `shutdown`. A retryable error leaves the
    /// lease held until its TTL from the last good renewal has passed — also while a renewal
    /// is still in flight — and the next attempt comes after a third of the period (or the
    /// retry interval, if sooner), so one slow or failed renewal does not use up the TTL. A
    /// fatal error ends the loop. A renewal in flight is finished, never cut off. The caller
    /// releases what it holds after this returns.
    pub async fn keep<F, Fut>(&self, shutdown: &CancellationToken, mut renew: F) -> Result<(), PassError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Renewal, PassError>>,
    {
        let mut held_until: Option<Instant> = None;
        let after_failure = (self.period / 3).min(self.retry);
        loop {
            let sent = Instant::now();
            let renewal = renew();
            tokio::pin!(renewal);
            let outcome = loop {
                tokio::select! {
                    r = &mut renewal => break r,
                    () = sleep_until_opt(held_until) => {
                        held_until = None;
                        self.lapsed();
                    }
                }
            };
            let wait = match outcome {
                // Answered after its TTL from sending: the store may count from the send,
                // so it proves nothing now; the next renewal comes soon.
                Ok(Renewal::Held) if sent + self.ttl <= Instant::now() => {
                    held_until = None;
                    self.lapsed();
                    after_failure
                }
                Ok(Renewal::Held) => {
                    held_until = Some(sent + self.ttl);
                    if !self.held.send_replace(true) {
                        info!(lease = self.name, "holding");
                    }
                    self.period
                }
                Ok(Renewal::Refused) => {
                    held_until = None;
                    if self.held.send_replace(false) {
                        warn!(lease = self.name, "lost: another owner holds it");
                    }
                    self.retry
                }
                Err(e) if e.is_fatal() => {
                    self.held.send_replace(false);
                    return Err(e);
                }
                Err(e) => {
                    warn!(lease = self.name, error = %e, "renewal failed");
                    if held_until.is_some() {
                        after_failure
                    } else {
                        self.retry
                    }
                }
            };
            let next = Instant::now() + wait;
            loop {
                let lapse = held_until.filter(|&t| t < next);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(next) => break,
                    () = sleep_until_opt(lapse) => {
                        held_until = None;
                        self.lapsed();
                    }
                }
            }
        }
    }

    fn lapsed(&self) {
        if self.held.send_replace(false) {
            warn!(lease = self.name, "lapsed: no renewal succeeded within its TTL");
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_ttl_and_lapses_without_renewals() {
        let lease = Arc::new(Lease::new("l", Duration::from_secs(18)));
        let calls = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (l, c, s, at) = (lease.clone(), calls.clone(), shutdown.clone(), sent.clone());
        let start = Instant::now();
        let task = tokio::spawn(async move {
            l.keep(&s, || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                at.lock().unwrap().push(start.elapsed().as_millis());
                async move {
                    if n < 3 {
                        Ok(Renewal::Held)
                    } else {
                        Err(PassError::retry("store unreachable"))
                    }
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(lease.is_held());
        // Renewals at 0, 6, 12 s succeed; from 18 s they fail and are tried again every
        // third of the period; the last good one was sent at 12 s.
        tokio::time::sleep(Duration::from_millis(29_900)).await;
        assert!(lease.is_held(), "held until 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lease.is_held(), "lapsed at 30 s");
        assert_eq!(
            *sent.lock().unwrap(),
            [0, 6_000, 12_000, 18_000, 20_000, 22_000, 24_000, 26_000, 28_000, 30_000]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_drops_it_at_once_and_a_fatal_error_ends_the_loop() {
        let lease = Lease::new("l", Duration::from_secs(3));
        let mut n = 0;
        let mut seen = Vec::new();
        let mut rx = lease.watch();
        let result = lease
            .keep(&CancellationToken::new(), || {
                n += 1;
                seen.push(*rx.borrow_and_update());
                let n = n;
                async move {
                    match n {
                        1 => Ok(Renewal::Held),
                        2 => Ok(Renewal::Refused),
                        _ => Err(PassError::fatal("refused for good")),
                    }
                }
            })
            .await;
        assert!(result.unwrap_err().is_fatal());
        assert_eq!(seen, [false, true, false]);
        assert!(!lease.is_held());
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_tries_at_its_retry_interval_and_renews_at_a_third_once_held() {
        let lease = Arc::new(Lease::new("l", Duration::from_secs(3)).retry_every(Duration::from_millis(250)));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (l, c, s) = (lease.clone(), calls.clone(), shutdown.clone());
        let start = Instant::now();
        let task = tokio::spawn(async move {
            l.keep(&s, || {
                let mut calls = c.lock().unwrap();
                calls.push(start.elapsed().as_millis());
                // Another owner holds it for the first second.
                let free = start.elapsed() >= Duration::from_secs(1);
                async move { Ok(if free { Renewal::Held } else { Renewal::Refused }) }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        assert!(lease.is_held());
        shutdown.cancel();
        task.await.unwrap().unwrap();
        let calls = calls.lock().unwrap().clone();
        // Refused at 0, 250, 500, 750 ms; taken at 1 s; renewed every second after.
        assert_eq!(calls, [0, 250, 500, 750, 1000, 2000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_still_in_flight_when_the_ttl_passes_leaves_it_lapsed_until_it_succeeds() {
        let lease = Arc::new(Lease::new("l", Duration::from_secs(3)));
        let calls = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (l, c, s) = (lease.clone(), calls.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            l.keep(&s, || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    // The second renewal (sent at 1 s) takes 5 s to answer.
                    if n == 1 {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok(Renewal::Held)
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(2_900)).await;
        assert!(lease.is_held(), "the first renewal holds it until 3 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lease.is_held(), "lapsed at 3 s although a renewal is in flight");
        // Answered at 6 s, past its TTL from sending: it proves nothing, and the next
        // renewal a third of the period later holds it again.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        assert!(
            !lease.is_held(),
            "a renewal answered after its TTL counts for nothing"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(lease.is_held(), "held again by the renewal after the slow one");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
