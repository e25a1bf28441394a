//! An in-memory backend for tests: ordered maps behind one mutex.
//!
//! It keeps every rule of the [`Store`] contract (CAS, atomic transactions, the change feed
//! with retention, TTLs on the injected clock) so code tested against it behaves the same on
//! SQLite. "Durable" here means "visible to every later call".

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use diego_model::{
    ActualLrp, CellPresence, Clock, DesiredLrp, DesiredLrpSchedulingInfo, Domain, Presence, Task,
};
use tokio::sync::watch;

use crate::ttl::{check_fence, domain_expiry, is_live, lease_expiry};
use crate::{
    ActualLrpFilter, Change, ChangePage, Committed, DesiredLrpFilter, LockRecord, PresenceRecord, Record,
    RecordKey, Store, StoreError, TaskFilter, Txn, Write,
};

type ActualKey = (String, i32, Presence);

pub struct MemoryStore {
    shared: Arc<Shared>,
}

/// What the store and its expiry sweeper share.
pub struct Shared {
    clock: Arc<dyn Clock>,
    change_retention: usize,
    state: Mutex<State>,
    head_tx: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    tasks: BTreeMap<String, Task>,
    desired: BTreeMap<String, DesiredLrp>,
    actual: BTreeMap<ActualKey, ActualLrp>,
    domains: BTreeMap<String, Domain>,
    presences: BTreeMap<String, PresenceRecord>,
    locks: BTreeMap<String, LockRecord>,
    changes: VecDeque<Change>,
    /// The store's revision: every write advances it, whether or not the feed shows it
    /// (domain and lock writes do not), so feed revisions have gaps, as etcd's do.
    head: u64,
    /// The newest revision pruned from the feed (0: none).
    compacted: u64,
}

/// How often the sweeper looks for lapsed presences.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>, change_retention: usize) -> MemoryStore {
        let (head_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            clock,
            change_retention,
            state: Mutex::new(State::default()),
            head_tx,
        });
        // Presences lapse with nobody calling: a thread turns their expiry into feed changes,
        // as the SQLite writer and etcd's lease expiry do. It ends with the store.
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("memory-store-sweeper".into())
            .spawn(move || loop {
                std::thread::sleep(SWEEP_EVERY);
                match weak.upgrade() {
                    Some(s) => s.sweep(),
                    None => return,
                }
            })
            .expect("spawning the memory store's sweeper thread");
        MemoryStore { shared }
    }
}

impl std::ops::Deref for MemoryStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transaction: writes are
        // applied only after every precondition passed, and applying cannot fail.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns lapsed presences into removals in the feed.
    fn sweep(&self) {
        let now = self.clock.now();
        let mut st = self.state();
        self.sweep_locked(&mut st, now);
    }

    fn sweep_locked(&self, st: &mut State, now: diego_model::Timestamp) {
        let lapsed: Vec<String> = st
            .presences
            .iter()
            .filter(|(_, p)| !is_live(p.expires_at, now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            if let Some(p) = st.presences.remove(&id) {
                self.append(st, now, Some(Record::CellPresence(p.cell_presence)), None);
            }
        }
        self.publish(st);
    }

    /// Appends one change at the next revision and prunes the feed by revision.
    fn append(
        &self,
        st: &mut State,
        at: diego_model::Timestamp,
        before: Option<Record>,
        after: Option<Record>,
    ) {
        st.head += 1;
        let revision = st.head;
        st.changes.push_back(Change {
            revision,
            at,
            before,
            after,
        });
        self.prune(st);
    }

    /// A write the feed does not show still takes a revision.
    fn skip_revision(&self, st: &mut State) {
        st.head += 1;
        self.prune(st);
        self.publish(st);
    }

    fn prune(&self, st: &mut State) {
        let keep_after = st.head.saturating_sub(self.change_retention as u64);
        while st.changes.front().is_some_and(|c| c.revision <= keep_after) {
            if let Some(c) = st.changes.pop_front() {
                st.compacted = c.revision;
            }
        }
    }

    /// Under the lock, so watchers never see the head move backwards.
    fn publish(&self, st: &State) {
        if *self.head_tx.borrow() != st.head {
            self.head_tx.send_replace(st.head);
        }
    }
}

/// Cell presences are never written in transactions: `Txn::check_writes` refuses them.
const IN_TXN: &str = "a cell presence in a transaction (Txn::check_writes refuses it)";

impl State {
    fn get(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Task { task_guid } => self.tasks.get(task_guid).cloned().map(Record::Task),
            RecordKey::DesiredLrp { process_guid } => {
                self.desired.get(process_guid).cloned().map(Record::DesiredLrp)
            }
            RecordKey::ActualLrp {
                process_guid,
                index,
                presence,
            } => self
                .actual
                .get(&(process_guid.clone(), *index, *presence))
                .cloned()
                .map(Record::ActualLrp),
            RecordKey::CellPresence { cell_id } => self
                .presences
                .get(cell_id)
                .map(|p| Record::CellPresence(p.cell_presence.clone())),
        }
    }

    fn put(&mut self, record: Record) {
        match record {
            Record::Task(t) => {
                self.tasks.insert(t.task_guid.clone(), t);
            }
            Record::DesiredLrp(d) => {
                self.desired.insert(d.process_guid.clone(), d);
            }
            Record::ActualLrp(a) => {
                self.actual
                    .insert((a.process_guid.clone(), a.index, a.presence), a);
            }
            Record::CellPresence(_) => unreachable!("{IN_TXN}"),
        }
    }

    fn remove(&mut self, key: &RecordKey) {
        match key {
            RecordKey::Task { task_guid } => {
                self.tasks.remove(task_guid);
            }
            RecordKey::DesiredLrp { process_guid } => {
                self.desired.remove(process_guid);
            }
            RecordKey::ActualLrp {
                process_guid,
                index,
                presence,
            } => {
                self.actual.remove(&(process_guid.clone(), *index, *presence));
            }
            RecordKey::CellPresence { .. } => unreachable!("{IN_TXN}"),
        }
    }

    /// Checks write `i`'s precondition and returns the record it replaces.
    fn check(&self, i: usize, write: &Write) -> Result<Option<Record>, StoreError> {
        let stored = self.get(&write.key());
        write.check(i, stored.as_ref())?;
        Ok(stored)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        txn.check_writes()?;
        let mut st = self.state();
        if let Some(fence) = &txn.fence {
            let held = st.locks.get(&fence.key).map(|l| (l.owner.as_str(), l.expires_at));
            check_fence(fence, held, self.clock.now())?;
        }
        if txn.is_empty() {
            return Ok(Committed {
                records: Vec::new(),
                revision: st.head,
            });
        }
        // Keys are distinct, so every precondition depends only on the state before the
        // transaction: check them all first, then apply, and nothing is ever half-applied.
        let befores = txn
            .writes
            .iter()
            .enumerate()
            .map(|(i, w)| st.check(i, w))
            .collect::<Result<Vec<_>, _>>()?;
        let at = self.clock.now();
        self.sweep_locked(&mut st, at);
        let mut records = Vec::with_capacity(txn.writes.len());
        for (write, before) in txn.writes.into_iter().zip(befores) {
            let key = write.key();
            let after = write.into_stored();
            match &after {
                Some(r) => st.put(r.clone()),
                None => st.remove(&key),
            }
            self.append(&mut st, at, before, after.clone());
            records.push(after);
        }
        let revision = st.head;
        self.publish(&st);
        Ok(Committed { records, revision })
    }

    async fn get_task(&self, task_guid: &str) -> Result<Option<Task>, StoreError> {
        Ok(self.state().tasks.get(task_guid).cloned())
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        Ok(self
            .state()
            .tasks
            .values()
            .filter(|t| filter.matches(t))
            .cloned()
            .collect())
    }

    async fn get_desired_lrp(&self, process_guid: &str) -> Result<Option<DesiredLrp>, StoreError> {
        Ok(self.state().desired.get(process_guid).cloned())
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> Result<Vec<DesiredLrp>, StoreError> {
        Ok(self
            .state()
            .desired
            .values()
            .filter(|d| filter.matches(d))
            .cloned()
            .collect())
    }

    async fn list_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrpSchedulingInfo>, StoreError> {
        Ok(self
            .state()
            .desired
            .values()
            .filter(|d| filter.matches(d))
            .map(DesiredLrp::scheduling_info)
            .collect())
    }

    async fn get_actual_lrps(&self, process_guid: &str, index: i32) -> Result<Vec<ActualLrp>, StoreError> {
        let st = self.state();
        let lo = (process_guid.to_string(), index, Presence::Ordinary);
        let hi = (process_guid.to_string(), index, Presence::Suspect);
        Ok(st.actual.range(lo..=hi).map(|(_, a)| a.clone()).collect())
    }

    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, StoreError> {
        Ok(self
            .state()
            .actual
            .values()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect())
    }

    async fn upsert_domain(&self, domain: &str, ttl_seconds: i64) -> Result<Domain, StoreError> {
        let d = Domain {
            domain: domain.to_string(),
            expires_at: domain_expiry(self.clock.now(), ttl_seconds)?,
        };
        let mut st = self.state();
        st.domains.insert(d.domain.clone(), d.clone());
        self.skip_revision(&mut st);
        Ok(d)
    }

    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .state()
            .domains
            .values()
            .filter(|d| is_live(d.expires_at, now))
            .cloned()
            .collect())
    }

    async fn set_presence(
        &self,
        presence: &CellPresence,
        ttl_seconds: i64,
    ) -> Result<PresenceRecord, StoreError> {
        let now = self.clock.now();
        let expires_at = lease_expiry("presence", now, ttl_seconds)?;
        let p = PresenceRecord {
            cell_presence: presence.clone(),
            expires_at,
        };
        let mut st = self.state();
        self.sweep_locked(&mut st, now);
        let before = st.presences.insert(presence.cell_id.clone(), p.clone());
        // A renewal that says nothing new is no change (a lease keep-alive).
        if before.as_ref().map(|b| &b.cell_presence) != Some(presence) {
            let before = before.map(|b| Record::CellPresence(b.cell_presence));
            self.append(&mut st, now, before, Some(Record::CellPresence(presence.clone())));
            self.publish(&st);
        }
        Ok(p)
    }

    async fn remove_presence(&self, cell_id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut st = self.state();
        self.sweep_locked(&mut st, now);
        let Some(removed) = st.presences.remove(cell_id) else {
            return Ok(false);
        };
        self.append(
            &mut st,
            now,
            Some(Record::CellPresence(removed.cell_presence)),
            None,
        );
        self.publish(&st);
        Ok(true)
    }

    async fn list_presences(&self) -> Result<Vec<PresenceRecord>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .state()
            .presences
            .values()
            .filter(|p| is_live(p.expires_at, now))
            .cloned()
            .collect())
    }

    async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockRecord, StoreError> {
        let now = self.clock.now();
        let expires_at = lease_expiry("lock", now, ttl_seconds)?;
        let mut st = self.state();
        if let Some(held) = st.locks.get(key) {
            if held.owner != owner && is_live(held.expires_at, now) {
                return Err(StoreError::LockCollision {
                    key: key.to_string(),
                    owner: held.owner.clone(),
                });
            }
        }
        let lock = LockRecord {
            key: key.to_string(),
            owner: owner.to_string(),
            value: value.to_string(),
            expires_at,
        };
        st.locks.insert(lock.key.clone(), lock.clone());
        self.skip_revision(&mut st);
        Ok(lock)
    }

    async fn release_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut st = self.state();
        match st.locks.get(key) {
            Some(held) if held.owner == owner => {
                st.locks.remove(key);
                self.skip_revision(&mut st);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .state()
            .locks
            .get(key)
            .filter(|l| is_live(l.expires_at, now))
            .cloned())
    }

    async fn changes_since(&self, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
        let st = self.state();
        // Revisions increase along the deque but have gaps: find the first wanted one.
        let skip = st.changes.partition_point(|c| c.revision <= after);
        let changes = st.changes.iter().skip(skip).take(limit).cloned().collect();
        Ok(ChangePage {
            changes,
            oldest: st.compacted + 1,
            head: st.head,
        })
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }
}
