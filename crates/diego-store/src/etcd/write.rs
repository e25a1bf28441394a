//! The pieces of a write: an etcd transaction being built (comparisons on the mod revisions
//! that were read, puts and deletes), the change feed's entries and head added to it, and
//! what this process's own last writes left in etcd. `commit.rs` assembles commits from them.

use std::collections::HashMap;
use std::sync::Arc;

use diego_model::{ModificationTag, Timestamp};
use etcd_client::{Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, TxnOp};
use serde::{Deserialize, Serialize};

use super::known::{Known, Seen};
use super::{encode, Head, HeadAt, Inner};
use crate::{Change, Record, StoreError};

/// One commit's changes as (before, after) pairs, before they are numbered.
pub(super) type Changes = Vec<(Option<Record>, Option<Record>)>;

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
/// arbiter; this only spares transactions that are sure to fail. Every write recorded here is
/// also recorded in [`Known`], where later commits find what they would otherwise read.
pub(super) struct Recent {
    head: Option<HeadAt>,
    /// Key → (mod revision, the tag written; `None` for a delete).
    keys: HashMap<Vec<u8>, (i64, Option<ModificationTag>)>,
    known: Arc<Known>,
    head_key: Vec<u8>,
}

/// Keys remembered before the map starts over (forgetting only costs a failed comparison).
const RECENT_KEYS: usize = 4_096;

impl Recent {
    pub fn new(known: Arc<Known>, head_key: Vec<u8>) -> Recent {
        Recent {
            head: None,
            keys: HashMap::new(),
            known,
            head_key,
        }
    }

    pub fn wrote_head(&mut self, head: Head, resp: &etcd_client::TxnResponse) {
        let mod_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.head = Some(HeadAt { head, mod_revision });
        if let Ok(value) = encode(&"the change feed's head", &head) {
            self.known.saw(
                &self.head_key,
                Seen {
                    revision: mod_revision,
                    value: Some(value),
                },
            );
        }
    }

    /// This process wrote `value` (`None`: deleted `key`) at `mod_revision`, leaving `tag`.
    pub fn wrote_key(
        &mut self,
        key: Vec<u8>,
        mod_revision: i64,
        tag: Option<ModificationTag>,
        value: Option<Vec<u8>>,
    ) {
        if self.keys.len() >= RECENT_KEYS {
            self.keys.clear();
        }
        self.known.saw(
            &key,
            Seen {
                revision: mod_revision,
                value,
            },
        );
        self.keys.insert(key, (mod_revision, tag));
    }

    /// This process's newer write of `key` than the commit's read saw (at mod revision
    /// `read`; 0: absent), if any.
    pub fn newer(&self, key: &[u8], read: i64) -> Option<&Option<ModificationTag>> {
        self.keys
            .get(key)
            .filter(|(rev, _)| *rev > read)
            .map(|(_, tag)| tag)
    }

    /// The newer of the head that was read and the one this process last wrote.
    pub fn head(&self, read: HeadAt) -> HeadAt {
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
        self.unchanged_at(key, read.map(KeyValue::mod_revision));
    }

    /// The key must still have mod revision `read` (`None`: still be absent).
    pub fn unchanged_at(&mut self, key: Vec<u8>, read: Option<i64>) {
        self.compares.push(match read {
            Some(revision) => Compare::mod_revision(key, CompareOp::Equal, revision),
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
        changes: Changes,
        at: Timestamp,
        txn_id: &str,
    ) -> Result<Head, StoreError> {
        Ok(self.append_entries(txn, read, vec![(changes, txn_id)], at)?.0)
    }

    /// [`Inner::append_changes`] for several commits in one etcd transaction: one feed entry
    /// each (numbered on from the head in order), one head. Returns the new head and the
    /// revision of each entry's last change (its key under `feed/`).
    pub(super) fn append_entries(
        &self,
        txn: &mut EtcdTxn,
        read: &HeadAt,
        entries: Vec<(Changes, &str)>,
        at: Timestamp,
    ) -> Result<(Head, Vec<u64>), StoreError> {
        let mut head = read.head.head;
        let mut lasts = Vec::with_capacity(entries.len());
        for (changes, txn_id) in entries {
            let first = head + 1;
            head += changes.len() as u64;
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
            txn.put(
                self.keys.feed(head),
                encode(&"a change-feed entry", &entry)?,
                None,
            );
            lasts.push(head);
        }
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
        Ok((new, lasts))
    }
}
