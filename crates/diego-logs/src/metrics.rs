//! The log server's Prometheus metrics, served at `/metrics` through `diego_runtime::metrics`
//! (with the request metrics `logs_requests_total` and `logs_request_duration_seconds`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `logs_lines_in_total` | counter | lines accepted from cells |
//! | `logs_batches_in_total` | counter | batches accepted from cells |
//! | `logs_lines_out_total` | counter | lines sent to followers (one per follower it reached) |
//! | `logs_lines_evicted_total` | counter | lines evicted by the per-log-guid retention |
//! | `logs_lines_dropped_total` | counter | lines a follower missed: evicted before it could read them |
//! | `logs_followers` | gauge | follow streams open |
//! | `logs_log_guids` | gauge | log guids with a history held |
//! | `logs_lines_held` | gauge | lines held, all log guids together |

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The prefix of the log server's metric names.
pub const PREFIX: &str = "logs";

#[derive(Default, Clone)]
pub struct Metrics {
    pub lines_in: Counter,
    pub batches_in: Counter,
    pub lines_out: Counter,
    pub lines_evicted: Counter,
    pub lines_dropped: Counter,
    pub followers: Gauge,
    pub log_guids: Gauge<i64, AtomicI64>,
    pub lines_held: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// Registers these metrics in `r` (the role registry, which adds the `logs_` prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register("lines_in", "Lines accepted from cells", self.lines_in.clone());
        r.register(
            "batches_in",
            "Batches accepted from cells",
            self.batches_in.clone(),
        );
        r.register(
            "lines_out",
            "Lines sent to followers (one per follower it reached)",
            self.lines_out.clone(),
        );
        r.register(
            "lines_evicted",
            "Lines evicted by the per-log-guid retention",
            self.lines_evicted.clone(),
        );
        r.register(
            "lines_dropped",
            "Lines a follower missed because they were evicted before it read them",
            self.lines_dropped.clone(),
        );
        r.register("followers", "Follow streams open", self.followers.clone());
        r.register(
            "log_guids",
            "Log guids with a history held",
            self.log_guids.clone(),
        );
        r.register(
            "lines_held",
            "Lines held, all log guids together",
            self.lines_held.clone(),
        );
    }

    /// The role's metrics: these and the request metrics.
    pub fn build(&self) -> std::sync::Arc<diego_runtime::metrics::Metrics> {
        let mut b = diego_runtime::metrics::Metrics::builder(PREFIX);
        self.register(b.role());
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_counters_their_suffix() {
        let m = Metrics::default();
        m.lines_in.inc_by(3);
        m.followers.inc();
        let text = m
            .build()
            .encode(diego_runtime::metrics::Format::OpenMetrics)
            .unwrap();
        for want in [
            "logs_lines_in_total 3",
            "logs_batches_in_total 0",
            "logs_lines_out_total 0",
            "logs_lines_evicted_total 0",
            "logs_lines_dropped_total 0",
            "logs_followers 1",
            "logs_log_guids 0",
            "logs_lines_held 0",
        ] {
            assert!(text.lines().any(|l| l == want), "{want:?} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
