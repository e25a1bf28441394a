//! What a test needs from the host before it may run: root, and tools on the PATH. Without
//! root such a test skips, saying why; as root a missing tool is a failure, not a skip —
//! `scripts/test` (what CI runs, as root) installs them all, so a broken install must not
//! pass silently.

use std::path::Path;

/// Whether this process runs as root (real uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether `tool` is an existing file (an absolute path) or on the PATH.
pub fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// True when `test` may run: as root. Without root it prints why it is skipped and returns
/// false; as root it panics when a tool is missing (see [`on_path`]).
pub fn root_with(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        println!("SKIPPED {test}: needs root (mounts, runc)");
        return false;
    }
    if let Some(missing) = tools.iter().find(|t| !on_path(t)) {
        panic!(
            "{test}: {missing} is not installed (scripts/test installs what the tests need: \
             runc, busybox-static, e2fsprogs, mount)"
        );
    }
    true
}

/// Whether `tool` is on the PATH for `test`. Missing, the test is skipped with a printed
/// reason on a developer's machine, and fails under CI (`CI` set), where `scripts/test` has
/// installed it (`install` says how): a broken install never passes as a skip.
pub fn tool_for(test: &str, tool: &str, install: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {tool} is not installed ({install})");
    }
    println!("SKIPPED {test}: {tool} is not installed ({install})");
    false
}
