//! Usage of a container's processes from `/proc`, and of its directory from a walk.

use std::path::Path;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every mainstream
/// architecture (reading `sysconf(_SC_CLK_TCK)` would need libc).
const NS_PER_TICK: u64 = 1_000_000_000 / 100;

/// Resident memory of `pid` in bytes (`VmRSS`), 0 if it is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| vm_rss_from_status(&s))
        .unwrap_or(0)
}

/// CPU time of `pid` (user + system) in ns, 0 if it is gone.
pub fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| ticks_from_stat(&s))
        .map_or(0, |t| t * NS_PER_TICK)
}

fn vm_rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime: fields 14 and 15 of `/proc/<pid>/stat`. The command name (field 2) may
/// contain spaces and parentheses, so count from the last `)`.
fn ticks_from_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
    fn parses_proc_files() {
        assert_eq!(
            vm_rss_from_status("Name:\tsh\nVmRSS:\t    1536 kB\n"),
            Some(1536 * 1024)
        );
        assert_eq!(vm_rss_from_status("Name:\tkthread\n"), None);
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100";
        assert_eq!(ticks_from_stat(stat), Some(12));
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        assert_eq!(rss_bytes(u32::MAX), 0);
        let _ = cpu_ns(me); // may legitimately be 0 ticks early on
    }
}
