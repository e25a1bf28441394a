//! The codependent step, for co-running daemons (an app and its health checks, sidecars): runs
//! all children at once; as soon as **any** child ends — success or failure — the others are
//! cancelled. A child ending successfully is itself an error (`Codependent step exited`), so the
//! step always fails unless it was cancelled from outside and every child stopped cleanly.

use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::parallel::aggregate;
use super::{Step, StepError};

pub struct CodependentStep {
    children: Vec<Box<dyn Step>>,
}

impl CodependentStep {
    pub fn new(children: Vec<Box<dyn Step>>) -> Self {
        Self { children }
    }
}

#[async_trait]
impl Step for CodependentStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let group = cancel.child_token();
        let mut running: FuturesUnordered<_> =
            self.children.iter().map(|c| c.perform(group.clone())).collect();
        let mut errors = Vec::new();
        while let Some(result) = running.next().await {
            let err = result.err().unwrap_or(StepError::CodependentStepExited);
            // A sibling we cancelled says only "cancelled"; the first real end is the reason.
            if err != StepError::Cancelled {
                if !group.is_cancelled() {
                    tracing::info!(%err, "codependent step: a child ended, cancelling the others");
                    group.cancel();
                }
                errors.push(err);
            }
        }
        if errors.is_empty() && cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        aggregate(errors)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diego_garden::Signal;

    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::RunStep;

    fn codependent(h: &Harness, paths: &[&str]) -> CodependentStep {
        CodependentStep::new(
            paths
                .iter()
                .map(|p| Box::new(RunStep::new(run_action(p), h.ctx.clone())) as Box<dyn Step>)
                .collect(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_child_cancels_its_siblings() {
        let h = Harness::by_path().await;
        let err = codependent(&h, &["forever", "exit-3", "forever"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Exit status 3".into()));
        // A sibling may be cancelled before it started its process; every one that did start
        // was sent SIGTERM.
        let started = h.specs().iter().filter(|s| s.path == "forever").count();
        assert!(started >= 1);
        let signalled = h.signalled_paths();
        assert_eq!(signalled.len(), started, "{signalled:?}");
        assert!(signalled
            .iter()
            .all(|(p, s)| p == "forever" && *s == Signal::Term));
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_exiting_successfully_is_an_error_and_cancels_the_rest() {
        let h = Harness::by_path().await;
        let err = codependent(&h, &["forever", "exit-0"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::CodependentStepExited);
        assert_eq!(err.to_string(), "Codependent step exited");
        assert_eq!(h.signals(), [Signal::Term]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sibling_ignoring_term_is_killed_and_both_reasons_are_kept() {
        let h = Harness::by_path().await.ignoring_term();
        let err = codependent(&h, &["forever", "exit-1"])
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StepError::Aggregate(vec![
                StepError::Emittable("Exit status 1".into()),
                StepError::ExceededGracefulShutdownInterval,
            ])
        );
        assert_eq!(err.emittable().as_deref(), Some("Exit status 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_from_outside_ends_as_cancelled() {
        let h = Harness::by_path().await;
        let step = codependent(&h, &["forever", "forever"]);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.cancel();
        });
        assert_eq!(step.perform(cancel).await, Err(StepError::Cancelled));
        assert_eq!(h.signals(), [Signal::Term, Signal::Term]);
    }
}
