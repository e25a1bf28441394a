//! The transformer: turns an [`Action`] tree into a [`Step`] tree, one step per action, each
//! logging under its action's `log_source` or, when that is empty, its parent's.
//!
//! Malformed actions (validation should have refused them) become a [`FailStep`] with
//! [`StepError::Invalid`] rather than a panic, so one bad tree fails one container.

use std::time::Duration;

use diego_model::{Action, ActionKind};

use crate::steps::{
    CodependentStep, DownloadStep, EmitProgressStep, FailStep, ParallelStep, RunStep, SerialStep, Step,
    StepContext, StepError, TimeoutStep, TryStep, UploadStep,
};

/// The step that runs `action` in `ctx`'s container.
pub fn step_for(action: &Action, ctx: &StepContext) -> Box<dyn Step> {
    let Some(kind) = action.kind() else {
        return invalid(format!(
            "must have exactly one member (got {})",
            action.member_count()
        ));
    };
    match kind {
        ActionKind::Download(a) => Box::new(DownloadStep::new(a.clone(), ctx.with_source(&a.log_source))),
        ActionKind::Upload(a) => Box::new(UploadStep::new(a.clone(), ctx.with_source(&a.log_source))),
        ActionKind::Run(a) => Box::new(RunStep::new(a.clone(), ctx.with_source(&a.log_source))),
        ActionKind::Timeout(a) => {
            let ctx = ctx.with_source(&a.log_source);
            if a.timeout_ms <= 0 {
                return invalid(format!("timeout_ms must be > 0 (got {})", a.timeout_ms));
            }
            let timeout = Duration::from_millis(a.timeout_ms as u64);
            match &a.action {
                Some(child) => Box::new(TimeoutStep::new(step_for(child, &ctx), timeout)),
                None => invalid("timeout: action is required".into()),
            }
        }
        ActionKind::Try(a) => match &a.action {
            Some(child) => Box::new(TryStep::new(step_for(child, &ctx.with_source(&a.log_source)))),
            None => invalid("try: action is required".into()),
        },
        ActionKind::Serial(a) => Box::new(SerialStep::new(children(
            &a.actions,
            &ctx.with_source(&a.log_source),
        ))),
        ActionKind::Parallel(a) => Box::new(ParallelStep::new(children(
            &a.actions,
            &ctx.with_source(&a.log_source),
        ))),
        ActionKind::Codependent(a) => Box::new(CodependentStep::new(children(
            &a.actions,
            &ctx.with_source(&a.log_source),
        ))),
        ActionKind::EmitProgress(a) => {
            let ctx = ctx.with_source(&a.log_source);
            match &a.action {
                Some(child) => Box::new(EmitProgressStep::new(
                    step_for(child, &ctx),
                    a.start_message.clone(),
                    a.success_message.clone(),
                    a.failure_message_prefix.clone(),
                    ctx.streamer.clone(),
                )),
                None => invalid("emit_progress: action is required".into()),
            }
        }
    }
}

fn children(actions: &[Action], ctx: &StepContext) -> Vec<Box<dyn Step>> {
    actions.iter().map(|a| step_for(a, ctx)).collect()
}

fn invalid(reason: String) -> Box<dyn Step> {
    Box::new(FailStep::new(StepError::Invalid(reason)))
}

#[cfg(test)]
mod tests {
    use diego_model::action::{EmitProgressAction, RunAction};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::steps::testing::Harness;

    fn run(path: &str, log_source: &str) -> Action {
        Action::run(RunAction {
            path: path.into(),
            log_source: log_source.into(),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_staging_like_tree_runs_with_inherited_sources() {
        let h = Harness::by_path().await;
        let tree = Action {
            emit_progress: Some(EmitProgressAction {
                action: Some(Box::new(Action::serial(vec![
                    Action::try_(run("exit-1", "")),
                    Action::timeout(run("exit-0", "APP/PROC/WEB"), 60_000),
                    Action::parallel(vec![run("exit-0", ""), run("exit-0", "")]),
                ]))),
                start_message: "start".into(),
                success_message: "done".into(),
                failure_message_prefix: "failed".into(),
                log_source: "STG".into(),
            }),
            ..Default::default()
        };
        step_for(&tree, &h.ctx)
            .perform(CancellationToken::new())
            .await
            .unwrap();
        let got: Vec<(String, String)> = h
            .sink
            .lines()
            .into_iter()
            .map(|l| (l.source_type, l.message))
            .collect();
        let want = [
            ("STG", "start"),
            ("STG", "exit-1 out"),
            ("STG", "Exit status 1"),
            ("APP/PROC/WEB", "exit-0 out"),
            ("APP/PROC/WEB", "Exit status 0"),
        ];
        for (i, (src, msg)) in want.iter().enumerate() {
            assert_eq!(
                (got[i].0.as_str(), got[i].1.as_str()),
                (*src, *msg),
                "line {i}: {got:?}"
            );
        }
        assert_eq!(got.len(), 10, "{got:?}");
        assert_eq!(got.last().unwrap(), &("STG".to_string(), "done".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_lrp_like_codependent_group_crashes_when_the_app_exits() {
        let h = Harness::by_path().await;
        let tree = Action::codependent(vec![run("exit-1", "APP/PROC/WEB"), run("forever", "HEALTH")]);
        let err = step_for(&tree, &h.ctx)
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.emittable().unwrap(), "Exit status 1");
    }

    #[tokio::test]
    async fn malformed_and_unsupported_actions_fail_cleanly() {
        let h = Harness::by_path().await;
        let cases = [
            (
                Action::default(),
                "invalid action: must have exactly one member (got 0)",
            ),
            (
                Action::timeout(run("x", ""), 0),
                "invalid action: timeout_ms must be > 0 (got 0)",
            ),
            (
                Action {
                    download: Some(Default::default()),
                    ..Default::default()
                },
                "Downloading failed",
            ),
            (
                Action {
                    upload: Some(Default::default()),
                    ..Default::default()
                },
                "Uploading failed",
            ),
            (
                Action {
                    try_: Some(Default::default()),
                    ..Default::default()
                },
                "invalid action: try: action is required",
            ),
        ];
        for (action, want) in cases {
            let err = step_for(&action, &h.ctx)
                .perform(CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
