//! The parallel step: runs all children at once and waits for **all** of them; fails if any
//! failed, with every failure (joined with `"; "`).

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Step, StepError};

pub struct ParallelStep {
    children: Vec<Box<dyn Step>>,
}

impl ParallelStep {
    pub fn new(children: Vec<Box<dyn Step>>) -> Self {
        Self { children }
    }
}

/// Folds children's failures into one error: none → `Ok`, only cancellations → `Cancelled`,
/// one real failure → itself, several → [`StepError::Aggregate`].
pub(super) fn aggregate(errors: Vec<StepError>) -> Result<(), StepError> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut real: Vec<StepError> = errors
        .into_iter()
        .filter(|e| *e != StepError::Cancelled)
        .collect();
    match real.len() {
        0 => Err(StepError::Cancelled),
        1 => Err(real.remove(0)),
        _ => Err(StepError::Aggregate(real)),
    }
}

#[async_trait]
impl Step for ParallelStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let results = join_all(self.children.iter().map(|c| c.perform(cancel.clone()))).await;
        aggregate(results.into_iter().filter_map(Result::err).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::RunStep;

    fn parallel(h: &Harness, paths: &[&str]) -> ParallelStep {
        ParallelStep::new(
            paths
                .iter()
                .map(|p| Box::new(RunStep::new(run_action(p), h.ctx.clone())) as Box<dyn Step>)
                .collect(),
        )
    }

    #[tokio::test]
    async fn runs_everything_and_aggregates_failures() {
        let h = Harness::by_path().await;
        assert_eq!(
            parallel(&h, &["exit-0", "exit-0"])
                .perform(CancellationToken::new())
                .await,
            Ok(())
        );

        let h = Harness::by_path().await;
        let err = parallel(&h, &["exit-1", "exit-0", "exit-2"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "Exit status 1; Exit status 2");
        assert_eq!(h.specs().len(), 3, "a failure does not stop the others");

        let h = Harness::by_path().await;
        let err = parallel(&h, &["exit-0", "exit-5"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Exit status 5".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_all_and_cancels_all() {
        let h = Harness::by_path().await;
        let step = parallel(&h, &["exit-1", "forever", "forever"]);
        let cancel = CancellationToken::new();
        let run = tokio::spawn({
            let cancel = cancel.clone();
            async move { step.perform(cancel).await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!run.is_finished(), "still waiting for the daemons");
        cancel.cancel();
        assert_eq!(
            run.await.unwrap(),
            Err(StepError::Emittable("Exit status 1".into()))
        );
        assert_eq!(h.signals().len(), 2);
    }

    #[test]
    fn aggregation_rules() {
        assert_eq!(aggregate(vec![]), Ok(()));
        assert_eq!(
            aggregate(vec![StepError::Cancelled, StepError::Cancelled]),
            Err(StepError::Cancelled)
        );
        assert_eq!(
            aggregate(vec![StepError::Cancelled, StepError::ExitTimeout]),
            Err(StepError::ExitTimeout)
        );
    }
}
