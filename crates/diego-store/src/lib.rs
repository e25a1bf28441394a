//! The BBS store: durable, consistent state behind one semantic interface.
//!
//! The [`Store`] trait speaks the BBS's language — tasks, desired LRPs, actual LRPs, domains,
//! cell presences, locks and a change feed — rather than keys and bytes. Every write is a
//! compare-and-swap on the record's [`ModificationTag`](diego_model::ModificationTag), grouped
//! into atomic [`Txn`]s, and is acknowledged only once durable.
//!
//! Backends: [`sqlite::SqliteStore`] (the embedded default: WAL, synchronous commits, group
//! commit under concurrency), [`etcd::EtcdStore`] (an etcd v3 cluster shared by several BBS)
//! and [`memory::MemoryStore`] (tests). [`conformance`] is one test
//! suite, a function over a backend factory, that every backend passes.
//!
//! Depends on `diego-model` only among our crates; knows nothing of HTTP.

pub mod conformance;
pub mod etcd;
pub mod memory;
pub mod sqlite;
mod ttl;
mod types;

pub use types::*;

use std::sync::Arc;

use async_trait::async_trait;
use diego_model::{ActualLrp, CellPresence, DesiredLrp, DesiredLrpSchedulingInfo, Domain, Task};
use tokio::sync::watch;

/// One backend of the BBS store. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies every write in `txn` atomically, or none of them. Each write's precondition
    /// ([`Expect`]) is checked against the stored record; the first that fails aborts the
    /// transaction with [`StoreError::Conflict`], [`StoreError::Exists`] or
    /// [`StoreError::NotFound`], naming the write's position. On success, returns the stored
    /// form of each written record (with its new modification tag; `None` for deletes) and
    /// the change-feed revision of the last change. Returns only once the writes are durable.
    async fn commit(&self, txn: Txn) -> Result<Committed, StoreError>;

    async fn get_task(&self, task_guid: &str) -> Result<Option<Task>, StoreError>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    async fn get_desired_lrp(&self, process_guid: &str) -> Result<Option<DesiredLrp>, StoreError>;
    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> Result<Vec<DesiredLrp>, StoreError>;
    /// The scheduling half only; backends should not read run infos for this.
    async fn list_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrpSchedulingInfo>, StoreError>;

    /// Every presence (ORDINARY, EVACUATING, SUSPECT) of one index.
    async fn get_actual_lrps(&self, process_guid: &str, index: i32) -> Result<Vec<ActualLrp>, StoreError>;
    /// Ordered by (process_guid, index, presence).
    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, StoreError>;
    /// The same listing as one JSON array of the records' API form. Backends that keep
    /// records as JSON concatenate the stored text instead of decoding and re-encoding every
    /// record, which is what makes listing 100,000 instances cheap in time and memory.
    async fn list_actual_lrps_json(&self, filter: &ActualLrpFilter) -> Result<String, StoreError> {
        let records = self.list_actual_lrps(filter).await?;
        serde_json::to_string(&records).map_err(|e| StoreError::unavailable_from("encoding actual LRPs", e))
    }

    /// Record counts by state. Backends should count without decoding records; the default
    /// lists them.
    async fn counts(&self) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        for t in self.list_tasks(&TaskFilter::default()).await? {
            *c.tasks.entry(t.state).or_default() += 1;
        }
        c.desired_lrps = self
            .list_scheduling_infos(&DesiredLrpFilter::default())
            .await?
            .len() as u64;
        for a in self.list_actual_lrps(&ActualLrpFilter::default()).await? {
            *c.actual_lrps.entry((a.state, a.presence)).or_default() += 1;
        }
        Ok(c)
    }

    /// Marks `domain` fresh for `ttl_seconds` (0 = forever). Durable.
    async fn upsert_domain(&self, domain: &str, ttl_seconds: i64) -> Result<Domain, StoreError>;
    /// Fresh domains only.
    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError>;

    /// Registers or renews a cell's presence for `ttl_seconds`. Durable.
    async fn set_presence(
        &self,
        presence: &CellPresence,
        ttl_seconds: i64,
    ) -> Result<PresenceRecord, StoreError>;
    /// Removes a presence; `false` if there was none.
    async fn remove_presence(&self, cell_id: &str) -> Result<bool, StoreError>;
    /// Live (unexpired) presences, ordered by cell id.
    async fn list_presences(&self) -> Result<Vec<PresenceRecord>, StoreError>;

    /// Takes or renews `key` for `owner` for `ttl_seconds`. Another owner's unexpired lock
    /// → [`StoreError::LockCollision`].
    async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockRecord, StoreError>;
    /// Releases `key` if `owner` holds it; `false` if it did not.
    async fn release_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError>;
    /// The unexpired holder of `key`, if any.
    async fn get_lock(&self, key: &str) -> Result<Option<LockRecord>, StoreError>;

    /// Changes with revision > `after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: u64, limit: usize) -> Result<ChangePage, StoreError>;
    /// Watches the newest committed revision (the "head") of the change feed.
    fn watch_head(&self) -> watch::Receiver<u64>;
}

/// A shared handle to any backend.
pub type DynStore = Arc<dyn Store>;
