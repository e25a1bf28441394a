//! Many writers at once: compare-and-swap must never lose an update.

use std::collections::HashSet;

use super::fixtures::{actual_lrp, task};
use super::{setup, StoreFactory};
use crate::{Record, StoreError, Txn, Write};

const WRITERS: usize = 64;
const INCREMENTS_PER_WRITER: usize = 8;
const INSERTS_PER_WRITER: usize = 16;

/// 64 tasks each increment one record's counter by read-modify-CAS, retrying on conflict.
/// Every success must be reflected: the counter and the tag index both equal the total.
pub async fn concurrent_cas_increments(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = fx.store.clone();
    s.commit(Txn::one(Write::insert(Record::ActualLrp(actual_lrp(
        "counter", 0, "d",
    )))))
    .await
    .unwrap();
    let base = s.changes_since(0, 0).await.unwrap().head;

    let mut handles = Vec::new();
    for _ in 0..WRITERS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0usize;
            for _ in 0..INCREMENTS_PER_WRITER {
                loop {
                    let mut a = s.get_actual_lrps("counter", 0).await.unwrap().remove(0);
                    a.crash_count += 1;
                    match s.commit(Txn::one(Write::update(Record::ActualLrp(a)))).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }

    let total = WRITERS * INCREMENTS_PER_WRITER;
    let a = s.get_actual_lrps("counter", 0).await.unwrap().remove(0);
    assert_eq!(
        a.crash_count as usize, total,
        "lost updates ({conflicts} conflicts retried)"
    );
    assert_eq!(a.modification_tag.index as usize, total);
    let head = s.changes_since(0, 0).await.unwrap().head;
    assert_eq!(
        head - base,
        total as u64,
        "one change per successful update, none for conflicts"
    );
}

/// 64 tasks insert distinct records at once: all land, each with its own revision.
pub async fn concurrent_inserts(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = fx.store.clone();
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..INSERTS_PER_WRITER {
                let t = task(&format!("t-{w:02}-{i:02}"), "d");
                revisions.push(
                    s.commit(Txn::one(Write::insert(Record::Task(t))))
                        .await
                        .unwrap()
                        .revision,
                );
            }
            revisions
        }));
    }
    let mut revisions = HashSet::new();
    for h in handles {
        for r in h.await.unwrap() {
            assert!(revisions.insert(r), "revision {r} reported twice");
        }
    }
    let total = WRITERS * INSERTS_PER_WRITER;
    assert_eq!(revisions.len(), total);
    let listed = s.list_tasks(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), total);
    assert!(
        listed.windows(2).all(|w| w[0].task_guid < w[1].task_guid),
        "ordered by guid"
    );
    assert_eq!(
        s.get_task("t-63-15").await.unwrap().map(|t| t.task_guid),
        Some("t-63-15".into())
    );
}
