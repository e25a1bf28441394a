//! Action steps (diego-spec §2): one file per action kind, each a [`Step`] that runs until it
//! finishes or its [`CancellationToken`] fires. Combinators hold their children as
//! `Box<dyn Step>`; [`crate::transformer`] builds the tree from an [`diego_model::Action`].
//!
//! Errors keep Diego's distinction between *emittable* errors (text a user may see, e.g.
//! `Exit status 1`, used for progress messages and failure reasons) and
//! internal ones (a backend failure), see [`StepError::emittable`].

mod codependent;
mod download;
mod emit_progress;
mod parallel;
mod run;
mod serial;
mod timeout;
mod try_step;
mod unsupported;
mod upload;

#[cfg(test)]
pub(crate) mod testing;

pub use codependent::CodependentStep;
pub use download::{byte_size, DownloadStep};
pub use emit_progress::EmitProgressStep;
pub use parallel::ParallelStep;
pub use run::RunStep;
pub use serial::SerialStep;
pub use timeout::TimeoutStep;
pub use try_step::TryStep;
pub use unsupported::FailStep;
pub use upload::UploadStep;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diego_garden::{DynBackend, GardenError};
use tokio_util::sync::CancellationToken;

use crate::download_cache::DownloadCache;
use diego_logs::LogStreamer;

/// Diego's default (and minimum) time between SIGTERM and SIGKILL when a run step is cancelled.
pub const DEFAULT_GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

/// How long to wait for a process to exit after SIGKILL before giving up on it.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(1);

/// One node of a running action tree.
#[async_trait]
pub trait Step: Send + Sync {
    /// Runs to completion. When `cancel` fires the step stops what it is doing (a run step
    /// signals its process) and returns [`StepError::Cancelled`] or the error it ended with.
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError>;
}

/// Why a step did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A failure whose text may be shown to the user and recorded as the failure reason.
    #[error("{0}")]
    Emittable(String),
    /// Stopped because it was cancelled (a run step's process exited after SIGTERM).
    #[error("cancelled")]
    Cancelled,
    /// Cancelled, and the process ignored SIGTERM for the whole graceful shutdown interval, so
    /// it was killed.
    #[error("exceeded graceful shutdown interval")]
    ExceededGracefulShutdownInterval,
    /// The process did not even exit after SIGKILL.
    #[error("process did not exit")]
    ExitTimeout,
    /// A codependent child ended successfully, which for co-running daemons is a failure.
    #[error("Codependent step exited")]
    CodependentStepExited,
    /// Several children failed (parallel, codependent); joined with `"; "` as Diego does.
    #[error("{}", join(.0))]
    Aggregate(Vec<StepError>),
    /// The container backend failed (process could not start, stream lost).
    #[error("container backend: {0}")]
    Backend(#[source] GardenError),
    /// The action cannot be run as given (should have been caught by validation).
    #[error("invalid action: {0}")]
    Invalid(String),
    /// This action kind is not implemented yet.
    #[error("{0} actions are not supported yet")]
    Unsupported(&'static str),
}

fn join(errs: &[StepError]) -> String {
    errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

impl StepError {
    /// The user-facing text of this error, if it has one: an emittable error's message, or the
    /// emittable messages of an aggregate's members joined with `"; "`.
    pub fn emittable(&self) -> Option<String> {
        match self {
            StepError::Emittable(m) => Some(m.clone()),
            StepError::Aggregate(errs) => {
                let parts: Vec<String> = errs.iter().filter_map(StepError::emittable).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            _ => None,
        }
    }

    /// Whether the step ended because it was cancelled (with or without a SIGKILL).
    pub fn is_cancellation(&self) -> bool {
        matches!(
            self,
            StepError::Cancelled | StepError::ExceededGracefulShutdownInterval
        )
    }
}

/// What every step needs: the backend, the container, where its logs go, and settings.
#[derive(Clone)]
pub struct StepContext {
    pub backend: DynBackend,
    /// The container's handle in the backend.
    pub handle: String,
    pub streamer: LogStreamer,
    /// SIGTERM → SIGKILL delay for cancelled run steps.
    pub graceful_shutdown: Duration,
    /// `KEY=VALUE` entries appended to every run step's env (e.g. `CF_INSTANCE_*`).
    pub extra_env: Vec<String>,
    /// HTTP client for download and upload steps (shared: it pools connections).
    pub http: reqwest::Client,
    /// Names the run steps' processes as the tree is built.
    pub process_names: ProcessNames,
    /// Resuming a tree whose container outlived an earlier run of the cell: a run step whose
    /// process exists is attached to (its output replayed, its exit awaited) instead of run.
    pub resume: bool,
    /// The cell's download cache, for downloads with a `cache_key` (none: never cached).
    pub download_cache: Option<Arc<DownloadCache>>,
}

/// Names run steps' processes in the order a tree is built (`action-0`, `action-1`, …), so
/// the same tree built again after a restart of the cell names them the same and can find
/// them. An empty prefix leaves naming to the backend.
#[derive(Clone, Default)]
pub struct ProcessNames {
    prefix: String,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ProcessNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next: Default::default(),
        }
    }

    /// The next process id (empty when unnamed).
    pub fn next(&self) -> String {
        if self.prefix.is_empty() {
            return String::new();
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

impl StepContext {
    pub fn new(backend: DynBackend, handle: impl Into<String>, streamer: LogStreamer) -> Self {
        Self {
            backend,
            handle: handle.into(),
            streamer,
            graceful_shutdown: DEFAULT_GRACEFUL_SHUTDOWN,
            extra_env: Vec::new(),
            http: reqwest::Client::new(),
            process_names: ProcessNames::default(),
            resume: false,
            download_cache: None,
        }
    }

    /// The same context naming its run steps' processes `<prefix>-0`, `<prefix>-1`, ….
    pub fn with_process_names(&self, prefix: &str) -> Self {
        Self {
            process_names: ProcessNames::new(prefix),
            ..self.clone()
        }
    }

    /// The same context logging under `source_type` (empty = inherit).
    pub fn with_source(&self, source_type: &str) -> Self {
        Self {
            streamer: self.streamer.with_source(source_type),
            ..self.clone()
        }
    }
}

/// A duration as Go prints it (`10s`, `1m0s`, `1.5s`, `500ms`, `1h0m0s`), since Diego's
/// messages ("exceeded 1m0s timeout") are written that way.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(nanos, div));
    }
    let secs_total = d.as_secs();
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = decimal(nanos % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `value / div` with the fraction's trailing zeros trimmed (`1500, 1000` → `1.5`).
fn decimal(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_250), "1h2m3.25s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn emittable_text_of_aggregates() {
        let e = StepError::Aggregate(vec![
            StepError::Emittable("a: Exited with status 1".into()),
            StepError::Backend(GardenError::Unavailable("x".into())),
            StepError::Emittable("b".into()),
        ]);
        assert_eq!(e.emittable().as_deref(), Some("a: Exited with status 1; b"));
        assert_eq!(
            e.to_string(),
            "a: Exited with status 1; container backend: unavailable: x; b"
        );
        assert_eq!(StepError::Cancelled.emittable(), None);
        assert!(StepError::ExceededGracefulShutdownInterval.is_cancellation());
        assert!(!StepError::CodependentStepExited.is_cancellation());
    }
}
