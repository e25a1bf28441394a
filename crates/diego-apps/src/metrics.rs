//! The apps service's Prometheus metrics, served at `/metrics` through `diego_runtime::metrics`
//! (with the request metrics `apps_requests_total` and `apps_request_duration_seconds`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `apps_stagings_started_total` | counter | staging Tasks desired |
//! | `apps_stagings_succeeded_total` | counter | stagings that recorded a droplet |
//! | `apps_stagings_failed_total` | counter | stagings that failed |
//! | `apps_sync_desired_total` | counter | LRPs the sync desired (missing ones) |
//! | `apps_sync_updated_total` | counter | LRPs the sync updated (instances, routes) |
//! | `apps_sync_removed_total` | counter | LRPs the sync removed (no app has them) |

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

pub const PREFIX: &str = "apps";

#[derive(Default, Clone)]
pub struct Metrics {
    pub stagings_started: Counter,
    pub stagings_succeeded: Counter,
    pub stagings_failed: Counter,
    pub sync_desired: Counter,
    pub sync_updated: Counter,
    pub sync_removed: Counter,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "stagings_started",
            "Staging Tasks desired",
            self.stagings_started.clone(),
        );
        r.register(
            "stagings_succeeded",
            "Stagings that recorded a droplet",
            self.stagings_succeeded.clone(),
        );
        r.register(
            "stagings_failed",
            "Stagings that failed",
            self.stagings_failed.clone(),
        );
        r.register("sync_desired", "LRPs the sync desired", self.sync_desired.clone());
        r.register("sync_updated", "LRPs the sync updated", self.sync_updated.clone());
        r.register("sync_removed", "LRPs the sync removed", self.sync_removed.clone());
    }

    pub fn build(&self) -> std::sync::Arc<diego_runtime::metrics::Metrics> {
        let mut b = diego_runtime::metrics::Metrics::builder(PREFIX);
        self.register(b.role());
        b.build()
    }
}
