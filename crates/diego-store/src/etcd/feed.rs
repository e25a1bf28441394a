//! Reading the change feed, and following its head with an etcd watch.

use std::sync::Weak;
use std::time::Duration;

use etcd_client::{GetOptions, TxnOp, TxnOpResponse, WatchOptions};

use super::write::FeedEntry;
use super::{decode, head_at, Inner};
use crate::{ChangePage, StoreError};

impl Inner {
    pub(super) async fn changes_since(&self, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
        // The head and the entries at one revision. Each entry holds at least one change
        // after `after` (it is keyed by its last), so `limit` entries hold enough.
        let mut ops_ = vec![TxnOp::get(self.keys.head(), None)];
        if limit > 0 {
            let range = GetOptions::new()
                .with_range(self.keys.feed_end())
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            ops_.push(TxnOp::get(self.keys.feed(after.saturating_add(1)), Some(range)));
        }
        let resp = super::ops::retrying("reading the change feed", &self.members, |client| {
            let mut kv = super::ops::kv(client);
            let txn = etcd_client::Txn::new().and_then(ops_.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs(),
            _ => Vec::new(),
        });
        let head = head_at(gets.next().unwrap_or_default().first())?.head;
        let floor = after.max(head.compacted);
        let mut changes = Vec::new();
        'entries: for kv in gets.next().unwrap_or_default() {
            let entry: FeedEntry = decode("a change-feed entry", kv.value())?;
            for c in entry.changes {
                if changes.len() == limit {
                    break 'entries;
                }
                if c.revision > floor {
                    changes.push(c);
                }
            }
        }
        Ok(ChangePage {
            changes,
            oldest: head.compacted + 1,
            head: head.head,
        })
    }
}

/// Follows `head` with an etcd watch, so commits of other processes on the same cluster
/// (another BBS) move this store's head watch too. Re-reads the head and watches again
/// after any failure (a member killed, a compacted revision); ends with the store.
/// `revision`: etcd's revision the head was last read at; the watch starts after it.
pub(super) async fn watch_head(inner: Weak<Inner>, mut revision: i64) {
    loop {
        let Some(store) = inner.upgrade() else { return };
        let key = store.keys.head();
        if revision == 0 {
            match store.read_head().await {
                Ok((read, read_at)) => {
                    store.publish(read.head.head);
                    revision = read_at.max(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed's head failed; trying again");
                    drop(store);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let (member, client) = store.members.current();
        let mut client = client.watch_client();
        drop(store);
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = match client.watch(key, Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "watching the change feed's head failed; trying again");
                if let Some(store) = inner.upgrade() {
                    store.members.failed(member, &e.to_string());
                }
                revision = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) if !resp.canceled() => {
                    let Some(store) = inner.upgrade() else { return };
                    for event in resp.events() {
                        if let Ok(read) = head_at(event.kv()) {
                            store.publish(read.head.head);
                        }
                    }
                }
                // Cancelled by etcd (a compacted revision) or ended: watch again.
                Ok(_) => break,
                // The member went away or was cut off (the connection's keep-alive ends it).
                Err(e) => {
                    tracing::debug!(error = %e, "the change feed's watch failed; watching again");
                    if let Some(store) = inner.upgrade() {
                        store.members.failed(member, &e.to_string());
                    }
                    break;
                }
            }
        }
        // Resume from a fresh read: the revision may have been compacted meanwhile.
        revision = 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
