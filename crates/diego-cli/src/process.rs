//! Process-wide concerns of the server roles (`diego bbs`, `diego dev`): logging and the
//! one shutdown token that signals cancel.

use std::io::IsTerminal as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests running two roles in one process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// How long components get to stop after the shutdown signal before the process gives up
/// on them (a stuck connection must not keep a server from exiting).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM, so every component stops cleanly; a
/// second signal exits at once.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "stopping (send the signal again to exit at once)");
        shutdown.cancel();
        let signal = wait_for_signal().await;
        eprintln!("{signal} again: exiting without waiting");
        std::process::exit(130);
    });
}

/// Completes `grace` after `shutdown` is cancelled, and never before it is: a deadline for
/// stopping starts with the signal, not with the process.
pub async fn grace_expired(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// The next SIGINT or SIGTERM, by name.
pub async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                () = ctrl_c => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                ctrl_c.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "Ctrl-C"
    }
}

/// Whether this process runs as root (real uid 0), read from /proc (no libc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
