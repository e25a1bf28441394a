//! A container's copy-on-write root: `<container_dir>/merged`, an overlayfs over a read-only
//! base from [`crate::rootfs`]. Writes land in `upper` (with `work`, overlayfs's scratch
//! space); the base is shared by every container and never changes.
//!
//! Two layouts, chosen by the disk limit of the first [`Overlay::mount`]:
//! - no limit (0): `upper` and `work` are plain directories in the container directory;
//! - a limit: they live in `disk/`, the loop mount of `disk.img`, a sparse ext4 image sized so
//!   about the limit is free (see [`disk`]); writing more fails with ENOSPC (no space left on
//!   device) in the container.
//!
//! Both [`Overlay::mount`] and [`Overlay::destroy`] are idempotent, so a backend that crashed
//! halfway (or restarted and rediscovered its containers) can simply call them again.

pub mod disk;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A path overlayfs cannot take in its mount options, or a disk limit no image can have.
    #[error("overlay: {0}")]
    Invalid(String),
    /// Making, mounting, unmounting or removing failed on this host.
    #[error("{context}")]
    Unavailable {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> OverlayError {
    let context = context.into();
    move |source| OverlayError::Unavailable { context, source }
}

/// The directories of one container's overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    dir: PathBuf,
    /// Where formatted disk images are kept, one per size, to copy instead of formatting.
    disk_templates: Option<PathBuf>,
}

impl Overlay {
    pub fn new(container_dir: impl Into<PathBuf>) -> Self {
        Overlay {
            dir: container_dir.into(),
            disk_templates: None,
        }
    }

    /// The same overlay making its disk image (if limited) as a sparse copy of a template
    /// formatted once per size in `dir`, instead of running `mkfs.ext4` for every container.
    pub fn with_disk_templates(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk_templates = Some(dir.into());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writable layer: `disk/upper` when the overlay has a disk image, else `upper`.
    /// Decided by whether `disk.img` exists, so an `Overlay::new` of a container made earlier
    /// (or by an earlier process) finds the right one.
    pub fn upper(&self) -> PathBuf {
        self.layer_root().join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.layer_root().join("work")
    }

    /// The container's root: the OCI bundle's `root.path`.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// The sparse ext4 image of a disk-limited overlay (exists only with a limit).
    pub fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// Where [`Overlay::disk_image`] is mounted.
    pub fn disk_dir(&self) -> PathBuf {
        self.dir.join("disk")
    }

    fn has_disk(&self) -> bool {
        self.disk_image().exists()
    }

    fn layer_root(&self) -> PathBuf {
        if self.has_disk() {
            self.disk_dir()
        } else {
            self.dir.clone()
        }
    }

    /// Makes whatever is missing and mounts the overlay over `lower`, unless it is mounted
    /// already. `disk_limit_bytes` > 0 puts the writable layer on its own ext4 image with
    /// about that much free space (at least [`disk::MIN_LIMIT_BYTES`], else `Invalid`); 0 means
    /// no limit. An overlay made earlier keeps its layout (and size): the limit only matters
    /// to the call that creates it.
    pub fn mount(&self, lower: &Path, disk_limit_bytes: u64) -> Result<(), OverlayError> {
        let image_bytes = match disk_limit_bytes {
            0 => None,
            limit => Some(disk::checked_image_bytes(limit)?),
        };
        fs::create_dir_all(&self.dir).map_err(io_err(format!("creating {}", self.dir.display())))?;
        let made_plain = self.dir.join("upper").exists();
        if let Some(size) = image_bytes.filter(|_| !self.has_disk() && !made_plain) {
            disk::create(&self.disk_image(), size, self.disk_templates.as_deref())?;
        }
        if self.has_disk() {
            let at = self.disk_dir();
            fs::create_dir_all(&at).map_err(io_err(format!("creating {}", at.display())))?;
            if !is_mount_point(&at)? {
                disk::mount(&self.disk_image(), &at)?;
            }
        } else if disk_limit_bytes > 0 {
            let dir = self.dir.display();
            warn!(%dir, disk_limit_bytes, "overlay was made without a disk limit; keeping it so");
        }
        for dir in [self.upper(), self.work(), self.merged()] {
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        if self.is_mounted()? {
            return Ok(());
        }
        let options = mount_options(lower, &self.upper(), &self.work())?;
        // The syscall itself, not mount(8): no process to spawn on every create.
        nix::mount::mount(
            Some("overlay"),
            &self.merged(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
        .map_err(io_err(format!("mounting overlay at {}", self.merged().display())))?;
        Ok(())
    }

    /// Is `merged` a mount point in this mount namespace?
    pub fn is_mounted(&self) -> Result<bool, OverlayError> {
        is_mount_point(&self.merged())
    }

    /// Unmounts `merged`, then the disk image if any; detaches a loop device left on the
    /// image; removes `merged`, `upper`, `work`, `disk` and the image, then the container
    /// directory if that left it empty. Whatever is already gone is skipped, so this also
    /// finishes a half-made or half-destroyed overlay.
    pub fn destroy(&self) -> Result<(), OverlayError> {
        let merged = self.merged();
        let disk_dir = self.disk_dir();
        // The disk only after the overlay, whose upper and work are on it.
        unmount_all(&merged)?;
        unmount_all(&disk_dir)?;
        if self.has_disk() {
            disk::detach(&self.disk_image());
        }
        // `merged` is removed with remove_dir, never remove_dir_all: if it were somehow still
        // mounted, a recursive delete would write whiteouts into the container's layer.
        remove(&merged, |p| fs::remove_dir(p))?;
        // Both layouts, whichever this is: a plain one has no disk, a disk one no plain dirs.
        for dir in [self.dir.join("work"), self.dir.join("upper"), disk_dir] {
            remove(&dir, |p| fs::remove_dir_all(p))?;
        }
        disk::remove(&self.disk_image())?;
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(io_err(format!("removing {}", self.dir.display()))(e)),
        }
    }
}

/// Is `path` a mount point in this mount namespace? A missing path is not.
fn is_mount_point(path: &Path) -> Result<bool, OverlayError> {
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(format!("resolving {}", path.display()))(e)),
    };
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(io_err("reading /proc/self/mountinfo"))?;
    let mounted = mount_points(&mountinfo).any(|p| p == path);
    Ok(mounted)
}

/// Unmounts `path` until it is no longer a mount point: mounts can stack (a mount that raced
/// a restart). One still busy after three tries (a process holds a file in it) is detached
/// lazily so the container can go; the kernel frees it when the last user lets go.
fn unmount_all(path: &Path) -> Result<(), OverlayError> {
    let mut attempts = 0;
    while is_mount_point(path)? {
        attempts += 1;
        let mut flags = nix::mount::MntFlags::empty();
        if attempts > 3 {
            warn!(path = %path.display(), "mount busy; detaching it lazily");
            flags = nix::mount::MntFlags::MNT_DETACH;
        }
        if let Err(e) = nix::mount::umount2(path, flags) {
            if attempts > 5 {
                let e = io::Error::from_raw_os_error(e as i32);
                return Err(io_err(format!("unmounting {}", path.display()))(e));
            }
        }
    }
    Ok(())
}

fn remove(path: &PathBuf, f: fn(&PathBuf) -> io::Result<()>) -> Result<(), OverlayError> {
    match f(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

/// The `-o` argument of `mount -t overlay`. Overlayfs splits its options on `,` and lower
/// layers on `:`, and has no escaping we can rely on, so such paths are refused.
pub fn mount_options(lower: &Path, upper: &Path, work: &Path) -> Result<String, OverlayError> {
    let mut parts = Vec::new();
    for (key, path) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        let s = path
            .to_str()
            .ok_or_else(|| OverlayError::Invalid(format!("{key} {} is not UTF-8", path.display())))?;
        if !path.is_absolute() {
            return Err(OverlayError::Invalid(format!("{key} {s:?} must be absolute")));
        }
        if s.contains([',', ':', '\\']) || s.chars().any(char::is_whitespace) {
            return Err(OverlayError::Invalid(format!(
                "{key} {s:?} contains a character overlayfs options cannot carry (',', ':', '\\' or whitespace)"
            )));
        }
        parts.push(format!("{key}={s}"));
    }
    Ok(parts.join(","))
}

/// The mount points listed in a `/proc/PID/mountinfo` (field 5, octal-escaped).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(|p| PathBuf::from(unescape_octal(p))))
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash in mountinfo.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_mount_options() {
        let o = mount_options(Path::new("/base"), Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(o, "lowerdir=/base,upperdir=/c/upper,workdir=/c/work");
        for bad in ["/a,b", "/a:b", "/a b", "relative"] {
            let err = mount_options(Path::new(bad), Path::new("/u"), Path::new("/w")).unwrap_err();
            assert!(matches!(err, OverlayError::Invalid(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn parses_mountinfo_with_escapes() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /tmp/a\\040b/merged rw - overlay overlay rw,lowerdir=/x\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(points, vec![PathBuf::from("/"), PathBuf::from("/tmp/a b/merged")]);
        assert_eq!(unescape_octal("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn destroy_tolerates_half_made_and_missing_state() {
        let tmp = tempfile::tempdir().unwrap();
        let overlay = Overlay::new(tmp.path().join("c1"));
        overlay.destroy().unwrap(); // nothing there at all
        fs::create_dir_all(overlay.upper().join("etc")).unwrap();
        fs::write(overlay.upper().join("etc/file"), "x").unwrap();
        overlay.destroy().unwrap(); // only upper, never mounted
        assert!(!overlay.dir().exists());

        // A container dir holding more than the overlay (the bundle's config.json) is kept.
        fs::create_dir_all(overlay.merged()).unwrap();
        fs::write(overlay.dir().join("config.json"), "{}").unwrap();
        overlay.destroy().unwrap();
        assert!(!overlay.merged().exists());
        assert!(overlay.dir().join("config.json").exists());
    }

    #[test]
    fn the_disk_image_decides_the_layout_and_destroy_removes_both() {
        let tmp = tempfile::tempdir().unwrap();
        let overlay = Overlay::new(tmp.path().join("c1"));
        assert_eq!(overlay.upper(), tmp.path().join("c1/upper"));
        assert_eq!(overlay.work(), tmp.path().join("c1/work"));

        // A disk-limited overlay that never got mounted (a crash before `mount -o loop`): the
        // image, a formatting leftover and the layer dirs of an unmounted disk dir.
        fs::create_dir_all(overlay.disk_dir().join("upper/etc")).unwrap();
        fs::create_dir_all(overlay.merged()).unwrap();
        fs::write(overlay.disk_image(), "").unwrap();
        fs::write(tmp.path().join("c1/disk.img.tmp"), "").unwrap();
        assert_eq!(overlay.upper(), tmp.path().join("c1/disk/upper"));
        assert_eq!(overlay.work(), tmp.path().join("c1/disk/work"));
        overlay.destroy().unwrap();
        assert!(!overlay.dir().exists());
        overlay.destroy().unwrap();
    }

    #[test]
    fn refuses_a_disk_limit_too_small_before_making_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let overlay = Overlay::new(tmp.path().join("c1"));
        let err = overlay.mount(tmp.path(), 4096).unwrap_err();
        assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("disk_bytes"), "{err}");
        assert!(!overlay.dir().exists(), "nothing is made for a refused limit");
    }
}
