//! Shared by the root-only integration tests: they skip, saying why, when not root or when a
//! host tool is missing. CI runs as root with the tools installed, so there nothing is skipped.

#![allow(dead_code)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// True when the test may run; otherwise prints why it is skipped.
pub fn root_with(test: &str, tools: &[&str]) -> bool {
    diego_testkit::host::root_with(test, tools)
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

/// The loop devices attached to `image` (by its absolute path), read from
/// `/sys/block/loop*/loop/backing_file` — which says ` (deleted)` once the file is gone.
pub fn loop_devices(image: &Path) -> Vec<String> {
    let wanted = image.to_string_lossy().into_owned();
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            let file = file.trim_end();
            if file == wanted || file.strip_suffix(" (deleted)") == Some(wanted.as_str()) {
                devices.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    devices
}

/// A `RuncBackend` in a temporary directory for one test. Dropping it deletes every container
/// runc knows in its private state dir, unmounts every overlay in its depot and removes their
/// cgroups, so a failing test leaves nothing behind either.
pub struct Sandbox {
    pub backend: diego_garden_runc::RuncBackend,
    /// What `backend` was made with (to open another backend on the same depot).
    pub config: diego_garden_runc::RuncConfig,
    pub runc: diego_garden_runc::Runc,
    pub depot: std::path::PathBuf,
    pub root: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Sandbox {
    /// `None` (after printing why) when the test cannot run here.
    pub fn new(test: &str, tools: &[&str], max_containers: u64) -> Option<Sandbox> {
        if !root_with(test, tools) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let config = diego_garden_runc::RuncConfig {
            depot: root.join("depot"),
            store: root.join("store"),
            preloaded_dir: None,
            runc_root: root.join("runc"),
            capacity: diego_garden::Capacity {
                memory_bytes: 1 << 30,
                disk_bytes: 1 << 30,
                max_containers,
            },
            host_ip: "127.0.0.1".into(),
            shim: shim(),
            netin_proxy: netin_proxy(),
        };
        let backend = diego_garden_runc::RuncBackend::new(config.clone())
            .unwrap()
            .with_stop_grace(std::time::Duration::from_millis(500));
        Some(Sandbox {
            backend,
            config,
            runc: diego_garden_runc::Runc::new("runc", root.join("runc")),
            depot: root.join("depot"),
            root,
            _tmp: tmp,
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        use diego_garden_runc::{cgroup, Overlay};
        kill_proxies(&self.depot);
        for id in self.runc.list().unwrap_or_default() {
            if let Err(e) = self.runc.delete_force(&id) {
                eprintln!("runc delete -f {id}: {e}");
            }
        }
        for entry in std::fs::read_dir(&self.depot).into_iter().flatten().flatten() {
            if let Err(e) = Overlay::new(entry.path()).destroy() {
                eprintln!("overlay destroy: {e}");
            }
            let handle = entry.file_name().to_string_lossy().into_owned();
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), &handle);
        }
    }
}

/// Kills (by pid, its start time checked) the net-in proxy recorded in each container
/// directory of `depot`.
pub fn kill_proxies(depot: &Path) {
    for entry in std::fs::read_dir(depot).into_iter().flatten().flatten() {
        if let Some(proxy) = diego_garden_runc::netin::proxy::ProxyRecord::read(&entry.path()) {
            if proxy.alive() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &proxy.pid.to_string()])
                    .status();
            }
        }
    }
}

/// The supervisor binary this crate builds for its own tests.
pub fn shim() -> diego_garden_runc::ShimCommand {
    diego_garden_runc::ShimCommand::new(env!("CARGO_BIN_EXE_diego-garden-shim"), Vec::<String>::new())
}

/// The net-in proxy binary this crate builds for its own tests.
pub fn netin_proxy() -> diego_garden_runc::ShimCommand {
    diego_garden_runc::ShimCommand::new(env!("CARGO_BIN_EXE_diego-garden-netin"), Vec::<String>::new())
}

/// Stdout, stderr and exit status of a whole event stream (60 s at most).
pub async fn collect(
    events: futures_util::stream::BoxStream<'static, diego_garden::ProcessEvent>,
) -> (String, String, diego_garden::ExitStatus) {
    use diego_garden::ProcessEvent;
    use futures_util::StreamExt;
    let events: Vec<ProcessEvent> =
        tokio::time::timeout(std::time::Duration::from_secs(60), events.collect())
            .await
            .expect("process did not exit within 60 s");
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    for e in events {
        match e {
            ProcessEvent::Stdout(b) => out.extend_from_slice(&b),
            ProcessEvent::Stderr(b) => err.extend_from_slice(&b),
            ProcessEvent::Exited(s) => exit = Some(s),
        }
    }
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (text(out), text(err), exit.expect("no Exited event"))
}

/// Busybox httpd in the foreground on port 8080, serving `root`.
pub fn httpd(root: &str) -> diego_garden::ProcessSpec {
    diego_garden::ProcessSpec {
        id: "httpd".into(),
        path: "httpd".into(),
        args: ["-f", "-p", "8080", "-h", root].map(String::from).to_vec(),
        ..Default::default()
    }
}

/// A busybox container whose port 8080 is mapped to a host port the kernel picks.
pub fn busybox_on_8080(handle: &str) -> diego_garden::ContainerSpec {
    diego_garden::ContainerSpec {
        handle: handle.into(),
        rootfs: "preloaded:busybox".into(),
        net_in: vec![diego_garden::NetIn {
            host_port: 0,
            container_port: 8080,
        }],
        ..Default::default()
    }
}
