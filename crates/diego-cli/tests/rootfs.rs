//! `diego rootfs build debian`: the Debian rootfs of the buildpacks (python3, node, busybox),
//! built once per machine into `DIEGO_ROOTFS_DIR` or `/var/lib/diego/rootfs` (a second build is
//! cached), as root with debootstrap.

use std::path::{Path, PathBuf};
use std::process::Command;

fn debootstrap() -> bool {
    [
        "/usr/sbin/debootstrap",
        "/sbin/debootstrap",
        "/usr/bin/debootstrap",
    ]
    .iter()
    .any(|p| Path::new(p).is_file())
}

fn build(cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["rootfs", "build", "debian", "--cache-dir"])
        .arg(cache)
        .env_remove("DIEGO_ROOTFS_DIR")
        .output()
        .unwrap()
}

#[test]
fn the_debian_rootfs_has_the_buildpacks_runtimes_and_is_cached_after_the_first_build() {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|u| u.split_whitespace().next() == Some("0"))
    });
    if !root || !debootstrap() {
        eprintln!(
            "skipped: building a rootfs needs root and debootstrap (root: {root}; scripts/install-packages installs debootstrap)"
        );
        return;
    }
    // One build per machine: the same cache `diego dev` uses, unless the environment names one.
    let cache = std::env::var_os("DIEGO_ROOTFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/diego/rootfs"));
    let first = build(&cache);
    assert!(first.status.success(), "{first:?}");
    let tree = cache.join("debian");
    for program in ["usr/bin/python3", "usr/bin/node", "bin/busybox"] {
        assert!(
            tree.join(program).exists(),
            "{} has no /{program}",
            tree.display()
        );
    }
    assert!(!cache.join(".debian.partial").exists(), "no partial tree is left");

    let second = build(&cache);
    assert!(second.status.success(), "{second:?}");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.contains("rootfs debian: cached at") && !stdout.contains("debootstrap"),
        "{stdout}"
    );
}

#[test]
fn only_known_rootfs_names_are_built() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["rootfs", "build", "alpine", "--cache-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no rootfs is named \"alpine\"; known: debian"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is made"
    );
}
