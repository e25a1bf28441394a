//! A process a [`Host`](super::Host) started: its PID, its output files, its exit.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// A child process started in a host's network namespace, leading a process group of its
/// own. Clones are handles of the same process; the host keeps one, to kill it with the host.
#[derive(Clone)]
pub struct HostProcess(Arc<Inner>);

struct Inner {
    name: String,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    child: Mutex<Child>,
}

impl HostProcess {
    pub(super) fn new(name: &str, child: Child, stdout: PathBuf, stderr: PathBuf) -> Self {
        HostProcess(Arc::new(Inner {
            name: name.to_string(),
            pid: child.id(),
            stdout,
            stderr,
            child: Mutex::new(child),
        }))
    }

    /// The name it was spawned with (its log files are `<name>.stdout` and `<name>.stderr`).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// The file its standard output goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.0.stdout
    }

    /// The file its standard error goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.0.stderr
    }

    /// Its standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.0.stdout).unwrap_or_default()
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.0.stderr).unwrap_or_default()
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        // A panic while holding the lock leaves the child as it was: still usable.
        self.0.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its exit status once it has exited (it is reaped then), `None` while it runs.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Whether it still runs (not exited, not a zombie).
    pub fn is_running(&self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `limit` for it to exit; its exit status, or `None` if it still runs.
    pub async fn exited(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILLs its process group (it and every descendant that stayed in the group) and
    /// reaps it. Killing a process that has exited is no error.
    pub fn kill(&self) {
        self.signal_group(Signal::SIGKILL);
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` to its process group, and to it (in case it left the group). A group
    /// that is gone is no error.
    pub fn signal_group(&self, signal: Signal) {
        if self.try_exit().is_some() {
            // Reaped: its pid (and so the group id) may belong to another process by now.
            return;
        }
        let pid = Pid::from_raw(self.0.pid as i32);
        let _ = killpg(pid, signal);
        let _ = kill(pid, signal);
    }

    /// The last `n` lines of its standard error.
    pub(super) fn stderr_tail(&self, n: usize) -> Vec<String> {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

impl std::fmt::Debug for HostProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProcess")
            .field("name", &self.0.name)
            .field("pid", &self.0.pid)
            .finish()
    }
}
