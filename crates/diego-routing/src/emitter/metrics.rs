//! The emitter's Prometheus metrics (prefix `route_emitter`), on [`diego_runtime::metrics`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use diego_runtime::metrics::{FloatGauge, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::state::Subject;
use crate::sync::SyncStats;

/// Metric names start with this (`route_emitter_messages_sent_total`).
pub const PREFIX: &str = "route_emitter";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SubjectLabel {
    pub subject: &'static str,
}

/// What the emitter updates as it works; the sync's counters are copied in at scrape time.
#[derive(Debug, Clone)]
pub struct EmitterMetrics {
    pub registry: Arc<Metrics>,
    messages_sent: Family<SubjectLabel, Counter>,
    messages_unsent: Family<SubjectLabel, Counter>,
    pub registrations: Gauge,
    pub unregistrations_cached: Gauge,
    pub nats_connected: Gauge,
    pub nats_connects: Counter,
    pub register_interval_seconds: FloatGauge,
    pub greetings: Counter,
    sync_events: Counter,
    sync_listings: Counter,
    sync_errors: Counter,
    sync_publishes: Counter,
    sync_last_listing_seconds: FloatGauge,
}

impl EmitterMetrics {
    pub fn new() -> Self {
        let mut b = Metrics::builder(PREFIX);
        let r = b.role();
        let messages_sent = Family::<SubjectLabel, Counter>::default();
        r.register(
            "messages_sent",
            "NATS messages published, by subject",
            messages_sent.clone(),
        );
        let messages_unsent = Family::<SubjectLabel, Counter>::default();
        r.register(
            "messages_unsent",
            "Messages not published because NATS was disconnected (all is sent again on reconnect)",
            messages_unsent.clone(),
        );
        let registrations = Gauge::default();
        r.register(
            "registrations",
            "Registrations in the table last emitted",
            registrations.clone(),
        );
        let unregistrations_cached = Gauge::default();
        r.register(
            "unregistrations_cached",
            "Unregistrations waiting to be sent again",
            unregistrations_cached.clone(),
        );
        let nats_connected = Gauge::default();
        r.register(
            "nats_connected",
            "1 while connected to a NATS server",
            nats_connected.clone(),
        );
        let nats_connects = Counter::default();
        r.register(
            "nats_connects",
            "Connections made to NATS: the first and every reconnect (each sends the whole table)",
            nats_connects.clone(),
        );
        let register_interval_seconds = FloatGauge::default();
        r.register(
            "register_interval_seconds",
            "Interval of full re-registrations (the default or a router's)",
            register_interval_seconds.clone(),
        );
        let greetings = Counter::default();
        r.register(
            "router_greetings",
            "router.start messages and router.greet answers received",
            greetings.clone(),
        );
        let sync_events = Counter::default();
        r.register(
            "sync_events",
            "BBS events applied to the routing table",
            sync_events.clone(),
        );
        let sync_listings = Counter::default();
        r.register(
            "sync_listings",
            "Full listings of LRPs from the BBS",
            sync_listings.clone(),
        );
        let sync_errors = Counter::default();
        r.register(
            "sync_errors",
            "BBS connections and listings that failed",
            sync_errors.clone(),
        );
        let sync_publishes = Counter::default();
        r.register(
            "sync_publishes",
            "Times the routing table changed and was handed to the emitter",
            sync_publishes.clone(),
        );
        let sync_last_listing_seconds = FloatGauge::default();
        r.register(
            "sync_last_listing_seconds",
            "Duration of the last full listing",
            sync_last_listing_seconds.clone(),
        );
        EmitterMetrics {
            registry: b.build(),
            messages_sent,
            messages_unsent,
            registrations,
            unregistrations_cached,
            nats_connected,
            nats_connects,
            register_interval_seconds,
            greetings,
            sync_events,
            sync_listings,
            sync_errors,
            sync_publishes,
            sync_last_listing_seconds,
        }
    }

    pub fn sent(&self, subject: Subject) {
        self.messages_sent
            .get_or_create(&SubjectLabel {
                subject: subject.as_str(),
            })
            .inc();
    }

    pub fn unsent(&self, subject: Subject) {
        self.messages_unsent
            .get_or_create(&SubjectLabel {
                subject: subject.as_str(),
            })
            .inc();
    }

    /// Messages published on `subject` so far.
    pub fn sent_count(&self, subject: Subject) -> u64 {
        self.messages_sent
            .get_or_create(&SubjectLabel {
                subject: subject.as_str(),
            })
            .get()
    }

    /// Copies the sync's counters in. Call while holding a scrape ([`Metrics::scrape`]), so
    /// two scrapes do not both add the same difference.
    pub fn copy_sync(&self, stats: &SyncStats) {
        let catch_up = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        catch_up(&self.sync_events, stats.events.load(Ordering::Relaxed));
        catch_up(&self.sync_listings, stats.listings.load(Ordering::Relaxed));
        catch_up(&self.sync_errors, stats.errors.load(Ordering::Relaxed));
        catch_up(&self.sync_publishes, stats.publishes.load(Ordering::Relaxed));
        self.sync_last_listing_seconds
            .set(stats.last_listing_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    }
}

impl Default for EmitterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
