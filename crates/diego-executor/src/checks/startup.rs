//! The startup check: gates RUNNING. Polls every startup check until all have passed
//! (diego-spec §2.2: startup = Parallel(all startup checks)), fast at first and backing off to
//! the unhealthy interval, for at most the LRP's start timeout.
//!
//! Texts: `Starting health monitoring of container` and `Container became healthy` (CELL,
//! stdout); on timeout the last probe error (HEALTH, stderr), then
//! `Failed after 1m0.162s: startup health check never passed.` (CELL, stderr), and the step
//! fails with `Instance never healthy after 1m0s: <last probe error>`.

use std::future::pending;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::poll::until_all_pass;
use super::{messages, CheckContext, Probe};
use crate::steps::{go_duration, Step, StepError};

pub struct StartupCheckStep {
    probes: Vec<Probe>,
    /// Zero = no deadline (Diego: a start timeout of 0 waits forever).
    start_timeout: Duration,
    ctx: CheckContext,
}

impl StartupCheckStep {
    pub fn new(probes: Vec<Probe>, start_timeout: Duration, ctx: CheckContext) -> Self {
        Self {
            probes,
            start_timeout,
            ctx,
        }
    }
}

enum Outcome {
    Healthy,
    TimedOut,
    Cancelled,
}

#[async_trait]
impl Step for StartupCheckStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        if self.probes.is_empty() {
            // Nothing gates RUNNING (a readiness-only definition).
            (self.ctx.on_healthy)();
            return Ok(());
        }
        self.ctx.cell_log.stdout(messages::STARTING);
        let started = Instant::now();
        let mut last_errors = Vec::new();
        let mut probes_run = 0;
        let outcome = {
            let deadline = async {
                if self.start_timeout.is_zero() {
                    pending::<()>().await;
                }
                sleep(self.start_timeout).await;
            };
            let poll = until_all_pass(&self.probes, &self.ctx, &mut last_errors, &mut probes_run);
            tokio::select! {
                _ = cancel.cancelled() => Outcome::Cancelled,
                _ = deadline => Outcome::TimedOut,
                _ = poll => Outcome::Healthy,
            }
        };
        match outcome {
            Outcome::Cancelled => Err(StepError::Cancelled),
            Outcome::Healthy => {
                tracing::info!(probes_run, elapsed = ?started.elapsed(), "startup checks passed");
                self.ctx.cell_log.stdout(messages::HEALTHY);
                (self.ctx.on_healthy)();
                Ok(())
            }
            Outcome::TimedOut => {
                let reason = last_errors.join("; ");
                tracing::info!(probes_run, %reason, "startup checks never passed");
                if !reason.is_empty() {
                    self.ctx.health_log.stderr(&reason);
                }
                let elapsed = Duration::from_millis(started.elapsed().as_millis() as u64);
                self.ctx.cell_log.stderr(&format!(
                    "Failed after {}: startup health check never passed.",
                    go_duration(elapsed)
                ));
                let mut message = format!("Instance never healthy after {}", go_duration(self.start_timeout));
                if !reason.is_empty() {
                    message.push_str(": ");
                    message.push_str(&reason);
                }
                Err(StepError::Emittable(message))
            }
        }
    }
}
