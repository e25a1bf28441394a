//! Per-container overlayfs roots over a shared read-only base (root: mounts).

mod common;

use std::fs;

use diego_garden_runc::Overlay;

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
    a.mount(&base).unwrap();
    b.mount(&base).unwrap();
    a.mount(&base).unwrap(); // idempotent: no second, stacked mount
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
    c.mount(&base).unwrap();
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
