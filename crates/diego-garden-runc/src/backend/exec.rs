//! One process in a container: a foreground `runc exec --process FILE` child of this server,
//! whose stdout and stderr are pumped into the process's [`EventLog`] and whose exit code is
//! the process's (runc reports 128 + N for a process killed by signal N).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diego_garden::event_log::EventLog;
use diego_garden::{ExitStatus, GardenError, ProcessEvent};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, warn};

use crate::{cgroup, oci, Runc};

/// How long output is still collected after `runc exec` exited. (Without a terminal, runc
/// copies the process's stdio through pipes of its own and exits only once every holder of
/// them — background children included — has closed them, so this is a safety net.)
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Exit code of a process the kernel killed with SIGKILL (128 + 9).
const SIGKILL_EXIT: i32 = 137;

/// A process started in a container, running or exited.
pub(super) struct Process {
    pub log: EventLog,
    /// Where `runc exec` writes the process's host pid.
    pub pid_file: PathBuf,
}

impl Process {
    pub fn running(&self) -> bool {
        self.log.exit_status().is_none()
    }

    /// The process's host pid, once runc has written it; `None` if it exited first.
    pub async fn pid(&self) -> Option<u32> {
        for _ in 0..250 {
            if !self.running() {
                return None;
            }
            if let Ok(text) = tokio::fs::read_to_string(&self.pid_file).await {
                if let Ok(pid) = text.trim().parse() {
                    return Some(pid);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Sends signal number `signal` to the process (nothing if it has exited).
    pub async fn signal(&self, signal: i32) -> Result<(), GardenError> {
        let Some(pid) = self.pid().await else {
            return Ok(());
        };
        let out = tokio::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| GardenError::Unavailable(format!("running kill: {e}")))?;
        // Failing because it exited meanwhile is fine: it is what the caller wanted.
        if !out.status.success() && self.running() {
            debug!(pid, signal, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "kill failed");
        }
        Ok(())
    }

    /// Waits until the process has exited, or `limit` has passed.
    pub async fn wait(&self, limit: Duration) {
        let mut events = self.log.stream();
        let _ = tokio::time::timeout(limit, async {
            use futures_util::StreamExt;
            while events.next().await.is_some() {}
        })
        .await;
    }
}

/// Writes `process` to `dir/process.json` and starts it with `runc exec` in container
/// `handle`; a background task streams its output into the returned process's log and ends
/// it with `Exited`. `events` gets `"out of memory"` when the container's OOM killer took it.
pub(super) fn start(
    runc: &Runc,
    handle: &str,
    dir: &Path,
    process: &oci::Process,
    events: Arc<Mutex<Vec<String>>>,
) -> Result<Arc<Process>, GardenError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| GardenError::Unavailable(format!("creating {}: {e}", dir.display())))?;
    let json = serde_json::to_vec(process).map_err(|e| GardenError::Unavailable(e.to_string()))?;
    let process_file = dir.join("process.json");
    std::fs::write(&process_file, json)
        .map_err(|e| GardenError::Unavailable(format!("writing {}: {e}", process_file.display())))?;
    let pid_file = dir.join("pid");

    let ooms_before = oom_kills(handle);
    let mut cmd = tokio::process::Command::from(runc.exec(handle, &process_file, &pid_file));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GardenError::Unavailable(format!("running runc exec: {e}")))?;

    let log = EventLog::new();
    let stdout = child
        .stdout
        .take()
        .map(|o| pump(o, log.clone(), ProcessEvent::Stdout));
    let stderr = child
        .stderr
        .take()
        .map(|e| pump(e, log.clone(), ProcessEvent::Stderr));
    let handle = handle.to_string();
    let exit_log = log.clone();
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(status) => exit_status(status),
            Err(e) => {
                warn!(handle = %handle, error = %e, "waiting for runc exec failed");
                ExitStatus {
                    code: -1,
                    ..Default::default()
                }
            }
        };
        let pumps: Vec<_> = stdout.into_iter().chain(stderr).collect();
        for mut pump in pumps {
            if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pump).await.is_err() {
                pump.abort();
            }
        }
        let oom_killed = status.code == SIGKILL_EXIT && oom_kills(&handle) > ooms_before;
        if oom_killed {
            events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("out of memory".into());
        }
        exit_log.push(ProcessEvent::Exited(ExitStatus { oom_killed, ..status }));
    });
    Ok(Arc::new(Process { log, pid_file }))
}

fn pump(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    log: EventLog,
    event: fn(Bytes) -> ProcessEvent,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => log.push(event(Bytes::copy_from_slice(&buf[..n]))),
            }
        }
    })
}

/// runc exec's own status as the process's: its exit code already is 128 + N for a signal.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    };
    ExitStatus {
        code,
        signal: (129..=128 + 64).contains(&code).then_some(code - 128),
        oom_killed: false,
    }
}

/// How often the kernel's OOM killer fired in the container's memory cgroup (cgroup v1
/// `memory.oom_control`'s `oom_kill`); 0 when unknown.
pub(super) fn oom_kills(handle: &str) -> u64 {
    let path = Path::new(cgroup::CGROUP_ROOT)
        .join("memory")
        .join(cgroup::PARENT.trim_start_matches('/'))
        .join(handle)
        .join("memory.oom_control");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| parse_oom_kills(&text))
        .unwrap_or(0)
}

fn parse_oom_kills(oom_control: &str) -> Option<u64> {
    oom_control
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_codes_above_128_name_the_signal() {
        let of = |code: i32| exit_status(std::process::ExitStatus::from_raw(code << 8));
        assert_eq!((of(3).code, of(3).signal), (3, None));
        assert_eq!((of(143).code, of(143).signal), (143, Some(15)));
        assert_eq!((of(137).code, of(137).signal), (137, Some(9)));
        assert_eq!(of(128).signal, None);
        // runc itself killed by SIGKILL (raw wait status = the signal number).
        let killed = exit_status(std::process::ExitStatus::from_raw(9));
        assert_eq!((killed.code, killed.signal), (137, Some(9)));
    }

    #[test]
    fn reads_oom_kill_counts() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kills(text), Some(2));
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }
}
