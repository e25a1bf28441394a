//! Things that lapse: domains, cell presences and locks, all on the injected clock.

use diego_model::clock::NANOS_PER_SEC;

use super::fixtures::{cell, START};
use super::{setup, StoreFactory};
use crate::{LockRecord, StoreError};

const SEC: i64 = NANOS_PER_SEC;

/// Domains are fresh until their TTL passes; TTL 0 is fresh forever; listed by name.
pub async fn domains_expire(f: &impl StoreFactory) {
    let (fx, clock) = setup(f).await;
    let s = &fx.store;
    let d = s.upsert_domain("cf-apps", 10).await.unwrap();
    assert_eq!(d.expires_at, START + 10 * SEC);
    assert_eq!(s.upsert_domain("forever", 0).await.unwrap().expires_at, 0);
    s.upsert_domain("b-short", 5).await.unwrap();

    let names = || async {
        s.list_domains()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.domain)
            .collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["b-short", "cf-apps", "forever"]);
    assert_eq!(s.list_domains().await.unwrap()[1].expires_at, START + 10 * SEC);

    clock.advance_ms(5_000);
    assert_eq!(
        names().await,
        ["cf-apps", "forever"],
        "expires exactly at its TTL"
    );

    // Renewing brings it back with a fresh TTL.
    assert_eq!(
        s.upsert_domain("b-short", 20).await.unwrap().expires_at,
        START + 25 * SEC
    );
    clock.advance_ms(6_000);
    assert_eq!(names().await, ["b-short", "forever"]);

    clock.advance_ms(1_000_000_000);
    assert_eq!(names().await, ["forever"]);
}

/// Presences live for their TTL, renew on set, disappear on remove; listed by cell id.
pub async fn presences_expire_renew_remove(f: &impl StoreFactory) {
    let (fx, clock) = setup(f).await;
    let s = &fx.store;
    let p2 = s.set_presence(&cell("cell-2"), 10).await.unwrap();
    assert_eq!(p2.expires_at, START + 10 * SEC);
    assert_eq!(p2.cell_presence, cell("cell-2"));
    s.set_presence(&cell("cell-1"), 5).await.unwrap();

    let ids = || async {
        s.list_presences()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.cell_presence.cell_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids().await, ["cell-1", "cell-2"]);

    clock.advance_ms(6_000);
    assert_eq!(ids().await, ["cell-2"]);

    let mut moved = cell("cell-1");
    moved.rep_url = "http://elsewhere:1800".into();
    s.set_presence(&moved, 10).await.unwrap();
    let listed = s.list_presences().await.unwrap();
    assert_eq!(listed[0].cell_presence, moved, "renewal stores the new presence");
    assert_eq!(listed[0].expires_at, START + 16 * SEC);

    assert!(s.remove_presence("cell-1").await.unwrap());
    assert!(!s.remove_presence("cell-1").await.unwrap());
    assert_eq!(ids().await, ["cell-2"]);

    clock.advance_ms(4_000);
    assert!(ids().await.is_empty(), "cell-2 lapsed at 10 s");
}

/// Locks: one owner at a time; the owner renews; expiry or release lets another take it.
pub async fn locks_collide_renew_expire_release(f: &impl StoreFactory) {
    let (fx, clock) = setup(f).await;
    let s = &fx.store;
    let held = s.acquire_lock("bbs", "a", "addr-a", 10).await.unwrap();
    let want = LockRecord {
        key: "bbs".into(),
        owner: "a".into(),
        value: "addr-a".into(),
        expires_at: START + 10 * SEC,
    };
    assert_eq!(held, want);
    assert_eq!(s.get_lock("bbs").await.unwrap(), Some(want));
    assert_eq!(s.get_lock("other").await.unwrap(), None);

    match s.acquire_lock("bbs", "b", "addr-b", 10).await {
        Err(StoreError::LockCollision { key, owner }) => {
            assert_eq!((key.as_str(), owner.as_str()), ("bbs", "a"))
        }
        other => panic!("expected LockCollision, got {other:?}"),
    }
    // Another key is independent.
    s.acquire_lock("auctioneer", "b", "addr-b", 10).await.unwrap();

    clock.advance_ms(5_000);
    let renewed = s.acquire_lock("bbs", "a", "addr-a2", 10).await.unwrap();
    assert_eq!(renewed.expires_at, START + 15 * SEC);
    clock.advance_ms(9_000);
    assert!(matches!(
        s.acquire_lock("bbs", "b", "x", 10).await,
        Err(StoreError::LockCollision { .. })
    ));
    assert_eq!(
        s.get_lock("bbs").await.unwrap().map(|l| l.value),
        Some("addr-a2".into())
    );

    clock.advance_ms(1_000);
    assert_eq!(
        s.get_lock("bbs").await.unwrap(),
        None,
        "an expired lock is not held"
    );
    let taken = s.acquire_lock("bbs", "b", "addr-b", 10).await.unwrap();
    assert_eq!(taken.owner, "b");

    assert!(
        !s.release_lock("bbs", "a").await.unwrap(),
        "only the owner releases"
    );
    assert_eq!(
        s.get_lock("bbs").await.unwrap().map(|l| l.owner),
        Some("b".into())
    );
    assert!(s.release_lock("bbs", "b").await.unwrap());
    assert_eq!(s.get_lock("bbs").await.unwrap(), None);
    assert!(!s.release_lock("bbs", "b").await.unwrap());
    assert_eq!(s.acquire_lock("bbs", "c", "addr-c", 10).await.unwrap().owner, "c");
}

/// A fenced transaction applies only while its owner holds the lock, unexpired; otherwise it
/// fails with `LockLost` naming the current holder, and writes nothing.
pub async fn fenced_writes_need_the_lock(f: &impl StoreFactory) {
    use super::fixtures::task;
    use crate::{Fence, Record, Txn, Write};

    let (fx, clock) = setup(f).await;
    let s = &fx.store;
    let fence = |owner: &str| {
        Some(Fence {
            key: "bbs".into(),
            owner: owner.into(),
        })
    };
    let insert =
        |guid: &str, owner: &str| Txn::one(Write::insert(Record::Task(task(guid, "d")))).fenced(fence(owner));
    let lost = |r: Result<crate::Committed, StoreError>| match r {
        Err(StoreError::LockLost { key, owner, holder }) => {
            assert_eq!(key, "bbs");
            (owner, holder)
        }
        other => panic!("expected LockLost, got {other:?}"),
    };

    assert_eq!(
        lost(s.commit(insert("nobody-holds-it", "a")).await),
        ("a".to_string(), None),
        "no lock at all"
    );
    s.acquire_lock("bbs", "a", "", 15).await.unwrap();
    s.commit(insert("by-a", "a")).await.unwrap();
    let head = *s.watch_head().borrow();
    assert_eq!(
        lost(s.commit(insert("by-b", "b")).await),
        ("b".to_string(), Some("a".to_string()))
    );
    assert_eq!(
        lost(s.commit(Txn::new().fenced(fence("b"))).await).1.as_deref(),
        Some("a"),
        "an empty fenced transaction checks the lock too"
    );
    s.commit(Txn::new().fenced(fence("a"))).await.unwrap();

    clock.advance_ms(15_000);
    assert_eq!(
        lost(s.commit(insert("a-lapsed", "a")).await),
        ("a".to_string(), None),
        "a lapsed lock fences its old owner out"
    );
    s.acquire_lock("bbs", "b", "", 15).await.unwrap();
    assert_eq!(
        lost(s.commit(insert("a-deposed", "a")).await).1.as_deref(),
        Some("b")
    );
    s.commit(insert("by-b", "b")).await.unwrap();
    assert!(s.release_lock("bbs", "b").await.unwrap());
    lost(s.commit(insert("b-released", "b")).await);

    for guid in ["nobody-holds-it", "a-lapsed", "a-deposed", "b-released"] {
        assert_eq!(s.get_task(guid).await.unwrap(), None, "{guid} was written");
    }
    assert!(s.get_task("by-a").await.unwrap().is_some());
    assert!(s.get_task("by-b").await.unwrap().is_some());
    let page = s.changes_since(head, 100).await.unwrap();
    assert_eq!(page.changes.len(), 1, "only by-b's write reached the change feed");
    // Unfenced writes do not care about locks.
    s.commit(Txn::one(Write::insert(Record::Task(task("plain", "d")))))
        .await
        .unwrap();
}
