use std::os::unix::fs::MetadataExt;

use super::*;
use crate::image::testing::LayerBuilder;

fn as_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn options() -> Options {
    Options { chown: as_root() }
}

/// A fresh root to apply layers to, and a sibling dir standing for "the host outside it".
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let (root, outside) = (base.join("root"), base.join("outside"));
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    (tmp, root, outside)
}

fn apply_layer(root: &Path, layer: LayerBuilder) -> Result<Applied, LayerError> {
    apply(layer.build().as_slice(), root, options())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn applies_files_dirs_symlinks_and_hard_links_with_modes_and_owners() {
    let (_tmp, root, _) = dirs();
    let applied = apply_layer(
        &root,
        LayerBuilder::new()
            .dir("etc", 0o755)
            .file_owned("etc/app.conf", "conf", 0o640, 1000, 1001)
            .file("/bin/tool", "#!/bin/sh\n", 0o4755)
            .dir_owned("home/app", 0o700, 1000, 1000)
            .symlink("bin/sh", "tool")
            .hardlink("etc/again.conf", "etc/app.conf")
            .raw(tar::EntryType::Char, b"dev/null", None, b""),
    )
    .unwrap();
    assert_eq!(
        applied,
        Applied {
            entries: 6,
            whiteouts: 0,
            skipped: 1
        }
    );
    assert_eq!(fs::read_to_string(root.join("etc/app.conf")).unwrap(), "conf");
    let conf = fs::metadata(root.join("etc/app.conf")).unwrap();
    assert_eq!(conf.mode() & 0o7777, 0o640);
    assert_eq!(conf.mtime(), 1_700_000_000);
    assert_eq!(
        fs::metadata(root.join("bin/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("tool"));
    assert_eq!(
        fs::metadata(root.join("etc/again.conf")).unwrap().ino(),
        conf.ino()
    );
    assert_eq!(conf.nlink(), 2);
    assert!(!root.join("dev/null").exists(), "device nodes are skipped");
    let home = fs::metadata(root.join("home/app")).unwrap();
    assert_eq!(home.mode() & 0o7777, 0o700);
    if as_root() {
        assert_eq!((conf.uid(), conf.gid()), (1000, 1001));
        assert_eq!((home.uid(), home.gid()), (1000, 1000));
    }
}

#[test]
fn later_layers_replace_entries_of_any_kind() {
    let (_tmp, root, _) = dirs();
    apply_layer(
        &root,
        LayerBuilder::new()
            .file("a", "file", 0o644)
            .dir("b", 0o755)
            .file("b/inner", "x", 0o644)
            .symlink("c", "a")
            .dir("d", 0o700)
            .file("d/kept", "kept", 0o644),
    )
    .unwrap();
    apply_layer(
        &root,
        LayerBuilder::new()
            .dir("a", 0o755)
            .file("b", "now a file", 0o644)
            .file("c", "not a link", 0o644)
            .dir("d", 0o755),
    )
    .unwrap();
    assert!(root.join("a").is_dir());
    assert_eq!(fs::read_to_string(root.join("b")).unwrap(), "now a file");
    assert!(fs::symlink_metadata(root.join("c")).unwrap().is_file());
    assert_eq!(fs::read_to_string(root.join("a")).ok(), None);
    // A directory over a directory merges, taking the new mode.
    assert_eq!(fs::read_to_string(root.join("d/kept")).unwrap(), "kept");
    assert_eq!(fs::metadata(root.join("d")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn whiteouts_delete_entries_of_lower_layers() {
    let (_tmp, root, _) = dirs();
    apply_layer(
        &root,
        LayerBuilder::new()
            .file("etc/a", "a", 0o644)
            .file("etc/b", "b", 0o644)
            .file("var/cache/x/y", "y", 0o644)
            .symlink("link", "/etc/a"),
    )
    .unwrap();
    let applied = apply_layer(
        &root,
        LayerBuilder::new()
            .whiteout("etc/a")
            .whiteout("var/cache")
            .whiteout("link")
            .whiteout("never-existed"),
    )
    .unwrap();
    assert_eq!((applied.entries, applied.whiteouts), (0, 4));
    assert_eq!(names(&root.join("etc")), ["b"]);
    assert_eq!(names(&root.join("var")), Vec::<String>::new());
    assert!(fs::symlink_metadata(root.join("link")).is_err());
    // The removed symlink's target is untouched; no `.wh.` file is ever materialised.
    assert_eq!(names(&root), ["etc", "var"]);
}

#[test]
fn opaque_directories_keep_only_the_current_layers_entries() {
    let (_tmp, root, _) = dirs();
    apply_layer(
        &root,
        LayerBuilder::new()
            .file("app/old", "old", 0o644)
            .file("app/sub/old", "old", 0o644)
            .file("app/sub/keep-not", "old", 0o644)
            .file("other/kept", "kept", 0o644),
    )
    .unwrap();
    // Entries before and after the marker both survive it, and so do their parents when the
    // tar has no entry for them (`app/sub`).
    apply_layer(
        &root,
        LayerBuilder::new()
            .file("app/sub/new", "new", 0o644)
            .opaque("app")
            .file("app/new", "new", 0o644),
    )
    .unwrap();
    assert_eq!(names(&root.join("app")), ["new", "sub"]);
    assert_eq!(names(&root.join("app/sub")), ["new"]);
    assert_eq!(names(&root.join("other")), ["kept"]);

    // An opaque marker alone empties the directory but keeps it.
    apply_layer(&root, LayerBuilder::new().opaque("other")).unwrap();
    assert!(root.join("other").is_dir());
    assert_eq!(names(&root.join("other")), Vec::<String>::new());
}

#[test]
fn absolute_names_are_made_relative_and_parent_components_refused() {
    let (_tmp, root, outside) = dirs();
    apply_layer(&root, LayerBuilder::new().file("/abs/file", "in", 0o644)).unwrap();
    assert_eq!(fs::read_to_string(root.join("abs/file")).unwrap(), "in");

    for name in [&b"../outside/escaped"[..], b"ok/../../outside/escaped"] {
        let err = apply_layer(
            &root,
            LayerBuilder::new().raw(tar::EntryType::Regular, name, None, b"x"),
        )
        .unwrap_err();
        assert!(matches!(err, LayerError::Entry { .. }), "{err}");
        assert!(err.to_string().contains("'..'"), "{err}");
    }
    let err = apply_layer(
        &root,
        LayerBuilder::new().raw(tar::EntryType::Regular, b".wh...", None, b""),
    )
    .unwrap_err();
    assert!(err.to_string().contains("whiteout must name an entry"), "{err}");
    assert!(root.is_dir());
    assert_eq!(names(&outside), Vec::<String>::new());
}

#[test]
fn symlinks_in_the_tree_resolve_inside_the_root() {
    let (_tmp, root, outside) = dirs();
    fs::write(outside.join("victim"), "host file").unwrap();
    let host_outside = outside.to_str().unwrap();
    apply_layer(
        &root,
        LayerBuilder::new()
            .symlink("abs", host_outside)
            .symlink("up", "../../../../..")
            .symlink("lib", "usr/lib")
            .dir("usr/lib", 0o755)
            .symlink("loop", "loop"),
    )
    .unwrap();
    apply_layer(
        &root,
        LayerBuilder::new()
            .file("abs/victim", "through an absolute link", 0o644)
            .file("up/pwned", "through a relative link", 0o644)
            .file("lib/libc.so", "merged usr", 0o644)
            .whiteout("abs/victim-again"),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "host file");
    assert_eq!(names(&outside), ["victim"]);
    let inside = root.join(host_outside.trim_start_matches('/'));
    assert_eq!(
        fs::read_to_string(inside.join("victim")).unwrap(),
        "through an absolute link"
    );
    assert_eq!(
        fs::read_to_string(root.join("pwned")).unwrap(),
        "through a relative link"
    );
    assert_eq!(
        fs::read_to_string(root.join("usr/lib/libc.so")).unwrap(),
        "merged usr"
    );

    // Whiteouts and hard links through links stay inside too.
    apply_layer(
        &root,
        LayerBuilder::new().whiteout(&format!("{host_outside}/victim")),
    )
    .unwrap();
    assert!(outside.join("victim").exists());
    let err = apply_layer(
        &root,
        LayerBuilder::new().hardlink("stolen", "abs/../outside/victim"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
    assert!(!inside.join("victim").exists());
    let err = apply_layer(&root, LayerBuilder::new().hardlink("stolen", "abs/victim")).unwrap_err();
    assert!(err.to_string().contains("not in the layers so far"), "{err}");
    let err = apply_layer(&root, LayerBuilder::new().file("usr/lib/libc.so/x", "", 0o644)).unwrap_err();
    assert!(
        matches!(&err, LayerError::Entry { reason, .. } if reason.contains("not a directory")),
        "{err}"
    );
    let err = apply_layer(&root, LayerBuilder::new().file("loop/x", "", 0o644)).unwrap_err();
    assert!(err.to_string().contains("too many levels of symlinks"), "{err}");
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let (_tmp, root, outside) = dirs();
    fs::write(outside.join("target"), "host").unwrap();
    let target = outside.join("target");
    apply_layer(
        &root,
        LayerBuilder::new().symlink("etc-passwd", target.to_str().unwrap()),
    )
    .unwrap();
    apply_layer(&root, LayerBuilder::new().file("etc-passwd", "image", 0o644)).unwrap();
    assert_eq!(fs::read_to_string(&target).unwrap(), "host");
    assert_eq!(fs::read_to_string(root.join("etc-passwd")).unwrap(), "image");
}

#[test]
fn resolve_clamps_at_the_root_and_keeps_missing_components() {
    let (_tmp, root, _) = dirs();
    std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("..", root.join("parent")).unwrap();
    assert_eq!(
        resolve(&root, Path::new("abs/c"), true).unwrap(),
        root.join("a/b/c")
    );
    assert_eq!(
        resolve(&root, Path::new("parent/parent/x"), true).unwrap(),
        root.join("x")
    );
    assert_eq!(resolve(&root, Path::new("abs"), false).unwrap(), root.join("abs"));
    assert_eq!(resolve(&root, Path::new("abs"), true).unwrap(), root.join("a/b"));
    assert_eq!(
        relative(Path::new("/./a//b/")).unwrap(),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(relative(Path::new("./")).unwrap(), None);
    assert!(relative(Path::new("a/../b")).is_err());
}
