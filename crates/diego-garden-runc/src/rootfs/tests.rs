use super::*;
use crate::image::testing::{Compression, ImageBuilder, LayerBuilder};

#[test]
fn parses_preloaded_names() {
    assert_eq!(
        RootfsUrl::parse("preloaded:busybox").unwrap(),
        RootfsUrl::Preloaded("busybox".into())
    );
    assert_eq!(
        RootfsUrl::parse("preloaded:cflinuxfs4-1.2").unwrap(),
        RootfsUrl::Preloaded("cflinuxfs4-1.2".into())
    );
    for bad in [
        "preloaded:",
        "preloaded:../etc",
        "preloaded:a/b",
        "preloaded:.hidden",
        "busybox",
        "",
    ] {
        assert!(
            matches!(RootfsUrl::parse(bad), Err(RootfsError::Invalid { .. })),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn recognises_image_urls() {
    assert_eq!(
        RootfsUrl::parse("oci:///var/img").unwrap(),
        RootfsUrl::OciLayout("/var/img".into())
    );
    assert_eq!(
        RootfsUrl::parse("docker-archive:///tmp/a.tar").unwrap(),
        RootfsUrl::DockerArchive("/tmp/a.tar".into())
    );
    assert!(matches!(
        RootfsUrl::parse("oci://relative"),
        Err(RootfsError::Invalid { .. })
    ));
}

#[test]
fn a_missing_image_is_an_image_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let store = RootfsStore::new(tmp.path().join("store"), None);
    for url in ["oci:///nonexistent/img", "docker-archive:///nonexistent/a.tar"] {
        let err = store.resolve(url).unwrap_err();
        assert!(
            matches!(
                err,
                RootfsError::Image {
                    source: ImageError::Invalid { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/"), "{err}");
    }
    assert!(!tmp.path().join("store/images").exists());
}

fn busybox_like_image() -> ImageBuilder {
    ImageBuilder::new().layer(
        LayerBuilder::new()
            .file("bin/busybox", "not really", 0o755)
            .symlink("bin/sh", "busybox"),
        Compression::Gzip,
    )
}

#[test]
fn images_are_unpacked_once_per_digest_and_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = busybox_like_image().write_oci_dir(&layout);
    busybox_like_image().write_oci_tar(&tmp.path().join("same.tar"));
    let store = RootfsStore::new(tmp.path().join("store"), None);

    let base = store.resolve(&format!("oci://{}", layout.display())).unwrap();
    let hex = built.id.strip_prefix("sha256:").unwrap();
    let entry = tmp.path().join(format!("store/images/sha256-{hex}"));
    assert_eq!(base, entry.join("rootfs"));
    assert_eq!(fs::read_link(base.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert!(fs::read_to_string(entry.join("config.json"))
        .unwrap()
        .contains("diff_ids"));

    // Resolving again, from the layout or the same image as a tarball, reuses the tree:
    // the same directory inode, with a file only the first unpack could have seen.
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(&base).unwrap().ino();
    fs::write(base.join("probe"), "first").unwrap();
    for url in [
        format!("oci://{}", layout.display()),
        format!("oci://{}/same.tar", tmp.path().display()),
    ] {
        let again = store.resolve(&url).unwrap();
        assert_eq!(again, base);
        assert_eq!(fs::metadata(&again).unwrap().ino(), inode);
        assert_eq!(fs::read_to_string(again.join("probe")).unwrap(), "first");
    }

    // The docker save form of the same layers is another image (keyed by its config).
    let archive = tmp.path().join("docker.tar");
    let docker = busybox_like_image().write_docker_archive(&archive);
    let other = store
        .resolve(&format!("docker-archive://{}", archive.display()))
        .unwrap();
    assert_eq!(
        other,
        tmp.path()
            .join(format!("store/images/sha256-{}/rootfs", &docker.id[7..]))
    );
    assert!(!other.join("probe").exists());
    let mut entries: Vec<_> = fs::read_dir(tmp.path().join("store/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert!(entries.iter().all(|e| !e.starts_with(".tmp")), "{entries:?}");
    assert_eq!(entries.len(), 4, "two images and their lock files: {entries:?}");
}

#[test]
fn concurrent_first_uses_of_an_image_share_one_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("img.tar");
    busybox_like_image().write_docker_archive(&archive);
    let url = format!("docker-archive://{}", archive.display());
    let store = RootfsStore::new(tmp.path().join("store"), None);
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| store.resolve(&url).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.iter().all(|p| *p == paths[0]), "{paths:?}");
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("store/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_corrupt_image_leaves_no_cache_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = busybox_like_image().write_oci_dir(&layout);
    let blob = layout.join(&built.layers[0]);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let store = RootfsStore::new(tmp.path().join("store"), None);
    let err = store.resolve(&format!("oci://{}", layout.display())).unwrap_err();
    assert!(
        matches!(
            err,
            RootfsError::Image {
                source: ImageError::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&built.layers[0]), "{err}");
    let entries: Vec<_> = fs::read_dir(tmp.path().join("store/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn unknown_preloaded_names_are_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let store = RootfsStore::new(tmp.path().join("store"), Some(tmp.path().join("preloaded")));
    let err = store.resolve("preloaded:nope").unwrap_err();
    assert!(matches!(err, RootfsError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope.tar"), "{err}");
    let store = RootfsStore::new(tmp.path().join("store"), None);
    assert!(matches!(
        store.resolve("preloaded:nope"),
        Err(RootfsError::NotFound { .. })
    ));
}

#[test]
fn preloaded_directories_are_used_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let preloaded = tmp.path().join("preloaded");
    fs::create_dir_all(preloaded.join("mine/etc")).unwrap();
    let store = RootfsStore::new(tmp.path().join("store"), Some(preloaded.clone()));
    assert_eq!(store.resolve("preloaded:mine").unwrap(), preloaded.join("mine"));
}

#[test]
fn preloaded_tarballs_are_unpacked_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/marker"), "v1").unwrap();
    let preloaded = tmp.path().join("preloaded");
    fs::create_dir_all(&preloaded).unwrap();
    let status = Command::new("tar")
        .arg("-cf")
        .arg(preloaded.join("img.tar"))
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());

    let store = RootfsStore::new(tmp.path().join("store"), Some(preloaded.clone()));
    let base = store.resolve("preloaded:img").unwrap();
    assert_eq!(base, tmp.path().join("store/preloaded/img"));
    assert_eq!(fs::read_to_string(base.join("etc/marker")).unwrap(), "v1");

    // A second resolve uses the cache, not the tarball.
    fs::remove_file(preloaded.join("img.tar")).unwrap();
    assert_eq!(store.resolve("preloaded:img").unwrap(), base);
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("store/preloaded"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_corrupt_tarball_leaves_no_cache_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let preloaded = tmp.path().join("preloaded");
    fs::create_dir_all(&preloaded).unwrap();
    fs::write(preloaded.join("bad.tar"), "not a tarball").unwrap();
    let store = RootfsStore::new(tmp.path().join("store"), Some(preloaded));
    assert!(matches!(
        store.resolve("preloaded:bad"),
        Err(RootfsError::Unavailable { .. })
    ));
    assert_eq!(
        fs::read_dir(tmp.path().join("store/preloaded")).unwrap().count(),
        0
    );
}

#[test]
fn applet_list_skips_busybox_itself() {
    assert_eq!(applets("[\n[[\nbusybox\nsh\n\nls\n"), vec!["[", "[[", "sh", "ls"]);
}

#[test]
fn passwd_has_root_and_the_default_user() {
    assert_eq!(
        passwd_file(),
        "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\n"
    );
    assert_eq!(group_file(), "root:x:0:\nvcap:x:2000:\n");
}

#[test]
fn the_preloaded_dir_advertises_its_trees_and_tarballs_but_not_dot_names() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["debian", ".debian.partial", "busybox"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    for f in ["cflinuxfs4.tar", ".debian.lock", ".debian.log", "notes.txt"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    assert_eq!(preloaded_names(dir.path()), ["busybox", "cflinuxfs4", "debian"]);
    assert_eq!(preloaded_names(&dir.path().join("absent")), ["busybox"]);
}
