//! The serial step: runs its children in order and stops at the first failure, returning it.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Step, StepError};

pub struct SerialStep {
    children: Vec<Box<dyn Step>>,
}

impl SerialStep {
    pub fn new(children: Vec<Box<dyn Step>>) -> Self {
        Self { children }
    }
}

#[async_trait]
impl Step for SerialStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        for child in &self.children {
            if cancel.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            child.perform(cancel.clone()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::RunStep;

    fn serial(h: &Harness, paths: &[&str]) -> SerialStep {
        SerialStep::new(
            paths
                .iter()
                .map(|p| Box::new(RunStep::new(run_action(p), h.ctx.clone())) as Box<dyn Step>)
                .collect(),
        )
    }

    #[tokio::test]
    async fn runs_in_order_and_stops_at_the_first_failure() {
        let h = Harness::by_path().await;
        assert_eq!(
            serial(&h, &["exit-0", "exit-0"])
                .perform(CancellationToken::new())
                .await,
            Ok(())
        );
        let h = Harness::by_path().await;
        let err = serial(&h, &["exit-0", "exit-4", "exit-0"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Exit status 4".into()));
        let paths: Vec<String> = h.specs().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["exit-0", "exit-4"], "the third never ran");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_current_child_and_skips_the_rest() {
        let h = Harness::by_path().await;
        let step = serial(&h, &["exit-0", "forever", "exit-0"]);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            c.cancel();
        });
        assert_eq!(step.perform(cancel).await, Err(StepError::Cancelled));
        assert_eq!(h.specs().len(), 2);
    }
}
