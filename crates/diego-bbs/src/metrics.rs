//! Prometheus metrics: request counts and latencies per route, records by state, and the
//! converger's last pass under Diego's metric names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::converger::PassReport;
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

/// The converger's figures: whether this BBS is active and, from its last pass, the
/// durations and what it saw (Diego's `ConvergenceLRPDuration`, `LRPsMissing`, … where Diego
/// has a name; `bbs_convergence_*` for ours). A passive BBS reports `LockHeld 0` and no pass.
pub fn render_convergence(out: &mut String, active: bool, last: &PassReport) {
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge(
        "LockHeld",
        "1 while this BBS holds the bbs lock (is active).",
        u8::from(active).to_string(),
    );
    if last.passes == 0 {
        return;
    }
    let secs = |d: Duration| format!("{:.6}", d.as_secs_f64());
    gauge(
        "ConvergenceLRPDuration",
        "Seconds the last pass spent on LRPs.",
        secs(last.lrp_duration),
    );
    gauge(
        "ConvergenceTaskDuration",
        "Seconds the last pass spent on tasks.",
        secs(last.task_duration),
    );
    gauge(
        "bbs_convergence_gather_seconds",
        "Seconds the last pass took to read its snapshot.",
        secs(last.gather),
    );
    gauge(
        "bbs_convergence_plan_seconds",
        "Seconds the last pass took to decide.",
        secs(last.plan),
    );
    gauge(
        "bbs_convergence_apply_seconds",
        "Seconds the last pass took to write its actions.",
        secs(last.apply),
    );
    let o = &last.observed;
    for (name, help, n) in [
        (
            "LRPsMissing",
            "Desired indices without an ordinary instance.",
            o.lrps_missing,
        ),
        (
            "LRPsExtra",
            "Ordinary instances beyond the desired count.",
            o.lrps_extra,
        ),
        ("CrashedActualLRPs", "Instances in CRASHED.", o.crashed),
        (
            "CrashingDesiredLRPs",
            "Desired LRPs with a crashed instance.",
            o.crashing_desired,
        ),
        (
            "SuspectRunningActualLRPs",
            "RUNNING instances on cells that lost their presence.",
            o.suspect_running,
        ),
        (
            "SuspectClaimedActualLRPs",
            "CLAIMED instances on cells that lost their presence.",
            o.suspect_claimed,
        ),
        ("PresentCells", "Cells with a live presence.", o.present_cells),
        (
            "SuspectCells",
            "Cells named by instances but without a live presence.",
            o.lapsed_cells.len() as u64,
        ),
        (
            "bbs_convergence_orphans",
            "Instances of LRPs no longer desired.",
            o.orphans,
        ),
    ] {
        gauge(name, help, n.to_string());
    }
    let _ = writeln!(
        out,
        "# HELP bbs_convergence_passes_total Convergence passes since this BBS started.\n\
         # TYPE bbs_convergence_passes_total counter\nbbs_convergence_passes_total {}",
        last.passes
    );
    out.push_str("# HELP bbs_convergence_actions Actions of the last pass, by kind.\n# TYPE bbs_convergence_actions gauge\n");
    for (kind, n) in &last.applied {
        let _ = writeln!(out, "bbs_convergence_actions{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "bbs_convergence_actions{{kind=\"skipped\"}} {}",
        last.skipped
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_figures_use_diegos_names() {
        let mut out = String::new();
        render_convergence(&mut out, false, &PassReport::default());
        assert_eq!(
            out.lines().last(),
            Some("LockHeld 0"),
            "a passive BBS reports no pass:\n{out}"
        );

        let mut last = PassReport {
            passes: 3,
            lrp_duration: Duration::from_millis(12),
            ..Default::default()
        };
        last.observed.lrps_missing = 2;
        last.observed.present_cells = 5;
        last.applied.insert("create", 2);
        let mut out = String::new();
        render_convergence(&mut out, true, &last);
        for line in [
            "LockHeld 1",
            "ConvergenceLRPDuration 0.012000",
            "LRPsMissing 2",
            "PresentCells 5",
            "bbs_convergence_passes_total 3",
            "bbs_convergence_actions{kind=\"create\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} missing from:\n{out}");
        }
    }
}
