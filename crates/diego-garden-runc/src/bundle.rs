//! The OCI bundle of a container: a pure function from a [`ContainerSpec`] and the process to
//! run to runc's `config.json`, and the write of that file.
//!
//! Isolation follows DESIGN §6: own pid, mount, ipc, uts and network namespaces; memory (with
//! swap capped at the same value, so the limit is the limit), pids and CPU-share limits; a
//! non-root default user; no new privileges; runc's masked and read-only `/proc` paths; and a
//! seccomp profile denying the syscalls a container has no business making.

use std::fs;
use std::io;
use std::path::Path;

use diego_garden::{BindMountMode, ContainerSpec, ProcessSpec};

use crate::cgroup;
use crate::oci;
use crate::user::User;

/// `PATH` when neither the container nor the process sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Open files per process when the process spec sets no `nofile` (runc's default).
pub const DEFAULT_NOFILE: u64 = 1024;

/// Denied with EPERM: changing mounts or namespaces (escape routes), kernel modules, kexec and
/// reboot, swap, the kernel keyring (not namespaced), bpf/perf/ptrace (kernel attack surface
/// and peeking at other processes), process accounting, the host clock, and file handles
/// (`open_by_handle_at` walks out of a bind mount).
pub const DENIED_SYSCALLS: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "ptrace",
    "acct",
    "settimeofday",
    "clock_settime",
    "open_by_handle_at",
];

/// `/proc` and `/sys` entries hidden from containers, as in runc's default spec.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// `/proc` entries containers may read but not write, as in runc's default spec.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// runc's default capabilities; for a non-root user they are ambient, so an app may bind a
/// port below 1024 but gains nothing else.
const CAPABILITIES: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Linux caps hostnames at 64 bytes.
const MAX_HOSTNAME: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The container or process spec cannot be run as given.
    #[error("{0}")]
    Invalid(String),
}

/// A container handle is used as runc's container id, a cgroup directory and the hostname, so
/// it must be safe as all three.
pub fn validate_handle(handle: &str) -> Result<(), BundleError> {
    let ok = !handle.is_empty()
        && handle.len() <= 128
        && !handle.starts_with(['.', '-'])
        && handle
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::Invalid(format!(
            "container handle {handle:?}: must be 1-128 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )))
    }
}

/// The `config.json` for running `process` as the init process of the container `spec`, whose
/// root filesystem is mounted at `root` (the overlay's merged dir). `user` is the process's
/// user, already resolved against the rootfs (see [`User::resolve`]).
pub fn config(
    spec: &ContainerSpec,
    process: &ProcessSpec,
    user: &User,
    root: &Path,
) -> Result<oci::Spec, BundleError> {
    validate_handle(&spec.handle)?;
    if process.path.is_empty() {
        return Err(BundleError::Invalid("process path must not be empty".into()));
    }
    if !process.dir.is_empty() && !process.dir.starts_with('/') {
        return Err(BundleError::Invalid(format!(
            "process dir {:?} must be absolute",
            process.dir
        )));
    }
    let root = root.to_str().filter(|r| r.starts_with('/')).ok_or_else(|| {
        BundleError::Invalid(format!("rootfs path {} must be absolute UTF-8", root.display()))
    })?;

    let caps: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let nofile = process.limits.nofile.unwrap_or(DEFAULT_NOFILE);
    let process_spec = oci::Process {
        terminal: false,
        user: oci::User {
            uid: user.uid,
            gid: user.gid,
            additional_gids: vec![],
        },
        args: std::iter::once(process.path.clone())
            .chain(process.args.iter().cloned())
            .collect(),
        env: environment(&spec.env, &process.env, user),
        cwd: if process.dir.is_empty() {
            user.home.clone()
        } else {
            process.dir.clone()
        },
        capabilities: oci::Capabilities {
            bounding: caps.clone(),
            effective: caps.clone(),
            permitted: caps.clone(),
            ambient: caps,
        },
        rlimits: vec![oci::Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            hard: nofile,
            soft: nofile,
        }],
        no_new_privileges: true,
    };

    let mut mounts = default_mounts();
    for bind in &spec.bind_mounts {
        for (what, path) in [("source", &bind.src_path), ("destination", &bind.dst_path)] {
            if !path.starts_with('/') {
                return Err(BundleError::Invalid(format!(
                    "bind mount {what} {path:?} must be absolute"
                )));
            }
        }
        let mode = match bind.mode {
            BindMountMode::ReadOnly => "ro",
            BindMountMode::ReadWrite => "rw",
        };
        mounts.push(oci::Mount {
            destination: bind.dst_path.clone(),
            kind: "bind".into(),
            source: bind.src_path.clone(),
            options: vec!["rbind".into(), mode.into()],
        });
    }

    Ok(oci::Spec {
        oci_version: oci::OCI_VERSION.into(),
        process: process_spec,
        root: oci::Root {
            path: root.into(),
            readonly: false,
        },
        hostname: spec.handle.chars().take(MAX_HOSTNAME).collect(),
        mounts,
        linux: oci::Linux {
            namespaces: ["pid", "network", "ipc", "uts", "mount"]
                .iter()
                .map(|kind| oci::Namespace {
                    kind: kind.to_string(),
                    path: None,
                })
                .collect(),
            cgroups_path: cgroup::cgroups_path(&spec.handle),
            resources: resources(&spec.limits),
            masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
            seccomp: seccomp(),
        },
    })
}

/// Writes `config.json` into `bundle_dir` (via a temporary file and a rename, so runc never
/// reads a half-written one).
pub fn write_config(bundle_dir: &Path, spec: &oci::Spec) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(spec).map_err(io::Error::other)?;
    let tmp = bundle_dir.join(".config.json.tmp");
    fs::write(&tmp, json)?;
    fs::rename(&tmp, bundle_dir.join("config.json"))
}

/// The container's env, then the process's (a later `KEY=` replaces an earlier one in place),
/// then `PATH`, `HOME` and `USER` unless already set.
pub fn environment(container: &[String], process: &[String], user: &User) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let key = |entry: &str| entry.split('=').next().unwrap_or_default().to_string();
    let defaults = [
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={}", user.home),
        format!("USER={}", user.name),
    ];
    for entry in container.iter().chain(process) {
        let k = key(entry);
        match env.iter_mut().find(|e| key(e) == k) {
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    for entry in defaults {
        let k = key(&entry);
        if !env.iter().any(|e| key(e) == k) {
            env.push(entry);
        }
    }
    env
}

fn resources(limits: &diego_garden::Limits) -> oci::Resources {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    oci::Resources {
        // Deny every device; runc adds its default allow-list (null, zero, urandom, tty, …).
        devices: vec![oci::DeviceRule {
            allow: false,
            access: "rwm".into(),
        }],
        memory: (limits.memory_bytes > 0).then(|| oci::Memory {
            limit: clamp(limits.memory_bytes),
            swap: clamp(limits.memory_bytes),
        }),
        pids: (limits.pids > 0).then(|| oci::Pids {
            limit: clamp(limits.pids),
        }),
        cpu: (limits.cpu_shares > 0).then_some(oci::Cpu {
            shares: limits.cpu_shares,
        }),
    }
}

fn default_mounts() -> Vec<oci::Mount> {
    let mount = |destination: &str, kind: &str, source: &str, options: &[&str]| oci::Mount {
        destination: destination.into(),
        kind: kind.into(),
        source: source.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    };
    vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        // Read-only, so an app can read its own limits (JVMs size their heap from them).
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// Allow by default, EPERM for [`DENIED_SYSCALLS`]. The architectures let 32-bit binaries be
/// filtered too instead of slipping past through the compat syscall table.
pub fn seccomp() -> oci::Seccomp {
    let architectures: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    oci::Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        architectures: architectures.iter().map(|a| a.to_string()).collect(),
        syscalls: vec![oci::SyscallRule {
            names: DENIED_SYSCALLS.iter().map(|s| s.to_string()).collect(),
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: 1, // EPERM
        }],
    }
}

#[cfg(test)]
mod tests {
    use diego_garden::{BindMount, Limits, ProcessLimits};
    use serde_json::{json, Value};

    use super::*;

    fn container() -> ContainerSpec {
        ContainerSpec {
            handle: "web-1".into(),
            rootfs: "preloaded:busybox".into(),
            env: vec!["A=1".into(), "B=2".into()],
            bind_mounts: vec![
                BindMount {
                    src_path: "/host/ro".into(),
                    dst_path: "/ro".into(),
                    mode: BindMountMode::ReadOnly,
                },
                BindMount {
                    src_path: "/host/rw".into(),
                    dst_path: "/rw".into(),
                    mode: BindMountMode::ReadWrite,
                },
            ],
            limits: Limits {
                memory_bytes: 64 << 20,
                disk_bytes: 0,
                pids: 100,
                cpu_shares: 512,
            },
            ..Default::default()
        }
    }

    fn process() -> ProcessSpec {
        ProcessSpec {
            path: "sh".into(),
            args: vec!["-c".into(), "echo hi".into()],
            env: vec!["B=3".into()],
            ..Default::default()
        }
    }

    fn json_of(spec: &ContainerSpec, process: &ProcessSpec, user: &User) -> Value {
        let config = config(spec, process, user, Path::new("/store/c/web-1/merged")).unwrap();
        serde_json::to_value(&config).unwrap()
    }

    #[test]
    fn process_runs_as_the_non_root_default_user_without_new_privileges() {
        let j = json_of(&container(), &process(), &User::default_user());
        let p = &j["process"];
        assert_eq!(p["terminal"], json!(false));
        assert_eq!(p["noNewPrivileges"], json!(true));
        assert_eq!(p["user"], json!({"uid": 2000, "gid": 2000}));
        assert_eq!(p["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(p["cwd"], json!("/home/vcap"));
        assert_eq!(
            p["env"],
            json!([
                "A=1",
                "B=3",
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/home/vcap",
                "USER=vcap"
            ])
        );
        assert_eq!(
            p["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(
            j["root"],
            json!({"path": "/store/c/web-1/merged", "readonly": false})
        );
        assert_eq!(j["hostname"], json!("web-1"));
        assert_eq!(j["ociVersion"], json!("1.0.2"));
    }

    #[test]
    fn explicit_user_dir_env_and_nofile_win() {
        let mut p = process();
        p.dir = "/app".into();
        p.env = vec!["PATH=/app/bin".into(), "HOME=/elsewhere".into()];
        p.limits = ProcessLimits { nofile: Some(4096) };
        let j = json_of(&container(), &p, &User::root());
        assert_eq!(j["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(j["process"]["cwd"], json!("/app"));
        assert_eq!(
            j["process"]["env"],
            json!(["A=1", "B=2", "PATH=/app/bin", "HOME=/elsewhere", "USER=root"])
        );
        assert_eq!(j["process"]["rlimits"][0]["hard"], json!(4096));
    }

    #[test]
    fn isolates_with_namespaces_limits_and_an_absolute_cgroup() {
        let j = json_of(&container(), &process(), &User::default_user());
        let l = &j["linux"];
        let mut ns: Vec<&str> = l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        ns.sort();
        assert_eq!(ns, ["ipc", "mount", "network", "pid", "uts"]);
        assert_eq!(l["cgroupsPath"], json!("/diego/web-1"));
        let r = &l["resources"];
        assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(r["pids"], json!({"limit": 100}));
        assert_eq!(r["cpu"], json!({"shares": 512}));
        assert_eq!(r["devices"], json!([{"allow": false, "access": "rwm"}]));
        for p in ["/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"] {
            assert!(
                l["maskedPaths"].as_array().unwrap().contains(&json!(p)),
                "{p} not masked"
            );
        }
        assert!(l["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
    }

    #[test]
    fn zero_limits_mean_no_limit() {
        let mut spec = container();
        spec.limits = Limits::default();
        let r = &json_of(&spec, &process(), &User::default_user())["linux"]["resources"];
        assert_eq!(r.get("memory"), None);
        assert_eq!(r.get("pids"), None);
        assert_eq!(r.get("cpu"), None);
    }

    #[test]
    fn seccomp_allows_by_default_and_denies_escape_routes_with_eperm() {
        let s = &json_of(&container(), &process(), &User::default_user())["linux"]["seccomp"];
        assert_eq!(s["defaultAction"], json!("SCMP_ACT_ALLOW"));
        let rule = &s["syscalls"][0];
        assert_eq!(
            (rule["action"].clone(), rule["errnoRet"].clone()),
            (json!("SCMP_ACT_ERRNO"), json!(1))
        );
        let names = rule["names"].as_array().unwrap();
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "bpf",
            "ptrace",
            "keyctl",
            "kexec_load",
        ] {
            assert!(names.contains(&json!(name)), "{name} not denied");
        }
    }

    #[test]
    fn mounts_system_filesystems_and_the_specs_binds() {
        let j = json_of(&container(), &process(), &User::default_user());
        let mounts = j["mounts"].as_array().unwrap();
        let find = |dst: &str| mounts.iter().find(|m| m["destination"] == json!(dst)).cloned();
        for dst in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"] {
            assert!(find(dst).is_some(), "{dst} not mounted");
        }
        assert_eq!(find("/dev").unwrap()["type"], json!("tmpfs"));
        assert!(find("/sys").unwrap()["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert_eq!(
            find("/ro").unwrap(),
            json!({"destination": "/ro", "type": "bind", "source": "/host/ro", "options": ["rbind", "ro"]})
        );
        assert_eq!(find("/rw").unwrap()["options"], json!(["rbind", "rw"]));
    }

    #[test]
    fn refuses_what_runc_could_not_run() {
        let user = User::default_user();
        let root = Path::new("/r");
        let mut spec = container();
        for bad in ["", "../x", "a/b", "-x", "with space"] {
            spec.handle = bad.into();
            assert!(
                config(&spec, &process(), &user, root).is_err(),
                "handle {bad:?} accepted"
            );
        }
        let mut p = process();
        p.path = String::new();
        assert!(config(&container(), &p, &user, root).is_err());
        let mut p = process();
        p.dir = "relative".into();
        assert!(config(&container(), &p, &user, root).is_err());
        let mut spec = container();
        spec.bind_mounts[0].dst_path = "rel".into();
        let err = config(&spec, &process(), &user, root).unwrap_err();
        assert!(err.to_string().contains("\"rel\" must be absolute"), "{err}");
        assert!(config(&container(), &process(), &user, Path::new("relative/root")).is_err());
    }

    #[test]
    fn long_handles_are_cut_to_a_valid_hostname() {
        let mut spec = container();
        spec.handle = "h".repeat(100);
        let j = json_of(&spec, &process(), &User::default_user());
        assert_eq!(j["hostname"].as_str().unwrap().len(), 63);
        assert_eq!(
            j["linux"]["cgroupsPath"],
            json!(format!("/diego/{}", "h".repeat(100)))
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = config(&container(), &process(), &User::default_user(), Path::new("/r")).unwrap();
        let back: oci::Spec = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config).unwrap();
        let written: oci::Spec =
            serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(written, config);
    }
}
