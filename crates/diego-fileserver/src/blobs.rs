//! Blobs on disk, named by their SHA-256: `DIR/blobs/sha256/<first two digits>/<digest>`.
//!
//! An upload is written to `DIR/tmp/` while it is hashed and counted, fsynced, checked
//! against the digest it was sent under, then hard-linked into place and its directory fsynced:
//! a blob that can be read is whole and durable, and a failed or cut-off upload leaves
//! nothing behind. A blob is never changed once written; writing one that exists only marks
//! it as used now (its modification time), which the garbage collection's grace period reads.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::digest::Digest;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload's SHA-256 is {actual}, not the {expected} it was sent as")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("writing the blob: {0}")]
    Io(#[from] io::Error),
}

/// A stored upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    /// False when the blob was already there.
    pub created: bool,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub deleted: u64,
    pub freed_bytes: u64,
    /// Blobs left: referred to, or younger than the grace period.
    pub kept: u64,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Blobs held and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub blobs: u64,
    pub bytes: u64,
}

pub struct BlobStore {
    root: PathBuf,
    next_tmp: AtomicU64,
}

impl BlobStore {
    /// Opens (creating) the store in `dir`; uploads cut off by an earlier stop are removed.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let store = BlobStore {
            root: dir.to_path_buf(),
            next_tmp: AtomicU64::new(0),
        };
        std::fs::create_dir_all(store.shards())?;
        let tmp = store.tmp();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(store)
    }

    fn shards(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where blob `d` lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.shards().join(&hex[..2]).join(hex)
    }

    /// Marks blob `d` as used now, if held, so a collection's grace period spares it; its
    /// size, or `None` when it is not held.
    pub async fn touch(&self, d: &Digest) -> io::Result<Option<u64>> {
        let path = self.path(d);
        tokio::task::spawn_blocking(move || touch(&path))
            .await
            .map_err(io::Error::other)?
    }

    /// Stores the bytes of `body` (at most `limit` of them) as one blob. With `expected`, the
    /// content must hash to it.
    pub async fn put<S, E>(&self, expected: Option<Digest>, body: S, limit: u64) -> Result<Stored, PutError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp().join(format!("upload-{}-{n}", std::process::id()));
        let written = write_hashed(&tmp, body, limit).await;
        let (actual, size) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected.filter(|e| *e != actual) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(PutError::Mismatch { expected, actual });
        }
        let path = self.path(&actual);
        let created = tokio::task::spawn_blocking(move || place(&tmp, &path))
            .await
            .map_err(io::Error::other)??;
        Ok(Stored {
            digest: actual,
            size,
            created,
        })
    }

    /// Deletes every blob not in `keep` that was last written or touched more than `grace`
    /// ago (blocking: run it off the runtime).
    pub fn collect(&self, keep: &HashSet<Digest>, grace: Duration) -> io::Result<GcReport> {
        let mut report = GcReport::default();
        let now = SystemTime::now();
        self.each(|digest, path, meta| {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if keep.contains(&digest) || age < grace {
                report.kept += 1;
                report.kept_bytes += meta.len();
                return Ok(());
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    report.deleted += 1;
                    report.freed_bytes += meta.len();
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })?;
        Ok(report)
    }

    /// What the store holds (blocking).
    pub fn totals(&self) -> io::Result<Totals> {
        let mut t = Totals::default();
        self.each(|_, _, meta| {
            t.blobs += 1;
            t.bytes += meta.len();
            Ok(())
        })?;
        Ok(t)
    }

    /// Calls `f` with each blob; files whose names are not digests are left alone.
    fn each(&self, mut f: impl FnMut(Digest, &Path, &std::fs::Metadata) -> io::Result<()>) -> io::Result<()> {
        for shard in std::fs::read_dir(self.shards())? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(digest) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if meta.is_file() {
                    f(digest, &entry.path(), &meta)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `body` to `path`, hashing it, and fsyncs it.
async fn write_hashed<S, E>(path: &Path, body: S, limit: u64) -> Result<(Digest, u64), PutError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| PutError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(PutError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok((Digest::from_bytes(hasher.finalize().into()), size))
}

/// Sets `path`'s modification time to now; its size, or `None` when there is no such file.
fn touch(path: &Path) -> io::Result<Option<u64>> {
    let touched = std::fs::File::options().write(true).open(path).and_then(|f| {
        f.set_modified(SystemTime::now())?;
        f.metadata()
    });
    match touched {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Links the written upload into place (never over a blob another upload placed meanwhile:
/// then it is that one, and this returns false), removes the upload's name and makes both
/// durable.
fn place(tmp: &Path, path: &Path) -> io::Result<bool> {
    let dir = path.parent().expect("a blob's path has a shard directory");
    std::fs::create_dir_all(dir)?;
    let created = match std::fs::hard_link(tmp, path) {
        Ok(()) => true,
        // Held already: this upload only marks it as used now.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            touch(path)?;
            false
        }
        Err(e) => return Err(e),
    };
    std::fs::remove_file(tmp)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures_util::stream::iter(parts)
    }

    /// Blob `d`'s size on disk, if held (without touching it).
    fn held(store: &BlobStore, d: &Digest) -> Option<u64> {
        std::fs::metadata(store.path(d)).ok().map(|m| m.len())
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn a_blob_is_stored_under_its_digest_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello world");
        let first = store
            .put(Some(d), chunks(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        assert_eq!(
            first,
            Stored {
                digest: d,
                size: 11,
                created: true
            }
        );
        assert_eq!(std::fs::read(store.path(&d)).unwrap(), b"hello world");
        // Old enough to collect, until it is uploaded again.
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        std::fs::File::options()
            .write(true)
            .open(store.path(&d))
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let again = store.put(None, chunks(&[b"hello world"]), 100).await.unwrap();
        assert!(!again.created, "the same content is the same blob");
        let spared = store.collect(&HashSet::new(), Duration::from_secs(3600)).unwrap();
        assert_eq!(spared.deleted, 0, "the second upload marked it as used now");
        assert_eq!(held(&store, &d), Some(11));
        assert_eq!(store.totals().unwrap(), Totals { blobs: 1, bytes: 11 });
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_wrong_checksum_or_an_oversized_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let claimed = Digest::of(b"something else");
        match store.put(Some(claimed), chunks(&[b"hello"]), 100).await {
            Err(PutError::Mismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::of(b"hello"));
            }
            other => panic!("{other:?}"),
        }
        match store.put(None, chunks(&[b"0123456789", b"x"]), 10).await {
            Err(PutError::TooLarge { limit: 10 }) => {}
            other => panic!("{other:?}"),
        }
        let cut: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from_static(b"part")), Err("connection reset".into())];
        match store.put(None, futures_util::stream::iter(cut), 100).await {
            Err(PutError::Body(e)) => assert!(e.contains("connection reset")),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.totals().unwrap(), Totals::default());
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[tokio::test]
    async fn collection_deletes_unreferenced_blobs_past_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let kept = store.put(None, chunks(&[b"kept"]), 100).await.unwrap().digest;
        let gone = store.put(None, chunks(&[b"gone!"]), 100).await.unwrap().digest;
        let keep = HashSet::from([kept]);
        let young = store.collect(&keep, Duration::from_secs(3600)).unwrap();
        assert_eq!(
            young,
            GcReport {
                deleted: 0,
                freed_bytes: 0,
                kept: 2,
                kept_bytes: 9
            },
            "both are young"
        );
        let report = store.collect(&keep, Duration::ZERO).unwrap();
        assert_eq!(
            report,
            GcReport {
                deleted: 1,
                freed_bytes: 5,
                kept: 1,
                kept_bytes: 4
            }
        );
        assert_eq!(held(&store, &gone), None);
        assert_eq!(held(&store, &kept), Some(4));
    }

    #[tokio::test]
    async fn an_upload_cut_off_by_a_stop_is_removed_when_the_store_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        BlobStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("tmp/upload-1-0"), b"half").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(leftovers(dir.path()), 0);
        assert_eq!(store.totals().unwrap(), Totals::default());
    }
}
