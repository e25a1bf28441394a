//! Best-effort calls from the BBS to cells' reps: stop an instance, cancel a task.
//!
//! These are notifications, not state: the store is already right when they are sent, and
//! the cell's own bulk sync (and, later, convergence) repairs anything a lost call leaves
//! behind. So they run in the background with a few retries and never fail a request.

use std::time::Duration;

use diego_client::routes;

#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
}

/// Diego's `RetireActualLRPRetryAttempts`.
const ATTEMPTS: u32 = 5;

impl Default for RepClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RepClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        Self { http }
    }

    /// Asks the rep at `rep_url` to stop one instance, in the background.
    pub fn stop_lrp_instance(&self, rep_url: &str, process_guid: &str, instance_guid: &str) {
        let url = format!(
            "{}{}",
            rep_url.trim_end_matches('/'),
            routes::path(routes::rep::STOP_LRP_INSTANCE, &[process_guid, instance_guid])
        );
        self.post_in_background(url);
    }

    /// Tells the rep at `rep_url` that a task was cancelled, in the background.
    pub fn cancel_task(&self, rep_url: &str, task_guid: &str) {
        let url = format!(
            "{}{}",
            rep_url.trim_end_matches('/'),
            routes::path(routes::rep::CANCEL_TASK, &[task_guid])
        );
        self.post_in_background(url);
    }

    fn post_in_background(&self, url: String) {
        let http = self.http.clone();
        tokio::spawn(async move {
            for attempt in 1..=ATTEMPTS {
                match http.post(&url).send().await {
                    Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {
                        return
                    }
                    Ok(r) => tracing::warn!(%url, attempt, status = %r.status(), "rep refused request"),
                    Err(e) => tracing::warn!(%url, attempt, error = %e, "rep unreachable"),
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            tracing::error!(%url, "giving up on rep request; the cell's bulk sync will reconcile");
        });
    }
}
