//! Transactions: preconditions read, checked, then enforced by etcd comparisons on the mod
//! revisions that were read, with the change feed's entry and head in the same transaction.
//!
//! A commit reads every key it writes (plus `head`, and the fence's lock) at one revision,
//! checks the store's preconditions (tags, not etcd revisions) and fence on what it read,
//! then sends one etcd transaction: `If` every key still has the mod revision that was read
//! (or is still absent) `Then` the writes, the feed entry and the new head. A failed
//! comparison means someone wrote in between; the commit reads again and re-checks — which
//! is exactly the store's semantics, since a tag changes with every write. A transport
//! failure leaves the outcome unknown: the next read also looks for the feed entry the lost
//! attempt would have made (it carries the commit's id), so an applied commit is never
//! reported as failed nor applied twice.

use std::collections::HashMap;

use diego_model::{ModificationTag, Timestamp};
use etcd_client::{Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ops::{self, Failure, RETRY_FOR};
use super::{decode, decode_record, encode, encode_record, Head, HeadAt, Inner};
use crate::ttl::check_fence;
use crate::{Change, Committed, LockRecord, Record, StoreError, Txn};

/// One transaction's changes, stored under `feed/<revision of its last change>`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct FeedEntry {
    /// Which commit wrote it (a random id), so a commit whose answer was lost can find out
    /// whether it applied.
    pub txn: String,
    pub changes: Vec<Change>,
}

/// What this process's own latest writes left in etcd: each commit reads before it takes the
/// writer lock (so conflicting commits read together, and fail without queueing), and this
/// tells it, once it holds the lock, what committed meanwhile. etcd's comparisons remain the
/// arbiter; this only spares transactions that are sure to fail.
#[derive(Default)]
pub(super) struct Recent {
    head: Option<HeadAt>,
    /// Key → (mod revision, the tag written; `None` for a delete).
    keys: HashMap<Vec<u8>, (i64, Option<ModificationTag>)>,
}

/// Keys remembered before the map starts over (forgetting only costs a failed comparison).
const RECENT_KEYS: usize = 4_096;

impl Recent {
    pub fn wrote_head(&mut self, head: Head, resp: &etcd_client::TxnResponse) {
        let mod_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.head = Some(HeadAt { head, mod_revision });
    }

    fn wrote_key(&mut self, key: Vec<u8>, mod_revision: i64, tag: Option<ModificationTag>) {
        if self.keys.len() >= RECENT_KEYS {
            self.keys.clear();
        }
        self.keys.insert(key, (mod_revision, tag));
    }

    /// This process's newer write of `key` than `read` saw, if any.
    fn newer(&self, key: &[u8], read: Option<&KeyValue>) -> Option<&Option<ModificationTag>> {
        let read = read.map_or(0, KeyValue::mod_revision);
        self.keys
            .get(key)
            .filter(|(rev, _)| *rev > read)
            .map(|(_, tag)| tag)
    }

    /// The newer of the head that was read and the one this process last wrote.
    fn head(&self, read: HeadAt) -> HeadAt {
        match self.head {
            Some(h) if h.mod_revision > read.mod_revision => h,
            _ => read,
        }
    }
}

/// An etcd transaction being built.
#[derive(Default)]
pub(super) struct EtcdTxn {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
}

impl EtcdTxn {
    /// The key must still be as read: the same mod revision, or still absent.
    pub fn unchanged(&mut self, key: Vec<u8>, read: Option<&KeyValue>) {
        self.compares.push(match read {
            Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
            None => Compare::version(key, CompareOp::Equal, 0),
        });
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) {
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        self.ops.push(TxnOp::put(key, value, options));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(TxnOp::delete(key, None));
    }

    pub fn into_etcd(self) -> etcd_client::Txn {
        etcd_client::Txn::new().when(self.compares).and_then(self.ops)
    }
}

impl Inner {
    /// Adds the feed entry of `changes` (before, after) and the advanced head to `txn`,
    /// compared against the head that was read; prunes what retention no longer keeps.
    /// Returns the new head.
    pub(super) fn append_changes(
        &self,
        txn: &mut EtcdTxn,
        read: &HeadAt,
        changes: Vec<(Option<Record>, Option<Record>)>,
        at: Timestamp,
        txn_id: &str,
    ) -> Result<Head, StoreError> {
        let first = read.head.head + 1;
        let head = read.head.head + changes.len() as u64;
        let entry = FeedEntry {
            txn: txn_id.to_string(),
            changes: changes
                .into_iter()
                .zip(first..)
                .map(|((before, after), revision)| Change {
                    revision,
                    at,
                    before,
                    after,
                })
                .collect(),
        };
        let new = Head {
            head,
            compacted: read.head.compacted.max(head.saturating_sub(self.retention)),
        };
        let head_key = self.keys.head();
        txn.compares.push(if read.mod_revision == 0 {
            Compare::version(head_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(head_key.clone(), CompareOp::Equal, read.mod_revision)
        });
        txn.put(
            self.keys.feed(head),
            encode(&"a change-feed entry", &entry)?,
            None,
        );
        txn.put(head_key, encode(&"the change feed's head", &new)?, None);
        if new.compacted > read.head.compacted {
            // Entries whose last change is pruned; a straddling one stays, and readers skip
            // its pruned changes.
            let end = self.keys.feed(new.compacted + 1);
            txn.ops.push(TxnOp::delete(
                self.keys.feed(0),
                Some(DeleteOptions::new().with_range(end)),
            ));
        }
        Ok(new)
    }

    pub(super) async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        txn.check_writes()?;
        let keys: Vec<Vec<u8>> = txn.writes.iter().map(|w| self.keys.record(&w.key())).collect();
        let txn_id = uuid::Uuid::new_v4().to_string();
        // Heads that attempts with an unknown outcome would have made.
        let mut unknown: Vec<u64> = Vec::new();
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let mut read = keys.clone();
            read.push(self.keys.head());
            if let Some(f) = &txn.fence {
                read.push(self.keys.lock(&f.key));
            }
            read.extend(unknown.iter().map(|&h| self.keys.feed(h)));
            let snap = ops::snapshot(&self.members, "reading before a commit", &read).await?;
            let (stored, rest) = snap.values.split_at(keys.len());
            let head = super::head_at(rest[0].as_ref())?;
            let (lock, lost) = match &txn.fence {
                Some(_) => (rest.get(1).and_then(Option::as_ref), &rest[2..]),
                None => (None, &rest[1..]),
            };
            for (&h, kv) in unknown.iter().zip(lost) {
                if let Some(kv) = kv {
                    if decode::<FeedEntry>("a change-feed entry", kv.value())?.txn == txn_id {
                        // An earlier attempt applied after all.
                        self.publish(h);
                        return Ok(committed(txn, h));
                    }
                }
            }
            if let Some(fence) = &txn.fence {
                let held = lock
                    .map(|kv| decode::<LockRecord>("a lock", kv.value()))
                    .transpose()?;
                check_fence(
                    fence,
                    held.as_ref().map(|l| (l.owner.as_str(), l.expires_at)),
                    self.clock.now(),
                )?;
            }
            let mut befores = Vec::with_capacity(txn.writes.len());
            for (i, (w, kv)) in txn.writes.iter().zip(stored).enumerate() {
                let before = kv
                    .as_ref()
                    .map(|kv| decode_record(&w.key(), kv.value()))
                    .transpose()?;
                w.check(i, before.as_ref())?;
                befores.push(before);
            }
            if txn.is_empty() {
                return Ok(Committed {
                    records: Vec::new(),
                    revision: head.head.head,
                });
            }

            let mut writer = self.writer.lock().await;
            let mut stale = false;
            for (i, (w, (key, kv))) in txn.writes.iter().zip(keys.iter().zip(stored)).enumerate() {
                if let Some(tag) = writer.newer(key, kv.as_ref()) {
                    // A commit of this process changed it since the read: the precondition
                    // is decided on what that commit wrote.
                    w.check_tag(i, tag.as_ref())?;
                    stale = true;
                }
            }
            if stale {
                // It still holds: read again for the record it replaces.
                continue;
            }
            let head = writer.head(head);

            let at = self.clock.now();
            let mut etcd = EtcdTxn::default();
            let mut changes = Vec::with_capacity(txn.writes.len());
            for ((w, key), (kv, before)) in txn.writes.iter().zip(&keys).zip(stored.iter().zip(befores)) {
                etcd.unchanged(key.clone(), kv.as_ref());
                let after = w.clone().into_stored();
                match &after {
                    Some(r) => etcd.put(key.clone(), encode_record(r)?, None),
                    None => etcd.delete(key.clone()),
                }
                changes.push((before, after));
            }
            if let (Some(f), Some(kv)) = (&txn.fence, lock) {
                etcd.unchanged(self.keys.lock(&f.key), Some(kv));
            }
            let new = self.append_changes(&mut etcd, &head, changes, at, &txn_id)?;
            match ops::txn_once(&self.members, etcd.into_etcd()).await {
                Ok(r) if r.succeeded() => {
                    writer.wrote_head(new, &r);
                    let revision = r.header().map(|h| h.revision()).unwrap_or(0);
                    for (w, key) in txn.writes.iter().zip(&keys) {
                        let tag = w.clone().into_stored().map(|r| r.modification_tag().clone());
                        writer.wrote_key(key.clone(), revision, tag);
                    }
                    self.publish(new.head);
                    return Ok(committed(txn, new.head));
                }
                // Someone wrote one of the keys (or the head) since the read: read again.
                Ok(_) => {}
                Err(Failure::Refused(m)) => return Err(StoreError::Invalid(format!("committing: {m}"))),
                Err(Failure::Transient(m)) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::unavailable(format!(
                            "committing: etcd did not answer within {RETRY_FOR:?} ({m})"
                        )));
                    }
                    tracing::debug!(error = %m, "etcd commit got no answer; checking whether it applied");
                    unknown.push(new.head);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn committed(txn: Txn, revision: u64) -> Committed {
    Committed {
        records: txn.writes.into_iter().map(|w| w.into_stored()).collect(),
        revision,
    }
}
