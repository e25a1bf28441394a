//! The cell's download cache (diego-spec §2, DownloadAction `cache_key`): a download with a
//! cache key keeps its verified archive here, named by the key; the next download with the key
//! revalidates it with the validators the server sent (`If-None-Match` with the ETag,
//! `If-Modified-Since` with the Last-Modified) and reuses the file on `304 Not Modified`.
//! Any other answer replaces or drops the entry.
//!
//! The cache holds at most `max_bytes`: storing an archive evicts the least recently used
//! others until the total fits (an archive bigger than the whole cache is used once and not
//! kept). Files are opened under the index lock, and an open file stays readable after
//! eviction unlinks it, so a download in progress never loses its archive.
//!
//! The index lives in memory: opening a cache directory empties it, since after a restart
//! nothing says which server validators belong to which file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Diego's default cache size (`max_cache_size_in_bytes`, 10 GB).
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

/// What the server said identifies the version of a cached archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

struct Entry {
    file: PathBuf,
    size: u64,
    validators: Validators,
    /// Logical time of the last use (for LRU).
    used: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    clock: u64,
    total: u64,
}

/// See the module docs.
pub struct DownloadCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

impl DownloadCache {
    /// A cache in `dir` (created; anything in it is removed) holding at most `max_bytes`.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> io::Result<Arc<Self>> {
        let dir = dir.into();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Arc::new(Self {
            dir,
            max_bytes,
            index: Mutex::default(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where downloads in progress are written (same file system as the cache, so storing one
    /// is a rename).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The validators to revalidate `key` with, if it is cached.
    pub fn validators(&self, key: &str) -> Option<Validators> {
        self.lock().entries.get(key).map(|e| e.validators.clone())
    }

    /// The cached archive for `key`, opened, counted as a use.
    pub fn open_cached(&self, key: &str) -> Option<File> {
        let mut index = self.lock();
        index.clock += 1;
        let now = index.clock;
        let entry = index.entries.get_mut(key)?;
        entry.used = now;
        match File::open(&entry.file) {
            Ok(f) => Some(f),
            Err(err) => {
                tracing::warn!(key, %err, "cached download vanished");
                let size = entry.size;
                index.entries.remove(key);
                index.total -= size;
                None
            }
        }
    }

    /// Keeps the verified archive `tmp` (made in [`Self::tmp_dir`]) under `key`, replacing what
    /// was there, evicting least recently used entries until the cache fits. Returns the
    /// archive opened.
    pub fn store(&self, key: &str, tmp: tempfile::NamedTempFile, validators: Validators) -> io::Result<File> {
        let size = tmp.as_file().metadata()?.len();
        let path = self.dir.join(file_name(key));
        let mut index = self.lock();
        if let Some(old) = index.entries.remove(key) {
            index.total -= old.size;
        }
        tmp.persist(&path).map_err(|e| e.error)?;
        let file = File::open(&path)?;
        if size > self.max_bytes {
            // Too big to keep at all: the open file is all the caller needs.
            std::fs::remove_file(&path)?;
            tracing::info!(key, size, max = self.max_bytes, "download too large to cache");
            return Ok(file);
        }
        index.clock += 1;
        let used = index.clock;
        index.total += size;
        index.entries.insert(
            key.to_string(),
            Entry {
                file: path,
                size,
                validators,
                used,
            },
        );
        while index.total > self.max_bytes {
            let Some(victim) = index
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let e = index.entries.remove(&victim).expect("victim is in the index");
            index.total -= e.size;
            if let Err(err) = std::fs::remove_file(&e.file) {
                tracing::warn!(key = %victim, %err, "removing an evicted download");
            }
            tracing::info!(key = %victim, size = e.size, "evicted cached download");
        }
        Ok(file)
    }

    /// Drops `key` (the server no longer serves what we cached).
    pub fn remove(&self, key: &str) {
        let mut index = self.lock();
        if let Some(e) = index.entries.remove(key) {
            index.total -= e.size;
            let _ = std::fs::remove_file(&e.file);
        }
    }

    /// Keys cached now, and their total size.
    pub fn usage(&self) -> (Vec<String>, u64) {
        let index = self.lock();
        let mut keys: Vec<String> = index.entries.keys().cloned().collect();
        keys.sort();
        (keys, index.total)
    }
}

/// A file name for any key: its sha256 (keys are URLs or arbitrary strings).
fn file_name(key: &str) -> String {
    crate::checksum::hex(&Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn put(cache: &DownloadCache, key: &str, bytes: usize) -> File {
        let mut tmp = tempfile::NamedTempFile::new_in(cache.tmp_dir()).unwrap();
        tmp.write_all(&vec![b'x'; bytes]).unwrap();
        cache
            .store(
                key,
                tmp,
                Validators {
                    etag: Some(format!("\"{key}\"")),
                    last_modified: None,
                },
            )
            .unwrap()
    }

    #[test]
    fn entries_are_kept_revalidated_and_evicted_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c/stale"), b"from before").unwrap();
        let cache = DownloadCache::open(dir.path().join("c"), 100).unwrap();
        assert!(!dir.path().join("c/stale").exists(), "opening empties the cache");

        put(&cache, "a", 40);
        put(&cache, "b", 40);
        assert_eq!(cache.validators("a").unwrap().etag.as_deref(), Some("\"a\""));
        // Using `a` makes `b` the least recently used.
        let mut f = cache.open_cached("a").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s.len(), 40);
        put(&cache, "c", 40);
        assert_eq!(cache.usage(), (vec!["a".into(), "c".into()], 80));
        assert!(cache.open_cached("b").is_none());

        // Bigger than the whole cache: returned readable, not kept.
        let mut f = put(&cache, "huge", 101);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s.len(), 101);
        assert_eq!(cache.usage(), (vec!["a".into(), "c".into()], 80));

        // Replacing a key does not count it twice; removing frees it.
        put(&cache, "a", 10);
        assert_eq!(cache.usage().1, 50);
        cache.remove("a");
        assert_eq!(cache.usage(), (vec!["c".into()], 40));
        let files = std::fs::read_dir(cache.dir()).unwrap().count();
        assert_eq!(files, 2, "c's archive and tmp/");
    }
}
