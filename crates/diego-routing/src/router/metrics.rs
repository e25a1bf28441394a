//! The router's metrics (prefix `router`), kept current as requests pass, plus the sync's
//! and the table's figures, read at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use diego_runtime::metrics::{Metrics, LATENCY_BUCKETS};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::retry::Failure;
use crate::sync::SyncStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status_class: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Everything the router counts.
#[derive(Debug, Clone)]
pub struct RouterMetrics {
    pub registry: Arc<Metrics>,
    responses: Family<StatusLabels, Counter>,
    backend_latency: Histogram,
    retries: Counter,
    backend_errors: Family<KindLabels, Counter>,
    upgrades: Counter,
    routes: Gauge,
    endpoints: Gauge,
    sync_events: Counter,
    sync_listings: Counter,
    sync_errors: Counter,
    sync_publishes: Counter,
    sync_last_listing: Gauge,
}

impl RouterMetrics {
    pub fn new() -> Self {
        let mut b = Metrics::builder("router");
        let (responses, backend_errors) = (Family::default(), Family::default());
        let backend_latency = Histogram::new(LATENCY_BUCKETS);
        let [retries, upgrades, sync_events, sync_listings, sync_errors, sync_publishes] =
            std::array::from_fn(|_| Counter::default());
        let [routes, endpoints, sync_last_listing] = std::array::from_fn(|_| Gauge::default());
        let r = b.role();
        r.register(
            "proxied_requests",
            "Requests the router answered on its proxy listener, by status class and status",
            responses.clone(),
        );
        r.register_with_unit(
            "backend_latency",
            "Time from sending a request to a backend until its response head",
            Unit::Seconds,
            backend_latency.clone(),
        );
        r.register(
            "retries",
            "Attempts made again on another instance after a connect failure",
            retries.clone(),
        );
        r.register(
            "backend_errors",
            "Failed attempts to a backend, by kind",
            backend_errors.clone(),
        );
        r.register(
            "websocket_upgrades",
            "Upgrades (WebSockets) proxied",
            upgrades.clone(),
        );
        r.register("routes", "Hostnames in the routing table", routes.clone());
        r.register(
            "endpoints",
            "Endpoints in the routing table, once per hostname",
            endpoints.clone(),
        );
        r.register(
            "sync_events",
            "BBS events applied to the routing table",
            sync_events.clone(),
        );
        r.register("sync_listings", "Full listings of the BBS", sync_listings.clone());
        r.register(
            "sync_errors",
            "Failed connections to and listings of the BBS",
            sync_errors.clone(),
        );
        r.register(
            "sync_publishes",
            "Routing tables published to the proxy",
            sync_publishes.clone(),
        );
        r.register(
            "sync_last_listing_ms",
            "How long the last full listing took, in ms",
            sync_last_listing.clone(),
        );
        RouterMetrics {
            registry: b.build(),
            responses,
            backend_latency,
            retries,
            backend_errors,
            upgrades,
            routes,
            endpoints,
            sync_events,
            sync_listings,
            sync_errors,
            sync_publishes,
            sync_last_listing,
        }
    }

    pub fn response(&self, status: u16) {
        let status_class = match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.responses
            .get_or_create(&StatusLabels { status_class, status })
            .inc();
    }

    pub fn backend_latency(&self, elapsed: std::time::Duration) {
        self.backend_latency.observe(elapsed.as_secs_f64());
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    pub fn backend_error(&self, failure: Failure) {
        self.backend_errors
            .get_or_create(&KindLabels {
                kind: failure.label(),
            })
            .inc();
    }

    pub fn upgrade(&self) {
        self.upgrades.inc();
    }

    pub fn table(&self, routes: usize, endpoints: usize) {
        self.routes.set(routes as i64);
        self.endpoints.set(endpoints as i64);
    }

    /// Brings the sync's figures up to date (at scrape time).
    pub fn sync(&self, stats: &SyncStats) {
        let catch_up = |c: &Counter, v: &std::sync::atomic::AtomicU64| {
            let v = v.load(Ordering::Relaxed);
            c.inc_by(v.saturating_sub(c.get()));
        };
        catch_up(&self.sync_events, &stats.events);
        catch_up(&self.sync_listings, &stats.listings);
        catch_up(&self.sync_errors, &stats.errors);
        catch_up(&self.sync_publishes, &stats.publishes);
        self.sync_last_listing
            .set(stats.last_listing_ms.load(Ordering::Relaxed) as i64);
    }
}

impl Default for RouterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
