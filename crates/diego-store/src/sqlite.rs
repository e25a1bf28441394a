//! The embedded default backend: one SQLite database file, `<data_dir>/bbs.db`.
//!
//! Writes go to one writer thread that group-commits whatever is queued (`writer`), with WAL
//! checkpoints on a thread of their own (`checkpoint`); reads go to a small pool of read-only
//! connections (`pool`) on tokio's blocking pool, large listings decoding on two threads
//! (`decode`). WAL mode lets reads and writes proceed at once, and `synchronous=FULL` makes
//! every acknowledged write durable.

mod apply;
mod checkpoint;
mod codec;
mod decode;
mod leases;
mod pool;
mod read;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use diego_model::{ActualLrp, CellPresence, Clock, DesiredLrp, DesiredLrpSchedulingInfo, Domain, Task};
use tokio::sync::watch;

use self::pool::ReaderPool;
use self::writer::{Request, Writer};
use crate::{
    ActualLrpFilter, ChangePage, Committed, Counts, DesiredLrpFilter, LockRecord, PresenceRecord, Store,
    StoreError, TaskFilter, Txn,
};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "bbs.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How many of the newest changes the change feed keeps.
    pub change_retention: usize,
    /// Read-only connections, i.e. how many reads run at once.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            change_retention: 100_000,
            read_connections: 4,
        }
    }
}

/// The SQLite backend. Dropping it lets queued writes finish, then closes the database (the
/// drop blocks for that long: at most one batch and one checkpoint).
pub struct SqliteStore {
    // Dropped first: the writer finishes queued requests and closes before the readers go.
    writer: Writer,
    readers: Arc<ReaderPool>,
    clock: Arc<dyn Clock>,
    head_rx: watch::Receiver<u64>,
}

impl SqliteStore {
    /// Opens (or creates) the store in `data_dir`. Blocks on disk IO; call it from
    /// `spawn_blocking` or before the runtime is busy.
    pub fn open(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::unavailable_from(format!("creating data directory {}", data_dir.display()), e)
        })?;
        let path = data_dir.join(DB_FILE);
        let (conn, head) = schema::open_writer(&path)?;
        // Readers open after the writer so they find the schema and WAL mode in place.
        let readers = ReaderPool::open(path.clone(), options.read_connections)?;
        let (head_tx, head_rx) = watch::channel(head);
        let writer = Writer::spawn(
            conn,
            &path,
            head,
            clock.clone(),
            options.change_retention,
            head_tx,
        )?;
        tracing::info!(path = %path.display(), head, "opened sqlite store");
        Ok(SqliteStore {
            writer,
            readers,
            clock,
            head_rx,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        txn.check_writes()?;
        if txn.is_empty() && txn.fence.is_none() {
            return Ok(Committed {
                records: Vec::new(),
                revision: *self.head_rx.borrow(),
            });
        }
        let writes = txn
            .writes
            .into_iter()
            .map(codec::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let fence = txn.fence;
        self.writer
            .call(|reply| Request::Commit { writes, fence, reply })
            .await
    }

    async fn get_task(&self, task_guid: &str) -> Result<Option<Task>, StoreError> {
        let guid = task_guid.to_string();
        self.readers.run(move |c| read::get_task(c, &guid)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let filter = filter.clone();
        self.readers.run(move |c| read::list_tasks(c, &filter)).await
    }

    async fn get_desired_lrp(&self, process_guid: &str) -> Result<Option<DesiredLrp>, StoreError> {
        let guid = process_guid.to_string();
        self.readers.run(move |c| read::get_desired_lrp(c, &guid)).await
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> Result<Vec<DesiredLrp>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| read::list_desired_lrps(c, &filter))
            .await
    }

    async fn list_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrpSchedulingInfo>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| read::list_scheduling_infos(c, &filter))
            .await
    }

    async fn get_actual_lrps(&self, process_guid: &str, index: i32) -> Result<Vec<ActualLrp>, StoreError> {
        let guid = process_guid.to_string();
        self.readers
            .run(move |c| read::get_actual_lrps(c, &guid, index))
            .await
    }

    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| read::list_actual_lrps(c, &filter))
            .await
    }

    async fn list_actual_lrps_json(&self, filter: &ActualLrpFilter) -> Result<String, StoreError> {
        let filter = filter.clone();
        self.readers
            .run(move |c| read::list_actual_lrps_json(c, &filter))
            .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.readers.run(read::counts).await
    }

    async fn upsert_domain(&self, domain: &str, ttl_seconds: i64) -> Result<Domain, StoreError> {
        let domain = domain.to_string();
        self.writer
            .call(|reply| Request::UpsertDomain {
                domain,
                ttl_seconds,
                reply,
            })
            .await
    }

    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
        let now = self.clock.now();
        self.readers.run(move |c| read::list_domains(c, now)).await
    }

    async fn set_presence(
        &self,
        presence: &CellPresence,
        ttl_seconds: i64,
    ) -> Result<PresenceRecord, StoreError> {
        let presence = presence.clone();
        self.writer
            .call(|reply| Request::SetPresence {
                presence,
                ttl_seconds,
                reply,
            })
            .await
    }

    async fn remove_presence(&self, cell_id: &str) -> Result<bool, StoreError> {
        let cell_id = cell_id.to_string();
        self.writer
            .call(|reply| Request::RemovePresence { cell_id, reply })
            .await
    }

    async fn list_presences(&self) -> Result<Vec<PresenceRecord>, StoreError> {
        let now = self.clock.now();
        self.readers.run(move |c| read::list_presences(c, now)).await
    }

    async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockRecord, StoreError> {
        // expires_at is set by the writer from its clock reading.
        let lock = LockRecord {
            key: key.to_string(),
            owner: owner.to_string(),
            value: value.to_string(),
            expires_at: 0,
        };
        self.writer
            .call(|reply| Request::AcquireLock {
                lock,
                ttl_seconds,
                reply,
            })
            .await
    }

    async fn release_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let (key, owner) = (key.to_string(), owner.to_string());
        self.writer
            .call(|reply| Request::ReleaseLock { key, owner, reply })
            .await
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let key = key.to_string();
        let now = self.clock.now();
        self.readers.run(move |c| read::get_lock(c, &key, now)).await
    }

    async fn changes_since(&self, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
        self.readers
            .run(move |c| read::changes_since(c, after, limit))
            .await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_rx.clone()
    }
}
