//! A small pool of read-only connections, used from `spawn_blocking`.
//!
//! In WAL mode readers never block the writer nor each other, so a few connections let
//! listings run in parallel with commits. A semaphore bounds how many are in use; a guard
//! returns the connection even if the query panics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema::open_reader;
use crate::StoreError;

pub(super) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    pub fn open(path: PathBuf, size: usize) -> Result<Arc<ReaderPool>, StoreError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(ReaderPool {
            path,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
        }))
    }

    /// Runs `f` on an idle connection on tokio's blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::unavailable("sqlite reader pool closed"))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.checkout()?;
            f(conn
                .conn
                .as_ref()
                .expect("a checked-out connection is present until dropped"))
        })
        .await
        .map_err(|e| StoreError::unavailable_from("sqlite read task failed", e))?
    }

    fn checkout(self: &Arc<Self>) -> Result<Checkout, StoreError> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // The semaphore makes an empty pool impossible unless a connection was lost; replace it.
        let conn = match conn {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        Ok(Checkout {
            pool: self.clone(),
            conn: Some(conn),
        })
    }
}

struct Checkout {
    pool: Arc<ReaderPool>,
    conn: Option<Connection>,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        }
    }
}
