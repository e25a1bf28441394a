//! `preloaded:busybox` built from the host's busybox-static (root: it chowns the home dir).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;

use diego_garden_runc::RootfsStore;

#[test]
fn builds_busybox_once_even_when_first_used_concurrently() {
    if !common::root_with("builds_busybox_once", &["/bin/busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(RootfsStore::new(tmp.path().join("store"), None));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.resolve("preloaded:busybox").unwrap())
        })
        .collect();
    let paths: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let base = tmp.path().join("store/preloaded/busybox");
    assert!(paths.iter().all(|p| *p == base), "{paths:?}");
    let entries: Vec<_> = fs::read_dir(tmp.path().join("store/preloaded"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["busybox"], "temporary build dirs left behind");

    // The binary is a real file; every other applet links to it.
    let busybox = base.join("bin/busybox");
    assert!(fs::symlink_metadata(&busybox).unwrap().file_type().is_file());
    assert_eq!(
        fs::read_link(base.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap()
        .stdout;
    let applets = String::from_utf8(list)
        .unwrap()
        .lines()
        .filter(|a| *a != "busybox")
        .count();
    assert_eq!(fs::read_dir(base.join("bin")).unwrap().count(), applets + 1);
    let out = Command::new(base.join("bin/echo")).arg("ok").output().unwrap();
    assert_eq!(out.stdout, b"ok\n");

    let passwd = fs::read_to_string(base.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("vcap:x:2000:2000:vcap:/home/vcap:/bin/sh"),
        "{passwd}"
    );
    assert!(fs::read_to_string(base.join("etc/hosts"))
        .unwrap()
        .contains("localhost"));
    let home = fs::metadata(base.join("home/vcap")).unwrap();
    assert_eq!((home.uid(), home.gid()), (2000, 2000));
    for dir in ["proc", "sys", "dev", "tmp"] {
        assert!(base.join(dir).is_dir(), "{dir} missing");
    }
    assert_eq!(fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777, 0o1777);

    // A second store over the same dir reuses the tree.
    let again = RootfsStore::new(tmp.path().join("store"), None)
        .resolve("preloaded:busybox")
        .unwrap();
    assert_eq!(again, base);
}
