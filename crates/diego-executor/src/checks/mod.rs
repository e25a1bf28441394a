//! Declarative health checks of LRP instances (diego-spec §2.2), probed **from the cell**.
//!
//! Diego runs its `healthcheck` binary as a sidecar process inside the container; we probe from
//! the host instead, so checks need no binary in the rootfs and cost no process per check. A
//! check names a *container* port; the caller's [`PortResolver`] says which host address that
//! is (the runc backend: `127.0.0.1:<host port>` from its net-in mapping; the process backend:
//! the same port on loopback). Messages keep Diego's texts, and probe failures read like the
//! `healthcheck` binary's output.
//!
//! Caveat: the runc net-in forwarder is a userspace proxy that accepts every connection before
//! dialing the container, so a TCP probe of its host port always passes; HTTP probes are not
//! fooled. Fixing that needs a backend method to dial a container port (docs/080-executor.md).
//!
//! Three steps, each a [`Step`] so they compose with the action steps:
//! - [`StartupCheckStep`]: polls until every startup check passed (fast first, backing off to
//!   the unhealthy interval), then calls `on_healthy`; fails after the start timeout with
//!   `Instance never healthy after 1m0s: <last probe error>`;
//! - [`LivenessCheckStep`]: probes at each check's interval; the first failure fails it with
//!   `Instance became unhealthy: <probe error>`;
//! - [`ReadinessCheckStep`]: flips `on_ready(true/false)`; never fails.
//!
//! [`health_steps`] assembles them into the monitor part of an LRP's tree.

mod liveness;
mod poll;
mod probe;
mod readiness;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diego_model::CheckDefinition;

pub use liveness::LivenessCheckStep;
pub use poll::Backoff;
pub use probe::{Probe, ProbeKind, DEFAULT_PROBE_TIMEOUT};
pub use readiness::ReadinessCheckStep;
pub use startup::StartupCheckStep;

use crate::steps::{CodependentStep, FailStep, SerialStep, Step, StepError};
use diego_logs::LogStreamer;

/// Maps a check's container port to the host address the cell probes; `None` when the port is
/// not mapped (the probe then fails with `port is not mapped to the host`).
pub type PortResolver = Arc<dyn Fn(u16) -> Option<SocketAddr> + Send + Sync>;

/// Called once when the startup checks have passed (the container store marks the instance
/// RUNNING).
pub type OnHealthy = Arc<dyn Fn() + Send + Sync>;

/// Called with `true` when the readiness checks start passing, `false` when they fail (the rep
/// updates the instance's `routable`).
pub type OnReady = Arc<dyn Fn(bool) + Send + Sync>;

/// Source type of the executor's own lifecycle messages.
pub const CELL_LOG_SOURCE: &str = "CELL";
/// Source type of probe output and readiness messages, unless the check definition names one.
pub const HEALTH_LOG_SOURCE: &str = "HEALTH";

/// Diego's texts (executor `depot/steps/health_check_step.go`, `readiness_health_check_step.go`).
pub mod messages {
    pub const STARTING: &str = "Starting health monitoring of container";
    pub const HEALTHY: &str = "Container became healthy";
    pub const UNHEALTHY: &str = "Container became unhealthy";
    pub const READY: &str =
        "Container passed the readiness health check. Container marked ready and added to route pool.";
    pub const NOT_READY: &str = "Container failed the readiness health check. Container marked not ready and removed from route pool.";
}

/// Polling intervals (the rep's `healthy_monitoring_interval` / `unhealthy_monitoring_interval`
/// plus our fast start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    /// First wait after a failed startup / until-ready poll; grows by a tenth each time up to `unhealthy_interval`.
    pub initial_interval: Duration,
    /// Steady wait between polls while not yet healthy / ready (Diego: 2 s).
    pub unhealthy_interval: Duration,
    /// Liveness and readiness interval of a check that gives none (Diego: 30 s).
    pub healthy_interval: Duration,
}

impl Default for CheckTiming {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(10),
            unhealthy_interval: Duration::from_secs(2),
            healthy_interval: Duration::from_secs(30),
        }
    }
}

/// What every check step needs. Cheap to clone.
/// Opens a connection to a container port from inside the container's network (see
/// `diego_garden::ContainerBackend::connect`); errors say why, as `io::Error`s.
pub type ContainerDialer = Arc<
    dyn Fn(u16) -> futures_util::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub struct CheckContext {
    pub resolver: PortResolver,
    /// When set, probes connect through it instead of to the resolved host address: exact even
    /// where a host port is a proxy that accepts before the container does.
    pub dialer: Option<ContainerDialer>,
    /// Lifecycle messages (`CELL`).
    pub cell_log: LogStreamer,
    /// Probe failures and readiness messages (`HEALTH`, or the definition's `log_source`).
    pub health_log: LogStreamer,
    pub timing: CheckTiming,
    /// HTTP client for HTTP checks: no proxy, no pooled connections (each probe dials afresh, so
    /// a dead server is seen at once).
    pub http: reqwest::Client,
    pub on_healthy: OnHealthy,
    pub on_ready: OnReady,
}

impl CheckContext {
    /// A context logging through `streamer` (its source replaced by `CELL` / `HEALTH`), with the
    /// default timing and callbacks that do nothing.
    pub fn new(resolver: PortResolver, streamer: &LogStreamer) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            resolver,
            dialer: None,
            cell_log: streamer.with_source(CELL_LOG_SOURCE),
            health_log: streamer.with_source(HEALTH_LOG_SOURCE),
            timing: CheckTiming::default(),
            http,
            on_healthy: Arc::new(|| {}),
            on_ready: Arc::new(|_| {}),
        }
    }

    /// Probes connect through `dialer` (into the container) rather than to host addresses.
    pub fn with_dialer(mut self, dialer: ContainerDialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    pub fn with_timing(mut self, timing: CheckTiming) -> Self {
        self.timing = timing;
        self
    }

    pub fn with_on_healthy(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_healthy = Arc::new(f);
        self
    }

    pub fn with_on_ready(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.on_ready = Arc::new(f);
        self
    }

    /// The same context with probe output under `source_type` (empty = keep).
    pub fn with_health_source(&self, source_type: &str) -> Self {
        Self {
            health_log: self.health_log.with_source(source_type),
            ..self.clone()
        }
    }
}

/// The monitor part of an LRP's tree for `def`, or `None` when it has no checks at all (then,
/// as in Diego, the instance is RUNNING as soon as its action starts).
///
/// Shape (the caller puts it beside the action: `Codependent(action, this)`, diego-spec §2.1):
///
/// ```text
/// Codependent(
///     Serial(Startup(startup_checks, or checks when none), Liveness(checks)),
///     Readiness(readiness_checks),      // only when there are readiness checks
/// )
/// ```
///
/// Readiness runs from the start, beside the health monitor, as Diego's readiness step does.
/// The startup step calls `on_healthy` even when it has no checks (readiness-only definitions),
/// so with `Some` the caller always learns RUNNING from `on_healthy`. Liveness without checks
/// waits for cancellation, so the tree never ends by itself while the instance is healthy (in a
/// codependent group a successful end would crash the instance). A malformed check (validation
/// should have refused it) gives a step that fails at once with `invalid action: …`.
pub fn health_steps(
    def: &CheckDefinition,
    start_timeout: Duration,
    ctx: &CheckContext,
) -> Option<Box<dyn Step>> {
    if def.checks.is_empty() && def.startup_checks.is_empty() && def.readiness_checks.is_empty() {
        return None;
    }
    let ctx = ctx.with_health_source(&def.log_source);
    let (liveness, startup, readiness) = match (
        probes(&def.checks),
        probes(&def.startup_checks),
        probes(&def.readiness_checks),
    ) {
        (Ok(l), Ok(s), Ok(r)) => (l, s, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return Some(Box::new(FailStep::new(StepError::Invalid(format!(
                "check_definition: {e}"
            )))));
        }
    };
    let startup = if startup.is_empty() {
        liveness.clone()
    } else {
        startup
    };
    let monitor: Box<dyn Step> = Box::new(SerialStep::new(vec![
        Box::new(StartupCheckStep::new(startup, start_timeout, ctx.clone())),
        Box::new(LivenessCheckStep::new(liveness, ctx.clone())),
    ]));
    if readiness.is_empty() {
        return Some(monitor);
    }
    Some(Box::new(CodependentStep::new(vec![
        monitor,
        Box::new(ReadinessCheckStep::new(readiness, ctx)),
    ])))
}

fn probes(checks: &[diego_model::Check]) -> Result<Vec<Probe>, String> {
    checks.iter().map(Probe::from_check).collect()
}

/// Waits until `cancel` fires; what a check step with nothing to probe does.
async fn until_cancelled(cancel: &tokio_util::sync::CancellationToken) -> Result<(), StepError> {
    cancel.cancelled().await;
    Err(StepError::Cancelled)
}
