//! Where containers' cgroups live. An absolute `cgroupsPath` puts every container at
//! `/diego/<handle>` in every hierarchy, whatever cgroup the backend itself runs in (a relative
//! path would nest under the caller's cgroup, which differs per hierarchy on cgroup v1 hosts).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The parent of all containers' cgroups, in every hierarchy.
pub const PARENT: &str = "/diego";

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The OCI `linux.cgroupsPath` of a container.
pub fn cgroups_path(handle: &str) -> String {
    format!("{PARENT}/{handle}")
}

/// Removes `<hierarchy>/diego/<handle>` under `cgroup_root` in every hierarchy where runc left
/// it (a container whose runc was killed). Only empty cgroups can be removed, so this never
/// touches a running container. Returns the directories removed.
pub fn remove_leftovers(cgroup_root: &Path, handle: &str) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let hierarchies = match fs::read_dir(cgroup_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for hierarchy in hierarchies {
        let leaf = hierarchy?
            .path()
            .join(PARENT.trim_start_matches('/'))
            .join(handle);
        match fs::remove_dir(&leaf) {
            Ok(()) => removed.push(leaf),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", leaf.display()),
                ))
            }
        }
    }
    Ok(removed)
}

/// Whether the container's pids cgroup (v1) still holds a task. Tasks leave the cgroup when
/// they exit, before they are reaped, so an empty cgroup means every process has died.
/// `None` when the cgroup cannot be read (gone, or another cgroup layout).
pub fn has_tasks(cgroup_root: &Path, handle: &str) -> Option<bool> {
    let procs = cgroup_root
        .join("pids")
        .join(cgroups_path(handle).trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::read_to_string(procs).ok().map(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_under_diego() {
        assert_eq!(cgroups_path("abc"), "/diego/abc");
    }

    #[test]
    fn removes_only_the_handles_leaf_in_each_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for h in ["memory", "pids"] {
            fs::create_dir_all(root.path().join(h).join("diego/c1")).unwrap();
            fs::create_dir_all(root.path().join(h).join("diego/c2")).unwrap();
        }
        fs::create_dir_all(root.path().join("cpu")).unwrap();
        fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let mut removed = remove_leftovers(root.path(), "c1").unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                root.path().join("memory/diego/c1"),
                root.path().join("pids/diego/c1")
            ]
        );
        assert!(root.path().join("memory/diego/c2").is_dir());
        assert!(remove_leftovers(root.path(), "c1").unwrap().is_empty());
        assert!(remove_leftovers(&root.path().join("missing"), "c1")
            .unwrap()
            .is_empty());
    }
}
