//! Applying one layer (a tar stream) on top of a root directory, with OCI whiteouts.
//!
//! The tree being built belongs to an untrusted image, so no path in it is trusted:
//! - entry names are made relative (a leading `/` is dropped) and a `..` component is refused;
//! - symlinks already in the tree are resolved *inside* the root, as if it were `/` (an
//!   absolute target restarts at the root, `..` stops at the root) — the way containerd
//!   applies layers — so `lib -> /usr/lib` works and `evil -> /etc` leads to `<root>/etc`,
//!   never to the host's `/etc`;
//! - the last component of an entry is never followed: what is there is replaced.
//!
//! Nothing else writes to the root while a layer is applied (it is a private temporary
//! directory), so resolving first and writing afterwards cannot race.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tracing::debug;

/// `.wh.NAME` in a directory deletes NAME from the layers below.
const WHITEOUT_PREFIX: &str = ".wh.";
/// `.wh..wh..opq` in a directory hides everything the layers below put in it.
const OPAQUE: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The stream is not a valid (possibly decompressed) tar.
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
    /// An entry the layer may not contain (an escaping path, a dangling hard link, …).
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    /// Writing the tree failed on this host.
    #[error("{context}: {source}")]
    Write {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn write_err(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> LayerError {
    move |source| LayerError::Write {
        context: context(),
        source,
    }
}

/// How ownership is applied: as in the tar (the backend runs as root), or not at all when the
/// process is not root and could not chown anyway (unit tests as a normal user).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub chown: bool,
}

/// What one layer did, for the log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub entries: u64,
    pub whiteouts: u64,
    /// Device nodes and FIFOs are skipped: `/dev` is a tmpfs in every container, and creating
    /// device nodes from an image is a privilege we do not hand out.
    pub skipped: u64,
}

/// Applies the layer tar `layer` to `root` (an existing directory).
pub fn apply(layer: impl Read, root: &Path, options: Options) -> Result<Applied, LayerError> {
    let mut archive = tar::Archive::new(layer);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut applied = Applied::default();
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue; // metadata for other entries, not content
        }
        let raw_path = entry.path().map_err(LayerError::Read)?.into_owned();
        let shown = raw_path.display().to_string();
        let invalid = |reason: &str| LayerError::Entry {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        let Some(rel) = relative(&raw_path).map_err(&invalid)? else {
            continue; // the root itself: its mode stays ours
        };
        let name = rel
            .file_name()
            .expect("a relative path has a last component")
            .to_owned();
        let parent = resolve(root, rel.parent().unwrap_or(Path::new("")), true).map_err(|r| invalid(&r))?;
        let name_str = name.to_string_lossy();

        if name_str == OPAQUE {
            ensure_dir(&parent, &shown)?;
            prune(&parent, &written)?;
            applied.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, "" | "." | "..") {
                return Err(invalid("a whiteout must name an entry"));
            }
            // `.wh..wh.*` other than the opaque marker is aufs bookkeeping, not content.
            if !hidden.starts_with(WHITEOUT_PREFIX) {
                remove(&parent.join(hidden))?;
                applied.whiteouts += 1;
            }
            continue;
        }

        let header = entry.header().clone();
        let dest = parent.join(&name);
        let mode = header.mode().map_err(LayerError::Read)? & 0o7777;
        let owner = if options.chown {
            let id = |v: io::Result<u64>| -> Result<u32, LayerError> {
                let v = v.map_err(LayerError::Read)?;
                u32::try_from(v).map_err(|_| invalid(&format!("uid/gid {v} is out of range")))
            };
            Some((id(header.uid())?, id(header.gid())?))
        } else {
            None
        };
        if kind.is_dir() {
            ensure_dir(&parent, &shown)?;
            if !is_real_dir(&dest) {
                remove(&dest)?;
                fs::create_dir(&dest).map_err(write_err(|| format!("creating {}", dest.display())))?;
            }
            set_owner_and_mode(&dest, owner, Some(mode))?;
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            ensure_dir(&parent, &shown)?;
            remove(&dest)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dest)
                .map_err(write_err(|| format!("creating {}", dest.display())))?;
            copy(&mut entry, &mut file, &dest)?;
            if let Ok(mtime) = header.mtime() {
                // Best effort: tools compare mtimes (make, Python's bytecode cache), nothing needs them.
                let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            }
            drop(file);
            set_owner_and_mode(&dest, owner, Some(mode))?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(LayerError::Read)?
                .ok_or_else(|| invalid("symlink without a target"))?
                .into_owned();
            ensure_dir(&parent, &shown)?;
            remove(&dest)?;
            // The target is stored as written; it is only ever followed inside the container
            // (or by `resolve`, confined to the root).
            std::os::unix::fs::symlink(&target, &dest)
                .map_err(write_err(|| format!("creating symlink {}", dest.display())))?;
            set_owner_and_mode(&dest, owner, None)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(LayerError::Read)?
                .ok_or_else(|| invalid("hard link without a target"))?
                .into_owned();
            let target_rel = relative(&target)
                .map_err(|r| invalid(&format!("hard link target {}: {r}", target.display())))?
                .ok_or_else(|| invalid("hard link to the root directory"))?;
            let target_host = resolve(root, &target_rel, false).map_err(|r| invalid(&r))?;
            match fs::symlink_metadata(&target_host) {
                Ok(m) if !m.is_dir() => {}
                Ok(_) => return Err(invalid("hard link to a directory")),
                Err(_) => {
                    return Err(invalid(&format!(
                        "hard link target {} is not in the layers so far",
                        target.display()
                    )))
                }
            }
            ensure_dir(&parent, &shown)?;
            if target_host != dest {
                remove(&dest)?;
                // `linkat` without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                fs::hard_link(&target_host, &dest)
                    .map_err(write_err(|| format!("linking {}", dest.display())))?;
            }
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            debug!(path = %shown, "skipping a device node or FIFO in an image layer");
            applied.skipped += 1;
            continue;
        } else {
            return Err(invalid(&format!(
                "unsupported tar entry type {:?}",
                kind.as_byte() as char
            )));
        }
        mark_written(&mut written, root, dest);
        applied.entries += 1;
    }
    Ok(applied)
}

/// An entry name relative to the root: `Ok(None)` for the root itself, an error for `..`.
pub fn relative(path: &Path) -> Result<Option<PathBuf>, &'static str> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err("path has a '..' component and could escape the root")
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// The host path of `rel` (relative, no `..`) in `root`, with every symlink met on the way
/// resolved as if `root` were `/`. The last component is followed only if `follow_last`.
/// Components that do not exist yet are kept as they are (they will be created as
/// directories).
pub fn resolve(root: &Path, rel: &Path, follow_last: bool) -> Result<PathBuf, String> {
    let mut pending: VecDeque<OsString> = rel.iter().map(OsStr::to_os_string).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.to_str() {
            Some("" | "." | "/") => continue,
            Some("..") => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let host: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(OsString::as_os_str))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        let is_last = pending.is_empty();
        let link = match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => fs::read_link(&host).ok(),
            _ => None,
        };
        let Some(target) = link else {
            resolved.push(part);
            continue;
        };
        hops += 1;
        if hops > MAX_SYMLINKS {
            return Err(format!(
                "too many levels of symlinks resolving {} in the image",
                rel.display()
            ));
        }
        if target.is_absolute() {
            resolved.clear();
        }
        for (i, c) in target.iter().map(OsStr::to_os_string).enumerate() {
            pending.insert(i, c);
        }
    }
    Ok(std::iter::once(root.as_os_str())
        .chain(resolved.iter().map(OsString::as_os_str))
        .collect())
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Creates the missing directories of an already resolved path (so none of them is a
/// symlink: `resolve` followed every existing one) for the entry `shown`.
fn ensure_dir(dir: &Path, shown: &str) -> Result<(), LayerError> {
    if is_real_dir(dir) {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| match e.kind() {
        // The image's own doing: a file where the entry needs a directory.
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => LayerError::Entry {
            path: shown.to_string(),
            reason: "a parent of the entry is not a directory in the layers so far".into(),
        },
        _ => LayerError::Write {
            context: format!("creating directory {}", dir.display()),
            source: e,
        },
    })
}

/// Removes whatever is at `path` (a directory with its contents; a symlink itself, not its
/// target). Nothing there is fine.
fn remove(path: &Path) -> Result<(), LayerError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(write_err(|| format!("removing {}", path.display())))
}

/// Records `path` and its parents (which may have no entries of their own in the tar) as
/// written by the current layer.
fn mark_written(written: &mut HashSet<PathBuf>, root: &Path, path: PathBuf) {
    let mut parent = path.parent().map(Path::to_path_buf);
    written.insert(path);
    while let Some(dir) = parent {
        if dir == root || !dir.starts_with(root) || !written.insert(dir.clone()) {
            break;
        }
        parent = dir.parent().map(Path::to_path_buf);
    }
}

/// Removes from `dir` everything this layer did not write: an opaque directory shows only the
/// current layer's entries, whether they came before or after the marker in the tar.
fn prune(dir: &Path, written: &HashSet<PathBuf>) -> Result<(), LayerError> {
    let entries = fs::read_dir(dir).map_err(write_err(|| format!("listing {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(write_err(|| format!("listing {}", dir.display())))?
            .path();
        if !written.contains(&path) {
            remove(&path)?;
        } else if is_real_dir(&path) {
            prune(&path, written)?;
        }
    }
    Ok(())
}

/// Chown before chmod: chown clears the setuid and setgid bits.
fn set_owner_and_mode(path: &Path, owner: Option<(u32, u32)>, mode: Option<u32>) -> Result<(), LayerError> {
    if let Some((uid, gid)) = owner {
        lchown(path, Some(uid), Some(gid)).map_err(write_err(|| format!("chown {}", path.display())))?;
    }
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(write_err(|| format!("chmod {}", path.display())))?;
    }
    Ok(())
}

/// Copies an entry's bytes, telling a bad archive (read) from a full disk (write).
fn copy(from: &mut impl Read, to: &mut File, dest: &Path) -> Result<(), LayerError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::Read(e)),
        };
        to.write_all(&buf[..n])
            .map_err(write_err(|| format!("writing {}", dest.display())))?;
    }
}

#[cfg(test)]
mod tests;
