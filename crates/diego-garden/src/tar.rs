//! Files in and out of a container root directory with the host's `tar` command, shared by
//! the backends that keep a container's files in a host directory (process, runc).
//!
//! GNU tar already refuses members with `..` and strips leading `/`, so an archive cannot
//! write outside the directory it is extracted into; we check that the directory itself,
//! after following symlinks, is inside the container's root.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};

use crate::{GardenError, TarStream};

/// Extracts `tar` into `dir` (created if missing), which must resolve inside `root`.
pub async fn extract(root: &Path, dir: &Path, mut tar: TarStream) -> Result<(), GardenError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| GardenError::Invalid(format!("creating {}: {e}", dir.display())))?;
    ensure_inside(root, dir).await?;
    let mut child = Command::new("tar")
        .args(["-x", "--no-same-owner", "-f", "-", "-C"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| GardenError::Unavailable(format!("running tar: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut fed = Ok(());
    while let Some(chunk) = tar.next().await {
        match chunk {
            Ok(bytes) => {
                // tar exiting early (a bad archive) closes the pipe; its stderr says why.
                if stdin.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                fed = Err(e);
                break;
            }
        }
    }
    drop(stdin);
    if let Err(e) = fed {
        let _ = child.kill().await;
        return Err(e);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| GardenError::Unavailable(format!("waiting for tar: {e}")))?;
    let errors = errors.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(GardenError::Invalid(format!(
            "extracting the tar stream failed: {}",
            errors.trim()
        )))
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
