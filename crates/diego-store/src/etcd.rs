//! The etcd v3 backend: records as keys under a prefix, compare-and-swap on etcd's mod
//! revisions inside transactions, presences and locks on leases, and the change feed kept as
//! keys written in the same transactions as the records they describe.
//!
//! Layout under the prefix (default `/diego/`; see `keys.rs` and docs/040-store.md):
//! `task/<guid>`, `desired/<process guid>`, `actual/<process guid>\0<index><presence>` hold
//! the records' JSON (as SQLite stores them); `cell/<id>` a [`PresenceRecord`] and
//! `lock/<key>` a [`LockRecord`], each on an etcd lease; `domain/<name>` a [`Domain`];
//! `feed/<revision>` one transaction's changes; `head` the feed's head and how far it was
//! pruned.
//!
//! Why the feed is keys and not etcd's own history: a transaction of several writes is one
//! etcd revision, yet each of its changes needs a revision of its own, and a store's feed
//! must not count other stores' writes to the same cluster. So the store numbers its changes
//! itself — `head` is compared and advanced in every transaction that changes a record —
//! and etcd's watch tells every BBS on the cluster when `head` moves.

mod commit;
mod feed;
mod keys;
mod known;
mod leases;
pub mod local;
mod members;
mod ops;
mod write;

pub use local::LocalEtcd;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diego_model::{ActualLrp, CellPresence, Clock, DesiredLrp, DesiredLrpSchedulingInfo, Domain, Task};
use etcd_client::{ConnectOptions, KeyValue};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::keys::Keys;
use crate::{
    ActualLrpFilter, ChangePage, Committed, DesiredLrpFilter, LockRecord, PresenceRecord, Record, RecordKey,
    Store, StoreError, TaskFilter, Txn,
};

/// The prefix of a store's keys when the URL names none.
pub const DEFAULT_PREFIX: &str = "/diego/";

/// How often lapsed presences are looked for and removed (their expiry then reaches the feed).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Seconds an etcd lease outlives the TTL the store enforces on its clock: expiry is decided
/// on the injected clock (and shows in the feed when the sweeper removes the key); the lease
/// only removes the keys of a BBS that died, once nobody is left to sweep them.
pub const LEASE_GRACE_SECONDS: i64 = 10;

/// Where and how to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key of this store starts with it (ends with `/`).
    pub prefix: String,
    /// Revisions of the change feed kept for readers that resume.
    pub change_retention: usize,
    pub sweep_interval: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            change_retention: 100_000,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }

    /// Parses `etcd://host:port[,host:port…][/prefix]`. The error says what is wrong with
    /// the URL; callers add which option it came from.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| {
            StoreError::Invalid(format!(
                "{url:?} is not an etcd URL: {why} (expected etcd://host:port[,host:port…][/prefix])"
            ))
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| invalid("it must start with etcd://"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, DEFAULT_PREFIX),
        };
        if hosts.is_empty() {
            return Err(invalid("no host:port"));
        }
        let mut endpoints = Vec::new();
        for member in hosts.split(',') {
            let (host, port) = member
                .rsplit_once(':')
                .ok_or_else(|| invalid(&format!("{member:?} has no :port")))?;
            if host.is_empty() {
                return Err(invalid(&format!("{member:?} has no host")));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid(&format!("{member:?} has no valid port (1-65535)")));
            }
            endpoints.push(format!("http://{member}"));
        }
        let prefix = if prefix == "/" { DEFAULT_PREFIX } else { prefix };
        let mut options = EtcdOptions::new(endpoints);
        options.prefix = Keys::new(prefix).prefix().to_string();
        Ok(options)
    }
}

/// The etcd backend. Dropping it stops its background tasks (the head watch, the sweeper).
pub struct EtcdStore {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the store's calls and its background tasks share.
struct Inner {
    members: members::Members,
    clock: Arc<dyn Clock>,
    keys: Keys,
    retention: u64,
    /// One feed-changing transaction of this process at a time: they all compare and advance
    /// `head`, so running them together would only make them fail each other.
    writer: tokio::sync::Mutex<write::Recent>,
    /// What this process last read or wrote of each key (`known.rs`).
    known: Arc<known::Known>,
    /// Commits checked and waiting to be sent together (group commit, `commit.rs`).
    queue: commit::Queue,
    head_tx: watch::Sender<u64>,
}

/// The value under `head`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    /// The newest change's revision.
    head: u64,
    /// Every change at or below this revision was pruned.
    compacted: u64,
}

/// `head` as read, with the mod revision a transaction compares (0: never written).
#[derive(Debug, Clone, Copy, Default)]
struct HeadAt {
    head: Head,
    mod_revision: i64,
}

impl EtcdStore {
    /// Connects to `options.endpoints` and reads the feed's head; fails with `Unavailable`
    /// when no member answers within the retry window.
    pub async fn connect(options: EtcdOptions, clock: Arc<dyn Clock>) -> Result<EtcdStore, StoreError> {
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others answers nothing rather than stale data.
            .with_require_leader(true);
        let members = members::Members::connect(&options.endpoints, &connect)
            .await
            .map_err(|e| {
                StoreError::unavailable_from(
                    format!("connecting to etcd at {}", options.endpoints.join(",")),
                    e,
                )
            })?;
        let (head_tx, _) = watch::channel(0);
        let keys = Keys::new(&options.prefix);
        let known = Arc::new(known::Known::default());
        let inner = Arc::new(Inner {
            members,
            clock,
            writer: tokio::sync::Mutex::new(write::Recent::new(known.clone(), keys.head())),
            known,
            keys,
            retention: options.change_retention as u64,
            queue: commit::Queue::default(),
            head_tx,
        });
        let (at, read_at) = inner.read_head().await.map_err(|e| match e {
            StoreError::Unavailable { message, source } => StoreError::Unavailable {
                message: format!("etcd at {}: {message}", options.endpoints.join(",")),
                source,
            },
            e => e,
        })?;
        inner.publish(at.head.head);
        let tasks = vec![
            tokio::spawn(feed::watch_head(Arc::downgrade(&inner), read_at)),
            tokio::spawn(leases::sweep_every(
                Arc::downgrade(&inner),
                options.sweep_interval,
            )),
        ];
        Ok(EtcdStore { inner, tasks })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Inner {
    /// Moves the head watch forward (never back: a late watch event must not undo a commit's).
    fn publish(&self, head: u64) {
        self.head_tx.send_if_modified(|h| {
            if head > *h {
                *h = head;
                true
            } else {
                false
            }
        });
    }

    /// The head, and etcd's revision it was read at (where a watch of it starts).
    async fn read_head(&self) -> Result<(HeadAt, i64), StoreError> {
        let snap = ops::snapshot(
            &self.members,
            "reading the change feed's head",
            &[self.keys.head()],
        )
        .await?;
        Ok((head_at(snap.values[0].as_ref())?, snap.revision))
    }
}

fn head_at(kv: Option<&KeyValue>) -> Result<HeadAt, StoreError> {
    Ok(match kv {
        Some(kv) => HeadAt {
            head: decode("the change feed's head", kv.value())?,
            mod_revision: kv.mod_revision(),
        },
        None => HeadAt::default(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::unavailable_from(format!("decoding {what} stored in etcd"), e))
}

fn encode<T: Serialize>(what: &dyn std::fmt::Display, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Invalid(format!("{what} cannot be encoded as JSON: {e}")))
}

/// The stored record under `key`, decoded as the kind the key names.
fn decode_record(key: &RecordKey, bytes: &[u8]) -> Result<Record, StoreError> {
    let what = key.to_string();
    Ok(match key {
        RecordKey::Task { .. } => Record::Task(decode(&what, bytes)?),
        RecordKey::DesiredLrp { .. } => Record::DesiredLrp(decode(&what, bytes)?),
        RecordKey::ActualLrp { .. } => Record::ActualLrp(decode(&what, bytes)?),
        RecordKey::CellPresence { .. } => {
            Record::CellPresence(decode::<PresenceRecord>(&what, bytes)?.cell_presence)
        }
    })
}

/// A record's stored JSON: the record itself (not the `Record` envelope), as SQLite keeps it.
fn encode_record(record: &Record) -> Result<Vec<u8>, StoreError> {
    let key = record.key();
    match record {
        Record::Task(t) => encode(&key, t),
        Record::DesiredLrp(d) => encode(&key, d),
        Record::ActualLrp(a) => encode(&key, a),
        Record::CellPresence(p) => encode(&key, p),
    }
}

impl EtcdStore {
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        prefix: Vec<u8>,
    ) -> Result<Vec<T>, StoreError> {
        let (kvs, _) = ops::range(&self.inner.members, what, &prefix).await?;
        kvs.iter().map(|kv| decode(what, kv.value())).collect()
    }

    /// The actual LRPs' stored JSON under the narrowest prefix `filter` allows.
    async fn actual_kvs(&self, filter: &ActualLrpFilter) -> Result<Vec<KeyValue>, StoreError> {
        let keys = &self.inner.keys;
        let prefix = match (&filter.process_guid, filter.index) {
            (Some(p), Some(i)) => keys.actual_index(p, i),
            (Some(p), None) => keys.actual_process(p),
            _ => keys.actuals(),
        };
        Ok(ops::range(&self.inner.members, "listing actual LRPs", &prefix)
            .await?
            .0)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        self.inner.commit(txn).await
    }

    async fn get_task(&self, task_guid: &str) -> Result<Option<Task>, StoreError> {
        let key = [self.inner.keys.task(task_guid)];
        let snap = ops::snapshot(&self.inner.members, "reading a task", &key).await?;
        self.inner.known.read(&key, &snap.values, snap.revision);
        snap.values[0]
            .as_ref()
            .map(|kv| decode("a task", kv.value()))
            .transpose()
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let all: Vec<Task> = self.list("tasks", self.inner.keys.tasks()).await?;
        Ok(all.into_iter().filter(|t| filter.matches(t)).collect())
    }

    async fn get_desired_lrp(&self, process_guid: &str) -> Result<Option<DesiredLrp>, StoreError> {
        let key = [self.inner.keys.desired(process_guid)];
        let snap = ops::snapshot(&self.inner.members, "reading a desired LRP", &key).await?;
        self.inner.known.read(&key, &snap.values, snap.revision);
        snap.values[0]
            .as_ref()
            .map(|kv| decode("a desired LRP", kv.value()))
            .transpose()
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> Result<Vec<DesiredLrp>, StoreError> {
        let all: Vec<DesiredLrp> = self.list("desired LRPs", self.inner.keys.desireds()).await?;
        Ok(all.into_iter().filter(|d| filter.matches(d)).collect())
    }

    async fn list_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrpSchedulingInfo>, StoreError> {
        Ok(self
            .list_desired_lrps(filter)
            .await?
            .iter()
            .map(DesiredLrp::scheduling_info)
            .collect())
    }

    async fn get_actual_lrps(&self, process_guid: &str, index: i32) -> Result<Vec<ActualLrp>, StoreError> {
        let prefix = self.inner.keys.actual_index(process_guid, index);
        let (kvs, _) = ops::range(&self.inner.members, "reading actual LRPs", &prefix).await?;
        kvs.iter()
            .map(|kv| {
                // A claim or start commits a change of what it read here next.
                self.inner.known.saw(kv.key(), known::Seen::of(kv));
                decode("an actual LRP", kv.value())
            })
            .collect()
    }

    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, StoreError> {
        let mut out = Vec::new();
        for kv in self.actual_kvs(filter).await? {
            let a: ActualLrp = decode("an actual LRP", kv.value())?;
            if filter.matches(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn list_actual_lrps_json(&self, filter: &ActualLrpFilter) -> Result<String, StoreError> {
        let kvs = self.actual_kvs(filter).await?;
        // Only the filter's fields need decoding when it has any; the text is passed through.
        // The prefix enforced the process guid, and the index only together with it.
        let unfiltered = ActualLrpFilter {
            process_guid: None,
            index: filter.index.filter(|_| filter.process_guid.is_none()),
            ..filter.clone()
        } == ActualLrpFilter::default();
        let mut out = String::with_capacity(kvs.iter().map(|kv| kv.value().len() + 1).sum::<usize>() + 2);
        out.push('[');
        for kv in &kvs {
            if !unfiltered {
                let a: ActualLrp = decode("an actual LRP", kv.value())?;
                if !filter.matches(&a) {
                    continue;
                }
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(
                kv.value_str().map_err(|e| {
                    StoreError::unavailable_from("an actual LRP stored in etcd is not UTF-8", e)
                })?,
            );
        }
        out.push(']');
        Ok(out)
    }

    async fn upsert_domain(&self, domain: &str, ttl_seconds: i64) -> Result<Domain, StoreError> {
        self.inner.upsert_domain(domain, ttl_seconds).await
    }

    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
        let now = self.inner.clock.now();
        let all: Vec<Domain> = self.list("domains", self.inner.keys.domains()).await?;
        Ok(all
            .into_iter()
            .filter(|d| crate::ttl::is_live(d.expires_at, now))
            .collect())
    }

    async fn set_presence(
        &self,
        presence: &CellPresence,
        ttl_seconds: i64,
    ) -> Result<PresenceRecord, StoreError> {
        self.inner.set_presence(presence, ttl_seconds).await
    }

    async fn remove_presence(&self, cell_id: &str) -> Result<bool, StoreError> {
        self.inner.remove_presence(cell_id).await
    }

    async fn list_presences(&self) -> Result<Vec<PresenceRecord>, StoreError> {
        let now = self.inner.clock.now();
        let all: Vec<PresenceRecord> = self.list("cell presences", self.inner.keys.cells()).await?;
        Ok(all
            .into_iter()
            .filter(|p| crate::ttl::is_live(p.expires_at, now))
            .collect())
    }

    async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockRecord, StoreError> {
        self.inner.acquire_lock(key, owner, value, ttl_seconds).await
    }

    async fn release_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.inner.release_lock(key, owner).await
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let now = self.inner.clock.now();
        let snap = ops::snapshot(
            &self.inner.members,
            "reading a lock",
            &[self.inner.keys.lock(key)],
        )
        .await?;
        Ok(snap.values[0]
            .as_ref()
            .map(|kv| decode::<LockRecord>("a lock", kv.value()))
            .transpose()?
            .filter(|l| crate::ttl::is_live(l.expires_at, now)))
    }

    async fn changes_since(&self, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
        self.inner.changes_since(after, limit).await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members_and_an_optional_prefix() {
        let o = EtcdOptions::from_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(o.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(o.prefix, DEFAULT_PREFIX);
        let o = EtcdOptions::from_url("etcd://a:1,b:2,c:3/apps/diego").unwrap();
        assert_eq!(o.endpoints, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(o.prefix, "/apps/diego/");
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:x",
            "etcd://:1",
            "etcd://a:1,,b:2",
            "etcd://a:0",
        ] {
            match EtcdOptions::from_url(bad) {
                Err(StoreError::Invalid(m)) => assert!(m.contains(bad), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn presence_order_is_the_listing_order() {
        use diego_model::Presence;
        // The key layout relies on it (keys.rs).
        assert!(Presence::Ordinary < Presence::Evacuating && Presence::Evacuating < Presence::Suspect);
    }
}
