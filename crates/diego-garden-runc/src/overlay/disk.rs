//! The sparse ext4 image that holds a disk-limited container's writable layer (environment.md
//! R15(b)): `<container_dir>/disk.img`, loop-mounted at `<container_dir>/disk`, with the
//! overlay's `upper` and `work` inside. A write past the image's free space fails with ENOSPC
//! in the container; the host filesystem only pays for the blocks actually written.
//!
//! The depot's filesystem has no usable project quotas here (XFS without quota support), and
//! one small filesystem per container needs nothing from the host but a loop device.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::warn;

use super::{io_err, OverlayError};
use crate::host;

/// The smallest `disk_bytes` accepted: below this ext4's own metadata dominates, and nothing
/// real fits anyway.
pub const MIN_LIMIT_BYTES: u64 = 1 << 20;

/// `mkfs.ext4` flags, all explicit so the host's `/etc/mke2fs.conf` cannot change the
/// arithmetic in [`image_bytes`]:
/// - 4 KiB blocks and one 256-byte inode per 16 KiB (mke2fs's defaults for ordinary sizes;
///   spelled out because mke2fs would pick 1 KiB blocks and 4 KiB per inode below 512 MiB);
/// - `-m 0`: no blocks reserved for root — the limit is for whoever writes;
/// - no journal: the layer dies with the container (a host crash kills the container too), so
///   crash consistency buys nothing, while a journal costs 4 MiB–1 GiB of the limit and, since
///   mke2fs zeroes it, that much real disk IO per create;
/// - no `resize_inode`: the image never grows, so no reserved descriptor blocks;
/// - `lazy_itable_init`: inode tables are not written. mke2fs's default discard punches the
///   whole file first, and since punched holes read as zeros it marks every table zeroed, so
///   the kernel's lazy-init thread has nothing to do either and the image stays sparse
///   (~100–700 KiB allocated whatever its size).
const MKFS_ARGS: &[&str] = &[
    "-t",
    "ext4",
    "-q",
    "-F",
    "-b",
    "4096",
    "-I",
    "256",
    "-i",
    "16384",
    "-m",
    "0",
    "-O",
    "^has_journal,^resize_inode",
    "-E",
    "lazy_itable_init=1",
];

/// Mount options of the image: the container's layer may hold neither set-uid binaries nor
/// device nodes that work (overlayfs's whiteouts are 0/0 character devices, which `nodev`
/// does not stop it from creating).
const MOUNT_OPTIONS: &str = "loop,nosuid,nodev";

/// The size of the image that leaves about `limit` bytes free for files, or `None` when it
/// does not fit in a `u64`. Measured with [`MKFS_ARGS`] for limits of 1 MiB – 1 TiB, `df`
/// then reports `limit` + 92–160 KiB available up to 1 GiB, and `limit` + 0.005% above
/// (2.3 MiB more at 64 GiB); never less than `limit`.
///
/// The rule: ext4 takes
/// - 256 + 2 of every 16384 blocks for inode tables and the two bitmaps of each block group
///   (1.6%);
/// - min(2% of the blocks, 16 MiB) it keeps back so delayed allocation can always place its
///   metadata (the kernel's `s_resv_clusters`; never reported free) — 2% of the image is
///   about `limit / 48`;
/// - a little fixed space (superblock, group descriptors and their backups, root directory,
///   `lost+found`), covered by 128 KiB.
pub fn image_bytes(limit: u64) -> Option<u64> {
    const BLOCK: u128 = 4096;
    const FIXED: u128 = 128 << 10;
    const MAX_RESERVED: u128 = 16 << 20;
    let limit = u128::from(limit);
    let reserved = (limit / 48).min(MAX_RESERVED);
    let bytes = (limit + reserved + FIXED) * 16384 / (16384 - 256 - 2);
    u64::try_from(bytes.div_ceil(BLOCK) * BLOCK).ok()
}

/// Checks `limit` (`disk_bytes`, non-zero) and returns the image size for it.
pub(super) fn checked_image_bytes(limit: u64) -> Result<u64, OverlayError> {
    if limit < MIN_LIMIT_BYTES {
        return Err(OverlayError::Invalid(format!(
            "disk_bytes must be 0 (no limit) or at least {MIN_LIMIT_BYTES} (1 MiB) to hold a \
             filesystem (got {limit})"
        )));
    }
    image_bytes(limit)
        .ok_or_else(|| OverlayError::Invalid(format!("disk_bytes {limit} is too large for a disk image")))
}

/// Makes a formatted sparse image of `size` bytes at `image`: a sparse copy of the template
/// for that size in `templates` (formatted the first time), or formatted in place without
/// one. It is made under a temporary name and renamed into place, so an existing `image` is
/// always a whole filesystem (a crash half-way leaves only the temporary, which [`remove`]
/// deletes).
pub(super) fn create(image: &Path, size: u64, templates: Option<&Path>) -> Result<(), OverlayError> {
    let tmp = tmp_path(image);
    let made = (|| {
        match templates {
            Some(dir) => {
                let template = template(dir, size)?;
                host::run(Command::new("cp").arg("--sparse=always").arg(&template).arg(&tmp)).map_err(
                    io_err(format!("copying {} to {}", template.display(), tmp.display())),
                )?;
            }
            None => format(&tmp, size)?,
        }
        fs::rename(&tmp, image).map_err(io_err(format!("renaming {} into place", tmp.display())))
    })();
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// A new sparse file of `size` bytes at `path`, formatted.
fn format(path: &Path, size: u64) -> Result<(), OverlayError> {
    let file = fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    file.set_len(size)
        .map_err(io_err(format!("sizing {} to {size} bytes", path.display())))?;
    drop(file);
    host::run(Command::new("mkfs.ext4").args(MKFS_ARGS).arg(path))
        .map_err(io_err(format!("formatting {}", path.display())))
        .map(drop)
}

/// The formatted template of `size` bytes in `dir`, made the first time it is needed. Makers
/// racing each format their own temporary and rename it into place; any of the (equivalent)
/// results may win.
fn template(dir: &Path, size: u64) -> Result<PathBuf, OverlayError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = dir.join(format!("ext4-{size}.img"));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("ext4-{size}.img.{}-{n}.tmp", std::process::id()));
    let made = format(&tmp, size)
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err(format!("renaming {}", tmp.display()))));
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made.map(|()| path)
}

/// Loop-mounts `image` at `at`. util-linux sets the loop device to clear itself when the
/// mount goes, so unmounting also detaches it.
pub(super) fn mount(image: &Path, at: &Path) -> Result<(), OverlayError> {
    host::run(
        Command::new("mount")
            .args(["-t", "ext4", "-o", MOUNT_OPTIONS])
            .arg(image)
            .arg(at),
    )
    .map(drop)
    .map_err(io_err(format!(
        "mounting {} at {}",
        image.display(),
        at.display()
    )))
}

/// Detaches any loop device still backed by `image` — normally none, since unmounting
/// detaches; this is for a `mount` interrupted between attaching and mounting. A device whose
/// mount was detached lazily (busy) cannot go yet: `losetup -d` leaves it to clear itself once
/// its last user lets go, so failures here are only logged.
pub(super) fn detach(image: &Path) {
    let devices = match loop_devices(Path::new("/sys/block"), image) {
        Ok(d) => d,
        Err(e) => {
            warn!(image = %image.display(), error = %e, "listing loop devices");
            return;
        }
    };
    for device in devices {
        if let Err(e) = host::run(Command::new("losetup").arg("-d").arg(&device)) {
            warn!(device = %device.display(), image = %image.display(), error = %e, "detaching loop device");
        }
    }
}

/// Removes the image and any temporary left by an interrupted [`create`].
pub(super) fn remove(image: &Path) -> Result<(), OverlayError> {
    for file in [image.to_path_buf(), tmp_path(image)] {
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", file.display()))(e)),
        }
    }
    Ok(())
}

fn tmp_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    image.with_file_name(name)
}

/// The `/dev/loopN` devices whose backing file is `file`, from `<sys_block>/loopN/loop/
/// backing_file` (absent for an unattached device). The kernel shows the file's absolute path
/// as resolved when it was attached, with ` (deleted)` once unlinked.
pub(super) fn loop_devices(sys_block: &Path, file: &Path) -> io::Result<Vec<PathBuf>> {
    // Resolve through the parent: the file itself may be gone already.
    let file = match (file.parent(), file.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| file.to_path_buf()),
        _ => file.to_path_buf(),
    };
    let wanted = file.to_string_lossy().into_owned();
    let deleted = format!("{wanted} (deleted)");
    let mut devices = Vec::new();
    let entries = match fs::read_dir(sys_block) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(devices),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(sys_block.join(&*name).join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        if backing == wanted || backing == deleted {
            devices.push(Path::new("/dev").join(&*name));
        }
    }
    devices.sort();
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_leaves_the_limit_free_plus_a_little() {
        for limit in [1 << 20, 5 << 20, 16 << 20, 800 << 20, 1 << 30, 64 << 30, 1 << 40] {
            let size = image_bytes(limit).unwrap();
            assert_eq!(size % 4096, 0, "{limit}: whole blocks");
            // 1.6% of tables and bitmaps, up to 2% kept back (16 MiB at most), 128 KiB fixed.
            let overhead = size - limit;
            let most = limit / 64 + limit / 48 + (256 << 10);
            assert!(overhead > limit / 64 && overhead < most, "{limit}: {overhead}");
        }
        // The kept-back share stops growing at 16 MiB.
        let big = image_bytes(1 << 40).unwrap() - (1 << 40);
        assert!(big < (1u64 << 40) / 62 + (17 << 20), "{big}");
        assert!(image_bytes(u64::MAX).is_none());
    }

    #[test]
    fn refuses_limits_that_cannot_hold_a_filesystem() {
        for limit in [1, 4096, MIN_LIMIT_BYTES - 1, u64::MAX] {
            let err = checked_image_bytes(limit).unwrap_err();
            assert!(matches!(err, OverlayError::Invalid(_)), "{limit}: {err}");
            assert!(err.to_string().contains("disk_bytes"), "{err}");
        }
        assert!(checked_image_bytes(MIN_LIMIT_BYTES).is_ok());
    }

    #[test]
    fn finds_loop_devices_by_backing_file_even_when_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let sys = root.join("sys");
        let image = root.join("c/disk.img");
        fs::create_dir_all(image.parent().unwrap()).unwrap();
        for (dev, backing) in [
            ("loop0", Some(format!("{}\n", image.display()))),
            ("loop1", Some("/elsewhere/disk.img\n".to_string())),
            ("loop2", None),
            ("loop7", Some(format!("{} (deleted)\n", image.display()))),
            ("loop8", Some(format!("{}.tmp\n", image.display()))),
            ("sda", Some(format!("{}\n", image.display()))),
        ] {
            fs::create_dir_all(sys.join(dev).join("loop")).unwrap();
            if let Some(b) = backing {
                fs::write(sys.join(dev).join("loop/backing_file"), b).unwrap();
            }
        }
        assert_eq!(
            loop_devices(&sys, &image).unwrap(),
            vec![PathBuf::from("/dev/loop0"), PathBuf::from("/dev/loop7")]
        );
        assert_eq!(
            loop_devices(&sys, &tmp_path(&image)).unwrap(),
            vec![PathBuf::from("/dev/loop8")]
        );
        assert!(loop_devices(&root.join("nope"), &image).unwrap().is_empty());
    }
}
