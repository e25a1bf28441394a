//! When the whole table is registered again (diego-spec §8).
//!
//! gorouter forgets an endpoint nobody registered within its prune threshold, so every
//! registration is sent again every `minimumRegisterIntervalInSeconds`, which a router
//! says in `router.start` and in its answer to `router.greet`. Until a router says, the
//! interval is [`DEFAULT_REGISTER_INTERVAL`] (gorouter's own default). Each wait is the
//! interval plus a random jitter of up to [`JITTER`] of it, so emitters started together
//! do not all send at once; the jitter never stretches a wait past the router's prune
//! threshold.

use std::time::Duration;

use tokio::time::Instant;

use super::message::RouterGreeting;

/// The interval until a router says otherwise: gorouter's `minimumRegisterIntervalInSeconds`
/// default.
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(20);

/// Most random extra wait, as a fraction of the interval.
pub const JITTER: f64 = 0.2;

/// The wait before the next full registration: `interval × (1 + JITTER × r)` for `r` in
/// `[0, 1]` (clamped), but no longer than `prune` when that is longer than the interval.
pub fn next_delay(interval: Duration, prune: Option<Duration>, r: f64) -> Duration {
    let r = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
    let jittered = interval.mul_f64(1.0 + JITTER * r);
    match prune {
        Some(p) if p > interval => jittered.min(p),
        _ => jittered,
    }
}

/// The full-registration timer: its interval (the default or a router's) and when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastSchedule {
    interval: Duration,
    prune: Option<Duration>,
    next: Instant,
}

impl BroadcastSchedule {
    /// The first full registration is due one jittered `interval` after `now`.
    pub fn new(interval: Duration, now: Instant, r: f64) -> Self {
        BroadcastSchedule {
            interval,
            prune: None,
            next: now + next_delay(interval, None, r),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn prune_threshold(&self) -> Option<Duration> {
        self.prune
    }

    /// When the next full registration is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// The whole table was just sent: the next time is one jittered interval from `now`.
    pub fn sent(&mut self, now: Instant, r: f64) {
        self.next = now + next_delay(self.interval, self.prune, r);
    }

    /// A router said how often it wants registrations. A new interval counts from `now`;
    /// the same one leaves the timer as it is. Says whether the interval changed.
    pub fn greeted(&mut self, greeting: RouterGreeting, now: Instant, r: f64) -> bool {
        self.prune = greeting.prune_threshold;
        if greeting.register_interval == self.interval {
            return false;
        }
        self.interval = greeting.register_interval;
        self.next = now + next_delay(self.interval, self.prune, r);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_are_the_interval_plus_up_to_a_fifth() {
        let s = Duration::from_secs;
        let cases = [
            (s(20), None, 0.0, s(20)),
            (s(20), None, 0.5, s(22)),
            (s(20), None, 1.0, s(24)),
            (s(20), None, 7.0, s(24)),
            (s(20), None, -1.0, s(20)),
            (s(20), None, f64::NAN, s(20)),
            (s(1), Some(s(3)), 1.0, ms(1200)),
            // The jitter stops at the prune threshold ...
            (s(20), Some(s(22)), 1.0, s(22)),
            (s(20), Some(s(22)), 0.25, s(21)),
            // ... unless the router's threshold is shorter than its own interval.
            (s(20), Some(s(10)), 1.0, s(24)),
        ];
        for (interval, prune, r, want) in cases {
            assert_eq!(
                next_delay(interval, prune, r),
                want,
                "{interval:?} {prune:?} r={r}"
            );
        }
    }

    #[test]
    fn jittered_delays_stay_within_bounds() {
        let interval = ms(1000);
        for i in 0..=1000 {
            let r = f64::from(i) / 1000.0;
            let d = next_delay(interval, None, r);
            assert!(d >= interval && d <= ms(1200), "r={r}: {d:?}");
        }
    }

    #[test]
    fn the_timer_follows_sends_and_greetings() {
        let t0 = Instant::now();
        let mut sched = BroadcastSchedule::new(DEFAULT_REGISTER_INTERVAL, t0, 0.0);
        assert_eq!(sched.next(), t0 + ms(20_000));
        assert!(!sched.is_due(t0 + ms(19_999)));
        assert!(sched.is_due(t0 + ms(20_000)));

        sched.sent(t0 + ms(20_000), 1.0);
        assert_eq!(sched.next(), t0 + ms(44_000));

        // A router asks for 1 s: the next send counts from the greeting.
        let greeting = RouterGreeting {
            register_interval: ms(1000),
            prune_threshold: Some(ms(3000)),
        };
        assert!(sched.greeted(greeting, t0 + ms(21_000), 0.5));
        assert_eq!(sched.interval(), ms(1000));
        assert_eq!(sched.prune_threshold(), Some(ms(3000)));
        assert_eq!(sched.next(), t0 + ms(22_100));

        // The same greeting again (a second router, a reconnect) leaves the timer alone.
        assert!(!sched.greeted(greeting, t0 + ms(21_500), 0.0));
        assert_eq!(sched.next(), t0 + ms(22_100));

        // A longer interval later.
        let slower = RouterGreeting {
            register_interval: ms(5000),
            prune_threshold: None,
        };
        assert!(sched.greeted(slower, t0 + ms(22_000), 0.0));
        assert_eq!(sched.next(), t0 + ms(27_000));
        assert_eq!(sched.prune_threshold(), None);
    }
}
