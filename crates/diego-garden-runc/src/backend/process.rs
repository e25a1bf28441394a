//! One process in a container, as the server sees it: a [`shim`](crate::shim) owns the process
//! and writes its output and exit status to files; the server tails those files into the
//! process's [`EventLog`] (replayed in full to every attach, so a restarted server streams the
//! same bytes from the start).
//!
//! A process started by this server has its shim as a child, and the shim's exit is the prompt
//! signal that `exit.json` is there. A process found on disk after a restart is watched by
//! polling its files and its shim's pid.

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diego_garden::event_log::EventLog;
use diego_garden::{ExitStatus, GardenError, ProcessEvent};
use tracing::{debug, warn};

use crate::shim::{ProcessFiles, ShimArgs, ShimCommand};
use crate::{oci, Runc};

/// Output polling starts this fast after new output and backs off to [`SLOWEST_POLL`].
const FASTEST_POLL: Duration = Duration::from_millis(2);
const SLOWEST_POLL: Duration = Duration::from_millis(100);

/// A process started in a container, running or exited.
pub(super) struct Process {
    pub log: EventLog,
    pub files: ProcessFiles,
}

impl Process {
    pub fn running(&self) -> bool {
        self.log.exit_status().is_none()
    }

    /// The process's host pid, once runc has written it; `None` if it exited first.
    pub async fn pid(&self) -> Option<i32> {
        for _ in 0..250 {
            if !self.running() || self.files.read_exit().is_some() {
                return None;
            }
            if let Some(pid) = self.files.read_pid() {
                return Some(pid);
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
        let signal = nix::sys::signal::Signal::try_from(signal)
            .map_err(|e| GardenError::Invalid(format!("signal {signal}: {e}")))?;
        // The process is the shim's unreaped child until the shim has written exit.json, so
        // the pid cannot have been reused while that file is absent.
        if self.files.read_exit().is_none() {
            if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                // Exited meanwhile: what the caller wanted anyway.
                debug!(pid, %signal, error = %e, "kill failed");
            }
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

/// Writes `process` to `dir/process.json` and starts a shim running it in container `handle`;
/// a background task tails its output into the returned process's log and ends it with
/// `Exited`. `events` gets `"out of memory"` when the container's OOM killer took it.
pub(super) fn start(
    shim: &ShimCommand,
    runc: &Runc,
    handle: &str,
    dir: &Path,
    process: &oci::Process,
    events: Arc<Mutex<Vec<String>>>,
) -> Result<Arc<Process>, GardenError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| GardenError::Unavailable(format!("creating {}: {e}", dir.display())))?;
    let files = ProcessFiles::new(dir);
    let json = serde_json::to_vec(process).map_err(|e| GardenError::Unavailable(e.to_string()))?;
    std::fs::write(files.process_json(), json)
        .map_err(|e| GardenError::Unavailable(format!("writing {}: {e}", files.process_json().display())))?;
    let args = ShimArgs {
        runc: runc.binary().to_path_buf(),
        runc_root: runc.state_dir().to_path_buf(),
        handle: handle.to_string(),
        dir: dir.to_path_buf(),
    };
    let child = tokio::process::Command::new(&shim.program)
        .args(&shim.args)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            GardenError::Unavailable(format!("starting the shim {}: {e}", shim.program.display()))
        })?;
    let process = Arc::new(Process {
        log: EventLog::new(),
        files,
    });
    tokio::spawn(follow(process.clone(), Some(child), events));
    Ok(process)
}

/// A process found in `dir` after a restart: its output so far is replayed and the rest
/// follows live; if it exited meanwhile its log ends with the recorded status.
pub(super) fn recover(dir: &Path, events: Arc<Mutex<Vec<String>>>) -> Arc<Process> {
    let process = Arc::new(Process {
        log: EventLog::new(),
        files: ProcessFiles::new(dir),
    });
    tokio::spawn(follow(process.clone(), None, events));
    process
}

/// One output file being followed.
struct Tail {
    file: Option<std::fs::File>,
    path: std::path::PathBuf,
    event: fn(Bytes) -> ProcessEvent,
    /// Reused by every poll (a poll runs every 2–100 ms for each running process).
    buf: Vec<u8>,
}

impl Tail {
    /// Pushes whatever was appended since the last call; true if there was anything.
    fn pump(&mut self, log: &EventLog) -> bool {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut any = false;
        loop {
            match file.read(&mut self.buf) {
                Ok(0) | Err(_) => return any,
                Ok(n) => {
                    any = true;
                    log.push((self.event)(Bytes::copy_from_slice(&self.buf[..n])));
                }
            }
        }
    }
}

/// Tails the process's files into its log until `exit.json` appears, then drains them and
/// pushes `Exited`. With `child` (the shim, when this server started it) the shim's exit wakes
/// it at once; without, the files and the shim's pid are polled.
async fn follow(
    process: Arc<Process>,
    mut child: Option<tokio::process::Child>,
    events: Arc<Mutex<Vec<String>>>,
) {
    let files = &process.files;
    let mut tails = [
        Tail {
            file: None,
            path: files.stdout(),
            event: ProcessEvent::Stdout,
            buf: vec![0; 16 * 1024],
        },
        Tail {
            file: None,
            path: files.stderr(),
            event: ProcessEvent::Stderr,
            buf: vec![0; 16 * 1024],
        },
    ];
    let mut poll = FASTEST_POLL;
    let status = loop {
        let mut any = false;
        for t in &mut tails {
            any |= t.pump(&process.log);
        }
        if let Some(status) = files.read_exit() {
            break status;
        }
        let shim_gone = match child.as_mut() {
            Some(c) => {
                let exited = tokio::select! {
                    r = c.wait() => Some(r),
                    _ = tokio::time::sleep(poll) => None,
                };
                exited.is_some()
            }
            None => {
                tokio::time::sleep(poll).await;
                !shim_alive(files)
            }
        };
        if shim_gone {
            if let Some(status) = files.read_exit() {
                break status;
            }
            // Only if it died without a word (killed, say): the process's fate is unknown.
            warn!(dir = %files.dir.display(), "the process's shim is gone without an exit status");
            break ExitStatus {
                code: -1,
                ..Default::default()
            };
        }
        poll = if any {
            FASTEST_POLL
        } else {
            (poll * 2).min(SLOWEST_POLL)
        };
    };
    for t in &mut tails {
        t.pump(&process.log);
    }
    if status.oom_killed {
        events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push("out of memory".into());
    }
    // The shim exits right after writing exit.json: reap it before anyone hears of the exit,
    // so that no zombie of ours outlives the process.
    if let Some(mut shim) = child {
        let _ = tokio::time::timeout(Duration::from_secs(5), shim.wait()).await;
    }
    process.log.push(ProcessEvent::Exited(status));
}

/// Is the shim recorded in `shim.pid` still alive (and still a shim for this process)?
fn shim_alive(files: &ProcessFiles) -> bool {
    let Some(pid) = std::fs::read_to_string(files.shim_pid())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        // Not written yet, or never: a shim that is starting writes it first thing; treat a
        // missing file as alive unless the process directory has an exit already.
        return files.read_exit().is_none();
    };
    // A reused pid would not have our process directory on its command line.
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let dir = files.dir.as_os_str().as_encoded_bytes();
            cmdline.split(|b| *b == 0).any(|arg| arg == dir)
        }
        Err(_) => false,
    }
}
