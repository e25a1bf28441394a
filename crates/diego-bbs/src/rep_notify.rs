//! Best-effort calls from the BBS to cells' reps: stop an instance, cancel a task.
//!
//! These are notifications, not state: the store is already right when they are sent, and
//! the cell's own bulk sync and the converger repair anything a lost call leaves behind. So
//! they run in the background with a few retries and never fail a request. The calls
//! themselves are [`diego_client::RepClient`]'s.

use std::future::Future;
use std::time::Duration;

use diego_client::{ClientError, RepClient};

/// Diego's `RetireActualLRPRetryAttempts`.
const ATTEMPTS: u32 = 5;

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RepNotifier {
    http: reqwest::Client,
}

impl RepNotifier {
    pub fn new(tls: Option<&diego_runtime::tls::Tls>) -> Self {
        let http = diego_runtime::http_client(tls)
            .build()
            .expect("an HTTP client with a loaded TLS configuration builds");
        Self { http }
    }

    fn rep(&self, rep_url: &str) -> RepClient {
        RepClient::new(rep_url, self.http.clone(), TIMEOUT)
    }

    /// Asks the rep at `rep_url` to stop one instance, in the background.
    pub fn stop_lrp_instance(&self, rep_url: &str, process_guid: &str, instance_guid: &str) {
        let (rep, p, i) = (
            self.rep(rep_url),
            process_guid.to_string(),
            instance_guid.to_string(),
        );
        let what = format!("stop instance {i} of {p} at {rep_url}");
        in_background(what, move || {
            let (rep, p, i) = (rep.clone(), p.clone(), i.clone());
            async move { rep.stop_lrp_instance(&p, &i).await }
        });
    }

    /// Tells the rep at `rep_url` that a task was cancelled, in the background.
    pub fn cancel_task(&self, rep_url: &str, task_guid: &str) {
        let (rep, t) = (self.rep(rep_url), task_guid.to_string());
        let what = format!("cancel task {t} at {rep_url}");
        in_background(what, move || {
            let (rep, t) = (rep.clone(), t.clone());
            async move { rep.cancel_task(&t).await }
        });
    }
}

/// Retries `call` a few times; a 404 (the rep no longer has it) counts as done.
fn in_background<F, Fut>(what: String, call: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    tokio::spawn(async move {
        for attempt in 1..=ATTEMPTS {
            match call().await {
                Ok(()) => return,
                Err(e) if e.status() == Some(404) => return,
                Err(e) => tracing::warn!(%what, attempt, error = %e, "rep request failed"),
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        tracing::error!(%what, "giving up on rep request; the cell's bulk sync will reconcile");
    });
}
