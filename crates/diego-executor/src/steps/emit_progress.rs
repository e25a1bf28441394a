//! The emit-progress step: logs `start_message` (stdout) before its child, then
//! `success_message` (stdout) or `failure_message_prefix` (stderr) after it; on failure the
//! prefix is followed by `: <emittable error>` when the error has user-facing text.
//! Empty messages are not logged. The child's result is returned unchanged.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Step, StepError};
use diego_logs::LogStreamer;

pub struct EmitProgressStep {
    child: Box<dyn Step>,
    start_message: String,
    success_message: String,
    failure_message_prefix: String,
    streamer: LogStreamer,
}

impl EmitProgressStep {
    pub fn new(
        child: Box<dyn Step>,
        start_message: impl Into<String>,
        success_message: impl Into<String>,
        failure_message_prefix: impl Into<String>,
        streamer: LogStreamer,
    ) -> Self {
        Self {
            child,
            start_message: start_message.into(),
            success_message: success_message.into(),
            failure_message_prefix: failure_message_prefix.into(),
            streamer,
        }
    }
}

#[async_trait]
impl Step for EmitProgressStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        if !self.start_message.is_empty() {
            self.streamer.stdout(&self.start_message);
        }
        let result = self.child.perform(cancel).await;
        match &result {
            Ok(()) if !self.success_message.is_empty() => self.streamer.stdout(&self.success_message),
            Err(err) if !self.failure_message_prefix.is_empty() => match err.emittable() {
                Some(text) => self
                    .streamer
                    .stderr(&format!("{}: {text}", self.failure_message_prefix)),
                None => self.streamer.stderr(&self.failure_message_prefix),
            },
            _ => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use diego_garden::GardenError;

    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use crate::steps::{FailStep, RunStep};
    use diego_logs::LogStream;

    fn emit(h: &Harness, child: Box<dyn Step>) -> EmitProgressStep {
        EmitProgressStep::new(
            child,
            "Staging...",
            "Staging complete",
            "Staging failed",
            h.ctx.streamer.with_source("STG"),
        )
    }

    #[tokio::test]
    async fn success_logs_start_and_success() {
        let h = Harness::by_path().await;
        let child = Box::new(RunStep::new(run_action("exit-0"), h.ctx.clone()));
        assert_eq!(emit(&h, child).perform(CancellationToken::new()).await, Ok(()));
        assert_eq!(
            h.sink.messages(),
            ["Staging...", "exit-0 out", "Exit status 0", "Staging complete"]
        );
        assert_eq!(h.sink.lines()[0].source_type, "STG");
    }

    #[tokio::test]
    async fn failure_appends_the_emittable_error() {
        let h = Harness::by_path().await;
        let child = Box::new(RunStep::new(run_action("exit-1"), h.ctx.clone()));
        let err = emit(&h, child)
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Exit status 1".into()));
        let last = h.sink.lines().pop().unwrap();
        assert_eq!(last.message, "Staging failed: Exit status 1");
        assert_eq!(last.stream, LogStream::Stderr);
    }

    #[tokio::test]
    async fn failure_without_user_facing_text_logs_just_the_prefix() {
        let h = Harness::by_path().await;
        let child = Box::new(FailStep::new(StepError::Backend(GardenError::Unavailable(
            "x".into(),
        ))));
        emit(&h, child)
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(h.sink.messages(), ["Staging...", "Staging failed"]);

        let h = Harness::by_path().await;
        let quiet = EmitProgressStep::new(
            Box::new(FailStep::new(StepError::Emittable("nope".into()))),
            "",
            "",
            "",
            h.ctx.streamer.clone(),
        );
        quiet.perform(CancellationToken::new()).await.unwrap_err();
        assert!(h.sink.lines().is_empty(), "empty messages are not logged");
    }
}
