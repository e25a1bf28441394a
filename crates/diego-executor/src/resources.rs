//! Resource accounting (diego-spec §7.1): the cell's configured capacity and the reservations
//! held against it. Remaining = total − sum of reservations; a reservation that does not fit is
//! refused, never overcommitted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// Memory, disk and container count: either the configured total or what is left of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceCapacity {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u64,
}

/// Resources held for one container guid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub guid: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Which resources a refused reservation lacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsufficientResources {
    pub memory: bool,
    pub disk: bool,
    pub containers: bool,
}

impl fmt::Display for InsufficientResources {
    /// Diego's wording: `insufficient resources: memory, disk`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lacking: Vec<&str> = [
            (self.memory, "memory"),
            (self.disk, "disk"),
            (self.containers, "containers"),
        ]
        .iter()
        .filter(|(short, _)| *short)
        .map(|(_, name)| *name)
        .collect();
        write!(f, "insufficient resources: {}", lacking.join(", "))
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// It does not fit; the caller may try another cell.
    #[error("{0}")]
    Insufficient(InsufficientResources),
    /// The guid already holds a reservation; release it first.
    #[error("container guid {0:?} is already reserved")]
    GuidTaken(String),
}

/// Capacity and the reservations against it. All methods take one lock, so concurrent
/// reservations can never together exceed the total.
pub struct Resources {
    total: ResourceCapacity,
    reservations: Mutex<BTreeMap<String, Reservation>>,
}

impl Resources {
    pub fn new(total: ResourceCapacity) -> Self {
        Self {
            total,
            reservations: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Reservation>> {
        self.reservations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured capacity.
    pub fn total(&self) -> ResourceCapacity {
        self.total
    }

    /// Capacity minus every reservation held.
    pub fn remaining(&self) -> ResourceCapacity {
        Self::remaining_of(self.total, &self.lock())
    }

    fn remaining_of(total: ResourceCapacity, held: &BTreeMap<String, Reservation>) -> ResourceCapacity {
        let memory: u64 = held.values().map(|r| r.memory_mb).sum();
        let disk: u64 = held.values().map(|r| r.disk_mb).sum();
        ResourceCapacity {
            memory_mb: total.memory_mb.saturating_sub(memory),
            disk_mb: total.disk_mb.saturating_sub(disk),
            containers: total.containers.saturating_sub(held.len() as u64),
        }
    }

    /// Holds `memory_mb` and `disk_mb` (and one container slot) for `guid` if they fit.
    pub fn reserve(&self, guid: &str, memory_mb: u64, disk_mb: u64) -> Result<Reservation, ReserveError> {
        let mut held = self.lock();
        if held.contains_key(guid) {
            return Err(ReserveError::GuidTaken(guid.to_string()));
        }
        let left = Self::remaining_of(self.total, &held);
        let short = InsufficientResources {
            memory: memory_mb > left.memory_mb,
            disk: disk_mb > left.disk_mb,
            containers: left.containers == 0,
        };
        if short != InsufficientResources::default() {
            return Err(ReserveError::Insufficient(short));
        }
        let r = Reservation {
            guid: guid.to_string(),
            memory_mb,
            disk_mb,
        };
        held.insert(guid.to_string(), r.clone());
        Ok(r)
    }

    /// Gives back what `guid` held; `None` if it held nothing (releasing twice is harmless).
    pub fn release(&self, guid: &str) -> Option<Reservation> {
        self.lock().remove(guid)
    }

    /// The reservation held for `guid`, if any.
    pub fn get(&self, guid: &str) -> Option<Reservation> {
        self.lock().get(guid).cloned()
    }

    /// Every reservation held, by guid.
    pub fn reservations(&self) -> Vec<Reservation> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn cap(memory_mb: u64, disk_mb: u64, containers: u64) -> ResourceCapacity {
        ResourceCapacity {
            memory_mb,
            disk_mb,
            containers,
        }
    }

    #[test]
    fn reserve_and_release_track_remaining() {
        let r = Resources::new(cap(1024, 2048, 2));
        assert_eq!(r.total(), cap(1024, 2048, 2));
        let a = r.reserve("a", 512, 1000).unwrap();
        assert_eq!(a.memory_mb, 512);
        assert_eq!(r.remaining(), cap(512, 1048, 1));
        assert_eq!(r.reserve("a", 1, 1), Err(ReserveError::GuidTaken("a".into())));
        let err = r.reserve("b", 600, 2000).unwrap_err();
        assert_eq!(err.to_string(), "insufficient resources: memory, disk");
        r.reserve("b", 512, 1048).unwrap();
        assert_eq!(r.remaining(), cap(0, 0, 0));
        assert_eq!(
            r.reserve("c", 0, 0).unwrap_err().to_string(),
            "insufficient resources: containers"
        );
        assert_eq!(r.release("a").map(|x| x.guid), Some("a".to_string()));
        assert_eq!(r.release("a"), None, "releasing twice is harmless");
        assert_eq!(r.remaining(), cap(512, 1000, 1));
        assert_eq!(r.get("b").unwrap().disk_mb, 1048);
        assert_eq!(r.reservations().len(), 1);
    }

    #[test]
    fn concurrent_reservations_never_overcommit() {
        let r = Arc::new(Resources::new(cap(1000, 1000, 1000)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| r.reserve(&format!("{t}-{i}"), 7, 3).is_ok())
                        .count()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 1000 / 7, "exactly as many as fit in memory");
        let rem = r.remaining();
        assert_eq!(rem.memory_mb, 1000 - 7 * granted as u64);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(u8, u64, u64),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..20, 0u64..400, 0u64..400).prop_map(|(g, m, d)| Op::Reserve(g, m, d)),
            (0u8..20).prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn reservations_never_exceed_capacity(ops in proptest::collection::vec(op(), 1..200)) {
            let total = cap(1000, 1500, 8);
            let r = Resources::new(total);
            for op in ops {
                match op {
                    Op::Reserve(g, m, d) => {
                        let before = r.remaining();
                        let fits = m <= before.memory_mb && d <= before.disk_mb && before.containers > 0;
                        let taken = r.get(&g.to_string()).is_some();
                        let res = r.reserve(&g.to_string(), m, d);
                        prop_assert_eq!(res.is_ok(), fits && !taken, "{:?}", res);
                    }
                    Op::Release(g) => { r.release(&g.to_string()); }
                }
                let held = r.reservations();
                prop_assert!(held.iter().map(|x| x.memory_mb).sum::<u64>() <= total.memory_mb);
                prop_assert!(held.iter().map(|x| x.disk_mb).sum::<u64>() <= total.disk_mb);
                prop_assert!(held.len() as u64 <= total.containers);
                let rem = r.remaining();
                prop_assert_eq!(rem.memory_mb + held.iter().map(|x| x.memory_mb).sum::<u64>(), total.memory_mb);
            }
        }
    }
}
