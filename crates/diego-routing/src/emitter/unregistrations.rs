//! Unregistrations sent again (diego-spec §8, §12 item 5).
//!
//! NATS delivers at most once: a router that missed a `router.unregister` keeps sending
//! traffic to a gone instance until its prune threshold — or for ever, when the cell
//! reuses the port for another app. So every unregistration is kept and sent again every
//! [`DEFAULT_REPEAT_INTERVAL`], [`DEFAULT_REPEATS`] more times after the first, unless the
//! same key (hostnames, host, port, instance) is registered again first.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::table::{Registration, RegistrationKey};

/// Diego's `unregistration_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Diego's `unregistration_send_count`: sends after the first.
pub const DEFAULT_REPEATS: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    registration: Registration,
    repeats_left: u32,
    next: Instant,
}

/// The unregistrations still to be sent again.
#[derive(Debug, Clone)]
pub struct UnregisterCache {
    interval: Duration,
    repeats: u32,
    pending: BTreeMap<RegistrationKey, Pending>,
}

impl UnregisterCache {
    pub fn new(interval: Duration, repeats: u32) -> Self {
        UnregisterCache {
            interval,
            repeats,
            pending: BTreeMap::new(),
        }
    }

    /// `r` was just unregistered: send it again `repeats` times, `interval` apart. An
    /// unregistration of a key already here starts its count again.
    pub fn unregistered(&mut self, r: &Registration, now: Instant) {
        if self.repeats == 0 {
            return;
        }
        self.pending.insert(
            r.key(),
            Pending {
                registration: r.clone(),
                repeats_left: self.repeats,
                next: now + self.interval,
            },
        );
    }

    /// `key` was registered again: its unregistration must not be repeated.
    pub fn registered(&mut self, key: &RegistrationKey) {
        self.pending.remove(key);
    }

    /// The unregistrations due at `now`, sorted by key; each is counted as sent and due again
    /// one interval later, or dropped after its last repeat.
    pub fn due(&mut self, now: Instant) -> Vec<Registration> {
        let mut out = Vec::new();
        self.pending.retain(|_, p| {
            if p.next > now {
                return true;
            }
            out.push(p.registration.clone());
            p.repeats_left -= 1;
            p.next = now + self.interval;
            p.repeats_left > 0
        });
        out
    }

    /// When the next repeat is due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Every pending unregistration (to send at once after a reconnect), without counting them.
    pub fn pending(&self) -> impl Iterator<Item = &Registration> {
        self.pending.values().map(|p| &p.registration)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(port: u32) -> Registration {
        super::super::test_registration(port, 1)
    }

    fn ports(rs: &[Registration]) -> Vec<u32> {
        rs.iter().map(|r| r.endpoint.port).collect()
    }

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn repeats_every_interval_then_stops() {
        let t0 = Instant::now();
        let mut c = UnregisterCache::new(DEFAULT_REPEAT_INTERVAL, DEFAULT_REPEATS);
        c.unregistered(&reg(1), t0);
        assert_eq!(c.next_due(), Some(t0 + s(30)));
        assert!(c.due(t0 + s(29)).is_empty(), "not before 30 s");
        let mut sends = 0;
        for i in 1..=25 {
            let now = t0 + s(30 * i);
            let got = c.due(now);
            sends += got.len();
            if i <= 20 {
                assert_eq!(ports(&got), [1], "repeat {i}");
            } else {
                assert!(got.is_empty(), "repeat {i} is past the last");
            }
        }
        assert_eq!(sends, 20);
        assert!(c.is_empty());
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn the_cache_as_a_table() {
        let t0 = Instant::now();
        enum Step {
            Unregister(u32),
            Register(u32),
            Due(Vec<u32>),
        }
        use Step::*;
        // (at second, step, pending after it)
        let steps = [
            (0, Unregister(1), 1),
            (10, Unregister(2), 2),
            (30, Due(vec![1]), 2),
            (40, Due(vec![2]), 2),
            // Registered again: its repeats stop.
            (45, Register(1), 1),
            (60, Due(vec![]), 1),
            (70, Due(vec![2]), 1),
            // Unregistered again: its count starts over, from now.
            (75, Unregister(2), 1),
            (100, Due(vec![]), 1),
            (105, Due(vec![2]), 1),
            // A repeat time missed is made up for once, not once per interval missed.
            (1000, Due(vec![2]), 1),
            (1030, Due(vec![2]), 0),
        ];
        let mut c = UnregisterCache::new(s(30), 3);
        for (at, step, pending) in steps {
            let now = t0 + s(at);
            match step {
                Unregister(p) => c.unregistered(&reg(p), now),
                Register(p) => c.registered(&reg(p).key()),
                Due(want) => assert_eq!(ports(&c.due(now)), want, "at {at} s"),
            }
            assert_eq!(c.len(), pending, "pending at {at} s");
        }
    }

    #[test]
    fn no_repeats_keeps_nothing() {
        let mut c = UnregisterCache::new(s(30), 0);
        c.unregistered(&reg(1), Instant::now());
        assert!(c.is_empty());
    }
}
