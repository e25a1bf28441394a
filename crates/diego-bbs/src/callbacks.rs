//! Task completion callbacks (diego-spec §1.1).
//!
//! When a task with a `completion_callback_url` completes, the BBS claims the resolution
//! (COMPLETED → RESOLVING, so exactly one resolver wins), POSTs the outcome to the URL, and
//! deletes the task once the receiver has answered. 503 and 504 answers and timeouts are
//! retried at once, up to 3 tries; any other answer resolves the task. When the receiver cannot
//! be reached at all the task stays RESOLVING; convergence demotes it to COMPLETED after
//! 30 s and tries again. Only the active BBS resolves, and its writes are fenced on the lock.

use std::sync::Arc;
use std::time::Duration;

use diego_model::{Clock, Task, TaskState};
use diego_store::{DynStore, Record, Txn, Write};

use crate::active::ActiveRole;
use tokio::sync::Semaphore;

pub use diego_model::task::TaskCallback;

/// Tries per kick for answers that mean "busy, try again" (503, 504, timeout).
const TRIES: u32 = 3;
/// Callbacks in flight at once.
const WORKERS: usize = 256;

#[derive(Clone)]
pub struct Callbacks {
    store: DynStore,
    role: Arc<ActiveRole>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    workers: Arc<Semaphore>,
}

impl Callbacks {
    pub fn new(store: DynStore, role: Arc<ActiveRole>, clock: Arc<dyn Clock>) -> Self {
        // The callback URL is the submitter's, not a role of the cluster: plain HTTP.
        let http = diego_runtime::http_client(None)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        Self {
            store,
            role,
            clock,
            http,
            workers: Arc::new(Semaphore::new(WORKERS)),
        }
    }

    /// Resolves `task` in the background if it is COMPLETED and asks for a callback.
    pub fn completed(&self, task: &Task) {
        if task.state != TaskState::Completed || task.task_definition.completion_callback_url.is_empty() {
            return;
        }
        let this = self.clone();
        let guid = task.task_guid.clone();
        tokio::spawn(async move {
            let Ok(_permit) = this.workers.acquire().await else {
                return;
            };
            if let Err(e) = this.resolve(&guid).await {
                tracing::warn!(task_guid = %guid, error = %e, "task callback not delivered; the task stays RESOLVING");
            }
        });
    }

    async fn resolve(&self, guid: &str) -> Result<(), String> {
        let Some(task) = self.store.get_task(guid).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        // Claim the resolution; if someone else did, they resolve it.
        let Ok(resolving) = task.resolving(self.clock.now()) else {
            return Ok(());
        };
        let stored = match self
            .role
            .commit(Txn::one(Write::update(Record::Task(resolving))))
            .await
        {
            Ok(mut c) => match c.records.pop().flatten() {
                Some(Record::Task(t)) => t,
                _ => return Ok(()),
            },
            // Changed meanwhile: whoever changed it resolves it.
            Err(e) if crate::controllers::is_retryable(&e) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let url = &stored.task_definition.completion_callback_url;
        let body = TaskCallback {
            task_guid: stored.task_guid.clone(),
            failed: stored.failed,
            failure_reason: stored.failure_reason.clone(),
            result: stored.result.clone(),
            annotation: stored.task_definition.annotation.clone(),
            created_at: stored.created_at,
        };
        for attempt in 1..=TRIES {
            match self.http.post(url).json(&body).send().await {
                Ok(r) if matches!(r.status().as_u16(), 503 | 504) => {
                    tracing::info!(task_guid = guid, attempt, status = %r.status(), "callback receiver busy; retrying");
                }
                Ok(r) => {
                    tracing::info!(task_guid = guid, status = %r.status(), "task callback delivered");
                    return self.delete(&stored).await;
                }
                Err(e) if e.is_timeout() => {
                    tracing::info!(task_guid = guid, attempt, "callback timed out; retrying");
                }
                Err(e) => return Err(format!("POST {url}: {e}")),
            }
        }
        Err(format!("POST {url}: still busy after {TRIES} tries"))
    }

    async fn delete(&self, task: &Task) -> Result<(), String> {
        match self
            .role
            .commit(Txn::one(Write::delete(&Record::Task(task.clone()))))
            .await
        {
            Ok(_) => {
                tracing::info!(task_guid = %task.task_guid, "resolved and deleted task");
                Ok(())
            }
            Err(e) => Err(format!("deleting resolved task: {e}")),
        }
    }
}
