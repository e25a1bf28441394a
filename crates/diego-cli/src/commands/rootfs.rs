//! `diego rootfs build NAME`: builds a root filesystem into the rootfs cache directory, where a
//! cell given it as `--preloaded-dir` serves it as `preloaded:NAME` (docs/200-rootfs.md).
//!
//! Only `debian` is known: Debian 12 (bookworm) by `debootstrap --variant=minbase` with
//! python3 (with pip, for the python buildpack's local wheels), nodejs, ca-certificates and busybox, what the repository's buildpacks stage and
//! run apps with. The tree is built in `<cache>/.debian.partial`, cleaned (apt lists, the .deb
//! cache, docs and man pages), marked with what it was built with, and renamed to
//! `<cache>/debian`, so a reader never sees half a tree; a tree already there with the same
//! marker is kept (cached) and the command returns at once.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;

/// Where rootfs trees are kept unless `--cache-dir` or `DIEGO_ROOTFS_DIR` says otherwise.
pub const DEFAULT_ROOTFS_DIR: &str = "/var/lib/diego/rootfs";

/// The cache dir `--cache-dir` (and `diego dev --rootfs-dir`) takes unless given one:
/// `$DIEGO_ROOTFS_DIR`, else [`DEFAULT_ROOTFS_DIR`].
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("DIEGO_ROOTFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS_DIR))
}

/// Debian's own mirror, reachable from this project's machines.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The rootfs names `diego rootfs build` knows.
pub const KNOWN: &[&str] = &["debian"];

/// The Debian release the `debian` rootfs is.
const SUITE: &str = "bookworm";

/// The packages added to debootstrap's minbase: the buildpacks' runtimes and busybox (httpd
/// for the static buildpack).
pub const DEBIAN_PACKAGES: &[&str] = &["python3", "python3-pip", "nodejs", "ca-certificates", "busybox"];

/// The marker inside a built tree, relative to its root.
const MARKER: &str = "etc/diego-rootfs";

#[derive(Debug, clap::Subcommand)]
pub enum RootfsCommand {
    /// Build a root filesystem into the cache dir (kept: a second build returns at once).
    /// A cell given the cache dir as `--preloaded-dir` runs it as `preloaded:NAME`.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The rootfs to build; known: debian (bookworm minbase with python3, nodejs,
    /// ca-certificates and busybox).
    pub name: String,
    /// Where the rootfs trees are kept (`<DIR>/<NAME>`).
    #[arg(long, value_name = "DIR", env = "DIEGO_ROOTFS_DIR", default_value = DEFAULT_ROOTFS_DIR)]
    pub cache_dir: PathBuf,
    /// The Debian mirror debootstrap downloads from.
    #[arg(long, value_name = "URL", default_value = DEFAULT_MIRROR)]
    pub mirror: String,
}

pub fn run(cmd: RootfsCommand) -> anyhow::Result<()> {
    match cmd {
        RootfsCommand::Build(args) => build(&args),
    }
}

/// What a `debian` tree is built with, as its marker records it: a tree with another marker
/// (another package list, another suite) is built again.
pub fn debian_marker() -> String {
    format!(
        "name=debian\nsuite={SUITE}\nvariant=minbase\npackages={}\n",
        DEBIAN_PACKAGES.join(",")
    )
}

fn build(args: &BuildArgs) -> anyhow::Result<()> {
    if !KNOWN.contains(&args.name.as_str()) {
        return Err(crate::report::usage(format!(
            "no rootfs is named {:?}; known: {}",
            args.name,
            KNOWN.join(", ")
        )));
    }
    let name = args.name.as_str();
    let cache = &args.cache_dir;
    let target = cache.join(name);
    let marker = debian_marker();
    if is_current(&target, &marker) {
        println!(
            "rootfs {name}: cached at {} (packages {}); nothing to build",
            target.display(),
            DEBIAN_PACKAGES.join(",")
        );
        return Ok(());
    }
    anyhow::ensure!(
        crate::process::is_root(),
        "diego rootfs build {name} must run as root (debootstrap makes device nodes and chroots)"
    );
    let debootstrap = find_program("debootstrap").context(
        "debootstrap is not installed: `apt-get install debootstrap` (scripts/install-packages installs it)",
    )?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;

    // One build per cache dir at a time: a second waits, then finds the first's tree.
    let lock_path = cache.join(format!(".{name}.lock"));
    let lock =
        std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        println!(
            "rootfs {name}: another build holds {}; waiting for it",
            lock_path.display()
        );
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    if is_current(&target, &marker) {
        println!("rootfs {name}: cached at {} (built meanwhile)", target.display());
        return Ok(());
    }

    let started = Instant::now();
    let partial = cache.join(format!(".{name}.partial"));
    remove_if_present(&partial)?;
    let log_path = cache.join(format!(".{name}.log"));
    println!(
        "rootfs {name}: debootstrap --variant=minbase --include={} {SUITE} from {} (about a minute; log in {})",
        DEBIAN_PACKAGES.join(","),
        args.mirror,
        log_path.display()
    );
    if let Err(e) = run_debootstrap(&debootstrap, &partial, &args.mirror, &log_path) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }

    println!("rootfs {name}: cleaning apt lists, the .deb cache, docs and man pages");
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ] {
        empty_dir(&partial.join(dir))?;
    }
    for file in ["var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"] {
        let _ = std::fs::remove_file(partial.join(file));
    }
    for program in ["usr/bin/python3", "usr/bin/node", "bin/busybox"] {
        anyhow::ensure!(
            partial.join(program).exists(),
            "debootstrap finished but {} has no /{program}; see {}",
            partial.display(),
            log_path.display()
        );
    }
    std::fs::write(partial.join(MARKER), &marker)
        .with_context(|| format!("writing {}", partial.join(MARKER).display()))?;

    // Into place: an outdated tree is moved aside first and removed after.
    let old = cache.join(format!(".{name}.old"));
    if target.exists() {
        remove_if_present(&old)?;
        std::fs::rename(&target, &old)
            .with_context(|| format!("moving the outdated {} aside", target.display()))?;
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    remove_if_present(&old)?;
    let bytes = disk_usage(&target)?;
    println!(
        "rootfs {name}: built {} in {:.1} s, {} MB; a cell with --preloaded-dir {} runs it as preloaded:{name}",
        target.display(),
        started.elapsed().as_secs_f64(),
        bytes / 1_000_000,
        cache.display()
    );
    Ok(())
}

/// Whether `tree` is a complete build with exactly `marker`.
fn is_current(tree: &Path, marker: &str) -> bool {
    std::fs::read_to_string(tree.join(MARKER)).is_ok_and(|m| m == marker)
}

/// Runs debootstrap into `dir`, its output to `log`, printing the first line of each phase
/// (Retrieving, Validating, Extracting, Unpacking, Configuring, …: the line's first word)
/// instead of one per package.
fn run_debootstrap(program: &Path, dir: &Path, mirror: &str, log: &Path) -> anyhow::Result<()> {
    let mut log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(program)
        .arg("--variant=minbase")
        .arg(format!("--include={}", DEBIAN_PACKAGES.join(",")))
        .arg(SUITE)
        .arg(dir)
        .arg(mirror)
        .env("PATH", path_with_sbin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut phases = std::collections::HashSet::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading debootstrap's output")?;
        use std::io::Write as _;
        let _ = writeln!(log_file, "{line}");
        let Some(message) = line.strip_prefix("I: ") else {
            continue;
        };
        let word = message.split_whitespace().next().unwrap_or("");
        if phases.insert(word.to_string()) {
            println!("  debootstrap: {message}");
        }
    }
    let status = child.wait().context("waiting for debootstrap")?;
    if !status.success() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "debootstrap failed ({status}); the last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// `program` on PATH or in the sbin directories (root's PATH may lack them).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// PATH with the sbin directories debootstrap runs tools from (chroot, ldconfig) when it
/// lacks them, as a non-login root shell's may.
fn path_with_sbin() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|d| d == Path::new(dir)) {
            dirs.push(PathBuf::from(dir));
        }
    }
    std::env::join_paths(dirs).unwrap_or(path)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes everything in `dir` (keeping the directory); nothing when it does not exist.
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let gone = if path.symlink_metadata()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The bytes `dir` takes on disk (like `du`: allocated blocks, each inode once, links not
/// followed).
fn disk_usage(dir: &Path) -> anyhow::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = path
            .symlink_metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_records_the_suite_and_packages_and_only_an_equal_one_is_current() {
        let marker = debian_marker();
        assert!(marker.contains("suite=bookworm"), "{marker}");
        assert!(
            marker.contains("packages=python3,python3-pip,nodejs,ca-certificates,busybox"),
            "{marker}"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_current(dir.path(), &marker), "no marker");
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join(MARKER), marker.replace("busybox", "")).unwrap();
        assert!(!is_current(dir.path(), &marker), "another package list");
        std::fs::write(dir.path().join(MARKER), &marker).unwrap();
        assert!(is_current(dir.path(), &marker));
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_known_ones() {
        let err = build(&BuildArgs {
            name: "alpine".into(),
            cache_dir: tempfile::tempdir().unwrap().path().to_path_buf(),
            mirror: DEFAULT_MIRROR.into(),
        })
        .unwrap_err();
        let err = err.downcast_ref::<crate::report::UsageError>().unwrap();
        assert_eq!(err.0, "no rootfs is named \"alpine\"; known: debian");
    }

    #[test]
    fn disk_usage_counts_a_hard_linked_file_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 * 1024]).unwrap();
        let one = disk_usage(dir.path()).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), one);
        assert!(one >= 64 * 1024, "{one}");
    }
}
