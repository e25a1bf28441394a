//! The change feed: contents, revisions, paging, retention and the head watch.

use std::time::Duration;

use diego_model::{Task, TaskState};

use super::fixtures::{actual_lrp, task, START};
use super::{StoreFactory, DEFAULT_RETENTION};
use crate::{DynStore, Record, Txn, Write};

async fn head(s: &DynStore) -> u64 {
    s.changes_since(0, 0).await.expect("changes_since").head
}

async fn insert_tasks(s: &DynStore, guids: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut revisions = Vec::new();
    for g in guids {
        revisions.push(
            s.commit(Txn::one(Write::insert(Record::Task(task(&g, "d")))))
                .await
                .unwrap()
                .revision,
        );
    }
    revisions
}

/// Each applied write appends one change with consecutive revisions, the commit time, and
/// the records before and after.
pub async fn change_feed_records_each_write(f: &impl StoreFactory) {
    let clock = diego_model::ManualClock::new(START);
    let fx = f.make(clock.clone(), DEFAULT_RETENTION).await;
    let s = &fx.store;
    let base = head(s).await;

    let t = task("t", "d");
    let c1 = s
        .commit(Txn::one(Write::insert(Record::Task(t.clone()))))
        .await
        .unwrap();
    clock.advance_ms(1_000);
    let running = Task {
        state: TaskState::Running,
        cell_id: "c1".into(),
        ..t.clone()
    };
    let c2 = s
        .commit(Txn::one(Write::update(Record::Task(running))))
        .await
        .unwrap();
    let running = c2.records[0].clone().unwrap();
    clock.advance_ms(1_000);
    let a = actual_lrp("p", 0, "d");
    let c3 = s
        .commit(Txn {
            fence: None,
            writes: vec![
                Write::insert(Record::ActualLrp(a.clone())),
                Write::delete(&running),
            ],
        })
        .await
        .unwrap();
    assert_eq!(
        (c1.revision, c2.revision, c3.revision),
        (base + 1, base + 2, base + 4)
    );

    let page = s.changes_since(base, 100).await.unwrap();
    assert_eq!(page.head, base + 4);
    assert!(
        page.oldest <= base + 1,
        "oldest {} > first change {}",
        page.oldest,
        base + 1
    );
    let revs: Vec<u64> = page.changes.iter().map(|c| c.revision).collect();
    assert_eq!(revs, [base + 1, base + 2, base + 3, base + 4]);
    let [ch1, ch2, ch3, ch4] = &page.changes[..] else {
        panic!("four changes expected")
    };
    assert_eq!(
        (ch1.before.as_ref(), ch1.after.as_ref()),
        (None, Some(&Record::Task(t.clone())))
    );
    assert_eq!(ch1.at, START);
    assert_eq!(
        (ch2.before.as_ref(), ch2.after.as_ref()),
        (Some(&Record::Task(t)), Some(&running))
    );
    assert_eq!(
        ch2.after.as_ref().unwrap().modification_tag().index,
        1,
        "after carries the new tag"
    );
    assert_eq!(ch2.at, START + 1_000_000_000);
    assert_eq!(
        (ch3.before.as_ref(), ch3.after.as_ref()),
        (None, Some(&Record::ActualLrp(a)))
    );
    assert_eq!((ch4.before.as_ref(), ch4.after.as_ref()), (Some(&running), None));
    assert_eq!(ch4.at, START + 2_000_000_000);
}

/// `changes_since` pages through the feed with `limit`, oldest first.
pub async fn changes_since_pages(f: &impl StoreFactory) {
    let fx = f
        .make(diego_model::ManualClock::new(START), DEFAULT_RETENTION)
        .await;
    let s = &fx.store;
    let base = head(s).await;
    insert_tasks(s, (0..10).map(|i| format!("t{i}"))).await;

    let mut after = base;
    let mut pages = Vec::new();
    loop {
        let page = s.changes_since(after, 3).await.unwrap();
        assert_eq!(page.head, base + 10);
        if page.changes.is_empty() {
            break;
        }
        after = page.changes.last().unwrap().revision;
        pages.push(page.changes.iter().map(|c| c.revision - base).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]);
    let guids: Vec<String> = s
        .changes_since(base + 4, 2)
        .await
        .unwrap()
        .changes
        .iter()
        .map(|c| c.after.as_ref().unwrap().as_task().unwrap().task_guid.clone())
        .collect();
    assert_eq!(guids, ["t4", "t5"]);
    assert!(s.changes_since(base + 100, 10).await.unwrap().changes.is_empty());
    assert!(s.changes_since(base, 0).await.unwrap().changes.is_empty());
}

/// Only the newest `change_retention` changes are kept; `oldest` says where the feed starts
/// and revisions keep counting.
pub async fn change_feed_retention(f: &impl StoreFactory) {
    let fx = f.make(diego_model::ManualClock::new(START), 5).await;
    let s = &fx.store;
    let base = head(s).await;
    let revs = insert_tasks(s, (0..12).map(|i| format!("t{i:02}"))).await;
    assert_eq!(
        revs,
        (base + 1..=base + 12).collect::<Vec<_>>(),
        "revisions are consecutive"
    );

    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!(page.head, base + 12);
    assert_eq!(page.oldest, base + 8, "five changes retained");
    let got: Vec<u64> = page.changes.iter().map(|c| c.revision).collect();
    assert_eq!(got, (base + 8..=base + 12).collect::<Vec<_>>());

    // A two-write transaction pushes two more out.
    let c = s
        .commit(Txn {
            fence: None,
            writes: vec![
                Write::insert(Record::Task(task("x", "d"))),
                Write::insert(Record::Task(task("y", "d"))),
            ],
        })
        .await
        .unwrap();
    assert_eq!(c.revision, base + 14);
    let page = s.changes_since(base + 9, 100).await.unwrap();
    assert_eq!((page.oldest, page.head), (base + 10, base + 14));
    assert_eq!(page.changes.first().map(|c| c.revision), Some(base + 10));
}

/// `watch_head` moves to the new head once a commit is durable, by one per write.
pub async fn watch_head_advances(f: &impl StoreFactory) {
    let fx = f
        .make(diego_model::ManualClock::new(START), DEFAULT_RETENTION)
        .await;
    let s = fx.store.clone();
    let mut rx = s.watch_head();
    let start = *rx.borrow_and_update();
    assert_eq!(start, head(&s).await);

    let writer = s.clone();
    let commit = tokio::spawn(async move {
        writer
            .commit(Txn::one(Write::insert(Record::Task(task("t1", "d")))))
            .await
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("head advanced")
        .unwrap();
    assert!(*rx.borrow_and_update() > start);
    let c = commit.await.unwrap();
    assert_eq!(c.revision, start + 1);
    assert!(
        *s.watch_head().borrow() >= c.revision,
        "a committed revision is visible on the watch"
    );

    let c = s
        .commit(Txn {
            fence: None,
            writes: vec![
                Write::insert(Record::Task(task("t2", "d"))),
                Write::insert(Record::Task(task("t3", "d"))),
            ],
        })
        .await
        .unwrap();
    assert_eq!(c.revision, start + 3);
    assert_eq!(*s.watch_head().borrow(), start + 3);

    // A failed commit moves nothing.
    let mut rx = s.watch_head();
    rx.borrow_and_update();
    assert!(s
        .commit(Txn::one(Write::insert(Record::Task(task("t1", "d")))))
        .await
        .is_err());
    assert!(!rx.has_changed().unwrap());
    assert_eq!(*rx.borrow(), start + 3);
}
