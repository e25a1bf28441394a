//! A directory tree as a gzipped tar whose bytes depend only on the tree's content: entries in
//! name order, no times, owners or host names, modes kept (so executables stay executable).
//! The same tree always packs to the same bytes, so its SHA-256 names it: `diego app push`
//! packs an app's directory this way and uploads it only when the file server lacks that
//! digest, and the file server packs the lifecycle bundles this way so their `ETag`s are
//! stable across restarts.
//!
//! Symlinks are stored as symlinks, never followed; sockets, fifos and devices are left out.

use std::io::{self, Write};
use std::path::Path;

/// What [`pack_tree`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub files: u64,
    /// Bytes of file content (before compression).
    pub bytes: u64,
}

/// Writes `dir`'s tree (its entries, not `dir` itself) to `out` as a gzipped tar.
pub fn pack_tree(dir: &Path, out: impl Write) -> io::Result<Packed> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut packed = Packed::default();
    walk(dir, "", &mut tar, &mut packed)?;
    tar.into_inner()?.finish()?.flush()?;
    Ok(packed)
}

/// Packs `dir` into memory (see [`pack_tree`]).
pub fn pack_tree_to_vec(dir: &Path) -> io::Result<(Vec<u8>, Packed)> {
    let mut out = Vec::new();
    let packed = pack_tree(dir, &mut out)?;
    Ok((out, packed))
}

fn walk<W: Write>(
    dir: &Path,
    prefix: &str,
    tar: &mut tar::Builder<W>,
    packed: &mut Packed,
) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: file names must be UTF-8", entry.path().display()),
            ));
        };
        let path = format!("{prefix}{name}");
        let meta = std::fs::symlink_metadata(entry.path())?;
        let kind = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            tar.append_data(&mut header, format!("{path}/"), io::empty())?;
            walk(&entry.path(), &format!("{path}/"), tar, packed)?;
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            let target = std::fs::read_link(entry.path())?;
            tar.append_link(&mut header, &path, target)?;
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode);
            header.set_size(meta.len());
            let file = std::fs::File::open(entry.path())?;
            tar.append_data(&mut header, &path, file)?;
            packed.files += 1;
            packed.bytes += meta.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("b/c/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("b/c/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    }

    fn entries(bytes: &[u8]) -> Vec<(String, u32, Option<String>)> {
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_wherever_and_whenever_it_is() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(one.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        tree(two.path());
        let (a, packed) = pack_tree_to_vec(one.path()).unwrap();
        let (b, _) = pack_tree_to_vec(two.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(packed, Packed { files: 2, bytes: 11 });
        std::fs::write(one.path().join("a.txt"), "A").unwrap();
        assert_ne!(
            pack_tree_to_vec(one.path()).unwrap().0,
            b,
            "content changes the bytes"
        );
    }

    #[test]
    fn entries_are_sorted_modes_kept_and_symlinks_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let (bytes, _) = pack_tree_to_vec(dir.path()).unwrap();
        let got = entries(&bytes);
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "b/", "b/c/", "b/c/run", "link"]);
        assert_eq!(got[3].1 & 0o777, 0o755);
        assert_eq!(got[4].2.as_deref(), Some("/etc/passwd"));
    }
}
