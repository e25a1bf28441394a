//! A real container: busybox rootfs, overlay, generated bundle, foreground `runc run`
//! (root; needs runc and busybox-static).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use diego_garden::{ContainerSpec, Limits, ProcessSpec};
use diego_garden_runc::{bundle, cgroup, Overlay, RootfsStore, Runc, User};

/// Cleans up even when an assertion fails: container, overlay, cgroups, directories.
struct Cleanup {
    runc: Runc,
    id: String,
    overlay: Overlay,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.runc.delete_force(&self.id) {
            eprintln!("runc delete -f {}: {e}", self.id);
        }
        if let Err(e) = self.overlay.destroy() {
            eprintln!("overlay destroy: {e}");
        }
        if let Err(e) = cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), &self.id) {
            eprintln!("cgroup cleanup: {e}");
        }
    }
}

/// Runs `script` with `sh -c` as the init process of a fresh container over `preloaded:busybox`
/// and cleans everything up; returns the exit code, stdout, stderr and the handle.
fn run_in_container(limits: Limits, script: &str) -> (Option<i32>, String, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let id = common::unique("rt");
    let base = RootfsStore::new(tmp_path.join("store"), None)
        .resolve("preloaded:busybox")
        .unwrap();
    let container_dir = tmp_path.join("containers").join(&id);
    let cleanup = Cleanup {
        runc: Runc::new("runc", tmp_path.join("runc-state")),
        id: id.clone(),
        overlay: Overlay::new(&container_dir),
    };
    cleanup.overlay.mount(&base, 0).unwrap();

    let spec = ContainerSpec {
        handle: id.clone(),
        rootfs: "preloaded:busybox".into(),
        env: vec!["GREETING=hi".into()],
        limits,
        ..Default::default()
    };
    let process = ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    let passwd = fs::read_to_string(cleanup.overlay.merged().join("etc/passwd")).unwrap();
    let user = User::resolve(&process.user, Some(&passwd)).unwrap();
    let config = bundle::config(&spec, &process, &user, &cleanup.overlay.merged()).unwrap();
    bundle::write_config(&container_dir, &config).unwrap();

    let out = cleanup
        .runc
        .run(&container_dir, &id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    // The container wrote nothing to the shared base.
    assert_eq!(fs::read_dir(base.join("home/vcap")).unwrap().count(), 0);
    let overlay = cleanup.overlay.clone();
    drop(cleanup);
    assert_eq!(common::mounted(&overlay.merged()), 0);
    assert!(!overlay.upper().exists() && !overlay.merged().exists());
    let leftovers: Vec<PathBuf> = fs::read_dir(cgroup::CGROUP_ROOT)
        .unwrap()
        .map(|h| h.unwrap().path().join("diego").join(&id))
        .filter(|p| p.exists())
        .collect();
    assert!(leftovers.is_empty(), "cgroups left: {leftovers:?}");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr), id)
}

const LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    disk_bytes: 0,
    pids: 64,
    cpu_shares: 512,
};

#[test]
fn runs_a_process_as_vcap_with_its_hostname_output_and_exit_code() {
    if !common::root_with("runc_run", &["runc", "/bin/busybox", "mount", "umount"]) {
        return;
    }
    let (code, stdout, stderr, id) = run_in_container(LIMITS, "id -u; hostname; echo err >&2; exit 3");
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, format!("2000\n{id}\n"));
    assert_eq!(stderr, "err\n");
}

#[test]
fn applies_seccomp_no_new_privileges_and_cgroup_limits() {
    if !common::root_with("runc_isolation", &["runc", "/bin/busybox", "mount", "umount"]) {
        return;
    }
    // `unshare -U` succeeds in a container without the seccomp profile (verified with runc's
    // default spec: unprivileged user namespaces work on this host), so "denied" is seccomp's.
    // A masked path is a bind mount (of /dev/null) over it, hence its line in mountinfo (/proc/keys: this
    // kernel has no /proc/kcore, and runc only masks paths that exist).
    let script = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -s '\\t' ' '; \\
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; \\
                  echo $GREETING $HOME; \\
                  grep -c ' /proc/keys ' /proc/self/mountinfo; \\
                  unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-denied";
    let (code, stdout, stderr, _) = run_in_container(LIMITS, script);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout,
        format!(
            "NoNewPrivs: 1\nSeccomp: 2\n{}\n64\nhi /home/vcap\n1\nunshare-denied\n",
            64u64 << 20
        )
    );
}
