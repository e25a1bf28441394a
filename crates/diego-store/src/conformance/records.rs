//! Single-record semantics: insert, compare-and-swap update and delete, transactions.

use diego_model::{ActualLrpState, ModificationTag, Task, TaskState};

use super::fixtures::{actual_lrp, desired_lrp, task};
use super::{setup, StoreFactory};
use crate::{Record, RecordKey, StoreError, Txn, Write};

fn task_key(guid: &str) -> RecordKey {
    RecordKey::Task {
        task_guid: guid.into(),
    }
}

async fn head(store: &crate::DynStore) -> u64 {
    store.changes_since(0, 0).await.expect("changes_since").head
}

/// Inserted records come back exactly as given, with the tag they carried.
pub async fn insert_and_get(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let (t, d, a) = (task("t1", "d"), desired_lrp("p1", "d"), actual_lrp("p1", 0, "d"));
    assert_eq!(s.get_task("t1").await.unwrap(), None);
    assert_eq!(s.get_desired_lrp("p1").await.unwrap(), None);
    assert!(s.get_actual_lrps("p1", 0).await.unwrap().is_empty());

    let txn = Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(t.clone())),
            Write::insert(Record::DesiredLrp(d.clone())),
            Write::insert(Record::ActualLrp(a.clone())),
        ],
    };
    let c = s.commit(txn).await.unwrap();
    assert_eq!(
        c.records,
        vec![
            Some(Record::Task(t.clone())),
            Some(Record::DesiredLrp(d.clone())),
            Some(Record::ActualLrp(a.clone()))
        ]
    );
    assert_eq!(s.get_task("t1").await.unwrap(), Some(t));
    assert_eq!(s.get_desired_lrp("p1").await.unwrap(), Some(d));
    assert_eq!(s.get_actual_lrps("p1", 0).await.unwrap(), vec![a]);
    assert_eq!(s.get_task("other").await.unwrap(), None);
    assert!(s.get_actual_lrps("p1", 1).await.unwrap().is_empty());
}

/// Inserting over an existing record fails with `Exists`, naming the write.
pub async fn insert_existing_is_exists(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let t = task("t1", "d");
    s.commit(Txn::one(Write::insert(Record::Task(t.clone()))))
        .await
        .unwrap();

    let mut changed = task("t1", "other-domain");
    changed.modification_tag = ModificationTag::new("another-epoch");
    let txn = Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(task("t2", "d"))),
            Write::insert(Record::Task(changed)),
        ],
    };
    match s.commit(txn).await {
        Err(StoreError::Exists { write, key }) => {
            assert_eq!(write, 1);
            assert_eq!(key, task_key("t1"));
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        s.get_task("t1").await.unwrap(),
        Some(t),
        "the stored record is untouched"
    );
    assert_eq!(
        s.get_task("t2").await.unwrap(),
        None,
        "the failed transaction applied nothing"
    );

    let a = actual_lrp("p", 0, "d");
    s.commit(Txn::one(Write::insert(Record::ActualLrp(a.clone()))))
        .await
        .unwrap();
    let err = s
        .commit(Txn::one(Write::insert(Record::ActualLrp(a))))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists { write: 0, .. }), "{err:?}");
}

/// A CAS update stores the record with the next tag (same epoch, index + 1).
pub async fn update_bumps_tag(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let a = actual_lrp("p", 0, "d");
    s.commit(Txn::one(Write::insert(Record::ActualLrp(a.clone()))))
        .await
        .unwrap();

    let mut claimed = a.clone();
    claimed.state = ActualLrpState::Claimed;
    claimed.cell_id = "cell-1".into();
    let c = s
        .commit(Txn::one(Write::update(Record::ActualLrp(claimed.clone()))))
        .await
        .unwrap();
    let stored = c.records[0].clone().expect("a put returns the stored record");
    let stored = stored.as_actual_lrp().expect("an actual LRP").clone();
    assert_eq!(
        stored.modification_tag,
        ModificationTag {
            epoch: a.modification_tag.epoch.clone(),
            index: 1
        }
    );
    assert_eq!(
        stored,
        diego_model::ActualLrp {
            modification_tag: stored.modification_tag.clone(),
            ..claimed
        }
    );
    assert_eq!(s.get_actual_lrps("p", 0).await.unwrap(), vec![stored.clone()]);

    // The returned record is what a caller presents next time.
    let mut running = stored;
    running.state = ActualLrpState::Running;
    let c = s
        .commit(Txn::one(Write::update(Record::ActualLrp(running))))
        .await
        .unwrap();
    assert_eq!(c.records[0].as_ref().unwrap().modification_tag().index, 2);

    // The same for the other kinds.
    let mut t = task("t", "d");
    s.commit(Txn::one(Write::insert(Record::Task(t.clone()))))
        .await
        .unwrap();
    t.state = TaskState::Running;
    s.commit(Txn::one(Write::update(Record::Task(t.clone()))))
        .await
        .unwrap();
    let got = s.get_task("t").await.unwrap().unwrap();
    assert_eq!((got.state, got.modification_tag.index), (TaskState::Running, 1));

    let mut d = desired_lrp("p", "d");
    s.commit(Txn::one(Write::insert(Record::DesiredLrp(d.clone()))))
        .await
        .unwrap();
    d.instances = 7;
    d.annotation = "scaled".into();
    let c = s
        .commit(Txn::one(Write::update(Record::DesiredLrp(d.clone()))))
        .await
        .unwrap();
    let got = s.get_desired_lrp("p").await.unwrap().unwrap();
    assert_eq!(
        (got.instances, got.annotation.as_str(), got.modification_tag.index),
        (7, "scaled", 1)
    );
    assert_eq!(c.records[0], Some(Record::DesiredLrp(got)));
}

/// A CAS update presenting an old tag fails with `Conflict` and changes nothing.
pub async fn update_with_stale_tag_conflicts(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let t = task("t", "d");
    s.commit(Txn::one(Write::insert(Record::Task(t.clone()))))
        .await
        .unwrap();
    let first = Record::Task(Task {
        state: TaskState::Running,
        cell_id: "c1".into(),
        ..t.clone()
    });
    let won = s
        .commit(Txn::one(Write::update(first)))
        .await
        .unwrap()
        .records
        .remove(0)
        .unwrap();

    let loser = Record::Task(Task {
        state: TaskState::Running,
        cell_id: "c2".into(),
        ..t.clone()
    });
    match s.commit(Txn::one(Write::update(loser))).await {
        Err(StoreError::Conflict {
            write,
            key,
            expected,
            found,
        }) => {
            assert_eq!((write, key), (0, task_key("t")));
            assert_eq!(expected, t.modification_tag);
            assert_eq!(found, *won.modification_tag());
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.get_task("t").await.unwrap().map(Record::Task), Some(won));
}

/// Updating or deleting a record that is not there fails with `NotFound`.
pub async fn update_missing_is_not_found(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let err = s
        .commit(Txn::one(Write::update(Record::Task(task("ghost", "d")))))
        .await
        .unwrap_err();
    match err {
        StoreError::NotFound { write, key } => assert_eq!((write, key), (0, task_key("ghost"))),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(
        s.get_task("ghost").await.unwrap(),
        None,
        "an update never creates"
    );

    let err = s
        .commit(Txn::one(Write::delete(&Record::DesiredLrp(desired_lrp(
            "ghost", "d",
        )))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                write: 0,
                key: RecordKey::DesiredLrp { .. }
            }
        ),
        "{err:?}"
    );
}

/// A delete is a CAS too: a stale tag conflicts, the right one removes the record.
pub async fn delete_compares_tag(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let d = desired_lrp("p", "d");
    s.commit(Txn::one(Write::insert(Record::DesiredLrp(d.clone()))))
        .await
        .unwrap();

    let stale = Write::Delete {
        key: Record::DesiredLrp(d.clone()).key(),
        expect: d.modification_tag.next(),
    };
    let err = s.commit(Txn::one(stale)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { write: 0, .. }), "{err:?}");
    assert_eq!(s.get_desired_lrp("p").await.unwrap(), Some(d.clone()));

    let c = s
        .commit(Txn::one(Write::delete(&Record::DesiredLrp(d.clone()))))
        .await
        .unwrap();
    assert_eq!(c.records, vec![None]);
    assert_eq!(s.get_desired_lrp("p").await.unwrap(), None);
    assert!(s.list_desired_lrps(&Default::default()).await.unwrap().is_empty());

    let err = s
        .commit(Txn::one(Write::delete(&Record::DesiredLrp(d))))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { write: 0, .. }), "{err:?}");
}

/// A transaction whose last write fails applies none of its writes and records no change.
pub async fn txn_is_atomic(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let existing = task("existing", "d");
    let victim = actual_lrp("p", 0, "d");
    s.commit(Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(existing.clone())),
            Write::insert(Record::ActualLrp(victim.clone())),
        ],
    })
    .await
    .unwrap();
    let before = head(s).await;

    let txn = Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(task("new", "d"))),
            Write::delete(&Record::ActualLrp(victim.clone())),
            Write::insert(Record::Task(existing.clone())),
        ],
    };
    let err = s.commit(txn).await.unwrap_err();
    assert!(matches!(err, StoreError::Exists { write: 2, .. }), "{err:?}");
    assert_eq!(s.get_task("new").await.unwrap(), None);
    assert_eq!(s.get_actual_lrps("p", 0).await.unwrap(), vec![victim.clone()]);

    // The same with a failing CAS in the middle.
    let mut stale = existing.clone();
    stale.modification_tag.index = 9;
    let txn = Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(task("new", "d"))),
            Write::update(Record::Task(stale)),
            Write::delete(&Record::ActualLrp(victim.clone())),
        ],
    };
    let err = s.commit(txn).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { write: 1, .. }), "{err:?}");
    assert_eq!(s.get_task("new").await.unwrap(), None);
    assert_eq!(s.get_actual_lrps("p", 0).await.unwrap(), vec![victim]);

    let page = s.changes_since(before, 100).await.unwrap();
    assert_eq!(page.head, before, "failed transactions append no change");
    assert!(page.changes.is_empty(), "{:?}", page.changes);
}

/// Two writes to one record in a transaction are refused as `Invalid`.
pub async fn duplicate_key_in_txn_is_invalid(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let before = head(s).await;
    let t = task("t", "d");
    let txn = Txn {
        fence: None,
        writes: vec![
            Write::insert(Record::Task(task("other", "d"))),
            Write::insert(Record::Task(t.clone())),
            Write::update(Record::Task(t)),
        ],
    };
    let err = s.commit(txn).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(s.get_task("t").await.unwrap(), None);
    assert_eq!(s.get_task("other").await.unwrap(), None);
    assert_eq!(head(s).await, before, "nothing was written");
}

/// An empty transaction succeeds, writes nothing and reports the current head.
pub async fn empty_txn_returns_head(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let c = s
        .commit(Txn::one(Write::insert(Record::Task(task("t", "d")))))
        .await
        .unwrap();
    let empty = s.commit(Txn::new()).await.unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.revision, c.revision);
    assert_eq!(head(s).await, c.revision);
}
