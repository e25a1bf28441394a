//! Prometheus metrics, one way for every role (on the `prometheus-client` crate).
//!
//! A role builds its [`Metrics`] once at start: [`Metrics::builder`] with the role's prefix
//! (`bbs`, `rep`, `auctioneer`), registers its own metrics in [`MetricsBuilder::role`] (names
//! get the prefix) and those that carry Diego's own names (`LockHeld`, `CapacityTotalMemory`)
//! in [`MetricsBuilder::diego`] (names as given), then [`MetricsBuilder::build`]s it.
//!
//! - [`record_requests`] wraps a role's axum router so every request is counted by method,
//!   route template and status (`<prefix>_requests_total`) and timed by method and route
//!   (`<prefix>_request_duration_seconds`).
//! - [`endpoint`] is the `GET /metrics` handler for a role whose metrics are all kept current
//!   as things happen. A role that reads some figures at scrape time (the BBS counts its store)
//!   writes its own handler: [`Metrics::scrape`], set those figures, [`Scrape::respond`].
//! - A scrape is answered in the Prometheus text format (0.0.4) unless its `Accept` header
//!   prefers OpenMetrics ([`Format`]); Prometheus itself asks for OpenMetrics. Sample names
//!   are the same in both (a counter `foo` is exposed as `foo_total`).

mod format;
mod requests;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use format::Format;
pub use requests::{record_requests, LATENCY_BUCKETS, UNMATCHED_ROUTE};

/// A gauge holding an `f64` (seconds, ratios); [`Gauge`]'s default holds an `i64`.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// A role's metrics: its registries and its request metrics. Built once, shared as an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    diego: Registry,
    role: Registry,
    requests: requests::RequestMetrics,
    /// One scrape at a time, so figures a handler sets just before encoding are the ones it
    /// encodes (see [`Metrics::scrape`]).
    scrape: tokio::sync::Mutex<()>,
}

/// Collects what a role registers before it starts serving.
#[derive(Debug)]
pub struct MetricsBuilder {
    diego: Registry,
    role: Registry,
    requests: requests::RequestMetrics,
}

impl Metrics {
    /// A builder for a role whose metric names start with `<prefix>_`. `prefix` is a
    /// Prometheus name (`[a-z_][a-z0-9_]*`), chosen by the code, not by users.
    ///
    /// # Panics
    ///
    /// When `prefix` is not such a name.
    pub fn builder(prefix: &str) -> MetricsBuilder {
        assert!(
            is_metric_name(prefix),
            "metrics prefix {prefix:?} must match [a-z_][a-z0-9_]*"
        );
        let mut role = Registry::with_prefix(prefix);
        let requests = requests::RequestMetrics::register(&mut role);
        MetricsBuilder {
            diego: Registry::default(),
            role,
            requests,
        }
    }

    /// Waits for any other scrape to finish, then holds the metrics for this one. Set what
    /// is read at scrape time while holding it, then [`Scrape::respond`].
    pub async fn scrape(&self) -> Scrape<'_> {
        Scrape {
            metrics: self,
            _one_at_a_time: self.scrape.lock().await,
        }
    }

    /// Every metric in `format` (OpenMetrics ends with `# EOF`). Fails only if a collector
    /// the role registered fails.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut out = String::with_capacity(16 * 1024);
        match format {
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.diego)?;
                prometheus_text::encode(&mut out, &self.role)?;
            }
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.diego)?;
                text::encode_registry(&mut out, &self.role)?;
                text::encode_eof(&mut out)?;
            }
        }
        Ok(out)
    }
}

impl MetricsBuilder {
    /// The role's own metrics: a name `foo` is exposed as `<prefix>_foo`. Register counters
    /// without `_total` (the encoder adds it) and help without a final full stop (the
    /// registry adds one).
    pub fn role(&mut self) -> &mut Registry {
        &mut self.role
    }

    /// Metrics under Diego's names, exposed exactly as registered (no prefix), so dashboards
    /// written for Diego find them.
    pub fn diego(&mut self) -> &mut Registry {
        &mut self.diego
    }

    pub fn build(self) -> Arc<Metrics> {
        Arc::new(Metrics {
            diego: self.diego,
            role: self.role,
            requests: self.requests,
            scrape: tokio::sync::Mutex::new(()),
        })
    }
}

/// A scrape in progress: no other scrape encodes until it is answered or dropped.
pub struct Scrape<'a> {
    metrics: &'a Metrics,
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
}

impl Scrape<'_> {
    /// The metrics in the format the request's `Accept` header prefers, with its content type.
    pub fn respond(self, request_headers: &HeaderMap) -> Response {
        let accept = request_headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        let format = Format::from_accept(accept);
        match self.metrics.encode(format) {
            Ok(body) => ([(CONTENT_TYPE, format.content_type())], body).into_response(),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed: a collector returned an error",
            )
                .into_response(),
        }
    }
}

/// `GET /metrics` for a role whose figures are all current without work at scrape time.
pub fn endpoint<S>(metrics: Arc<Metrics>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move |headers: HeaderMap| async move { metrics.scrape().await.respond(&headers) })
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn role_names_are_prefixed_and_diego_names_are_not() {
        let mut b = Metrics::builder("cell");
        let held: Gauge = Gauge::default();
        b.diego()
            .register("LockHeld", "1 while the lock is held", held.clone());
        let rounds: Counter = Counter::default();
        b.role().register("rounds", "Rounds run", rounds.clone());
        let m = b.build();
        held.set(1);
        rounds.inc_by(3);

        let text = m.encode(Format::Prometheus).unwrap();
        for line in [
            "# HELP LockHeld 1 while the lock is held.",
            "# TYPE LockHeld gauge",
            "LockHeld 1",
            "# TYPE cell_rounds_total counter",
            "cell_rounds_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");

        let open = m.encode(Format::OpenMetrics).unwrap();
        for line in ["LockHeld 1", "# TYPE cell_rounds counter", "cell_rounds_total 3"] {
            assert!(open.lines().any(|l| l == line), "{line:?} missing from:\n{open}");
        }
        assert_eq!(open.lines().last(), Some("# EOF"), "{open}");
    }

    #[test]
    #[should_panic(expected = "must match")]
    fn a_prefix_that_is_no_metric_name_is_refused() {
        let _ = Metrics::builder("bad-prefix");
    }

    #[test]
    fn metric_names() {
        for (name, ok) in [
            ("bbs", true),
            ("route_emitter", true),
            ("_x1", true),
            ("", false),
            ("1x", false),
            ("Bbs", false),
            ("a-b", false),
        ] {
            assert_eq!(is_metric_name(name), ok, "{name:?}");
        }
    }
}
