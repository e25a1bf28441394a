//! Tar extraction that cannot leave its destination (blocking): see the parent module's docs.
//! Every path is resolved by the kernel (`openat2`) relative to a directory descriptor, so a
//! symlink made meanwhile by a process in the container cannot redirect a write either.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("entry {path:?} leads outside the destination (through a symlink)")]
    Escapes { path: String },
    #[error("entry {path:?} has a '..' path component")]
    ParentDir { path: String },
    #[error("entry {path:?}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the tar stream: {0}")]
    Read(#[source] io::Error),
    #[error("opening the destination: {0}")]
    Destination(#[source] io::Error),
}

const DIR_MODE: u32 = 0o755;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// Symlinks below the destination are followed only while they stay below it.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// Extracts `input` into `root/rel` (`rel` resolved inside `root`, created if missing).
pub fn extract(root: &Path, rel: &Path, input: impl Read) -> Result<(), ExtractError> {
    let root_fd = rustix::fs::open(root, dir_flags(), Mode::empty())
        .map_err(|e| ExtractError::Destination(e.into()))?;
    let parts = components(rel).map_err(|_| {
        ExtractError::Destination(io::Error::new(
            io::ErrorKind::InvalidInput,
            "'..' in the destination",
        ))
    })?;
    let dst = make_dirs(
        &root_fd,
        &parts,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| ExtractError::Destination(e.into()))?;

    let mut archive = ::tar::Archive::new(input);
    for entry in archive.entries().map_err(ExtractError::Read)? {
        let mut entry = entry.map_err(ExtractError::Read)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts =
            components(Path::new(&raw)).map_err(|()| ExtractError::ParentDir { path: raw.clone() })?;
        let fail = |e: Errno| {
            if e == Errno::XDEV || e == Errno::LOOP {
                ExtractError::Escapes { path: raw.clone() }
            } else {
                ExtractError::Entry {
                    path: raw.clone(),
                    source: e.into(),
                }
            }
        };
        let Some((name, parents)) = parts.split_last() else {
            continue; // the destination itself (`./`)
        };
        let header = entry.header();
        let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o1777);
        let mtime = header.mtime().unwrap_or(0);
        match header.entry_type() {
            ::tar::EntryType::Directory => {
                let dir = make_dirs(&dst, &parts, beneath()).map_err(fail)?;
                rustix::fs::fchmod(&dir, mode).map_err(fail)?;
            }
            ::tar::EntryType::Regular | ::tar::EntryType::Continuous => {
                let parent = make_dirs(&dst, parents, beneath()).map_err(fail)?;
                remove_non_dir(&parent, name).map_err(fail)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    mode,
                )
                .map_err(fail)?;
                let mut file = std::fs::File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| ExtractError::Entry {
                    path: raw.clone(),
                    source: e,
                })?;
                rustix::fs::fchmod(&file, mode).map_err(fail)?;
                let t = Timespec {
                    tv_sec: mtime as i64,
                    tv_nsec: 0,
                };
                rustix::fs::futimens(
                    &file,
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                )
                .map_err(fail)?;
            }
            ::tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| PathBuf::from(String::from_utf8_lossy(&l).into_owned()))
                    .unwrap_or_default();
                let parent = make_dirs(&dst, parents, beneath()).map_err(fail)?;
                remove_non_dir(&parent, name).map_err(fail)?;
                // The target is stored, never followed here: it means something only inside
                // the container.
                rustix::fs::symlinkat(&target, &parent, name.as_str()).map_err(fail)?;
            }
            ::tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let target_parts = components(Path::new(&target))
                    .map_err(|()| ExtractError::ParentDir { path: raw.clone() })?;
                let Some((target_name, target_parents)) = target_parts.split_last() else {
                    return Err(fail(Errno::INVAL));
                };
                let from = open_dir(&dst, &target_parents.join("/"), beneath()).map_err(fail)?;
                let parent = make_dirs(&dst, parents, beneath()).map_err(fail)?;
                remove_non_dir(&parent, name).map_err(fail)?;
                rustix::fs::linkat(
                    &from,
                    target_name.as_str(),
                    &parent,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .map_err(fail)?;
            }
            other => {
                tracing::debug!(path = %raw, kind = ?other, "skipping tar entry of an unsupported type");
            }
        }
    }
    Ok(())
}

/// `path`'s normal components: a leading `/` and `.` dropped, `..` refused.
fn components(path: &Path) -> Result<Vec<String>, ()> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => return Err(()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(parts)
}

fn open_dir(base: &OwnedFd, rel: &str, resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(base, rel, dir_flags(), Mode::empty(), resolve)
}

/// Opens `base/parts…` as a directory, making what is missing; each prefix is resolved from
/// `base` with `resolve`, so no step can leave it.
fn make_dirs(base: &OwnedFd, parts: &[String], resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
    let mut current = open_dir(base, "", resolve)?;
    for i in 0..parts.len() {
        let prefix = parts[..=i].join("/");
        current = match open_dir(base, &prefix, resolve) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&current, parts[i].as_str(), Mode::from_raw_mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                open_dir(base, &prefix, resolve)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(current)
}

/// Removes `name` in `dir` unless it is a directory (or absent), so the entry replaces it
/// rather than writing through it.
fn remove_non_dir(dir: impl AsFd, name: &str) -> Result<(), Errno> {
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
            Err(Errno::ISDIR)
        }
        Ok(_) => rustix::fs::unlinkat(&dir, name, AtFlags::empty()),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with names and link targets written verbatim.
    fn raw(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = ::tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(::tar::EntryType::new(*kind));
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("home/vcap")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        (tmp, root, outside)
    }

    #[test]
    fn files_dirs_and_links_land_below_the_destination() {
        let (_tmp, root, _) = setup();
        let tar = raw(&[
            ("./app/", b'5', "", b""),
            ("/app/run", b'0', "", b"echo hi"),
            ("app/again", b'1', "app/run", b""),
            ("app/cur", b'2', "run", b""),
        ]);
        extract(&root, Path::new("home/vcap"), &tar[..]).unwrap();
        let app = root.join("home/vcap/app");
        assert_eq!(std::fs::read_to_string(app.join("run")).unwrap(), "echo hi");
        assert_eq!(std::fs::read_to_string(app.join("again")).unwrap(), "echo hi");
        assert_eq!(std::fs::read_link(app.join("cur")).unwrap(), Path::new("run"));
    }

    #[test]
    fn symlinks_already_there_do_not_lead_out() {
        let (tmp, root, outside) = setup();
        let vcap = root.join("home/vcap");
        // What a process in the container could have made.
        std::os::unix::fs::symlink(&outside, vcap.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../outside", vcap.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), vcap.join("last")).unwrap();
        for path in ["abs/x", "rel/x"] {
            let err =
                extract(&root, Path::new("home/vcap"), &raw(&[(path, b'0', "", b"x")])[..]).unwrap_err();
            assert!(matches!(err, ExtractError::Escapes { .. }), "{path}: {err}");
        }
        // A symlink as the last component is replaced, not written through.
        extract(
            &root,
            Path::new("home/vcap"),
            &raw(&[("last", b'0', "", b"mine")])[..],
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(vcap.join("last")).unwrap(), "mine");
        // Hard links to outside, `..`.
        let err = extract(
            &root,
            Path::new("home/vcap"),
            &raw(&[("h", b'1', "abs/secret", b"")])[..],
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::Escapes { .. }), "{err}");
        let err = extract(
            &root,
            Path::new("home/vcap"),
            &raw(&[("../x", b'0', "", b"x")])[..],
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::ParentDir { .. }), "{err}");
        // The destination itself through an absolute symlink: resolved inside the root.
        std::os::unix::fs::symlink("/home/vcap", root.join("app")).unwrap();
        extract(&root, Path::new("app/sub"), &raw(&[("f", b'0', "", b"in")])[..]).unwrap();
        assert_eq!(std::fs::read_to_string(vcap.join("sub/f")).unwrap(), "in");
        let mut seen = Vec::new();
        for e in std::fs::read_dir(&outside).unwrap() {
            seen.push(e.unwrap().file_name());
        }
        assert!(seen.is_empty(), "written outside: {seen:?}");
        assert!(!tmp.path().join("x").exists());
    }
}
