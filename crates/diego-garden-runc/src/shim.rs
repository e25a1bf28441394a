//! The per-process supervisor ("shim"): a small process of its own that owns one process in a
//! container, so that the process, its output and its exit status outlive the garden server.
//!
//! The server starts one shim per process (`diego garden-shim …`, or the crate's
//! `diego-garden-shim` binary) and the shim:
//! 1. leaves the server's session (`setsid`), so a Ctrl-C or SIGKILL aimed at the server never
//!    reaches it, and becomes a child subreaper, so the container process — orphaned when
//!    `runc exec --detach` returns — is re-parented to it (environment.md R9);
//! 2. runs `runc exec --detach --pid-file DIR/pid --process DIR/process.json HANDLE` with the
//!    process's stdout and stderr going straight to `DIR/stdout` and `DIR/stderr` (runc hands a
//!    detached process its own stdio: no pipe, no copying process, nothing resident but us);
//! 3. reaps every child until the process itself exits, then writes `DIR/exit.json`
//!    ([`ExitStatus`], with `oom_killed` when the container's OOM killer fired meanwhile)
//!    atomically (temp file + rename) and exits.
//!
//! The server (live or restarted) reads the files: output by tailing `stdout`/`stderr`, the end
//! by `exit.json`. If runc cannot start the process, runc's exit code is the process's and its
//! message is in `stderr`, as with a foreground `runc exec`.
//!
//! The shim is synchronous and allocates little: its resident memory is the per-process
//! supervision cost `diego bench garden` reports.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diego_garden::ExitStatus;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup;

/// The files of one process, under `<container dir>/processes/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFiles {
    pub dir: PathBuf,
}

impl ProcessFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProcessFiles { dir: dir.into() }
    }
    /// The OCI process (`runc exec --process`).
    pub fn process_json(&self) -> PathBuf {
        self.dir.join("process.json")
    }
    /// The process's host pid (`runc exec --pid-file`).
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    /// The shim's own pid.
    pub fn shim_pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }
    /// Written once, atomically, when the process has exited.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// The shim's own diagnostics (never the process's output).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// The exit status, once `exit.json` exists.
    pub fn read_exit(&self) -> Option<ExitStatus> {
        let bytes = std::fs::read(self.exit()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The process's host pid, once runc has written it.
    pub fn read_pid(&self) -> Option<i32> {
        read_pid_file(&self.pid())
    }
}

fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What the shim is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub handle: String,
    pub dir: PathBuf,
}

impl ShimArgs {
    /// The arguments that [`ShimArgs::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        vec![
            "--runc".into(),
            self.runc.clone().into(),
            "--runc-root".into(),
            self.runc_root.clone().into(),
            "--handle".into(),
            self.handle.clone().into(),
            "--dir".into(),
            self.dir.clone().into(),
        ]
    }

    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut values: HashMap<String, OsString> = HashMap::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            if !matches!(flag.as_str(), "--runc" | "--runc-root" | "--handle" | "--dir") {
                return Err(format!("unknown argument {flag:?}"));
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(flag, value);
        }
        let mut take = |flag: &str| values.remove(flag).ok_or_else(|| format!("missing {flag}"));
        Ok(ShimArgs {
            runc: take("--runc")?.into(),
            runc_root: take("--runc-root")?.into(),
            handle: take("--handle")?.to_string_lossy().into_owned(),
            dir: take("--dir")?.into(),
        })
    }
}

/// How the server starts a shim: `program args… <ShimArgs>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl ShimCommand {
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        ShimCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// The shim's entry point: runs the process described by `args` and returns the shim's own exit
/// code (0 once `exit.json` is written, 2 when it could not even start).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = match ShimArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("diego garden-shim: {e}");
            return 2;
        }
    };
    let files = ProcessFiles::new(&args.dir);
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(files.shim_log())
        .ok();
    match supervise(&args, &files) {
        Ok(status) => match write_exit(&files, &status) {
            Ok(()) => 0,
            Err(e) => {
                note(&mut log, &format!("writing exit.json: {e}"));
                2
            }
        },
        Err(e) => {
            note(&mut log, &e);
            // Still tell the server the process is over, so nothing waits forever.
            let _ = write_exit(
                &files,
                &ExitStatus {
                    code: -1,
                    ..Default::default()
                },
            );
            2
        }
    }
}

fn note(log: &mut Option<File>, message: &str) {
    if let Some(log) = log {
        let _ = writeln!(log, "{message}");
    }
}

fn write_exit(files: &ProcessFiles, status: &ExitStatus) -> std::io::Result<()> {
    let tmp = files.dir.join("exit.json.tmp");
    let json = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    // Atomic by rename, not durable by fsync: what it must survive is the garden server
    // dying, not the host (a host crash takes the containers with it).
    let mut f = File::create(&tmp)?;
    f.write_all(&json)?;
    drop(f);
    std::fs::rename(&tmp, files.exit())
}

fn supervise(args: &ShimArgs, files: &ProcessFiles) -> Result<ExitStatus, String> {
    // Our own session: terminal signals and the server's process group no longer reach us.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("becoming a subreaper: {e}"))?;
    std::fs::write(files.shim_pid(), std::process::id().to_string())
        .map_err(|e| format!("writing shim.pid: {e}"))?;
    let stdout = File::create(files.stdout()).map_err(|e| format!("creating stdout: {e}"))?;
    let stderr = File::create(files.stderr()).map_err(|e| format!("creating stderr: {e}"))?;
    let ooms_before = oom_kills(&args.handle);

    let runc = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .args(["exec", "--detach", "--pid-file"])
        .arg(files.pid())
        .arg("--process")
        .arg(files.process_json())
        .arg(&args.handle)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("running {}: {e}", args.runc.display()))?;
    let runc_pid = Pid::from_raw(runc.id() as i32);
    // `runc` is reaped by the loop below, not through `Child`.
    drop(runc);

    let mut exited: HashMap<Pid, WaitStatus> = HashMap::new();
    let mut target: Option<Pid> = None;
    loop {
        if target.is_none() {
            if let Some(status) = exited.get(&runc_pid) {
                match wait_code(status) {
                    Some(0) => {}
                    // runc failed: its code is the process's, its message is in stderr.
                    Some(code) => return Ok(exit_status(code, false)),
                    None => {}
                }
                target = files.read_pid().map(Pid::from_raw);
                if target.is_none() {
                    return Err("runc exec succeeded but wrote no pid file".into());
                }
            }
        }
        if let Some(pid) = target {
            if let Some(status) = exited.get(&pid) {
                let code = wait_code(status).unwrap_or(-1);
                let oom = code == SIGKILL_EXIT && oom_kills(&args.handle) > ooms_before;
                return Ok(exit_status(code, oom));
            }
        }
        match waitpid(None, None) {
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    exited.insert(pid, status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                // Nothing left to reap: the process was not re-parented to us (it should
                // always be). Watch it from outside; its exit code is then unknown.
                let Some(pid) = target else {
                    return Err("runc exited without being reaped".into());
                };
                let started = Instant::now();
                while Path::new(&format!("/proc/{pid}")).exists() {
                    std::thread::sleep(Duration::from_millis(
                        if started.elapsed() < Duration::from_secs(1) {
                            5
                        } else {
                            100
                        },
                    ));
                }
                return Err(format!("process {pid} was not our child; exit status unknown"));
            }
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// Exit code of a process the kernel killed with SIGKILL (128 + 9).
pub const SIGKILL_EXIT: i32 = 137;

/// A wait status as a shell-style exit code (128 + N for signal N); `None` while it runs.
fn wait_code(status: &WaitStatus) -> Option<i32> {
    match *status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// An exit code as [`ExitStatus`]: codes 129–192 name the signal.
pub fn exit_status(code: i32, oom_killed: bool) -> ExitStatus {
    ExitStatus {
        code,
        signal: (129..=128 + 64).contains(&code).then_some(code - 128),
        oom_killed,
    }
}

/// How often the kernel's OOM killer fired in the container's memory cgroup (cgroup v1
/// `memory.oom_control`'s `oom_kill`); 0 when unknown.
pub fn oom_kills(handle: &str) -> u64 {
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
    use super::*;

    #[test]
    fn args_round_trip() {
        let args = ShimArgs {
            runc: "/usr/sbin/runc".into(),
            runc_root: "/run/d".into(),
            handle: "c1".into(),
            dir: "/depot/c1/processes/p1".into(),
        };
        assert_eq!(ShimArgs::parse(args.to_args()).unwrap(), args);
        assert!(ShimArgs::parse(["--handle".into()]).is_err());
        assert!(ShimArgs::parse(["--bogus".into(), "x".into()]).is_err());
        let mut partial = args.to_args();
        partial.truncate(6);
        assert_eq!(ShimArgs::parse(partial).unwrap_err(), "missing --dir");
    }

    #[test]
    fn exit_codes_above_128_name_the_signal() {
        assert_eq!(
            (exit_status(3, false).code, exit_status(3, false).signal),
            (3, None)
        );
        assert_eq!(exit_status(143, false).signal, Some(15));
        assert_eq!(
            exit_status(137, true),
            ExitStatus {
                code: 137,
                signal: Some(9),
                oom_killed: true
            }
        );
        assert_eq!(exit_status(128, false).signal, None);
        let killed = WaitStatus::Signaled(Pid::from_raw(5), nix::sys::signal::Signal::SIGKILL, false);
        assert_eq!(wait_code(&killed), Some(137));
        assert_eq!(wait_code(&WaitStatus::Exited(Pid::from_raw(5), 42)), Some(42));
    }

    #[test]
    fn reads_oom_kill_counts() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kills(text), Some(2));
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn exit_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let files = ProcessFiles::new(dir.path());
        assert_eq!(files.read_exit(), None);
        write_exit(&files, &exit_status(143, false)).unwrap();
        assert_eq!(files.read_exit(), Some(exit_status(143, false)));
        assert!(!dir.path().join("exit.json.tmp").exists());
    }
}
