//! Files in and out of a container root directory with the host's `tar` command, shared by
//! the backends that keep a container's files in a host directory (process, runc).
//!
//! Extraction does not use the host's `tar`: GNU tar follows symlinks that already exist under
//! the destination (a container can make `/home/vcap/x -> /` and stream in `x/etc/...`), which
//! as root on the host writes outside the container. [`extract`] parses the stream itself and
//! makes every file relative to directory descriptors opened with `openat2`:
//! - the destination is resolved with `RESOLVE_IN_ROOT` (the container's view: an absolute
//!   symlink in it stays inside the container's root);
//! - every entry is resolved below the destination with `RESOLVE_BENEATH` (symlinks that stay
//!   below it are followed, ones that lead out fail the extraction), and its last component is
//!   never followed (an existing symlink there is replaced, not written through);
//! - a leading `/` is stripped and a `..` component fails the extraction, as GNU tar does;
//!   hard links must name something below the destination; devices and fifos are skipped;
//!   owners are not kept (files belong to the backend's user) and set-uid/set-gid bits are
//!   dropped.
//!
//! Archiving (`stream_out`) still runs `tar -c`, which does not follow symlinks among the
//! members it writes; the directory it starts in is checked to resolve inside the root.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

use crate::{GardenError, TarStream};

mod confined;

/// Extracts `tar` into `dir`, which must be `root` or below it: `dir` is found and created the
/// way a process in the container would see it (its symlinks resolved inside `root`), and no
/// entry is written outside `dir` (see the module docs).
pub async fn extract(root: &Path, dir: &Path, mut tar: TarStream) -> Result<(), GardenError> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| GardenError::Invalid(format!("{} is not inside {}", dir.display(), root.display())))?
        .to_path_buf();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let root = root.to_path_buf();
    // The message leaves out host paths: it may reach a user (a download's failure text).
    let worker = tokio::task::spawn_blocking(move || {
        confined::extract(
            &root,
            &rel,
            ChannelReader {
                rx,
                chunk: Bytes::new(),
            },
        )
        .map_err(|e| GardenError::Invalid(format!("extracting the tar stream failed: {e}")))
    });
    let mut fed = Ok(());
    while let Some(chunk) = tar.next().await {
        match chunk {
            // The extractor stopping early (a bad archive) drops its end; its result says why.
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                fed = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let extracted = worker
        .await
        .map_err(|e| GardenError::Unavailable(format!("the extracting thread failed: {e}")))?;
    fed?;
    extracted
}

/// The blocking side of the stream: chunks from the async feeder, read as one byte stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.chunk = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A tar stream of `path` (a file or directory), named by its last component; `/` (the root
/// itself) yields its contents.
pub async fn archive(root: &Path, path: &Path) -> Result<TarStream, GardenError> {
    if tokio::fs::symlink_metadata(path).await.is_err() {
        return Err(GardenError::not_found(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let (dir, name) = if path == root {
        (root.to_path_buf(), ".".into())
    } else {
        let name = path.file_name().map(PathBuf::from).unwrap_or_else(|| ".".into());
        (path.parent().unwrap_or(root).to_path_buf(), name)
    };
    ensure_inside(root, &dir).await?;
    let mut child = Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(&dir)
        .arg("--")
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| GardenError::Unavailable(format!("running tar: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(Box::pin(futures_util::stream::unfold(
        Some((child, stdout)),
        read_chunk,
    )))
}

type ArchiveState = Option<(Child, ChildStdout)>;

/// The next chunk of tar's output; at the end, an error if tar failed.
async fn read_chunk(state: ArchiveState) -> Option<(Result<Bytes, GardenError>, ArchiveState)> {
    let (mut child, mut stdout) = state?;
    let mut buf = vec![0u8; 64 * 1024];
    match stdout.read(&mut buf).await {
        Ok(0) => {
            let mut errors = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut errors).await;
            }
            match child.wait().await {
                Ok(s) if s.success() => None,
                Ok(s) => Some((
                    Err(GardenError::Unavailable(format!(
                        "tar exited with {s}: {}",
                        errors.trim()
                    ))),
                    None,
                )),
                Err(e) => Some((
                    Err(GardenError::Unavailable(format!("waiting for tar: {e}"))),
                    None,
                )),
            }
        }
        Ok(n) => {
            buf.truncate(n);
            Some((Ok(Bytes::from(buf)), Some((child, stdout))))
        }
        Err(e) => Some((Err(GardenError::Unavailable(format!("reading tar: {e}"))), None)),
    }
}

/// `dir`, with symlinks followed, must be `root` or below it.
async fn ensure_inside(root: &Path, dir: &Path) -> Result<(), GardenError> {
    let canon = |p: PathBuf| async move {
        tokio::fs::canonicalize(&p)
            .await
            .map_err(|e| GardenError::Invalid(format!("resolving {}: {e}", p.display())))
    };
    let (root_c, dir_c) = (canon(root.to_path_buf()).await?, canon(dir.to_path_buf()).await?);
    if dir_c.starts_with(&root_c) {
        Ok(())
    } else {
        Err(GardenError::Invalid(format!(
            "{} leads outside the container's root filesystem (via a symlink)",
            dir.display()
        )))
    }
}
