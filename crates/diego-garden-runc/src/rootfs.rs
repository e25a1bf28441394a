//! Read-only base root filesystems, resolved from a container's rootfs URL and cached in a
//! store directory. Containers never write here: each gets an overlay over the base
//! (see [`crate::overlay`]).
//!
//! - `preloaded:NAME`: the built-in busybox tree, or a directory or tarball of the cell's
//!   preloaded dir, cached as `<store>/preloaded/NAME`;
//! - `oci:///path` and `docker-archive:///path`: a local image (see [`crate::image`]) unpacked
//!   once into `<store>/images/sha256-<id>/rootfs`, keyed by the image's manifest digest (OCI) or
//!   config digest (docker save), so every container of one image shares one tree.
//!
//! Every cache entry is built in a temporary sibling directory and renamed into place, so two
//! concurrent first uses (threads or processes) both end with one complete tree and neither
//! ever sees a half-built one. Images are large, so their builds also take a lock file: the
//! second user waits for the first instead of unpacking the same layers again.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;

use crate::host;
use crate::image::{Image, ImageError, ImageFormat};
use crate::user::User;

/// The name of the built-in rootfs, always available: `preloaded:busybox`.
pub const BUSYBOX: &str = "busybox";

/// Where Debian's `busybox-static` package installs its binary.
pub const DEFAULT_BUSYBOX_BINARY: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The URL cannot be understood; the caller must fix it.
    #[error("rootfs {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    /// A well-formed `preloaded:NAME` this cell does not have.
    #[error("rootfs \"preloaded:{name}\": not found (looked for the built-in busybox, {searched})")]
    NotFound { name: String, searched: String },
    /// A local image that cannot be used: malformed, corrupt (a digest mismatch), for another
    /// platform or in a format this backend cannot read. The error names the image file.
    #[error("{source}")]
    Image {
        url: String,
        #[source]
        source: ImageError,
    },
    /// Building or unpacking failed on this host (a missing tool, a full disk, …).
    #[error("{context}")]
    Unavailable {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Unavailable { context, source }
}

/// A parsed `ContainerSpec::rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsUrl {
    /// `preloaded:NAME`: a tree this cell is configured with (or the built-in busybox).
    Preloaded(String),
    /// `oci:///path/to/layout`: a local OCI image layout.
    OciLayout(PathBuf),
    /// `docker-archive:///path/to/image.tar`: a `docker save` tarball.
    DockerArchive(PathBuf),
}

impl RootfsUrl {
    pub fn parse(url: &str) -> Result<Self, RootfsError> {
        let invalid = |reason: &str| RootfsError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(name) = url.strip_prefix("preloaded:") {
            validate_name(name).map_err(|r| invalid(&r))?;
            return Ok(RootfsUrl::Preloaded(name.to_string()));
        }
        for (scheme, make) in [
            ("oci://", RootfsUrl::OciLayout as fn(PathBuf) -> RootfsUrl),
            ("docker-archive://", RootfsUrl::DockerArchive),
        ] {
            if let Some(path) = url.strip_prefix(scheme) {
                if !path.starts_with('/') {
                    return Err(invalid(&format!(
                        "expected {scheme}/absolute/path (three slashes)"
                    )));
                }
                return Ok(make(PathBuf::from(path)));
            }
        }
        Err(invalid(
            "expected preloaded:NAME, oci:///path or docker-archive:///path",
        ))
    }
}

/// A preloaded name is one path component: it names a directory in the store.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty preloaded name".into());
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err("a preloaded name must not start with '.'".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("a preloaded name may only contain letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// The `preloaded:NAME` root filesystems a cell's preloaded dir holds, as
/// [`RootfsStore::resolve`] finds them — each directory `NAME` and tarball `NAME.tar` whose
/// name is a valid preloaded name (so not `.NAME.partial`, a `diego rootfs build` in progress)
/// — with the built-in busybox, in name order: what the cell advertises to the auction.
pub fn preloaded_names(dir: &Path) -> Vec<String> {
    let mut names = vec![BUSYBOX.to_string()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let name = if entry.path().is_dir() {
            file
        } else {
            match file.strip_suffix(".tar") {
                Some(name) => name,
                None => continue,
            }
        };
        if validate_name(name).is_ok() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names.sort();
    names
}

/// Resolves rootfs URLs to read-only base directories.
#[derive(Debug, Clone)]
pub struct RootfsStore {
    store_dir: PathBuf,
    preloaded_dir: Option<PathBuf>,
    busybox_binary: PathBuf,
}

impl RootfsStore {
    /// `store_dir` holds the cache (`<store_dir>/preloaded/NAME`); `preloaded_dir`, if any, holds
    /// the cell's configured root filesystems as `NAME/` directories or `NAME.tar` tarballs.
    pub fn new(store_dir: impl Into<PathBuf>, preloaded_dir: Option<PathBuf>) -> Self {
        RootfsStore {
            store_dir: store_dir.into(),
            preloaded_dir,
            busybox_binary: PathBuf::from(DEFAULT_BUSYBOX_BINARY),
        }
    }

    /// Use another static busybox binary than [`DEFAULT_BUSYBOX_BINARY`].
    pub fn with_busybox_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox_binary = path.into();
        self
    }

    fn cache_dir(&self) -> PathBuf {
        self.store_dir.join("preloaded")
    }

    fn images_dir(&self) -> PathBuf {
        self.store_dir.join("images")
    }

    /// Where disk-limited containers' formatted images are kept, one per size, to copy.
    pub fn disk_templates_dir(&self) -> PathBuf {
        self.store_dir.join("disk-templates")
    }

    /// The read-only base directory for `url`, building or unpacking it on first use.
    /// Blocking: async callers run it on `spawn_blocking`.
    pub fn resolve(&self, url: &str) -> Result<PathBuf, RootfsError> {
        match RootfsUrl::parse(url)? {
            RootfsUrl::Preloaded(name) => self.preloaded(&name),
            RootfsUrl::OciLayout(path) => self.image(url, &path, ImageFormat::OciLayout),
            RootfsUrl::DockerArchive(path) => self.image(url, &path, ImageFormat::DockerArchive),
        }
    }

    /// `<store>/images/sha256-<id>/rootfs`, unpacked on first use; `config.json` beside it
    /// keeps the image config. The image's metadata is read (and verified) every time to learn
    /// its id, which costs a few small reads; its layers only on a miss.
    fn image(&self, url: &str, path: &Path, format: ImageFormat) -> Result<PathBuf, RootfsError> {
        let image_error = |source: ImageError| match source {
            ImageError::Unavailable { context, source, .. } => RootfsError::Unavailable {
                context: format!("rootfs {url:?}: {context}"),
                source,
            },
            source => RootfsError::Image {
                url: url.into(),
                source,
            },
        };
        let image = Image::open(path, format).map_err(image_error)?;
        let images = self.images_dir();
        let name = format!("sha256-{}", image.id_hex());
        let rootfs = images.join(&name).join("rootfs");
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        fs::create_dir_all(&images).map_err(io_err(format!("creating image cache {}", images.display())))?;
        let lock_path = images.join(format!("{name}.lock"));
        let lock =
            fs::File::create(&lock_path).map_err(io_err(format!("creating {}", lock_path.display())))?;
        // Released when `lock` is dropped, or by the kernel if this process dies.
        lock.lock()
            .map_err(io_err(format!("locking {}", lock_path.display())))?;
        cached(&images, &name, |tmp| {
            image.unpack(&tmp.join("rootfs")).map_err(&image_error)?;
            let config = tmp.join("config.json");
            fs::write(&config, image.config_json()).map_err(io_err(format!("writing {}", config.display())))
        })?;
        info!(image = %path.display(), id = %image.id(), layers = image.layer_count(),
              path = %rootfs.display(), "image rootfs ready");
        Ok(rootfs)
    }

    /// `busybox` is reserved for the built-in tree, so a configured `busybox.tar` can never
    /// collide with it in the cache.
    fn preloaded(&self, name: &str) -> Result<PathBuf, RootfsError> {
        if name == BUSYBOX {
            return cached(&self.cache_dir(), name, |dir| {
                build_busybox(&self.busybox_binary, dir)
            });
        }
        let Some(preloaded_dir) = &self.preloaded_dir else {
            return Err(RootfsError::NotFound {
                name: name.into(),
                searched: "no preloaded dir is configured".into(),
            });
        };
        let dir = preloaded_dir.join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        // Unpacked once: a cached tree is used even if the tarball has gone or changed since.
        let unpacked = self.cache_dir().join(name);
        if unpacked.is_dir() {
            return Ok(unpacked);
        }
        let tar = preloaded_dir.join(format!("{name}.tar"));
        if tar.is_file() {
            return cached(&self.cache_dir(), name, |dir| unpack_tar(&tar, dir));
        }
        Err(RootfsError::NotFound {
            name: name.into(),
            searched: format!("{} and {}", dir.display(), tar.display()),
        })
    }
}

/// `<cache>/NAME`, made by `build` into a temporary sibling and renamed into place.
fn cached(
    cache: &Path,
    name: &str,
    build: impl FnOnce(&Path) -> Result<(), RootfsError>,
) -> Result<PathBuf, RootfsError> {
    let target = cache.join(name);
    if target.is_dir() {
        return Ok(target);
    }
    fs::create_dir_all(cache).map_err(io_err(format!("creating rootfs cache {}", cache.display())))?;
    let tmp = cache.join(format!(".tmp-{name}-{}", unique_suffix()));
    fs::create_dir(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let built = build(&tmp).and_then(|()| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", tmp.display())))
    });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &target) {
        Ok(()) => {
            info!(name, path = %target.display(), "built rootfs");
            Ok(target)
        }
        // Lost the race: another builder renamed its complete tree first.
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(target)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err(format!(
                "renaming {} to {}",
                tmp.display(),
                target.display()
            ))(e))
        }
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn unpack_tar(tar: &Path, dir: &Path) -> Result<(), RootfsError> {
    host::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(dir)
            .arg("--numeric-owner"),
    )
    .map_err(io_err(format!("unpacking {}", tar.display())))?;
    Ok(())
}

/// The root user and the default non-root user, as `/etc/passwd` and `/etc/group` lines.
pub fn passwd_file() -> String {
    [User::root(), User::default_user()]
        .iter()
        .map(passwd_line)
        .collect()
}

pub fn passwd_line(u: &User) -> String {
    format!("{}:x:{}:{}:{}:{}:/bin/sh\n", u.name, u.uid, u.gid, u.name, u.home)
}

pub fn group_file() -> String {
    let user = User::default_user();
    format!("{}{}", group_line("root", 0), group_line(&user.name, user.gid))
}

pub fn group_line(name: &str, gid: u32) -> String {
    format!("{name}:x:{gid}:\n")
}

/// Directories every root filesystem needs as mount points for the bundle, with the modes
/// they get when a rootfs lacks them.
pub const MOUNT_POINTS: [(&str, u32); 4] = [("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777)];

pub const HOSTS_FILE: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

/// Applets to link from `busybox --list` output. `busybox` itself is skipped: linking it would
/// replace the binary with a symlink to itself.
pub fn applets(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect()
}

/// Lays out a busybox tree in `dir` (an empty directory).
fn build_busybox(binary: &Path, dir: &Path) -> Result<(), RootfsError> {
    let list = host::run(Command::new(binary).arg("--list")).map_err(io_err(format!(
        "listing busybox applets (is busybox-static installed at {}?)",
        binary.display()
    )))?;
    let list = String::from_utf8_lossy(&list);

    let others = [
        ("bin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("home/vcap", 0o755),
    ];
    for &(sub, mode) in MOUNT_POINTS.iter().chain(&others) {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("chmod {}", path.display())))?;
    }
    let user = User::default_user();
    let home = dir.join(user.home.trim_start_matches('/'));
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
        .map_err(io_err(format!("chown {}", home.display())))?;

    let bin = dir.join("bin/busybox");
    fs::copy(binary, &bin).map_err(io_err(format!(
        "copying {} to {}",
        binary.display(),
        bin.display()
    )))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", bin.display())))?;
    for applet in applets(&list) {
        let link = dir.join("bin").join(applet);
        symlink("busybox", &link).map_err(io_err(format!("linking {}", link.display())))?;
    }

    for (file, contents) in [
        ("etc/passwd", passwd_file()),
        ("etc/group", group_file()),
        ("etc/hosts", HOSTS_FILE.to_string()),
    ] {
        let path = dir.join(file);
        fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
