//! The change feed: contents, revisions, paging, retention and the head watch.

use std::time::Duration;

use diego_model::{Task, TaskState};

use super::fixtures::{actual_lrp, cell, task, START};
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

/// Each applied write appends one change with a greater revision than the one before (not
/// necessarily the next: backends may leave gaps), the commit time, and the records before
/// and after. A transaction's revision is that of its last change.
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
    assert!(
        base < c1.revision && c1.revision < c2.revision && c2.revision < c3.revision,
        "revisions increase: {base} {} {} {}",
        c1.revision,
        c2.revision,
        c3.revision
    );

    let page = s.changes_since(base, 100).await.unwrap();
    assert_eq!(page.head, c3.revision);
    assert!(page.oldest <= base + 1, "oldest {} > {}", page.oldest, base + 1);
    let revs: Vec<u64> = page.changes.iter().map(|c| c.revision).collect();
    assert_eq!(revs.len(), 4);
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?} increase");
    assert_eq!(
        (revs[0], revs[1], revs[3]),
        (c1.revision, c2.revision, c3.revision)
    );
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
    let revs = insert_tasks(s, (0..10).map(|i| format!("t{i}"))).await;

    let mut after = base;
    let mut pages = Vec::new();
    loop {
        let page = s.changes_since(after, 3).await.unwrap();
        assert_eq!(page.head, revs[9]);
        if page.changes.is_empty() {
            break;
        }
        after = page.changes.last().unwrap().revision;
        pages.push(page.changes.iter().map(|c| c.revision).collect::<Vec<_>>());
    }
    let want: Vec<Vec<u64>> = revs.chunks(3).map(<[u64]>::to_vec).collect();
    assert_eq!(pages, want);
    let guids: Vec<String> = s
        .changes_since(revs[3], 2)
        .await
        .unwrap()
        .changes
        .iter()
        .map(|c| c.after.as_ref().unwrap().as_task().unwrap().task_guid.clone())
        .collect();
    assert_eq!(guids, ["t4", "t5"]);
    assert!(s.changes_since(revs[9], 10).await.unwrap().changes.is_empty());
    assert!(s.changes_since(base, 0).await.unwrap().changes.is_empty());
}

/// Retention is by revision: the changes of the newest `change_retention` revisions are
/// kept (with consecutive revisions, that many changes); `oldest` says where the readable
/// feed starts, and revisions keep counting.
pub async fn change_feed_retention(f: &impl StoreFactory) {
    let fx = f.make(diego_model::ManualClock::new(START), 5).await;
    let s = &fx.store;
    let revs = insert_tasks(s, (0..12).map(|i| format!("t{i:02}"))).await;
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?} increase");
    let head = revs[11];

    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!(page.head, head);
    let got: Vec<u64> = page.changes.iter().map(|c| c.revision).collect();
    let kept: Vec<u64> = revs.iter().copied().filter(|&r| r > head - 5).collect();
    assert_eq!(got, kept, "the changes of the newest five revisions");
    assert!(
        page.oldest <= kept[0],
        "oldest {} after a retained change",
        page.oldest
    );
    let pruned = revs.iter().copied().filter(|&r| r <= head - 5).max().unwrap();
    assert!(
        pruned < page.oldest,
        "a reader before {pruned} must see that it missed it (oldest {})",
        page.oldest
    );

    // A two-write transaction pushes more out; a reader positioned before them learns it.
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
    assert!(c.revision >= head + 2);
    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!(page.head, c.revision);
    assert!(page.changes.iter().all(|ch| ch.revision > c.revision - 5));
    assert_eq!(page.changes.last().map(|ch| ch.revision), Some(c.revision));
    assert!(page.oldest > kept[0], "the oldest kept change before is gone");
}

/// `watch_head` moves to the new head once a commit is durable.
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
    assert!(c.revision > start);
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
    let first = c.revision;
    let c = s
        .commit(Txn::one(Write::insert(Record::Task(task("t4", "d")))))
        .await
        .unwrap();
    assert!(c.revision > first);
    assert_eq!(*s.watch_head().borrow(), c.revision);

    // A failed commit moves nothing.
    let mut rx = s.watch_head();
    rx.borrow_and_update();
    assert!(s
        .commit(Txn::one(Write::insert(Record::Task(task("t1", "d")))))
        .await
        .is_err());
    assert!(!rx.has_changed().unwrap());
    assert_eq!(*rx.borrow(), c.revision);
}

/// Writes the feed does not show (domains, locks) may take revisions: a reader that resumes
/// across them misses nothing and is not told it did.
pub async fn feed_resumes_across_writes_it_does_not_show(f: &impl StoreFactory) {
    let fx = f
        .make(diego_model::ManualClock::new(START), DEFAULT_RETENTION)
        .await;
    let s = &fx.store;
    let first = insert_tasks(s, ["a".to_string()]).await[0];
    s.upsert_domain("d", 60).await.unwrap();
    s.acquire_lock("bbs", "me", "v", 60).await.unwrap();
    s.release_lock("bbs", "me").await.unwrap();
    let second = insert_tasks(s, ["b".to_string()]).await[0];
    assert!(second > first);
    let page = s.changes_since(first, 100).await.unwrap();
    let guids: Vec<&str> = page
        .changes
        .iter()
        .map(|c| c.after.as_ref().unwrap().as_task().unwrap().task_guid.as_str())
        .collect();
    assert_eq!(guids, ["b"]);
    assert!(
        page.oldest <= first + 1,
        "nothing was missed (oldest {})",
        page.oldest
    );
    assert_eq!(page.head, second);
}

/// A presence's registration, a change of what it says, its removal and its expiry appear
/// in the feed as changes of `Record::CellPresence`; a renewal that says nothing new does not.
pub async fn presences_appear_in_the_feed(f: &impl StoreFactory) {
    let clock = diego_model::ManualClock::new(START);
    let fx = f.make(clock.clone(), DEFAULT_RETENTION).await;
    let s = &fx.store;
    let cells = |page: &crate::ChangePage| -> Vec<(Option<String>, Option<String>)> {
        page.changes
            .iter()
            .map(|c| {
                let id = |r: &Option<Record>| {
                    r.as_ref()
                        .and_then(Record::as_cell_presence)
                        .map(|p| p.cell_id.clone())
                };
                (id(&c.before), id(&c.after))
            })
            .collect()
    };
    let base = head(s).await;
    s.set_presence(&cell("c1"), 10).await.unwrap();
    s.set_presence(&cell("c1"), 10).await.unwrap();
    let mut bigger = cell("c1");
    bigger.capacity.memory_mb *= 2;
    s.set_presence(&bigger, 10).await.unwrap();
    assert!(s.remove_presence("c1").await.unwrap());
    assert!(!s.remove_presence("c1").await.unwrap());
    let page = s.changes_since(base, 100).await.unwrap();
    let c1 = || Some("c1".to_string());
    assert_eq!(cells(&page), [(None, c1()), (c1(), c1()), (c1(), None)]);
    assert_eq!(
        page.changes[1].after.as_ref().and_then(Record::as_cell_presence),
        Some(&bigger),
        "a changed presence carries what it says now"
    );
    let writes = Txn::one(Write::insert(Record::CellPresence(cell("c9"))));
    assert!(
        matches!(s.commit(writes).await, Err(crate::StoreError::Invalid(_))),
        "presences are not written in transactions"
    );

    // Expiry: nobody writes, yet the feed shows the cell vanishing.
    let from = head(s).await;
    let mut watch = s.watch_head();
    watch.borrow_and_update();
    s.set_presence(&cell("c2"), 1).await.unwrap();
    clock.advance_ms(1_001);
    let lapsed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let page = s.changes_since(from, 100).await.unwrap();
            if page.changes.len() >= 2 {
                return page;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the expiry reaches the feed without any write");
    let c2 = || Some("c2".to_string());
    assert_eq!(cells(&lapsed), [(None, c2()), (c2(), None)]);
    assert!(s.list_presences().await.unwrap().is_empty());
}
