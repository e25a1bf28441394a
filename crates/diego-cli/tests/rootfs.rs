//! `diego rootfs build debian`: the Debian rootfs of the buildpacks (python3, node, busybox),
//! built once per machine into `DIEGO_ROOTFS_DIR` or `/var/lib/diego/rootfs` (a second build is
//! cached), as root with debootstrap.

use std::path::Path;
use std::process::Command;

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
    // As root a missing debootstrap fails the test (scripts/test installs it), as every
    // container test's tools do.
    let test = "the_debian_rootfs_has_the_buildpacks_runtimes_and_is_cached_after_the_first_build";
    if !diego_testkit::host::root_with(test, &["/usr/sbin/debootstrap"]) {
        return;
    }
    // One build per machine: the same cache `diego dev` uses, unless the environment names one.
    let cache = diego_cli::commands::rootfs::default_cache_dir();
    let first = build(&cache);
    assert!(first.status.success(), "{first:?}");
    let tree = cache.join("debian");
    for program in ["usr/bin/python3", "usr/bin/pip3", "usr/bin/node", "bin/busybox"] {
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
