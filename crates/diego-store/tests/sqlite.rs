//! SQLite-only behaviour: what survives closing and reopening the database.

use std::path::Path;
use std::sync::Arc;

use diego_model::{ManualClock, Presence};
use diego_store::conformance::fixtures::{actual_lrp_on, cell, desired_lrp, task, START};
use diego_store::sqlite::{SqliteOptions, SqliteStore};
use diego_store::{Record, Store, StoreError, Txn, Write};

fn open(dir: &Path, clock: &ManualClock, change_retention: usize) -> SqliteStore {
    let options = SqliteOptions {
        change_retention,
        read_connections: 2,
    };
    SqliteStore::open(dir, Arc::new(clock.clone()), options).expect("opening the sqlite store")
}

#[tokio::test]
async fn reopen_keeps_records_changes_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let (t, d, a) = (
        task("t", "d"),
        desired_lrp("p", "d"),
        actual_lrp_on("p", 0, "d", "c1", Presence::Ordinary),
    );
    let committed = {
        let s = open(dir.path(), &clock, 1000);
        let txn = Txn {
            fence: None,
            writes: vec![
                Write::insert(Record::Task(t.clone())),
                Write::insert(Record::DesiredLrp(d.clone())),
                Write::insert(Record::ActualLrp(a.clone())),
            ],
        };
        s.commit(txn).await.unwrap();
        s.upsert_domain("d", 0).await.unwrap();
        s.set_presence(&cell("c1"), 60).await.unwrap();
        s.acquire_lock("bbs", "me", "addr", 60).await.unwrap();
        s.commit(Txn::one(Write::update(Record::Task(t.clone()))))
            .await
            .unwrap()
    };
    // Three records, the presence's registration, the task's update; domains and locks are
    // not in the feed.
    assert_eq!(committed.revision, 5);

    let s = open(dir.path(), &clock, 1000);
    assert_eq!(
        *s.watch_head().borrow(),
        5,
        "the watch starts at the persisted head"
    );
    assert_eq!(
        s.get_task("t").await.unwrap().map(Record::Task),
        committed.records[0].clone()
    );
    assert_eq!(s.get_desired_lrp("p").await.unwrap(), Some(d));
    assert_eq!(s.get_actual_lrps("p", 0).await.unwrap(), vec![a]);
    assert_eq!(s.list_domains().await.unwrap().len(), 1);
    assert_eq!(s.list_presences().await.unwrap()[0].cell_presence, cell("c1"));
    assert_eq!(
        s.get_lock("bbs").await.unwrap().map(|l| l.owner),
        Some("me".into())
    );

    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!((page.oldest, page.head), (1, 5));
    assert_eq!(page.changes.len(), 5);
    assert_eq!(
        page.changes[3].after.as_ref().and_then(Record::as_cell_presence),
        Some(&cell("c1"))
    );
    let c = s
        .commit(Txn::one(Write::insert(Record::Task(task("t2", "d")))))
        .await
        .unwrap();
    assert_eq!(c.revision, 6, "revisions continue after reopen");
}

#[tokio::test]
async fn revisions_continue_after_reopen_when_every_change_was_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    {
        let s = open(dir.path(), &clock, 0);
        for i in 0..5 {
            s.commit(Txn::one(Write::insert(Record::Task(task(&format!("t{i}"), "d")))))
                .await
                .unwrap();
        }
        let page = s.changes_since(0, 100).await.unwrap();
        assert!(page.changes.is_empty(), "retention 0 keeps nothing");
        assert_eq!((page.oldest, page.head), (6, 5));
    }
    let s = open(dir.path(), &clock, 0);
    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!(
        (page.oldest, page.head),
        (6, 5),
        "the head survives an empty change table"
    );
    let c = s
        .commit(Txn::one(Write::insert(Record::Task(task("t5", "d")))))
        .await
        .unwrap();
    assert_eq!(c.revision, 6);
    drop(s);

    // Reopening with a larger retention keeps revisions going and starts retaining again.
    let s = open(dir.path(), &clock, 10);
    let c = s
        .commit(Txn::one(Write::insert(Record::Task(task("t6", "d")))))
        .await
        .unwrap();
    assert_eq!(c.revision, 7);
    let page = s.changes_since(0, 100).await.unwrap();
    assert_eq!((page.oldest, page.head, page.changes.len()), (7, 7, 1));
}

#[tokio::test]
async fn a_committed_txn_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let s: diego_store::DynStore = Arc::new(open(dir.path(), &clock, 1000));
    let writes: Vec<Write> = (0..50)
        .map(|i| Write::insert(Record::Task(task(&format!("t{i:02}"), "d"))))
        .collect();
    let c = s.commit(Txn { writes, fence: None }).await.unwrap();
    drop(s);

    let s = open(dir.path(), &clock, 1000);
    let listed = s.list_tasks(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 50);
    assert_eq!(
        listed
            .into_iter()
            .map(|t| Some(Record::Task(t)))
            .collect::<Vec<_>>(),
        c.records
    );
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_unavailable() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = SqliteStore::open(
        file.path(),
        Arc::new(ManualClock::new(START)),
        SqliteOptions::default(),
    )
    .err()
    .expect("opening over a file fails");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

/// Two stores (as two BBS processes would) on one database file: revisions never collide,
/// each follows the other's commits, and the lock fences one out while the other holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let a = open(dir.path(), &clock, 1000);
    let b = open(dir.path(), &clock, 1000);
    let ra = a
        .commit(Txn::one(Write::insert(Record::Task(task("from-a", "d")))))
        .await
        .unwrap()
        .revision;
    let rb = b
        .commit(Txn::one(Write::insert(Record::Task(task("from-b", "d")))))
        .await
        .unwrap()
        .revision;
    assert!(rb > ra, "b's revision {rb} follows a's {ra}");
    assert!(b.get_task("from-a").await.unwrap().is_some());

    // a learns of b's commit without writing itself.
    let mut head = a.watch_head();
    tokio::time::timeout(std::time::Duration::from_secs(10), head.wait_for(|&h| h >= rb))
        .await
        .expect("a never saw b's head")
        .unwrap();
    let page = a.changes_since(ra, 10).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].revision, rb);

    a.acquire_lock("bbs", "a", "", 15).await.unwrap();
    assert!(matches!(
        b.acquire_lock("bbs", "b", "", 15).await,
        Err(StoreError::LockCollision { .. })
    ));
    let fenced =
        Txn::one(Write::insert(Record::Task(task("b-fenced", "d")))).fenced(Some(diego_store::Fence {
            key: "bbs".into(),
            owner: "b".into(),
        }));
    assert!(matches!(b.commit(fenced).await, Err(StoreError::LockLost { .. })));
    assert!(a.get_task("b-fenced").await.unwrap().is_none());
}
