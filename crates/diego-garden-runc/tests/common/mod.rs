//! Shared by the root-only integration tests: they skip, saying why, when not root or when a
//! host tool is missing. CI runs as root with the tools installed, so there nothing is skipped.

#![allow(dead_code)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// True when the test may run; otherwise prints why it is skipped.
pub fn root_with(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        eprintln!("SKIPPED {test}: needs root (mounts, runc)");
        return false;
    }
    if let Some(missing) = tools.iter().find(|t| !on_path(t)) {
        eprintln!("SKIPPED {test}: {missing} is not installed (apt-get install -y busybox-static runc)");
        return false;
    }
    true
}

/// A name unique across concurrent test processes (used as handle and runc id).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn mounted(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    diego_garden_runc::overlay::mount_points(&info)
        .filter(|p| p == path)
        .count()
}
