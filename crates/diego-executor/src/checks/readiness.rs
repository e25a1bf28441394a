//! The readiness check: moves the instance in and out of the route pool without crashing it
//! (diego-spec §2.2). Not ready at first; polls "until ready" (all checks pass; fast, backing
//! off to the unhealthy interval), calls `on_ready(true)`, then polls "until failure" (each
//! check at its interval), calls `on_ready(false)`, and starts over. Never fails: it ends only
//! when cancelled.
//!
//! Texts (HEALTH, stdout): `Container passed the readiness health check. Container marked
//! ready and added to route pool.` / `Container failed the readiness health check. Container
//! marked not ready and removed from route pool.`; the failing probe's error on stderr.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::poll::{first_failure, until_all_pass};
use super::{messages, until_cancelled, CheckContext, Probe};
use crate::steps::{Step, StepError};

pub struct ReadinessCheckStep {
    probes: Vec<Probe>,
    ctx: CheckContext,
}

impl ReadinessCheckStep {
    pub fn new(probes: Vec<Probe>, ctx: CheckContext) -> Self {
        Self { probes, ctx }
    }

    async fn flip_forever(&self) {
        let ctx = &self.ctx;
        loop {
            let (mut errors, mut probes_run) = (Vec::new(), 0);
            until_all_pass(&self.probes, ctx, &mut errors, &mut probes_run).await;
            tracing::info!(probes_run, "readiness checks passed");
            ctx.health_log.stdout(messages::READY);
            (ctx.on_ready)(true);

            let err = first_failure(&self.probes, ctx, ctx.timing.healthy_interval).await;
            tracing::info!(%err, "readiness check failed");
            ctx.health_log.stderr(&err);
            ctx.health_log.stdout(messages::NOT_READY);
            (ctx.on_ready)(false);
        }
    }
}

#[async_trait]
impl Step for ReadinessCheckStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        if self.probes.is_empty() {
            return until_cancelled(&cancel).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => Err(StepError::Cancelled),
            _ = self.flip_forever() => unreachable!("readiness polling never ends"),
        }
    }
}
