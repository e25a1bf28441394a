//! Usage of a container's processes from `/proc`, and of its directory from a walk.

use std::path::Path;

use crate::procfs;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every mainstream
/// architecture (reading `sysconf(_SC_CLK_TCK)` would need libc).
const NS_PER_TICK: u64 = 1_000_000_000 / 100;

/// Resident memory of `pid` in bytes (`VmRSS`), 0 if it is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    procfs::status_kb(pid, "VmRSS").map_or(0, |kb| kb * 1024)
}

/// CPU time of `pid` (user + system) in ns, 0 if it is gone.
pub fn cpu_ns(pid: u32) -> u64 {
    procfs::Stat::read(pid).map_or(0, |s| s.cpu_ticks * NS_PER_TICK)
}

/// Bytes of the regular files under `dir` (symlinks not followed). Blocking.
pub fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        assert_eq!(rss_bytes(u32::MAX), 0);
        let _ = cpu_ns(me); // may legitimately be 0 ticks early on
    }
}
