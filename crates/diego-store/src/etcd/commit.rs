//! Commits: preconditions read, checked, then enforced by etcd comparisons on the mod
//! revisions that were read, with the change feed's entries and head in the same etcd
//! transaction — and commits that arrive together sent together (group commit).
//!
//! A commit reads every key it writes (plus `head`, and the fence's lock) at one revision —
//! or, when this process knows all of them from its own reads and writes (`known.rs`), takes
//! them from there — and checks the store's preconditions (tags, not etcd revisions) and the
//! fence on that.
//! It then queues what it would send and waits; whichever waiting commit gets the writer lock
//! first takes every queued commit that fits (below) and sends them as **one** etcd
//! transaction: `If` every key of every commit still has the mod revision its commit read (or
//! is still absent), and `head` is unchanged, `Then` all their writes, one feed entry per
//! commit and the new head. etcd makes that one raft proposal and one WAL fsync, as SQLite's
//! writer thread makes one fsync of a group (docs/040-store.md). Every commit of the group is
//! told its own revision.
//!
//! A failed comparison means someone wrote in between (another BBS, or one commit's key
//! moved): every commit of the group reads again and re-checks — the store's semantics
//! exactly, since a tag changes with every write. A transport failure leaves the outcome
//! unknown: each commit's next read also looks for the feed entry the lost attempt would have
//! made (it carries the commit's id), so an applied commit is never reported as failed nor
//! applied twice.
//!
//! What fits in a group: commits writing disjoint keys (a later commit on a key of the group
//! waits for the next one, where it sees the group's write), within etcd's default
//! `--max-txn-ops` (128 comparisons and 128 operations) and [`MAX_GROUP_BYTES`] of values. A
//! commit that etcd refused inside a group is sent alone next time, so a group never fails a
//! commit that would have succeeded by itself.

use std::collections::HashSet;
use std::sync::Mutex;

use diego_model::ModificationTag;
use etcd_client::{Compare, TxnOp};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::known::Seen;
use super::ops::{self, Failure, RETRY_FOR};
use super::write::{Changes, EtcdTxn, FeedEntry};
use super::{decode, decode_record, encode_record, HeadAt, Inner};
use crate::ttl::check_fence;
use crate::{Committed, LockRecord, StoreError, Txn};

/// etcd's default `--max-txn-ops`: the most comparisons, and the most operations, one etcd
/// transaction may carry. Groups stay within it; a single commit beyond it is sent alone
/// (and refused, naming the limit, by an etcd with default flags).
pub(super) const MAX_TXN_OPS: usize = 128;

/// Bytes of values one group carries at most: well inside etcd's default
/// `--max-request-bytes` (1.5 MiB), with room for keys and framing.
pub(super) const MAX_GROUP_BYTES: usize = 1024 * 1024;

/// A commit checked and ready to send: what it adds to the group's etcd transaction.
struct Prepared {
    /// The etcd key of each write, with the mod revision its read saw (0: absent).
    keys: Vec<(Vec<u8>, i64)>,
    /// The tag each write leaves (`None`: a delete).
    tags: Vec<Option<ModificationTag>>,
    /// The value each write leaves (`None`: a delete).
    values: Vec<Option<Vec<u8>>>,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    changes: Changes,
    head: HeadAt,
    txn_id: String,
    bytes: usize,
    /// Send without others (etcd refused the group it was in).
    alone: bool,
}

/// What a group did for one of its commits.
enum Outcome {
    /// Applied; the revision of its last change.
    Applied(u64),
    /// A comparison of the group failed: read again.
    Retry,
    /// This process wrote the key of write `index` since the commit's read, leaving `tag`:
    /// the precondition is decided on that, then (if it holds) the commit reads again.
    Stale {
        index: usize,
        tag: Option<ModificationTag>,
    },
    /// No answer: it applied if `feed/<revision>` carries its id.
    Unknown(u64),
    /// etcd refused it (alone).
    Refused(String),
    /// etcd refused its group: send it alone.
    Alone,
}

struct Waiting {
    prepared: Prepared,
    reply: oneshot::Sender<Outcome>,
}

/// Commits checked and waiting for a group.
#[derive(Default)]
pub(super) struct Queue {
    waiting: Mutex<Vec<Waiting>>,
}

impl Queue {
    fn push(&self, w: Waiting) {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts commits that did not fit back at the front, ahead of newer ones.
    fn put_back(&self, mut first: Vec<Waiting>) {
        let mut q = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        first.append(&mut q);
        *q = first;
    }
}

impl Inner {
    pub(super) async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        txn.check_writes()?;
        let keys: Vec<Vec<u8>> = txn.writes.iter().map(|w| self.keys.record(&w.key())).collect();
        let txn_id = uuid::Uuid::new_v4().to_string();
        // Heads that attempts with an unknown outcome would have made.
        let mut unknown: Vec<u64> = Vec::new();
        let mut alone = false;
        let deadline = Instant::now() + RETRY_FOR;
        // Read etcd rather than trust what this process knows (`known.rs`): after a failed
        // comparison, or when what it knew failed a precondition.
        let mut fresh = txn.is_empty();
        loop {
            let mut read = keys.clone();
            read.push(self.keys.head());
            if let Some(f) = &txn.fence {
                read.push(self.keys.lock(&f.key));
            }
            let cached = match fresh || !unknown.is_empty() {
                true => None,
                false => self.known.all(&read),
            };
            let from_cache = cached.is_some();
            fresh = false;
            let values: Vec<Option<Seen>> = match cached {
                Some(seen) => seen.into_iter().map(|s| s.value.is_some().then_some(s)).collect(),
                None => {
                    let known = read.len();
                    read.extend(unknown.iter().map(|&h| self.keys.feed(h)));
                    let snap = ops::snapshot(&self.members, "reading before a commit", &read).await?;
                    self.known.read(&read[..known], &snap.values, snap.revision);
                    snap.values.iter().map(|kv| kv.as_ref().map(Seen::of)).collect()
                }
            };
            let (stored, rest) = values.split_at(keys.len());
            let head = head_seen(rest[0].as_ref())?;
            let (lock, lost) = match &txn.fence {
                Some(_) => (rest.get(1).and_then(Option::as_ref), &rest[2..]),
                None => (None, &rest[1..]),
            };
            for (&h, seen) in unknown.iter().zip(lost) {
                if let Some(value) = seen.as_ref().and_then(|s| s.value.as_ref()) {
                    if decode::<FeedEntry>("a change-feed entry", value)?.txn == txn_id {
                        // An earlier attempt applied after all.
                        self.publish(h);
                        return Ok(committed(txn, h));
                    }
                }
            }
            let changes = match self.check(&txn, stored, lock) {
                Ok(changes) => changes,
                // What this process knew may be out of date: only etcd's answer counts.
                Err(_) if from_cache => {
                    fresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if txn.is_empty() {
                return Ok(Committed {
                    records: Vec::new(),
                    revision: head.head.head,
                });
            }

            let prepared = self.prepare(&txn, &keys, stored, lock, changes, head, &txn_id, alone)?;
            let (reply, mut outcome) = oneshot::channel();
            self.queue.push(Waiting { prepared, reply });
            let outcome = loop {
                tokio::select! {
                    biased;
                    o = &mut outcome => break o.map_err(|_| {
                        StoreError::unavailable("committing: the commit group was dropped unanswered")
                    })?,
                    writer = self.writer.lock() => {
                        let mut writer = writer;
                        self.send_group(&mut writer).await;
                    }
                }
            };
            match outcome {
                Outcome::Applied(revision) => return Ok(committed(txn, revision)),
                Outcome::Retry => fresh = true,
                Outcome::Stale { index, tag } => txn.writes[index].check_tag(index, tag.as_ref())?,
                Outcome::Refused(m) => return Err(StoreError::Invalid(format!("committing: {m}"))),
                Outcome::Alone => alone = true,
                Outcome::Unknown(h) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::unavailable(format!(
                            "committing: etcd did not answer within {RETRY_FOR:?}"
                        )));
                    }
                    unknown.push(h);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The comparisons and operations of one checked commit.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        txn: &Txn,
        keys: &[Vec<u8>],
        stored: &[Option<Seen>],
        lock: Option<&Seen>,
        changes: Changes,
        head: HeadAt,
        txn_id: &str,
        alone: bool,
    ) -> Result<Prepared, StoreError> {
        let mut etcd = EtcdTxn::default();
        let mut bytes = 0;
        let mut values = Vec::with_capacity(changes.len());
        for ((key, seen), (_, after)) in keys.iter().zip(stored).zip(&changes) {
            etcd.unchanged_at(key.clone(), seen.as_ref().and_then(Seen::mod_revision));
            match after {
                Some(r) => {
                    let value = encode_record(r)?;
                    // The feed entry repeats the record (and its predecessor).
                    bytes += 3 * value.len();
                    etcd.put(key.clone(), value.clone(), None);
                    values.push(Some(value));
                }
                None => {
                    etcd.delete(key.clone());
                    values.push(None);
                }
            }
        }
        if let (Some(f), Some(seen)) = (&txn.fence, lock) {
            etcd.unchanged_at(self.keys.lock(&f.key), seen.mod_revision());
        }
        Ok(Prepared {
            keys: keys
                .iter()
                .zip(stored)
                .map(|(k, seen)| (k.clone(), seen.as_ref().and_then(Seen::mod_revision).unwrap_or(0)))
                .collect(),
            tags: changes
                .iter()
                .map(|(_, after)| after.as_ref().map(|r| r.modification_tag().clone()))
                .collect(),
            values,
            compares: etcd.compares,
            ops: etcd.ops,
            changes,
            head,
            txn_id: txn_id.to_string(),
            bytes,
            alone,
        })
    }

    /// The fence and each write's precondition checked on `stored` (and `lock`): the changes
    /// the commit makes, as (before, after).
    fn check(&self, txn: &Txn, stored: &[Option<Seen>], lock: Option<&Seen>) -> Result<Changes, StoreError> {
        if let Some(fence) = &txn.fence {
            let held = lock
                .and_then(|s| s.value.as_ref())
                .map(|v| decode::<LockRecord>("a lock", v))
                .transpose()?;
            check_fence(
                fence,
                held.as_ref().map(|l| (l.owner.as_str(), l.expires_at)),
                self.clock.now(),
            )?;
        }
        let mut changes = Vec::with_capacity(txn.writes.len());
        for (i, (w, seen)) in txn.writes.iter().zip(stored).enumerate() {
            let before = seen
                .as_ref()
                .and_then(|s| s.value.as_ref())
                .map(|v| decode_record(&w.key(), v))
                .transpose()?;
            w.check(i, before.as_ref())?;
            changes.push((before, w.clone().into_stored()));
        }
        Ok(changes)
    }

    /// Under the writer lock: takes the queued commits that fit one etcd transaction, sends
    /// it, and answers each of them. Commits that do not fit stay queued for the next group.
    async fn send_group(&self, writer: &mut super::write::Recent) {
        let mut group: Vec<Waiting> = Vec::new();
        let mut later = Vec::new();
        let mut written: HashSet<Vec<u8>> = HashSet::new();
        // The head's comparison; its put and a pruning delete.
        let (mut compares, mut ops, mut bytes) = (1, 2, 0);
        for w in self.queue.take() {
            let p = &w.prepared;
            // A commit of this process changed one of its keys since its read: its
            // precondition is decided on what that commit wrote.
            let stale = p.keys.iter().enumerate().find_map(|(index, (key, read))| {
                writer.newer(key, *read).map(|tag| Outcome::Stale {
                    index,
                    tag: tag.clone(),
                })
            });
            if let Some(outcome) = stale {
                let _ = w.reply.send(outcome);
                continue;
            }
            let fits = group.is_empty()
                || (!p.alone
                    && !group[0].prepared.alone
                    && compares + p.compares.len() <= MAX_TXN_OPS
                    // Its writes and its feed entry.
                    && ops + p.ops.len() < MAX_TXN_OPS
                    && bytes + p.bytes <= MAX_GROUP_BYTES
                    && p.keys.iter().all(|(k, _)| !written.contains(k)));
            if !fits {
                later.push(w);
                continue;
            }
            compares += p.compares.len();
            ops += p.ops.len() + 1;
            bytes += p.bytes;
            written.extend(p.keys.iter().map(|(k, _)| k.clone()));
            group.push(w);
        }
        self.queue.put_back(later);
        if group.is_empty() {
            return;
        }

        // The newest head any of them read (or this process wrote) is the one compared.
        let read = group
            .iter()
            .map(|w| w.prepared.head)
            .max_by_key(|h| h.mod_revision)
            .unwrap_or_default();
        let head = writer.head(read);
        let mut etcd = EtcdTxn::default();
        let mut changes = Vec::with_capacity(group.len());
        let mut ids = Vec::with_capacity(group.len());
        let mut members = Vec::with_capacity(group.len());
        for w in group {
            let Waiting { prepared: p, reply } = w;
            etcd.compares.extend(p.compares);
            etcd.ops.extend(p.ops);
            changes.push(p.changes);
            ids.push(p.txn_id);
            members.push((p.keys, p.tags, p.values, reply));
        }
        let size = members.len();
        let appended = self.append_entries(
            &mut etcd,
            &head,
            changes.into_iter().zip(ids.iter().map(String::as_str)).collect(),
            self.clock.now(),
        );
        let (new, lasts) = match appended {
            Ok(v) => v,
            Err(e) => {
                let m = e.to_string();
                for (_, _, _, reply) in members {
                    let _ = reply.send(Outcome::Refused(m.clone()));
                }
                return;
            }
        };
        match ops::txn_once(&self.members, etcd.into_etcd()).await {
            Ok(r) if r.succeeded() => {
                writer.wrote_head(new, &r);
                let revision = r.header().map(|h| h.revision()).unwrap_or(0);
                self.publish(new.head);
                for ((keys, tags, values, reply), last) in members.into_iter().zip(lasts) {
                    for (((key, _), tag), value) in keys.into_iter().zip(tags).zip(values) {
                        writer.wrote_key(key, revision, tag, value);
                    }
                    let _ = reply.send(Outcome::Applied(last));
                }
            }
            // Someone wrote one of the keys (or the head) since the reads: read again.
            Ok(_) => {
                for (_, _, _, reply) in members {
                    let _ = reply.send(Outcome::Retry);
                }
            }
            Err(Failure::Refused(m)) => {
                for (_, _, _, reply) in members {
                    let _ = reply.send(if size == 1 {
                        Outcome::Refused(m.clone())
                    } else {
                        Outcome::Alone
                    });
                }
            }
            Err(Failure::Transient(m)) => {
                tracing::debug!(error = %m, commits = size, "etcd commit got no answer; checking whether it applied");
                for ((_, _, _, reply), last) in members.into_iter().zip(lasts) {
                    let _ = reply.send(Outcome::Unknown(last));
                }
            }
        }
    }
}

/// The head as `seen` (never written: the default, compared as absent).
fn head_seen(seen: Option<&Seen>) -> Result<HeadAt, StoreError> {
    Ok(match seen.and_then(|s| Some((s.value.as_ref()?, s.revision))) {
        Some((value, mod_revision)) => HeadAt {
            head: decode("the change feed's head", value)?,
            mod_revision,
        },
        None => HeadAt::default(),
    })
}

fn committed(txn: Txn, revision: u64) -> Committed {
    Committed {
        records: txn.writes.into_iter().map(|w| w.into_stored()).collect(),
        revision,
    }
}
