//! The crash restart policy (diego-spec §5) as pure functions.
//!
//! **Immediate restarts.** Diego's docs say an instance is restarted immediately "up to 3
//! times"; its code evaluates the post-increment count and so restarts only crashes #1 and
//! #2 at once. We follow the documented intent, which also makes the per-LRP override mean
//! what its name says: with `crash_policy.immediate_restarts = N`, crashes #1..=#N restart at once and
//! crash #N+1 is the first to wait. See `docs/030-lrps.md`.
//!
//! **Backoff.** After the immediate restarts, the k-th delayed restart waits
//! `min_backoff × 2^(k−1)`, capped at `max_backoff` (defaults 30 s and 16 min, so
//! 30 s, 60 s, 2 min, 4 min, 8 min, 16 min, 16 min …). Once the crash count reaches
//! `max_restarts` (default 200) the instance stays CRASHED.
//!
//! **Reset.** A crash of an instance that had been RUNNING for more than 5 minutes starts
//! the count again at 1.

use serde::{Deserialize, Serialize};

use crate::clock::{Timestamp, NANOS_PER_MILLI};
use crate::validation::{join, Validator};

pub const DEFAULT_IMMEDIATE_RESTARTS: u32 = 3;
pub const DEFAULT_MIN_BACKOFF_MS: i64 = 30_000;
pub const DEFAULT_MAX_BACKOFF_MS: i64 = 16 * 60_000;
pub const DEFAULT_MAX_RESTART_ATTEMPTS: u32 = 200;
/// An instance RUNNING longer than this when it crashes has its crash count reset.
pub const CRASH_RESET_AFTER_MS: i64 = 5 * 60_000;

/// The largest `crash_policy.immediate_restarts` accepted (more is a tight crash loop).
pub const MAX_IMMEDIATE_RESTARTS: u32 = 10;

/// The largest `crash_policy.max_backoff_ms` accepted: one day.
pub const MAX_CRASH_BACKOFF_MS: i64 = 24 * 60 * 60_000;

/// A desired LRP's own crash policy (`crash_policy`); unset fields use Diego's defaults.
///
/// * `immediate_restarts` (default 3, at most 10): crashes #1..=#N are restarted at once.
/// * `max_backoff_ms` (default 16 min): the cap of the doubling backoff, which starts at
///   30 s; between 30 000 and 86 400 000 (one day).
/// * `max_restarts` (default 200): the crash count at which the instance is given up on —
///   crash #`max_restarts` stays CRASHED for good. At least 1; 1 means an instance that
///   crashes is never restarted. `immediate_restarts` may not exceed it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<i64>,
    /// (`max_restart_attempts` is read too: records written before the rename.)
    #[serde(
        default,
        alias = "max_restart_attempts",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_restarts: Option<u32>,
}

impl CrashPolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        if let Some(ms) = self.max_backoff_ms {
            if ms < DEFAULT_MIN_BACKOFF_MS {
                v.error(
                    join(path, "max_backoff_ms"),
                    format!("must be >= {DEFAULT_MIN_BACKOFF_MS} (the minimum backoff; got {ms})"),
                );
            } else if ms > MAX_CRASH_BACKOFF_MS {
                v.error(
                    join(path, "max_backoff_ms"),
                    format!("must be <= {MAX_CRASH_BACKOFF_MS} (one day; got {ms})"),
                );
            }
        }
        if self.max_restarts == Some(0) {
            v.error(
                join(path, "max_restarts"),
                "must be >= 1 (the crash count at which restarts stop; 1 = never restart a crashed instance)",
            );
        }
        let max_restarts = self.max_restarts.unwrap_or(DEFAULT_MAX_RESTART_ATTEMPTS);
        if let Some(n) = self.immediate_restarts {
            if n > MAX_IMMEDIATE_RESTARTS {
                v.error(
                    join(path, "immediate_restarts"),
                    format!("must be <= {MAX_IMMEDIATE_RESTARTS} (got {n})"),
                );
            } else if n > max_restarts && max_restarts > 0 {
                v.error(
                    join(path, "immediate_restarts"),
                    format!("must be <= max_restarts ({max_restarts}; got {n})"),
                );
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub immediate_restarts: u32,
    pub min_backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub max_restarts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            immediate_restarts: DEFAULT_IMMEDIATE_RESTARTS,
            min_backoff_ms: DEFAULT_MIN_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            max_restarts: DEFAULT_MAX_RESTART_ATTEMPTS,
        }
    }
}

/// What to do with an instance that has just crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Unclaim now and place it again.
    Immediately,
    /// Keep it CRASHED; convergence restarts it once this many ms have passed since the crash.
    After { backoff_ms: i64 },
    /// Keep it CRASHED for good.
    Never,
}

impl RestartPolicy {
    /// The effective policy of a desired LRP with this `crash_policy` (or none).
    pub fn with_override(o: Option<&CrashPolicy>) -> Self {
        let mut p = Self::default();
        if let Some(o) = o {
            if let Some(n) = o.immediate_restarts {
                p.immediate_restarts = n;
            }
            if let Some(ms) = o.max_backoff_ms {
                p.max_backoff_ms = ms.max(p.min_backoff_ms);
            }
            if let Some(n) = o.max_restarts {
                p.max_restarts = n;
            }
        }
        p
    }

    /// The crash count after a crash: reset to 1 if the instance had been running long.
    pub fn next_crash_count(current: i32, was_running: bool, since: Timestamp, now: Timestamp) -> i32 {
        if was_running && now - since > CRASH_RESET_AFTER_MS * NANOS_PER_MILLI {
            1
        } else {
            current.saturating_add(1)
        }
    }

    /// The decision for an instance whose crash count (after this crash) is `crash_count`.
    pub fn decide(&self, crash_count: i32) -> RestartDecision {
        let count = crash_count.max(0) as u32;
        if count >= self.max_restarts {
            RestartDecision::Never
        } else if count <= self.immediate_restarts {
            RestartDecision::Immediately
        } else {
            RestartDecision::After {
                backoff_ms: self.backoff_ms(count),
            }
        }
    }

    fn backoff_ms(&self, count: u32) -> i64 {
        let delayed = count - self.immediate_restarts; // >= 1
        let exp = (delayed - 1).min(32);
        let ms = self.min_backoff_ms.saturating_mul(1i64 << exp.min(40));
        ms.min(self.max_backoff_ms)
    }

    /// When a CRASHED instance (count `crash_count`, crashed at `since`) is due its restart;
    /// `None` if it has been given up on.
    pub fn restart_due_at(&self, crash_count: i32, since: Timestamp) -> Option<Timestamp> {
        match self.decide(crash_count) {
            RestartDecision::Immediately => Some(since),
            RestartDecision::Never => None,
            RestartDecision::After { backoff_ms } => Some(since + backoff_ms * NANOS_PER_MILLI),
        }
    }

    /// Whether a CRASHED instance (count `crash_count`, crashed at `since`) is due a restart.
    pub fn should_restart_crashed(&self, crash_count: i32, since: Timestamp, now: Timestamp) -> bool {
        match self.decide(crash_count) {
            RestartDecision::Immediately => true,
            RestartDecision::Never => false,
            RestartDecision::After { backoff_ms } => now - since >= backoff_ms * NANOS_PER_MILLI,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_three_crashes_restart_immediately() {
        let p = RestartPolicy::default();
        for n in 1..=3 {
            assert_eq!(p.decide(n), RestartDecision::Immediately, "crash #{n}");
        }
        assert_eq!(p.decide(4), RestartDecision::After { backoff_ms: 30_000 });
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = RestartPolicy::default();
        let waits: Vec<_> = (4..=11)
            .map(|n| match p.decide(n) {
                RestartDecision::After { backoff_ms } => backoff_ms / 1000,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 960, 960]);
    }

    #[test]
    fn gives_up_at_max_attempts() {
        let p = RestartPolicy::default();
        assert!(matches!(p.decide(199), RestartDecision::After { .. }));
        assert_eq!(p.decide(200), RestartDecision::Never);
        assert_eq!(p.decide(500), RestartDecision::Never);
    }

    #[test]
    fn overrides_apply() {
        let o = CrashPolicy {
            immediate_restarts: Some(0),
            max_backoff_ms: Some(119_000),
            max_restarts: Some(5),
        };
        let p = RestartPolicy::with_override(Some(&o));
        assert_eq!(p.decide(1), RestartDecision::After { backoff_ms: 30_000 });
        assert_eq!(p.decide(2), RestartDecision::After { backoff_ms: 60_000 });
        assert_eq!(p.decide(3), RestartDecision::After { backoff_ms: 119_000 });
        assert_eq!(p.decide(5), RestartDecision::Never);
    }

    fn field_errors(p: &CrashPolicy) -> Vec<String> {
        let mut v = Validator::new();
        p.validate(&mut v, "crash_policy");
        v.into_result()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn crash_policy_validation_names_the_field() {
        let ok = CrashPolicy {
            immediate_restarts: Some(0),
            max_backoff_ms: Some(60_000),
            max_restarts: Some(5),
        };
        assert!(field_errors(&ok).is_empty());
        assert!(field_errors(&CrashPolicy::default()).is_empty());
        let bad = |f: fn(&mut CrashPolicy)| {
            let mut p = ok.clone();
            f(&mut p);
            field_errors(&p)
        };
        assert_eq!(
            bad(|p| p.max_backoff_ms = Some(29_999)),
            ["crash_policy.max_backoff_ms"]
        );
        assert_eq!(
            bad(|p| p.max_backoff_ms = Some(MAX_CRASH_BACKOFF_MS + 1)),
            ["crash_policy.max_backoff_ms"]
        );
        assert!(bad(|p| p.max_backoff_ms = Some(MAX_CRASH_BACKOFF_MS)).is_empty());
        assert_eq!(bad(|p| p.max_restarts = Some(0)), ["crash_policy.max_restarts"]);
        assert_eq!(
            bad(|p| p.immediate_restarts = Some(6)),
            ["crash_policy.immediate_restarts"]
        );
        assert!(bad(|p| p.immediate_restarts = Some(5)).is_empty());
        // Against the default max_restarts (200) when it is unset.
        let p = CrashPolicy {
            immediate_restarts: Some(201),
            ..Default::default()
        };
        assert_eq!(field_errors(&p), ["crash_policy.immediate_restarts"]);
    }

    #[test]
    fn max_restarts_of_one_never_restarts() {
        let p = RestartPolicy::with_override(Some(&CrashPolicy {
            max_restarts: Some(1),
            ..Default::default()
        }));
        assert_eq!(p.decide(1), RestartDecision::Never);
        assert_eq!(p.restart_due_at(1, 0), None);
    }

    #[test]
    fn restart_due_at_adds_the_backoff() {
        let p = RestartPolicy::default();
        let s = 1_000_000_000i64;
        assert_eq!(p.restart_due_at(2, 7 * s), Some(7 * s));
        assert_eq!(p.restart_due_at(5, 7 * s), Some(67 * s));
        assert_eq!(p.restart_due_at(200, 7 * s), None);
    }

    #[test]
    fn old_field_name_is_read() {
        let p: CrashPolicy = serde_json::from_str(r#"{"max_restart_attempts": 9}"#).unwrap();
        assert_eq!(p.max_restarts, Some(9));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"max_restarts":9}"#);
    }

    #[test]
    fn crash_count_resets_after_long_run() {
        let min = 60 * 1_000_000_000i64;
        assert_eq!(RestartPolicy::next_crash_count(7, true, 0, 6 * min), 1);
        assert_eq!(RestartPolicy::next_crash_count(7, true, 0, 4 * min), 8);
        assert_eq!(RestartPolicy::next_crash_count(7, false, 0, 6 * min), 8);
    }

    #[test]
    fn crashed_instances_wait_their_backoff() {
        let p = RestartPolicy::default();
        let s = 1_000_000_000i64;
        assert!(!p.should_restart_crashed(4, 0, 29 * s));
        assert!(p.should_restart_crashed(4, 0, 30 * s));
        assert!(!p.should_restart_crashed(200, 0, 1_000_000 * s));
    }
}
