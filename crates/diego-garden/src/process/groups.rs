//! Process groups that outlive the server that started them, and how they are ended.
//!
//! Every process a container runs leads its own process group, and [`Group`] — its pgid (the
//! leader's pid), the leader's start time (field 22 of `/proc/<pid>/stat`, clock ticks since
//! boot) and the boot's id — is written to `<depot>/<handle>/processes/<id>/group` as soon as
//! it is spawned. A group is then ended by SIGKILL to the whole group, so the app's children
//! go too, whether or not the leader is still there; a backend opening a depot ends the
//! groups an earlier (crashed) server recorded there before removing those containers.
//!
//! Never killing a stranger: a group's number is its leader's pid, and Linux does not reuse
//! a pid while a process group of that number still exists. So:
//! - a recorded boot id other than this boot's means the group died with the old boot;
//! - a live process with the leader's pid but another start time means the pid was reused,
//!   hence the original group is gone;
//! - otherwise the group's members are the processes whose pgid is the number, started no
//!   earlier than the leader. (The one case this cannot tell apart: the leader's group died,
//!   its pid was reused by a process that made itself a group leader and then exited, leaving
//!   children. That takes a pid wrap-around between the crash and the restart.)
//!
//! Not covered: a descendant that leaves the group (`setsid`, `setpgid`, as a daemon does),
//! which only a cgroup or pid namespace would hold; and a crash between the fork and the
//! record's write (microseconds).

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use serde::{Deserialize, Serialize};

use crate::procfs::Stat;

/// The file, in a process's directory, holding its [`Group`].
pub const RECORD: &str = "group";

/// How often [`end`] looks again for members of groups it killed.
const POLL: Duration = Duration::from_millis(20);

/// One process group a container's process leads, as recorded at spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's id: its leader's pid.
    pub pgid: u32,
    /// The leader's start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was recorded; empty if unknown.
    pub boot_id: String,
}

impl Group {
    /// The group led by `pid`, a child just spawned into its own group (not yet waited for,
    /// so `/proc/<pid>` is there).
    pub fn of_leader(pid: u32) -> std::io::Result<Group> {
        let stat = Stat::read(pid)?;
        Ok(Group {
            pgid: pid,
            start_time: stat.start_time,
            boot_id: boot_id(),
        })
    }

    /// Writes the record into `proc_dir` (created if missing). Blocking.
    pub fn write(&self, proc_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(proc_dir)?;
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(proc_dir.join(RECORD), json)
    }

    /// The pids of the group's live (not zombie) members; empty once it is gone. Blocking.
    pub fn members(&self) -> Vec<u32> {
        if self.pgid <= 1 {
            return Vec::new();
        }
        let now = boot_id();
        if !self.boot_id.is_empty() && !now.is_empty() && self.boot_id != now {
            return Vec::new();
        }
        if let Ok(leader) = Stat::read(self.pgid) {
            if leader.start_time != self.start_time {
                return Vec::new(); // the pid was reused: the group is gone
            }
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                Stat::read(pid)
                    .is_ok_and(|s| s.pgid == self.pgid && !s.is_dead() && s.start_time >= self.start_time)
            })
            .collect()
    }

    /// SIGKILL to the whole group, if it still has members; whether it had. Blocking.
    pub fn kill(&self) -> bool {
        // Never the server's own group (every process of ours leads its own).
        if self.members().is_empty() || self.pgid == rustix::process::getpgrp().as_raw_pid() as u32 {
            return false;
        }
        let Some(pgid) = i32::try_from(self.pgid).ok().and_then(Pid::from_raw) else {
            return false;
        };
        // ESRCH: it has just gone.
        let _ = kill_process_group(pgid, Signal::KILL);
        true
    }
}

/// SIGKILL to the group just spawned with leader `pid` (our child, not yet waited for, so
/// the number is still its group's).
pub fn kill_new(pid: u32) {
    if let Some(pgid) = i32::try_from(pid).ok().filter(|&p| p > 1).and_then(Pid::from_raw) {
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

/// The groups recorded under `<container dir>/processes/*/group`. Blocking.
pub fn recorded(container_dir: &Path) -> Vec<Group> {
    let Ok(entries) = std::fs::read_dir(container_dir.join("processes")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join(RECORD)).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

/// Kills every one of `groups` that still has members and waits, up to `limit`, until none
/// has. Returns (groups that had members, groups with members still there at the end).
/// Blocking.
pub fn end(groups: &[Group], limit: Duration) -> (usize, usize) {
    let deadline = Instant::now() + limit;
    let mut live: Vec<&Group> = groups.iter().filter(|g| g.kill()).collect();
    let killed = live.len();
    while !live.is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
        // Members forked between the check and the kill are killed on the next round.
        live.retain(|g| g.kill());
    }
    (killed, live.len())
}

/// This boot's id, or empty if the kernel does not say.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_or_another_boot_is_not_the_group() {
        // This test process as a "leader": its own group may not be led by it, so only the
        // rules that return early are checked here.
        let me = std::process::id();
        let real = Group::of_leader(me).unwrap();
        let reused = Group {
            start_time: real.start_time + 1,
            ..real.clone()
        };
        assert!(reused.members().is_empty(), "another start time: not the group");
        let old_boot = Group {
            boot_id: "not-this-boot".into(),
            ..real.clone()
        };
        assert!(old_boot.members().is_empty(), "another boot: not the group");
        let init = Group { pgid: 1, ..real };
        assert!(init.members().is_empty(), "never group 1");
    }
}
