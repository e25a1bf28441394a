//! The try step: runs its child and swallows its failure (logged, not returned), so a
//! best-effort action cannot fail its parent. Cancellation still propagates.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Step, StepError};

pub struct TryStep {
    child: Box<dyn Step>,
}

impl TryStep {
    pub fn new(child: Box<dyn Step>) -> Self {
        Self { child }
    }
}

#[async_trait]
impl Step for TryStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        match self.child.perform(cancel.clone()).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_cancellation() && cancel.is_cancelled() => Err(err),
            Err(err) => {
                tracing::info!(%err, "try step: ignoring failure of its action");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::RunStep;

    #[tokio::test]
    async fn failures_are_swallowed() {
        let h = Harness::by_path().await;
        let step = TryStep::new(Box::new(RunStep::new(run_action("exit-1"), h.ctx.clone())));
        assert_eq!(step.perform(CancellationToken::new()).await, Ok(()));
        assert_eq!(h.sink.messages(), ["exit-1 out", "Exit status 1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_is_not_swallowed() {
        let h = Harness::by_path().await;
        let step = TryStep::new(Box::new(RunStep::new(run_action("forever"), h.ctx.clone())));
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move { c.cancel() });
        assert_eq!(step.perform(cancel).await, Err(StepError::Cancelled));
    }
}
