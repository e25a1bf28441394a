//! Starting one host process, pumping its output into its [`EventLog`] (and files), and
//! signalling it.
//!
//! Each process leads its own process group (`process_group(0)`, a safe std API), and signals
//! go to the whole group, as a terminal's Ctrl-C does: there is no pid namespace whose teardown
//! would reap a process's descendants, so signalling only the leader would leave e.g. the
//! children of a `sh -c` wrapper running after their process "exited".

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

use crate::event_log::EventLog;
use crate::{ExitStatus, GardenError, ProcessEvent, Signal};

/// `PATH` every process starts with; container and process env may override it.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long to keep reading output after the process exited. Output it wrote before exiting
/// is in the pipe and reads at once; the wait only matters when a descendant that outlived
/// it still holds the pipe open, and then we stop rather than wait for that descendant.
const PIPE_DRAIN: Duration = Duration::from_millis(250);

/// Everything needed to start one process, already validated and resolved.
pub struct Launch {
    pub path: String,
    pub args: Vec<String>,
    /// In order; later entries override earlier ones.
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub nofile: Option<u64>,
}

impl Launch {
    /// Spawns the process; stdout/stderr are piped, stdin is closed.
    pub fn spawn(&self) -> Result<Child, GardenError> {
        let mut cmd = match self.nofile {
            // prlimit sets the rlimit on itself and execs the command, so the pid stays the same.
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&self.path);
                c
            }
            None => Command::new(&self.path),
        };
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // If the supervising task is dropped (runtime shutdown), do not leave the leader behind.
            .kill_on_drop(true);
        cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                GardenError::Invalid(format!("cannot execute {:?}: {e}", self.path))
            }
            _ => GardenError::Unavailable(format!("spawning {:?}: {e}", self.path)),
        })
    }
}

/// Pumps the child's output into `log` and `<proc_dir>/{stdout,stderr}`, waits for it, writes
/// `<proc_dir>/exit` and pushes `Exited`. Runs until the process has exited.
pub async fn supervise(mut child: Child, log: EventLog, proc_dir: PathBuf) {
    if let Err(e) = tokio::fs::create_dir_all(&proc_dir).await {
        warn!(dir = %proc_dir.display(), error = %e, "cannot create process directory; output is only streamed");
    }
    let mut out = tokio::spawn(pump(
        child.stdout.take(),
        log.clone(),
        proc_dir.join("stdout"),
        ProcessEvent::Stdout,
    ));
    let mut err = tokio::spawn(pump(
        child.stderr.take(),
        log.clone(),
        proc_dir.join("stderr"),
        ProcessEvent::Stderr,
    ));
    let status = match child.wait().await {
        Ok(s) => exit_status(s),
        Err(e) => {
            warn!(error = %e, "waiting for process failed");
            ExitStatus {
                code: -1,
                ..Default::default()
            }
        }
    };
    let drained = tokio::time::timeout(PIPE_DRAIN, async {
        let _ = (&mut out).await;
        let _ = (&mut err).await;
    })
    .await;
    if drained.is_err() {
        debug!("a descendant still holds the output pipes; no longer reading them");
        out.abort();
        err.abort();
    }
    match serde_json::to_vec(&status) {
        Ok(json) => {
            if let Err(e) = tokio::fs::write(proc_dir.join("exit"), json).await {
                debug!(error = %e, "cannot record exit status");
            }
        }
        Err(e) => debug!(error = %e, "cannot encode exit status"),
    }
    log.push(ProcessEvent::Exited(status));
}

async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    log: EventLog,
    file: PathBuf,
    event: fn(Bytes) -> ProcessEvent,
) {
    let Some(mut pipe) = pipe else { return };
    // The file is a convenience for inspection; streaming does not depend on it.
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .await
        .ok();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                log.push(event(Bytes::copy_from_slice(&buf[..n])));
                if let Some(f) = file.as_mut() {
                    if f.write_all(&buf[..n]).await.is_err() {
                        file = None;
                    }
                }
            }
        }
    }
}

/// A shell's view of how a process ended: its code, or 128 + the signal that killed it.
pub fn exit_status(s: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => ExitStatus {
            code,
            ..Default::default()
        },
        (None, Some(sig)) => ExitStatus {
            code: 128 + sig,
            signal: Some(sig),
            oom_killed: false,
        },
        (None, None) => ExitStatus {
            code: -1,
            ..Default::default()
        },
    }
}

/// Sends `signal` to the process group led by `pid` with the host's `kill` command.
/// A group that is already gone is not an error.
pub async fn signal_group(pid: u32, signal: Signal) -> Result<(), GardenError> {
    // `kill -- -0` would signal our own group (the server), `-1` every process we may signal.
    if pid <= 1 {
        return Err(GardenError::Unavailable(format!(
            "refusing to signal process group {pid}"
        )));
    }
    let out = Command::new("kill")
        .arg("-s")
        .arg(signal.number().to_string())
        .arg("--")
        .arg(format!("-{pid}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| GardenError::Unavailable(format!("running kill: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such process") {
        Ok(())
    } else {
        Err(GardenError::Unavailable(format!(
            "kill -s {} -- -{pid}: {}",
            signal.number(),
            stderr.trim()
        )))
    }
}

/// Resolves a process's working directory: empty = home, relative = under home, absolute =
/// the host path as given (processes see the host filesystem).
pub fn resolve_dir(home: &Path, dir: &str) -> PathBuf {
    if dir.is_empty() {
        home.to_path_buf()
    } else {
        home.join(dir)
    }
}

/// Splits `KEY=VALUE` entries; `what` names their origin in errors.
pub fn parse_env(what: &str, entries: &[String]) -> Result<Vec<(String, String)>, GardenError> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(GardenError::Invalid(format!(
                "{what} env entry {e:?} must be KEY=VALUE"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_and_env_resolve() {
        let home = Path::new("/d/h/root/home/vcap");
        assert_eq!(resolve_dir(home, ""), home);
        assert_eq!(resolve_dir(home, "app"), home.join("app"));
        assert_eq!(resolve_dir(home, "/srv"), PathBuf::from("/srv"));
        assert_eq!(
            parse_env("process", &["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
        assert!(parse_env("process", &["NOEQ".into()]).is_err());
        assert!(parse_env("process", &["=v".into()]).is_err());
    }
}
