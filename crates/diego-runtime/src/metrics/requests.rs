//! HTTP request metrics: an axum middleware keyed by the matched route template.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::Metrics;

/// Latency histogram bucket bounds, in seconds: from half a millisecond (a ping) to 2.5 s (a
/// bulk write of a large LRP).
pub const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// The `route` label of a request no route matched (a 404 from the fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Debug)]
pub(super) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl RequestMetrics {
    pub(super) fn register(role: &mut Registry) -> Self {
        let m = RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        role.register(
            "requests",
            "HTTP requests served, by method, route and status",
            m.requests.clone(),
        );
        role.register_with_unit(
            "request_duration",
            "HTTP request latency until the response head, by method and route",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }

    fn observe(&self, method: &'static str, route: String, status: u16, elapsed: Duration) {
        self.duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER`, so a client
/// cannot grow the label space.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// `router` with every request it serves recorded in `metrics`: counted by method, route
/// template (`/v1/tasks/{task_guid}`, not the concrete path, so guids do not grow the label
/// space; [`UNMATCHED_ROUTE`] for the fallback) and status, and timed by method and route.
/// Apply it after the routes are added. A streaming response (server-sent events) is timed
/// until its head is sent.
pub fn record_requests<S>(router: Router<S>, metrics: &Arc<Metrics>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(metrics.clone(), record))
}

async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics
        .requests
        .observe(method, route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::{endpoint, Format};

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        accept: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_timed() {
        let metrics = Metrics::builder("role").build();
        let app = record_requests(
            Router::new()
                .route("/items/{id}", get(|| async { "item" }))
                .route("/items", post(|| async { StatusCode::CREATED }))
                .route("/metrics", endpoint(metrics.clone())),
            &metrics,
        );
        for uri in ["/items/a", "/items/b", "/nowhere"] {
            call(&app, "GET", uri, None).await;
        }
        call(&app, "POST", "/items", None).await;
        call(&app, "BREW", "/items", None).await;

        let (status, content_type, text) = call(&app, "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, Format::Prometheus.content_type());
        for line in [
            r#"role_requests_total{method="GET",route="/items/{id}",status="200"} 2"#,
            r#"role_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"role_requests_total{method="POST",route="/items",status="201"} 1"#,
            r#"role_requests_total{method="OTHER",route="/items",status="405"} 1"#,
            r#"role_request_duration_seconds_count{method="GET",route="/items/{id}"} 2"#,
            r#"role_request_duration_seconds_bucket{method="GET",route="/items/{id}",le="+Inf"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(
            !text.contains("/items/a"),
            "concrete paths are no labels:\n{text}"
        );
        let buckets = text
            .lines()
            .filter(|l| {
                l.starts_with(r#"role_request_duration_seconds_bucket{method="GET",route="/items/{id}""#)
            })
            .count();
        assert_eq!(buckets, LATENCY_BUCKETS.len() + 1, "{text}");

        // The first scrape was recorded too; Prometheus asks for OpenMetrics.
        let (_, content_type, open) =
            call(&app, "GET", "/metrics", Some("application/openmetrics-text")).await;
        assert_eq!(content_type, Format::OpenMetrics.content_type());
        assert!(
            open.lines()
                .any(|l| l == r#"role_requests_total{method="GET",route="/metrics",status="200"} 1"#),
            "{open}"
        );
        assert!(
            open.lines()
                .any(|l| l == "# UNIT role_request_duration_seconds seconds"),
            "{open}"
        );
        assert_eq!(open.lines().last(), Some("# EOF"));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
