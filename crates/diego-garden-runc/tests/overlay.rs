//! Per-container overlayfs roots over a shared read-only base, with and without a disk
//! limit (root: mounts, loop devices).

mod common;

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use diego_garden_runc::{Overlay, OverlayError};

const DISK_TOOLS: &[&str] = &["mount", "umount", "mkfs.ext4", "losetup"];

#[test]
fn containers_write_to_their_own_upper_and_never_to_the_base() {
    if !common::root_with("overlay_copy_on_write", &["mount", "umount"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let base = tmp_path.join("base");
    fs::create_dir_all(base.join("etc")).unwrap();
    fs::write(base.join("etc/shared"), "base").unwrap();

    let a = Overlay::new(tmp_path.join("containers/a"));
    let b = Overlay::new(tmp_path.join("containers/b"));
    a.mount(&base, 0).unwrap();
    b.mount(&base, 0).unwrap();
    a.mount(&base, 0).unwrap(); // idempotent: no second, stacked mount
    assert_eq!(common::mounted(&a.merged()), 1);
    assert!(a.is_mounted().unwrap() && b.is_mounted().unwrap());

    fs::write(a.merged().join("new"), "from a").unwrap();
    fs::write(a.merged().join("etc/shared"), "changed by a").unwrap();
    fs::remove_file(b.merged().join("etc/shared")).unwrap();

    assert_eq!(fs::read_to_string(a.upper().join("new")).unwrap(), "from a");
    assert_eq!(
        fs::read_to_string(a.upper().join("etc/shared")).unwrap(),
        "changed by a"
    );
    assert_eq!(fs::read_to_string(base.join("etc/shared")).unwrap(), "base");
    assert_eq!(fs::read_dir(&base).unwrap().count(), 1, "base gained files");
    assert!(!b.merged().join("new").exists(), "b sees a's file");
    assert!(!b.merged().join("etc/shared").exists());
    assert_eq!(
        fs::read_to_string(a.merged().join("etc/shared")).unwrap(),
        "changed by a"
    );

    a.destroy().unwrap();
    b.destroy().unwrap();
    a.destroy().unwrap(); // idempotent
    for o in [&a, &b] {
        assert_eq!(common::mounted(&o.merged()), 0);
        assert!(!o.dir().exists(), "{} left behind", o.dir().display());
    }
    assert_eq!(fs::read_to_string(base.join("etc/shared")).unwrap(), "base");
}

#[test]
fn destroy_cleans_up_a_mount_whose_container_dir_has_other_files() {
    if !common::root_with("overlay_destroy_half_made", &["mount", "umount"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let base = tmp_path.join("base");
    fs::create_dir_all(&base).unwrap();
    let c = Overlay::new(tmp_path.join("c"));
    c.mount(&base, 0).unwrap();
    fs::write(c.dir().join("config.json"), "{}").unwrap();
    fs::write(c.merged().join("data"), "x").unwrap();
    c.destroy().unwrap();
    assert_eq!(common::mounted(&c.merged()), 0);
    assert!(!c.merged().exists() && !c.upper().exists() && !c.work().exists());
    assert!(
        c.dir().join("config.json").exists(),
        "the bundle's own files are the caller's"
    );
}

/// Writes zeros to `path` in 1 MiB writes until one fails; the bytes written and the error.
fn fill(path: &Path, at_most: u64) -> (u64, Option<io::Error>) {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < at_most {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, Some(e)),
        }
    }
    match file.sync_all() {
        Ok(()) => (written, None),
        Err(e) => (written, Some(e)),
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// No mount at `merged` or `disk`, no loop device on the image, no directory.
fn assert_gone(o: &Overlay, image: &Path) {
    assert_eq!(common::mounted(&o.merged()), 0, "merged still mounted");
    assert_eq!(common::mounted(&o.disk_dir()), 0, "disk still mounted");
    assert_eq!(
        common::loop_devices(image),
        Vec::<String>::new(),
        "loop device left"
    );
    assert!(!o.dir().exists(), "{} left behind", o.dir().display());
}

#[test]
fn a_disk_limit_stops_writes_with_enospc_at_about_the_limit() {
    if !common::root_with("overlay_disk_limit", DISK_TOOLS) {
        return;
    }
    const LIMIT: u64 = 8 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let base = tmp_path.join("base");
    fs::create_dir_all(base.join("etc")).unwrap();
    fs::write(base.join("etc/shared"), "base").unwrap();
    let o = Overlay::new(tmp_path.join("c"));
    let image = o.disk_image();

    o.mount(&base, LIMIT).unwrap();
    o.mount(&base, LIMIT).unwrap(); // idempotent: nothing stacked, no second image
    assert_eq!(common::mounted(&o.merged()), 1);
    assert_eq!(common::mounted(&o.disk_dir()), 1);
    assert_eq!(common::loop_devices(&image).len(), 1);
    assert_eq!(o.upper(), o.disk_dir().join("upper"));
    let sparse = fs::metadata(&image).unwrap();
    assert!(sparse.len() > LIMIT, "image of {} bytes", sparse.len());
    let allocated = std::os::unix::fs::MetadataExt::blocks(&sparse) * 512;
    assert!(
        allocated < 1 << 20,
        "a fresh image should be sparse: {allocated} bytes allocated"
    );

    // Copy-on-write and whiteouts (0/0 character devices) work on the nodev image.
    fs::remove_file(o.merged().join("etc/shared")).unwrap();
    assert!(!o.merged().join("etc/shared").exists());
    fs::write(o.merged().join("small"), "x").unwrap();
    assert_eq!(fs::read_to_string(o.upper().join("small")).unwrap(), "x");
    assert_eq!(fs::read_to_string(base.join("etc/shared")).unwrap(), "base");

    let (written, err) = fill(&o.merged().join("big"), 4 * LIMIT);
    eprintln!("overlay_disk_limit: {written} bytes writable under a limit of {LIMIT}");
    let err = err.expect("writing 4× the limit succeeded");
    assert!(is_enospc(&err), "expected ENOSPC, got {err}");
    assert!(
        written > LIMIT - (64 << 10) && written <= LIMIT + (256 << 10),
        "{written} bytes writable under a limit of {LIMIT}"
    );

    o.destroy().unwrap();
    assert_gone(&o, &image);
    o.destroy().unwrap(); // idempotent
    assert_eq!(fs::read_to_string(base.join("etc/shared")).unwrap(), "base");
}

#[test]
fn no_disk_limit_keeps_the_plain_layout() {
    if !common::root_with("overlay_no_disk_limit", DISK_TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let base = tmp_path.join("base");
    fs::create_dir_all(&base).unwrap();
    let o = Overlay::new(tmp_path.join("c"));
    o.mount(&base, 0).unwrap();
    assert_eq!(o.upper(), o.dir().join("upper"));
    assert_eq!(o.work(), o.dir().join("work"));
    assert!(!o.disk_image().exists() && !o.disk_dir().exists());
    fs::write(o.merged().join("f"), "plain").unwrap();
    assert_eq!(fs::read_to_string(o.dir().join("upper/f")).unwrap(), "plain");

    // A limit on an overlay already made without one changes nothing: no image appears
    // under a mounted plain layer.
    o.mount(&base, 8 << 20).unwrap();
    assert!(!o.disk_image().exists());
    assert_eq!(common::mounted(&o.merged()), 1);
    o.destroy().unwrap();
    assert_gone(&o, &o.disk_image());
}

#[test]
fn mount_and_destroy_finish_a_half_made_disk_overlay() {
    if !common::root_with("overlay_disk_half_made", DISK_TOOLS) {
        return;
    }
    const LIMIT: u64 = 4 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = fs::canonicalize(tmp.path()).unwrap();
    let base = tmp_path.join("base");
    fs::create_dir_all(&base).unwrap();
    let o = Overlay::new(tmp_path.join("c"));
    let image = o.disk_image();
    let umount = |p: &Path| {
        let status = Command::new("umount").arg(p).status().unwrap();
        assert!(status.success(), "umount {}", p.display());
    };

    // Interrupted after the disk was mounted: mount completes it, keeping the data.
    o.mount(&base, LIMIT).unwrap();
    fs::write(o.merged().join("kept"), "data").unwrap();
    umount(&o.merged());
    o.mount(&base, LIMIT).unwrap();
    assert_eq!(common::mounted(&o.disk_dir()), 1);
    assert_eq!(fs::read_to_string(o.merged().join("kept")).unwrap(), "data");

    // Interrupted between attaching the loop device and mounting it: destroy detaches it,
    // and keeps the bundle's own files.
    umount(&o.merged());
    umount(&o.disk_dir());
    assert!(common::loop_devices(&image).is_empty());
    let out = Command::new("losetup")
        .arg("-f")
        .arg("--show")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(common::loop_devices(&image).len(), 1);
    fs::write(o.dir().join("config.json"), "{}").unwrap();
    o.destroy().unwrap();
    assert!(common::loop_devices(&image).is_empty(), "loop device left");
    assert!(!image.exists() && !o.disk_dir().exists() && !o.merged().exists());
    assert!(o.dir().join("config.json").exists());

    // Interrupted while both are mounted.
    fs::remove_file(o.dir().join("config.json")).unwrap();
    o.mount(&base, LIMIT).unwrap();
    o.destroy().unwrap();
    assert_gone(&o, &image);
}

#[test]
fn refuses_disk_limits_too_small_for_a_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Overlay::new(tmp.path().join("c"));
    for limit in [1, (1 << 20) - 1] {
        let err = o.mount(tmp.path(), limit).unwrap_err();
        assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("disk_bytes"), "{err}");
    }
    assert!(!o.dir().exists(), "nothing is made for a refused limit");
}
