//! Shared by the CLI tests that drive the real `diego` binary.
#![allow(dead_code)]

pub mod cluster;

use std::process::Stdio;

use diego_garden::procfs::live_start_time;

use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_diego");

/// `diego ARGS` against `bbs`, to completion: (success, stdout then stderr).
pub async fn diego(bbs: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DIEGO_BBS_URL", bbs)
        .output()
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The lifecycle bundles `scripts/build-lifecycle` made (what `diego dev --lifecycle-dir`
/// serves): `$DIEGO_LIFECYCLE_DIR`, else `lifecycle/` beside the test binary's profile
/// directory (`target/lifecycle`).
pub fn lifecycle_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("DIEGO_LIFECYCLE_DIR") {
        return dir.into();
    }
    let dir = std::path::Path::new(BIN)
        .parent()
        .and_then(|p| p.parent())
        .expect("the binary is in a profile directory")
        .join("lifecycle");
    assert!(
        dir.join("lifecycle/diego-builder").exists(),
        "no lifecycle bundles at {}: run scripts/build-lifecycle (scripts/test does)",
        dir.display()
    );
    dir
}

/// Root, runc and busybox-static are there (what the real-container tests need); otherwise
/// prints why `test` is skipped.
pub fn runc_usable(test: &str) -> bool {
    diego_testkit::host::root_with(test, &["runc", "/bin/busybox"])
}

/// A quiet `diego ARGS` in the background, killed when dropped.
pub fn spawn(args: &[&str]) -> Child {
    Command::from(diego_testkit::diego_command(std::path::Path::new(BIN), args))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning diego")
}

/// Removes, on drop, the runc containers (with their overlays, disk images and cgroups) and the
/// net-in proxy processes a test left behind in a runc backend's depot — so a failing test
/// leaves nothing either.
pub struct RuncLeftovers {
    depot: std::path::PathBuf,
}

impl RuncLeftovers {
    /// For the runc backend over `depot` (its runc state is `<depot>.runc`).
    pub fn for_depot(depot: &std::path::Path) -> Self {
        RuncLeftovers {
            depot: depot.to_path_buf(),
        }
    }
}

impl Drop for RuncLeftovers {
    fn drop(&mut self) {
        for (pid, _) in netin_proxies(&self.depot) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let runc_root = self.depot.with_file_name(format!(
            "{}.runc",
            self.depot
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let runc = diego_garden_runc::Runc::new("runc", &runc_root);
        for id in runc.list().unwrap_or_default() {
            let id = id.as_str();
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .status();
            for mount in ["merged", "disk"] {
                let _ = std::process::Command::new("umount")
                    .arg(self.depot.join(id).join(mount))
                    .stderr(Stdio::null())
                    .status();
            }
            for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(hierarchy.path().join("diego").join(id));
            }
        }
    }
}

/// A process as (pid, start time from field 22 of `/proc/<pid>/stat`): a reused pid is
/// another process.
pub type Identity = (u32, u64);

/// Whether the process still runs: not gone, not a zombie, not a reused pid.
pub fn alive(&(pid, start): &Identity) -> bool {
    live_start_time(pid) == Some(start)
}

/// The net-in proxy recorded in runc container directory `dir` (`netin.json`), whether it
/// runs or not.
pub fn netin_proxy(dir: &std::path::Path) -> Option<Identity> {
    let record = diego_garden_runc::netin::proxy::ProxyRecord::read(dir)?;
    Some((record.pid, record.start_time))
}

/// The live net-in proxy processes (`diego garden-netin --dir <depot>/<handle> …`) of the
/// containers of runc depot `depot`, found by their command lines.
pub fn netin_proxies(depot: &std::path::Path) -> Vec<Identity> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let depot = depot.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.get(1) == Some(&&b"garden-netin"[..])
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"--dir" && w[1].starts_with(depot))
            })
        })
        .filter_map(|pid| Some((pid, live_start_time(pid)?)))
        .collect()
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    diego_garden::procfs::status_kb(pid, "VmRSS")
}

/// The live processes working under `depot` (a process-backend app starts in its
/// container's home there), with their command names.
pub fn processes_in(depot: &std::path::Path) -> Vec<(Identity, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(depot)))
        .filter_map(|pid| {
            let start = live_start_time(pid)?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some(((pid, start), comm.trim().to_string()))
        })
        .collect()
}

/// Kills, on drop, whatever still runs under the depot (a failing test leaves nothing).
pub struct ProcessLeftovers(pub std::path::PathBuf);

impl Drop for ProcessLeftovers {
    fn drop(&mut self) {
        for ((pid, _), _) in processes_in(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
