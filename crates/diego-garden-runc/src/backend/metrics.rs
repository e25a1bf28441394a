//! A container's usage, read from its cgroup v1 leaves (`/sys/fs/cgroup/<hierarchy>/diego/<handle>`)
//! and its overlay's writable layer. Blocking: called on `spawn_blocking`.

use std::fs;
use std::path::Path;

use crate::cgroup;

/// Memory (`memory.usage_in_bytes`), CPU time (`cpuacct.usage`) and pids (`pids.current`) of
/// the container `handle`; a missing file reads as 0.
pub(super) fn cgroup_usage(cgroup_root: &Path, handle: &str) -> (u64, u64, u64) {
    let read = |hierarchy: &str, file: &str| -> u64 {
        let path = cgroup_root
            .join(hierarchy)
            .join(cgroup::PARENT.trim_start_matches('/'))
            .join(handle)
            .join(file);
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        read("memory", "memory.usage_in_bytes"),
        read("cpuacct", "cpuacct.usage"),
        read("pids", "pids.current"),
    )
}

/// Bytes of the regular files and symlinks under `dir` (not following symlinks).
pub(super) fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cgroup_files_and_sums_file_sizes() {
        let root = tempfile::tempdir().unwrap();
        let leaf = |h: &str| root.path().join(h).join("diego/c1");
        for h in ["memory", "cpuacct", "pids"] {
            fs::create_dir_all(leaf(h)).unwrap();
        }
        fs::write(leaf("memory").join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(leaf("cpuacct").join("cpuacct.usage"), "123\n").unwrap();
        fs::write(leaf("pids").join("pids.current"), "7\n").unwrap();
        assert_eq!(cgroup_usage(root.path(), "c1"), (4096, 123, 7));
        assert_eq!(cgroup_usage(root.path(), "gone"), (0, 0, 0));

        let upper = tempfile::tempdir().unwrap();
        fs::create_dir_all(upper.path().join("a/b")).unwrap();
        fs::write(upper.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        fs::write(upper.path().join("g"), vec![0u8; 24]).unwrap();
        assert_eq!(disk_usage(upper.path()), 1024);
    }
}
