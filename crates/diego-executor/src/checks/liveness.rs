//! The liveness check: after startup, probes each check at its interval (the check's own, or
//! the healthy interval, 30 s); the first failure crashes the instance (diego-spec §2.2:
//! liveness = Codependent(all liveness checks)).
//!
//! Texts: `Container became unhealthy` (CELL, stdout), the probe error (HEALTH, stderr), and
//! the step fails with `Instance became unhealthy: <probe error>`.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::poll::first_failure;
use super::{messages, until_cancelled, CheckContext, Probe};
use crate::steps::{Step, StepError};

pub struct LivenessCheckStep {
    probes: Vec<Probe>,
    ctx: CheckContext,
}

impl LivenessCheckStep {
    pub fn new(probes: Vec<Probe>, ctx: CheckContext) -> Self {
        Self { probes, ctx }
    }
}

#[async_trait]
impl Step for LivenessCheckStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        if self.probes.is_empty() {
            return until_cancelled(&cancel).await;
        }
        let err = tokio::select! {
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
            err = first_failure(&self.probes, &self.ctx, self.ctx.timing.healthy_interval) => err,
        };
        tracing::info!(%err, "liveness check failed");
        self.ctx.cell_log.stdout(messages::UNHEALTHY);
        self.ctx.health_log.stderr(&err);
        Err(StepError::Emittable(format!("Instance became unhealthy: {err}")))
    }
}
