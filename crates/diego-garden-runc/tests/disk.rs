//! `RuncBackend` with `limits.disk_bytes`: a container's writable layer holds about its limit
//! and no more, and destroy leaves no mount, loop device or directory (root; needs runc,
//! busybox-static and e2fsprogs).

mod common;

use std::fs;
use std::path::Path;

use diego_garden::{ContainerBackend, ContainerSpec, ExitStatus, Limits, ProcessSpec};

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount", "mkfs.ext4", "losetup"];
const MIB: u64 = 1 << 20;

/// Writes 64 MiB into the default user's home, then reports dd's status and the file's size.
const WRITE_64_MIB: &str =
    "dd if=/dev/zero of=/home/vcap/big bs=1M count=64; echo rc=$?; wc -c < /home/vcap/big";

async fn create(sandbox: &common::Sandbox, prefix: &str, disk_bytes: u64) -> String {
    let handle = common::unique(prefix);
    sandbox
        .backend
        .create(ContainerSpec {
            handle: handle.clone(),
            rootfs: "preloaded:busybox".into(),
            limits: Limits {
                disk_bytes,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    handle
}

/// Stdout, stderr and exit status of `sh -c script` run as the default user.
async fn sh(sandbox: &common::Sandbox, handle: &str, script: &str) -> (String, String, ExitStatus) {
    let spec = ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    common::collect(sandbox.backend.run(handle, spec).await.unwrap().events).await
}

/// `rc=N` and the file size printed by [`WRITE_64_MIB`].
fn parse_write(out: &str) -> (i32, u64) {
    let mut lines = out.lines();
    let rc = lines
        .next()
        .and_then(|l| l.strip_prefix("rc="))
        .and_then(|rc| rc.parse().ok())
        .unwrap_or_else(|| panic!("no rc= line in {out:?}"));
    let size = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size line in {out:?}"));
    (rc, size)
}

/// No mount under `dir`, no loop device on its image, no `dir`.
fn assert_nothing_left(dir: &Path) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<_> = diego_garden_runc::overlay::mount_points(&mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let image = dir.join("disk.img");
    assert!(
        common::loop_devices(&image).is_empty(),
        "loop device left on {}",
        image.display()
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_limit_caps_the_writable_layer_and_destroy_leaves_nothing() {
    let Some(sandbox) = common::Sandbox::new("disk_limit", TOOLS, 3) else {
        return;
    };
    let limited = create(&sandbox, "disk", 16 * MIB).await;
    let unlimited = create(&sandbox, "nodisk", 0).await;
    let limited_dir = sandbox.depot.join(&limited);
    let unlimited_dir = sandbox.depot.join(&unlimited);
    assert_eq!(common::mounted(&limited_dir.join("disk")), 1);
    assert_eq!(common::loop_devices(&limited_dir.join("disk.img")).len(), 1);
    assert!(!unlimited_dir.join("disk.img").exists() && !unlimited_dir.join("disk").exists());

    let (out, err, exit) = sh(&sandbox, &limited, WRITE_64_MIB).await;
    let (rc, size) = parse_write(&out);
    eprintln!("disk_limit: dd exited {rc} after {size} bytes under a 16 MiB limit");
    assert_ne!(
        rc, 0,
        "dd of 64 MiB under a 16 MiB limit succeeded; stderr: {err}"
    );
    assert!(err.contains("No space left on device"), "stderr: {err}");
    assert_eq!(exit.code, 0);
    assert!(
        size > 15 * MIB && size <= 16 * MIB + 256 * 1024,
        "{size} bytes landed under a 16 MiB limit"
    );
    // Metrics read the real writable layer, inside the image.
    let metrics = sandbox
        .backend
        .bulk_metrics(std::slice::from_ref(&limited))
        .await
        .unwrap();
    assert!(metrics[&limited].disk_bytes >= size, "{:?}", metrics[&limited]);
    // The container still works when its disk is full, and freeing space frees it.
    let (out, err, exit) = sh(
        &sandbox,
        &limited,
        "rm /home/vcap/big && echo freed > /home/vcap/f && cat /home/vcap/f",
    )
    .await;
    assert_eq!((out.as_str(), exit.code), ("freed\n", 0), "stderr: {err}");

    let (out, err, exit) = sh(&sandbox, &unlimited, WRITE_64_MIB).await;
    assert_eq!(parse_write(&out), (0, 64 * MIB), "stderr: {err}");
    assert_eq!(exit.code, 0);

    // A second image of the same size is a copy of one formatted template (not a second
    // mkfs), and a filesystem of its own: empty, with the same limit.
    let templates: Vec<_> = std::fs::read_dir(sandbox.config.store.join("disk-templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert!(
        templates[0].starts_with("ext4-") && templates[0].ends_with(".img"),
        "{templates:?}"
    );
    let second = create(&sandbox, "disk2", 16 * MIB).await;
    let (out, err, exit) = sh(&sandbox, &second, "ls /home/vcap; echo listed").await;
    assert_eq!((out.as_str(), exit.code), ("listed\n", 0), "stderr: {err}");
    let (out, err, _) = sh(&sandbox, &second, WRITE_64_MIB).await;
    let (rc, size) = parse_write(&out);
    assert!(
        rc != 0 && size <= 16 * MIB + 256 * 1024,
        "{size} bytes; stderr: {err}"
    );
    assert_eq!(
        std::fs::read_dir(sandbox.config.store.join("disk-templates"))
            .unwrap()
            .count(),
        1,
        "one template per size"
    );
    let second_dir = sandbox.depot.join(&second);

    sandbox.backend.destroy(&limited).await.unwrap();
    sandbox.backend.destroy(&unlimited).await.unwrap();
    sandbox.backend.destroy(&second).await.unwrap();
    assert_nothing_left(&limited_dir);
    assert_nothing_left(&unlimited_dir);
    assert_nothing_left(&second_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_limit_too_small_for_a_filesystem_is_refused_and_leaves_nothing() {
    let Some(sandbox) = common::Sandbox::new("disk_limit_too_small", TOOLS, 3) else {
        return;
    };
    let handle = common::unique("tiny");
    let err = sandbox
        .backend
        .create(ContainerSpec {
            handle: handle.clone(),
            rootfs: "preloaded:busybox".into(),
            limits: Limits {
                disk_bytes: 4096,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk_bytes"), "{err}");
    assert!(matches!(err, diego_garden::GardenError::Invalid(_)), "{err:?}");
    assert_nothing_left(&sandbox.depot.join(&handle));
    assert!(sandbox.runc.list().unwrap().is_empty());
}
