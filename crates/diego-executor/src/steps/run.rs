//! The run step: one process in the container, its output streamed as log lines.
//!
//! Diego's texts: on exit the process's log gets `Exit status N` (plus ` (out of memory)` when
//! the container hit its memory limit, or ` (exceeded 10s graceful shutdown interval)` when it
//! had to be killed); a non-zero exit fails the step with the emittable
//! `Exit status N[ (out of memory)]`, which becomes the task's failure reason or the instance's
//! crash reason (diego-spec §1.1). Cancelling sends SIGTERM, then SIGKILL
//! after the graceful shutdown interval.

use std::future::pending;
use std::pin::Pin;

use async_trait::async_trait;
use diego_garden::{ExitStatus, ProcessEvent, ProcessLimits, ProcessSpec, Signal};
use diego_model::RunAction;
use futures_util::StreamExt;
use tokio::time::{sleep, Sleep};
use tokio_util::sync::CancellationToken;

use super::{go_duration, Step, StepContext, StepError, EXIT_TIMEOUT};
use diego_logs::{LineBuffer, LogStream};

/// Runs a [`RunAction`]'s process.
pub struct RunStep {
    action: RunAction,
    ctx: StepContext,
    /// The process id (empty: the backend picks one).
    id: String,
}

impl RunStep {
    pub fn new(action: RunAction, ctx: StepContext) -> Self {
        let id = ctx.process_names.next();
        Self { action, ctx, id }
    }

    /// The process: attached to when resuming and it exists, else started.
    async fn process(&self) -> Result<diego_garden::ProcessStream, diego_garden::GardenError> {
        let ctx = &self.ctx;
        if ctx.resume && !self.id.is_empty() {
            match ctx.backend.attach(&ctx.handle, &self.id).await {
                Ok(p) => {
                    tracing::info!(handle = %ctx.handle, process = %self.id, "resumed a process that outlived the cell agent");
                    return Ok(p);
                }
                Err(diego_garden::GardenError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        ctx.backend.run(&ctx.handle, self.process_spec()).await
    }

    fn process_spec(&self) -> ProcessSpec {
        let a = &self.action;
        let mut env: Vec<String> = a.env.iter().map(|e| format!("{}={}", e.name, e.value)).collect();
        env.extend(self.ctx.extra_env.iter().cloned());
        ProcessSpec {
            id: self.id.clone(),
            path: a.path.clone(),
            args: a.args.clone(),
            env,
            dir: a.dir.clone(),
            user: a.user.clone(),
            limits: ProcessLimits {
                nofile: a.resource_limits.as_ref().and_then(|l| l.nofile),
            },
        }
    }

    /// Writes a complete message to the process's stdout log unless output is suppressed.
    fn note(&self, message: &str) {
        if !self.action.suppress_log_output {
            self.ctx.streamer.stdout(message);
        }
    }

    fn output(&self, buf: &mut LineBuffer, stream: LogStream, chunk: &[u8]) {
        if self.action.suppress_log_output {
            return;
        }
        for line in buf.push(chunk) {
            self.ctx.streamer.line(stream, &String::from_utf8_lossy(&line));
        }
    }

    fn flush(&self, buf: &mut LineBuffer, stream: LogStream) {
        if let Some(rest) = buf.flush() {
            if !self.action.suppress_log_output {
                self.ctx.streamer.line(stream, &String::from_utf8_lossy(&rest));
            }
        }
    }

    /// Whether the exit was the container's OOM killer: the backend says so on the status, or
    /// (as Diego checks) the container's events record it.
    async fn out_of_memory(&self, status: &ExitStatus) -> bool {
        if status.oom_killed {
            return true;
        }
        match self.ctx.backend.info(&self.ctx.handle).await {
            Ok(info) => info
                .events
                .iter()
                .any(|e| e.eq_ignore_ascii_case("out of memory")),
            Err(err) => {
                tracing::warn!(handle = %self.ctx.handle, %err, "could not read container info after exit");
                false
            }
        }
    }
}

async fn maybe(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => pending().await,
    }
}

#[async_trait]
impl Step for RunStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        if cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let ctx = &self.ctx;
        // Not raced against `cancel`: a process created after we stopped waiting would be
        // left running unsupervised. Cancellation is handled as soon as it exists.
        let process = match self.process().await {
            Ok(p) => p,
            Err(err) => {
                self.note(&format!("failed-creating-process: {err}"));
                return Err(StepError::Backend(err));
            }
        };
        let pid = process.id;
        let mut events = process.events;
        tracing::debug!(handle = %ctx.handle, process = %pid, path = %self.action.path, "started process");

        let (mut out, mut err) = (LineBuffer::default(), LineBuffer::default());
        let mut cancelled = false;
        let mut killed = false;
        let mut kill_timer: Option<Pin<Box<Sleep>>> = None;
        let mut exit_timer: Option<Pin<Box<Sleep>>> = None;

        let status = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(ProcessEvent::Stdout(b)) => self.output(&mut out, LogStream::Stdout, &b),
                    Some(ProcessEvent::Stderr(b)) => self.output(&mut err, LogStream::Stderr, &b),
                    Some(ProcessEvent::Exited(status)) => break status,
                    None => {
                        return Err(StepError::Backend(diego_garden::GardenError::Unavailable(format!(
                            "process {pid:?} output ended without an exit status"
                        ))))
                    }
                },
                _ = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    tracing::debug!(handle = %ctx.handle, process = %pid, "cancelled: sending SIGTERM");
                    if let Err(e) = ctx.backend.signal(&ctx.handle, &pid, Signal::Term).await {
                        tracing::warn!(handle = %ctx.handle, process = %pid, err = %e, "SIGTERM failed");
                    }
                    kill_timer = Some(Box::pin(sleep(ctx.graceful_shutdown)));
                }
                _ = maybe(&mut kill_timer) => {
                    kill_timer = None;
                    killed = true;
                    tracing::info!(handle = %ctx.handle, process = %pid, "graceful shutdown interval exceeded: sending SIGKILL");
                    if let Err(e) = ctx.backend.signal(&ctx.handle, &pid, Signal::Kill).await {
                        tracing::warn!(handle = %ctx.handle, process = %pid, err = %e, "SIGKILL failed");
                    }
                    exit_timer = Some(Box::pin(sleep(EXIT_TIMEOUT)));
                }
                _ = maybe(&mut exit_timer) => {
                    tracing::error!(handle = %ctx.handle, process = %pid, "process did not exit after SIGKILL");
                    return Err(StepError::ExitTimeout);
                }
            }
        };
        self.flush(&mut out, LogStream::Stdout);
        self.flush(&mut err, LogStream::Stderr);

        let code = status.code;
        let mut log_message = format!("Exit status {code}");
        // The failure reason is the same text as the log line (diego-spec §1.1's failure
        // reasons: `Exit status N`, `… (out of memory)`).
        let mut emittable = format!("Exit status {code}");
        if killed {
            log_message.push_str(&format!(
                " (exceeded {} graceful shutdown interval)",
                go_duration(ctx.graceful_shutdown)
            ));
        }
        if code != 0 && self.out_of_memory(&status).await {
            log_message.push_str(" (out of memory)");
            emittable.push_str(" (out of memory)");
        }
        self.note(&log_message);
        tracing::info!(handle = %ctx.handle, process = %pid, code, cancelled, "process exited");

        if killed {
            Err(StepError::ExceededGracefulShutdownInterval)
        } else if cancelled {
            Err(StepError::Cancelled)
        } else if code != 0 {
            Err(StepError::Emittable(emittable))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diego_garden::fake::FakeProcess;
    use diego_model::action::ResourceLimits;
    use diego_model::EnvironmentVariable;

    use super::*;
    use crate::steps::testing::{run_action, Harness};
    use diego_logs::LogLine;

    #[tokio::test]
    async fn success_streams_lines_with_source_and_stream() {
        let h = Harness::new(|_| FakeProcess {
            stdout: b"hello\nwor".to_vec(),
            stderr: b"oops\n".to_vec(),
            ..FakeProcess::exits(0)
        })
        .await;
        let mut a = run_action("app");
        a.log_source = "APP/PROC/WEB".into();
        let step = RunStep::new(a, h.ctx.with_source("APP/PROC/WEB"));
        step.perform(CancellationToken::new()).await.unwrap();
        let lines = h.sink.lines();
        let summary: Vec<(&str, LogStream)> = lines.iter().map(|l| (l.message.as_str(), l.stream)).collect();
        assert_eq!(
            summary,
            [
                ("hello", LogStream::Stdout),
                ("oops", LogStream::Stderr),
                ("wor", LogStream::Stdout),
                ("Exit status 0", LogStream::Stdout),
            ]
        );
        let LogLine {
            source_type,
            instance_index,
            log_guid,
            ..
        } = &lines[0];
        assert_eq!(
            (source_type.as_str(), *instance_index, log_guid.as_str()),
            ("APP/PROC/WEB", Some(0), "log-guid")
        );
    }

    #[tokio::test]
    async fn process_spec_carries_env_dir_user_and_nofile() {
        let h = Harness::new(|_| FakeProcess::exits(0)).await;
        let mut a = run_action("/bin/app");
        a.args = vec!["-p".into(), "8080".into()];
        a.dir = "/home/vcap".into();
        a.user = "vcap".into();
        a.env = vec![EnvironmentVariable::new("A", "1")];
        a.resource_limits = Some(ResourceLimits { nofile: Some(4096) });
        let mut ctx = h.ctx.clone();
        ctx.extra_env = vec!["CF_INSTANCE_IP=10.0.0.1".into()];
        RunStep::new(a, ctx)
            .perform(CancellationToken::new())
            .await
            .unwrap();
        let spec = h.specs().pop().unwrap();
        assert_eq!(spec.path, "/bin/app");
        assert_eq!(spec.args, ["-p", "8080"]);
        assert_eq!(spec.env, ["A=1", "CF_INSTANCE_IP=10.0.0.1"]);
        assert_eq!(spec.dir, "/home/vcap");
        assert_eq!(spec.user, "vcap");
        assert_eq!(spec.limits.nofile, Some(4096));
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_diegos_text() {
        let h = Harness::new(|_| FakeProcess::exits(3)).await;
        let err = RunStep::new(run_action("app"), h.ctx.with_source("APP/PROC/WEB"))
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Exit status 3".into()));
        assert_eq!(h.sink.messages(), ["Exit status 3"]);
    }

    #[tokio::test]
    async fn oom_is_reported() {
        let h = Harness::new(|_| FakeProcess {
            exit: Some(ExitStatus {
                code: 137,
                signal: Some(9),
                oom_killed: true,
            }),
            ..FakeProcess::default()
        })
        .await;
        let err = RunStep::new(run_action("app"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.emittable().unwrap(), "Exit status 137 (out of memory)");
        assert_eq!(h.sink.messages(), ["Exit status 137 (out of memory)"]);
    }

    #[tokio::test]
    async fn suppressed_output_logs_nothing() {
        let h = Harness::new(|_| FakeProcess {
            stdout: b"secret\n".to_vec(),
            ..FakeProcess::exits(1)
        })
        .await;
        let mut a = run_action("app");
        a.suppress_log_output = true;
        let err = RunStep::new(a, h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::Emittable(_)));
        assert!(h.sink.lines().is_empty());
    }

    #[tokio::test]
    async fn backend_refusal_is_a_backend_error() {
        let h = Harness::new(|_| FakeProcess::exits(0)).await;
        let err = RunStep::new(run_action(""), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::Backend(_)), "{err:?}");
        assert!(err.emittable().is_none());
        assert_eq!(
            h.sink.messages(),
            ["failed-creating-process: invalid: process path is required"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_sends_term_and_a_process_that_exits_ends_cancelled() {
        let h = Harness::new(|_| FakeProcess::runs_forever()).await;
        let cancel = CancellationToken::new();
        let step = RunStep::new(run_action("app"), h.ctx.clone());
        let run = tokio::spawn({
            let cancel = cancel.clone();
            async move { step.perform(cancel).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!run.is_finished());
        cancel.cancel();
        assert_eq!(run.await.unwrap(), Err(StepError::Cancelled));
        assert_eq!(h.signals(), [Signal::Term]);
        assert_eq!(h.sink.messages(), ["Exit status 143"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_ignoring_term_is_killed_after_the_grace_period() {
        let h = Harness::new(|_| FakeProcess::runs_forever())
            .await
            .ignoring_term();
        let mut ctx = h.ctx.clone();
        ctx.graceful_shutdown = Duration::from_secs(10);
        let cancel = CancellationToken::new();
        let step = RunStep::new(run_action("app"), ctx);
        let run = tokio::spawn({
            let cancel = cancel.clone();
            async move { step.perform(cancel).await }
        });
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(h.signals(), [Signal::Term], "no SIGKILL before the grace period");
        assert_eq!(
            run.await.unwrap(),
            Err(StepError::ExceededGracefulShutdownInterval)
        );
        assert_eq!(h.signals(), [Signal::Term, Signal::Kill]);
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert_eq!(
            h.sink.messages(),
            ["Exit status 137 (exceeded 10s graceful shutdown interval)"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_survives_kill_times_out() {
        let h = Harness::new(|_| FakeProcess::runs_forever())
            .await
            .ignoring_all_signals();
        let mut ctx = h.ctx.clone();
        ctx.graceful_shutdown = Duration::from_secs(2);
        let cancel = CancellationToken::new();
        cancel.cancel();
        // Already cancelled before starting: nothing runs.
        let step = RunStep::new(run_action("app"), ctx);
        assert_eq!(step.perform(cancel).await, Err(StepError::Cancelled));
        assert!(h.specs().is_empty());

        let cancel = CancellationToken::new();
        let run = tokio::spawn({
            let cancel = cancel.clone();
            async move { step.perform(cancel).await }
        });
        tokio::task::yield_now().await;
        cancel.cancel();
        assert_eq!(run.await.unwrap(), Err(StepError::ExitTimeout));
        assert_eq!(h.signals(), [Signal::Term, Signal::Kill]);
    }
}
