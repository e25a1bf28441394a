//! A container's copy-on-write root: `<container_dir>/{upper,work,merged}` mounted as overlayfs
//! over a read-only base from [`crate::rootfs`]. Writes land in `upper`; the base is shared by
//! every container and never changes.
//!
//! Both [`Overlay::mount`] and [`Overlay::destroy`] are idempotent, so a backend that crashed
//! halfway (or restarted and rediscovered its containers) can simply call them again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::warn;

use crate::host;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A path overlayfs cannot take in its mount options.
    #[error("overlay: {0}")]
    Invalid(String),
    /// Mounting, unmounting or removing failed on this host.
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
}

impl Overlay {
    pub fn new(container_dir: impl Into<PathBuf>) -> Self {
        Overlay {
            dir: container_dir.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The container's root: the OCI bundle's `root.path`.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// Creates the directories and mounts the overlay over `lower`, unless it is mounted already.
    pub fn mount(&self, lower: &Path) -> Result<(), OverlayError> {
        for dir in [self.upper(), self.work(), self.merged()] {
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        if self.is_mounted()? {
            return Ok(());
        }
        let options = mount_options(lower, &self.upper(), &self.work())?;
        host::run(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(self.merged()),
        )
        .map_err(io_err(format!("mounting overlay at {}", self.merged().display())))?;
        Ok(())
    }

    /// Is `merged` a mount point in this mount namespace?
    pub fn is_mounted(&self) -> Result<bool, OverlayError> {
        let merged = match fs::canonicalize(self.merged()) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(format!("resolving {}", self.merged().display()))(e)),
        };
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(io_err("reading /proc/self/mountinfo"))?;
        let mounted = mount_points(&mountinfo).any(|p| p == merged);
        Ok(mounted)
    }

    /// Unmounts and removes `upper`, `work` and `merged`, then the container directory if that
    /// left it empty. Whatever is already gone is skipped.
    pub fn destroy(&self) -> Result<(), OverlayError> {
        let merged = self.merged();
        // Mounts can stack (a mount that raced a restart); unmount until none is left.
        let mut attempts = 0;
        while self.is_mounted()? {
            attempts += 1;
            let mut umount = Command::new("umount");
            if attempts > 3 {
                // Still busy (a process holds a file in it): detach it so the container can
                // go; the kernel frees it when the last user lets go.
                warn!(path = %merged.display(), "overlay busy; detaching it lazily");
                umount.arg("-l");
            }
            if let Err(e) = host::run(umount.arg(&merged)) {
                if attempts > 5 {
                    return Err(io_err(format!("unmounting {}", merged.display()))(e));
                }
            }
        }
        // `merged` is removed with remove_dir, never remove_dir_all: if it were somehow still
        // mounted, a recursive delete would write whiteouts into the container's layer.
        remove(&merged, |p| fs::remove_dir(p))?;
        remove(&self.work(), |p| fs::remove_dir_all(p))?;
        remove(&self.upper(), |p| fs::remove_dir_all(p))?;
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
}
