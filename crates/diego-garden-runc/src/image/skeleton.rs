//! What an unpacked image needs beyond its own files to run under this backend, added only
//! where the image lacks it:
//! - the mount points of the bundle ([`crate::rootfs::MOUNT_POINTS`]: `/proc`, `/sys`, `/dev`, `/tmp`);
//! - the default user: processes run as `vcap` (2000:2000, home `/home/vcap`) unless they ask
//!   for another, as on every Cloud Foundry rootfs. An image without a `vcap` entry gets one
//!   appended to `/etc/passwd` (created with `root` too if missing), `vcap` in `/etc/group`,
//!   and `/home/vcap` owned by 2000. The image's own users are untouched, even one that
//!   already has uid 2000: the kernel only sees numbers, so both names then share it;
//! - `/etc/hosts` with `localhost`, as the busybox rootfs has, if the image has none.
//!
//! The backend reads `/etc/passwd` through the host path of the container's root, where a
//! symlink would be followed on the host: a symlinked `/etc/passwd` or `/etc/group` is
//! replaced by a copy of its target as resolved inside the image.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};

use super::layer::resolve;
use crate::rootfs::{group_file, group_line, passwd_file, passwd_line, HOSTS_FILE, MOUNT_POINTS};
use crate::user::{parse_passwd, User};

type Failure = (String, io::Error);

fn fail(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> Failure {
    move |e| (context(), e)
}

/// A path of the image resolved inside `root`, the last component not followed.
fn at(root: &Path, rel: &str) -> Result<PathBuf, Failure> {
    resolve(root, Path::new(rel), false).map_err(|r| {
        (
            format!("resolving /{rel}"),
            io::Error::new(io::ErrorKind::InvalidData, r),
        )
    })
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Completes the tree at `root`; `chown` false leaves new files to the current user.
pub fn complete(root: &Path, chown: bool) -> Result<(), Failure> {
    for (dir, mode) in MOUNT_POINTS.iter().chain(&[("etc", 0o755)]) {
        // A symlinked mount point (`/tmp -> /var/tmp`) is left as it is: runc resolves mount
        // destinations inside the root.
        let path = at(root, dir)?;
        if !exists(&path) {
            fs::create_dir_all(&path).map_err(fail(|| format!("creating /{dir}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                .map_err(fail(|| format!("chmod /{dir}")))?;
        }
    }

    let user = User::default_user();
    let passwd = read_materialized(root, "etc/passwd")?;
    let has_user = passwd
        .as_deref()
        .is_some_and(|p| parse_passwd(p).any(|u| u.name == user.name));
    if !has_user {
        let contents = match passwd {
            None => passwd_file(),
            Some(p) => appended(&p, &passwd_line(&user)),
        };
        write(root, "etc/passwd", &contents)?;
    }
    let group = read_materialized(root, "etc/group")?;
    let has_group = group
        .as_deref()
        .is_some_and(|g| g.lines().any(|l| l.split(':').next() == Some(user.name.as_str())));
    if !has_group {
        let contents = match group {
            None => group_file(),
            Some(g) => appended(&g, &group_line(&user.name, user.gid)),
        };
        write(root, "etc/group", &contents)?;
    }
    if !has_user {
        let home = at(root, user.home.trim_start_matches('/'))?;
        if !exists(&home) {
            fs::create_dir_all(&home).map_err(fail(|| format!("creating {}", user.home)))?;
            fs::set_permissions(&home, fs::Permissions::from_mode(0o755))
                .map_err(fail(|| format!("chmod {}", user.home)))?;
            if chown {
                lchown(&home, Some(user.uid), Some(user.gid))
                    .map_err(fail(|| format!("chown {}", user.home)))?;
            }
        }
    }

    if !exists(&at(root, "etc/hosts")?) {
        write(root, "etc/hosts", HOSTS_FILE)?;
    }
    Ok(())
}

fn appended(existing: &str, line: &str) -> String {
    let mut s = existing.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(line);
    s
}

/// The contents of `rel` as the container sees it, `None` if it is absent (or a directory);
/// a symlink is replaced by a regular copy of what it resolves to inside the root.
fn read_materialized(root: &Path, rel: &str) -> Result<Option<String>, Failure> {
    let path = at(root, rel)?;
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    let target = if meta.file_type().is_symlink() {
        resolve(root, Path::new(rel), true).map_err(|r| {
            (
                format!("resolving /{rel}"),
                io::Error::new(io::ErrorKind::InvalidData, r),
            )
        })?
    } else {
        path.clone()
    };
    let contents = match fs::symlink_metadata(&target) {
        Ok(m) if m.is_file() => Some(
            String::from_utf8_lossy(&fs::read(&target).map_err(fail(|| format!("reading /{rel}")))?)
                .into_owned(),
        ),
        _ => None,
    };
    if meta.file_type().is_symlink() {
        fs::remove_file(&path).map_err(fail(|| format!("removing the symlink /{rel}")))?;
        if let Some(c) = &contents {
            write(root, rel, c)?;
        }
    }
    Ok(contents)
}

/// Writes `rel` as a new regular file (mode 0644), replacing a file but never following a
/// symlink at that path.
fn write(root: &Path, rel: &str, contents: &str) -> Result<(), Failure> {
    let path = at(root, rel)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err((
                format!("writing /{rel}"),
                io::Error::new(io::ErrorKind::IsADirectory, "the image has a directory there"),
            ))
        }
        Ok(_) => fs::remove_file(&path).map_err(fail(|| format!("replacing /{rel}")))?,
        Err(_) => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(fail(|| format!("creating /{rel}")))?;
    file.write_all(contents.as_bytes())
        .map_err(fail(|| format!("writing /{rel}")))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(fail(|| format!("chmod /{rel}")))
}
