//! The timeout step: cancels its child when it runs longer than the timeout and fails with
//! Diego's `exceeded <d> timeout` (followed by `; <child's emittable error>` when the child
//! ended with one).

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{go_duration, Step, StepError};

pub struct TimeoutStep {
    child: Box<dyn Step>,
    timeout: Duration,
}

impl TimeoutStep {
    pub fn new(child: Box<dyn Step>, timeout: Duration) -> Self {
        Self { child, timeout }
    }
}

#[async_trait]
impl Step for TimeoutStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let child_cancel = cancel.child_token();
        let child = self.child.perform(child_cancel.clone());
        tokio::pin!(child);
        tokio::select! {
            res = &mut child => res,
            _ = tokio::time::sleep(self.timeout) => {
                tracing::info!(timeout = %go_duration(self.timeout), "timed out: cancelling child step");
                child_cancel.cancel();
                let res = child.await;
                let mut message = format!("exceeded {} timeout", go_duration(self.timeout));
                if let Some(inner) = res.as_ref().err().and_then(StepError::emittable) {
                    message.push_str("; ");
                    message.push_str(&inner);
                }
                Err(StepError::Emittable(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::RunStep;

    fn timeout(h: &Harness, path: &str, d: Duration) -> TimeoutStep {
        TimeoutStep::new(Box::new(RunStep::new(run_action(path), h.ctx.clone())), d)
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_that_finishes_in_time_passes_its_result_through() {
        let h = Harness::by_path().await;
        let ok = timeout(&h, "exit-0", Duration::from_secs(1));
        assert_eq!(ok.perform(CancellationToken::new()).await, Ok(()));
        let failed = timeout(&h, "exit-2", Duration::from_secs(1));
        assert_eq!(
            failed.perform(CancellationToken::new()).await,
            Err(StepError::Emittable("Exit status 2".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_child_is_cancelled_with_diegos_message() {
        let h = Harness::by_path().await;
        let step = timeout(&h, "forever", Duration::from_secs(90));
        let start = tokio::time::Instant::now();
        let err = step.perform(CancellationToken::new()).await.unwrap_err();
        assert_eq!(err, StepError::Emittable("exceeded 1m30s timeout".into()));
        assert!(start.elapsed() >= Duration::from_secs(90));
        assert_eq!(
            h.signalled_paths(),
            [("forever".to_string(), diego_garden::Signal::Term)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_timeout_cancels_the_child() {
        let h = Harness::by_path().await;
        let step = timeout(&h, "forever", Duration::from_secs(90));
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.cancel();
        });
        assert_eq!(step.perform(cancel).await, Err(StepError::Cancelled));
    }
}
