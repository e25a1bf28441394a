//! The two polling loops every check step is made of, and the backoff between polls.
//!
//! - [`until_all_pass`]: startup and "until ready". Probes every check that has not passed yet,
//!   waits, probes again; the wait starts short and grows by a tenth each time up to the
//!   unhealthy interval. Each wait is then about a tenth of the time spent polling so far, so an
//!   app is seen as healthy at most ~10% later than it became so (an app up in 800 ms within
//!   ~80 ms of that, rather than up to 2 s later; growing by half would allow 50%), for a few
//!   dozen cheap probes more on a slow starter, which is still not probed more than once per
//!   unhealthy interval.
//! - [`first_failure`]: liveness and "until failure". Each check probes at its own steady
//!   interval; the first failure ends the loop.
//!
//! Neither loop stops on its own otherwise: the steps race them against cancellation and, for
//! startup, the start timeout.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::sleep;

use super::{CheckContext, Probe};

/// Below this a "fast" first interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Delays growing by a tenth from `initial` up to `max`, which then repeats.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(MIN_INTERVAL);
        Self {
            next: initial.clamp(MIN_INTERVAL, max),
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next + self.next / 10)
            .max(self.next + MIN_INTERVAL)
            .min(self.max);
        d
    }
}

/// Returns once every probe has passed at least once (each is dropped from the round once it
/// passed). `last_errors` holds the failures of the latest round, for the caller's message
/// when it gives up; `probes_run` counts probes, for logs.
pub async fn until_all_pass(
    probes: &[Probe],
    ctx: &CheckContext,
    last_errors: &mut Vec<String>,
    probes_run: &mut usize,
) {
    let mut pending: Vec<&Probe> = probes.iter().collect();
    let mut backoff = Backoff::new(ctx.timing.initial_interval, ctx.timing.unhealthy_interval);
    loop {
        let results = join_all(pending.iter().map(|p| p.run(ctx))).await;
        *probes_run += results.len();
        let mut still = Vec::new();
        let mut errors = Vec::new();
        for (p, r) in pending.into_iter().zip(results) {
            if let Err(e) = r {
                still.push(p);
                errors.push(e);
            }
        }
        if still.is_empty() {
            return;
        }
        *last_errors = errors;
        pending = still;
        sleep(backoff.next_delay()).await;
    }
}

/// Probes each check every `interval` (its own, or `default_interval`) and returns the first
/// failure. With no probes it never returns.
pub async fn first_failure(probes: &[Probe], ctx: &CheckContext, default_interval: Duration) -> String {
    let mut loops: FuturesUnordered<_> = probes
        .iter()
        .map(|p| async move {
            let interval = p.interval.unwrap_or(default_interval).max(MIN_INTERVAL);
            loop {
                sleep(interval).await;
                if let Err(e) = p.run(ctx).await {
                    return e;
                }
            }
        })
        .collect();
    match loops.next().await {
        Some(err) => err,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_a_tenth_up_to_the_steady_interval() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(130));
        let got: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        let expected = [100_000, 110_000, 121_000, 130_000, 130_000];
        assert_eq!(got, expected.map(Duration::from_micros));
    }

    #[test]
    fn each_wait_is_about_a_tenth_of_the_time_polled_so_far() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
        let mut elapsed = Duration::ZERO;
        for _ in 0..40 {
            let d = b.next_delay();
            if elapsed > Duration::from_millis(200) {
                assert!(d <= elapsed / 5, "waited {d:?} after {elapsed:?}");
            }
            elapsed += d;
        }
    }

    #[test]
    fn backoff_never_spins_and_never_exceeds_max() {
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), MIN_INTERVAL);
        assert_eq!(zero.next_delay(), MIN_INTERVAL);
        let mut slow = Backoff::new(Duration::from_secs(5), Duration::from_secs(2));
        assert_eq!(slow.next_delay(), Duration::from_secs(2));
    }
}
