//! Read-only base root filesystems, resolved from a container's rootfs URL and cached in a
//! store directory. Containers never write here: each gets an overlay over the base
//! (see [`crate::overlay`]).
//!
//! Every cache entry is built in a temporary sibling directory and renamed into place, so two
//! concurrent first uses (threads or processes) both end with one complete tree and neither
//! ever sees a half-built one.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;

use crate::host;
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
    /// Recognised, but this backend cannot provide it yet.
    #[error("rootfs {url:?}: {kind} root filesystems are not yet supported by the runc backend; use preloaded:NAME")]
    Unsupported { url: String, kind: &'static str },
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

    /// The read-only base directory for `url`, building or unpacking it on first use.
    /// Blocking: async callers run it on `spawn_blocking`.
    pub fn resolve(&self, url: &str) -> Result<PathBuf, RootfsError> {
        match RootfsUrl::parse(url)? {
            RootfsUrl::Preloaded(name) => self.preloaded(&name),
            RootfsUrl::OciLayout(_) => Err(RootfsError::Unsupported {
                url: url.into(),
                kind: "OCI image layout",
            }),
            RootfsUrl::DockerArchive(_) => Err(RootfsError::Unsupported {
                url: url.into(),
                kind: "docker-archive",
            }),
        }
    }

    /// `busybox` is reserved for the built-in tree, so a configured `busybox.tar` can never
    /// collide with it in the cache.
    fn preloaded(&self, name: &str) -> Result<PathBuf, RootfsError> {
        if name == BUSYBOX {
            return self.cached(name, |dir| build_busybox(&self.busybox_binary, dir));
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
            return self.cached(name, |dir| unpack_tar(&tar, dir));
        }
        Err(RootfsError::NotFound {
            name: name.into(),
            searched: format!("{} and {}", dir.display(), tar.display()),
        })
    }

    /// `<cache>/NAME`, made by `build` into a temporary sibling and renamed into place.
    fn cached(
        &self,
        name: &str,
        build: impl FnOnce(&Path) -> Result<(), RootfsError>,
    ) -> Result<PathBuf, RootfsError> {
        let cache = self.cache_dir();
        let target = cache.join(name);
        if target.is_dir() {
            return Ok(target);
        }
        fs::create_dir_all(&cache).map_err(io_err(format!("creating rootfs cache {}", cache.display())))?;
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
                info!(name, path = %target.display(), "built preloaded rootfs");
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
        .map(|u| format!("{}:x:{}:{}:{}:{}:/bin/sh\n", u.name, u.uid, u.gid, u.name, u.home))
        .collect()
}

pub fn group_file() -> String {
    let user = User::default_user();
    format!("root:x:0:\n{}:x:{}:\n", user.name, user.gid)
}

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

    for (sub, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("home/vcap", 0o755),
    ] {
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
mod tests {
    use super::*;

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
    fn recognises_image_urls_but_does_not_serve_them_yet() {
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

        let store = RootfsStore::new("/nonexistent-store", None);
        let err = store.resolve("oci:///var/img").unwrap_err();
        assert!(matches!(err, RootfsError::Unsupported { .. }));
        assert!(err.to_string().contains("not yet supported"), "{err}");
        assert!(matches!(
            store.resolve("docker-archive:///a.tar"),
            Err(RootfsError::Unsupported { .. })
        ));
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
}
