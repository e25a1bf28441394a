//! The apps, durable in `<data-dir>/apps.json`: every change is made under one lock on the
//! whole set and written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced before it is acknowledged, so a crash leaves the old set or the new one,
//! never half of one. The set is small (one record per app), which is what makes a whole-file
//! write the simple right choice here; the BBS holds the scheduling state.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use crate::model::App;

const FILE: &str = "apps.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("apps store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("apps store {path} is not readable JSON: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Apps by name.
pub type Apps = BTreeMap<String, App>;

pub struct AppStore {
    path: PathBuf,
    apps: Mutex<Apps>,
}

impl AppStore {
    /// Opens (or starts) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE);
        let apps = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Apps::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(AppStore {
            path,
            apps: Mutex::new(apps),
        })
    }

    /// A copy of every app.
    pub async fn all(&self) -> Apps {
        self.apps.lock().await.clone()
    }

    pub async fn get(&self, name: &str) -> Option<App> {
        self.apps.lock().await.get(name).cloned()
    }

    /// Runs `change` on the apps; when it returns `Ok` and changed something, the new set is
    /// durable before this returns. An `Err` from `change` leaves the set as it was.
    pub async fn update<T, E>(&self, change: impl FnOnce(&mut Apps) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut guard = self.apps.lock().await;
        let mut next = guard.clone();
        let out = change(&mut next)?;
        if next != *guard {
            let path = self.path.clone();
            let bytes = serde_json::to_vec_pretty(&next).expect("apps serialize");
            tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                .await
                .map_err(|e| StoreError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| StoreError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            *guard = next;
        }
        Ok(out)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HealthCheck;

    fn app(name: &str) -> App {
        App {
            guid: format!("{name}-guid"),
            name: name.into(),
            instances: 1,
            memory_mb: 64,
            disk_mb: 64,
            env: Default::default(),
            routes: vec![],
            health_check: HealthCheck::default(),
            buildpack: None,
            stack: "busybox".into(),
            package: None,
            droplet: None,
            build: None,
            build_cache: None,
            version: 0,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn changes_outlive_a_reopen_and_a_failed_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = AppStore::open(dir.path()).unwrap();
        store
            .update(|apps| {
                apps.insert("web".into(), app("web"));
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        #[derive(Debug)]
        enum E {
            Refused,
            Store,
        }
        impl From<StoreError> for E {
            fn from(_: StoreError) -> Self {
                E::Store
            }
        }
        let refused = store
            .update(|apps| {
                apps.clear();
                Err::<(), _>(E::Refused)
            })
            .await;
        assert!(matches!(refused, Err(E::Refused)));
        assert!(store.get("web").await.is_some(), "a refused change is not kept");
        drop(store);
        let reopened = AppStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("web").await, Some(app("web")));
        assert!(!dir.path().join("apps.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        let e = AppStore::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("apps.json"), "{e}");
    }
}
