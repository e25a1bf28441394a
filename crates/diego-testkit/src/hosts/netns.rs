//! Network namespaces as files under `/var/run/netns` (what `ip netns add` makes): which
//! processes are in one, starting a process in one, and sweeping the namespaces that a test
//! process which died left behind.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where `ip netns add NAME` bind-mounts the namespace.
pub(super) const RUN_DIR: &str = "/var/run/netns";

/// Every namespace this harness makes is named `dg<pid>-<n>…`: `<pid>` is the test process.
pub(super) const PREFIX: &str = "dg";

pub(super) fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// The process ids (thread-group leaders, not this process) whose network namespace is the
/// one bound at `ns`. Zombies have left every namespace and are not listed.
pub(super) fn processes_in(ns: &Path) -> io::Result<Vec<u32>> {
    let target = std::fs::metadata(ns)?;
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Gone meanwhile, or a zombie: not in the namespace any more.
        let Ok(net) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if net.dev() == target.dev() && net.ino() == target.ino() {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// SIGKILLs each of `pids`; one that is already gone is no error.
pub(super) fn kill_all(pids: &[u32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Spawns `cmd` in the network namespace bound at `ns`. A thread of this process joins the
/// namespace (`setns(2)` moves only the calling thread) and spawns from there; the child
/// inherits the namespace of the thread that made it. Its mount namespace is this process's
/// (unlike `ip netns exec`, `/sys` is not remounted).
pub(super) fn spawn_in(ns: &Path, cmd: &mut Command) -> io::Result<Child> {
    let file = File::open(ns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("joining network namespace {}: {e}", ns.display()),
                    )
                })?;
                drop(file);
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
    })
}

/// The test process id in a namespace name of this harness (`dg<pid>-<n>[-<host>]`).
pub(super) fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let counter = rest.split('-').next()?;
    if counter.is_empty() || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes the namespaces of this harness whose test process is gone (killed before its
/// `Net` was dropped), after SIGKILLing what still runs in them — processes a test of this
/// harness started there. Returns the names removed.
pub(super) fn sweep_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(pid) = owner(&name) else { continue };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Ok(pids) = processes_in(&entry.path()) {
            kill_all(&pids);
        }
        if super::ip::ip(&["netns", "del", &name]).is_ok() {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_pid_of_names_of_this_harness_only() {
        assert_eq!(owner("dg123-0"), Some(123));
        assert_eq!(owner("dg123-4-cell-z1"), Some(123));
        assert_eq!(owner("dg123"), None);
        assert_eq!(owner("dg123-x"), None);
        assert_eq!(owner("dgx-1"), None);
        assert_eq!(owner("ci-host"), None);
        assert_eq!(owner("dg-1"), None);
    }
}
