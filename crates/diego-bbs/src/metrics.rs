//! Prometheus metrics: request counts and latencies per route, records by state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
struct RouteStats {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) → stats
    routes: Mutex<BTreeMap<(String, String, u16), RouteStats>>,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = routes
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum_seconds += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    /// The request metrics in Prometheus text format.
    pub fn render_requests(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP bbs_requests_total HTTP requests served, by method, route and status.\n");
        out.push_str("# TYPE bbs_requests_total counter\n");
        for ((m, r, st), s) in routes.iter() {
            let _ = writeln!(
                out,
                "bbs_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP bbs_request_duration_seconds HTTP request latency, by method and route.\n");
        out.push_str("# TYPE bbs_request_duration_seconds histogram\n");
        let mut merged: BTreeMap<(&str, &str), ([u64; BUCKETS.len()], u64, f64)> = BTreeMap::new();
        for ((m, r, _), s) in routes.iter() {
            let e = merged.entry((m, r)).or_insert(([0; BUCKETS.len()], 0, 0.0));
            for (i, b) in s.buckets.iter().enumerate() {
                e.0[i] += b;
            }
            e.1 += s.count;
            e.2 += s.sum_seconds;
        }
        for ((m, r), (buckets, count, sum)) in merged {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "bbs_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{bound}\"}} {}",
                    buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "bbs_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "bbs_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "bbs_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {count}"
            );
        }
    }
}

/// Middleware recording every request under its route template (not its concrete path, so
/// guids do not explode the label space).
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe(&method, &route, response.status().as_u16(), started.elapsed());
    response
}
