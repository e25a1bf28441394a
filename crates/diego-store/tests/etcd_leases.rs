//! The etcd backend's renewals (src/etcd/leases.rs): a cell renewing its unchanged presence,
//! or a lock's holder renewing it, keeps the etcd lease the record is on alive instead of
//! granting a new one, and writes nothing to the change feed; a change or a new holder gets
//! a new lease. Skipped, saying why, when etcd is not installed locally; a failure under CI.

use std::sync::Arc;

use diego_model::{CellPresence, ManualClock};
use diego_store::conformance::fixtures::START;
use diego_store::etcd::{EtcdOptions, EtcdStore};
use diego_store::Store;
use diego_testkit::Etcd;
use etcd_client::Client;

async fn lease_of(client: &mut Client, key: &str) -> i64 {
    let resp = client.get(key, None).await.expect("reading a key");
    resp.kvs().first().map(|kv| kv.lease()).expect("the key exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_their_lease_alive_and_write_nothing_to_the_feed() {
    let Some(etcd) = Etcd::start("renewals_keep_their_lease_alive_and_write_nothing_to_the_feed").await
    else {
        return;
    };
    let clock = ManualClock::new(START);
    let store = EtcdStore::connect(EtcdOptions::new(etcd.endpoints()), Arc::new(clock.clone()))
        .await
        .expect("connecting to etcd");
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();

    let mut cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_url: "http://127.0.0.1:1801".into(),
        ..Default::default()
    };
    store.set_presence(&cell, 3).await.unwrap();
    let first = lease_of(&mut client, "/diego/cell/cell-1").await;
    assert_ne!(first, 0, "a presence sits on an etcd lease");
    let head = store.changes_since(0, 0).await.unwrap().head;

    // Renewed, unchanged, within its TTL: the same lease, kept alive; no feed entry.
    clock.advance_ms(1_000);
    let renewed = store.set_presence(&cell, 3).await.unwrap();
    assert_eq!(
        renewed.expires_at,
        diego_model::Clock::now(&clock) + 3_000_000_000
    );
    assert_eq!(lease_of(&mut client, "/diego/cell/cell-1").await, first);
    assert_eq!(store.changes_since(0, 0).await.unwrap().head, head);
    let ttl = client.lease_time_to_live(first, None).await.unwrap();
    assert!(ttl.ttl() > 0, "the lease is alive: {ttl:?}");

    // Renewed for another TTL: a lease of that TTL (so etcd's backstop keeps pace with the
    // renewals), still nothing for the feed.
    store.set_presence(&cell, 5).await.unwrap();
    let longer = lease_of(&mut client, "/diego/cell/cell-1").await;
    assert_ne!(longer, first);
    assert_eq!(store.changes_since(0, 0).await.unwrap().head, head);
    store.set_presence(&cell, 3).await.unwrap();
    let first = lease_of(&mut client, "/diego/cell/cell-1").await;

    // Changed: a feed entry, and the record on a new lease (the old one revoked).
    cell.zone = "z1".into();
    store.set_presence(&cell, 3).await.unwrap();
    assert_eq!(store.changes_since(0, 0).await.unwrap().head, head + 1);
    let second = lease_of(&mut client, "/diego/cell/cell-1").await;
    assert_ne!(second, first);

    // Lapsed, then renewed: its expiry and its return both reach the feed.
    clock.advance_ms(4_000);
    store.set_presence(&cell, 3).await.unwrap();
    assert_eq!(store.changes_since(0, 0).await.unwrap().head, head + 3);

    // A lock renewed by its holder stays on its lease; a new holder after it lapsed gets
    // another.
    store.acquire_lock("bbs", "a", "http://a", 4).await.unwrap();
    let held = lease_of(&mut client, "/diego/lock/bbs").await;
    clock.advance_ms(1_000);
    store.acquire_lock("bbs", "a", "http://a", 4).await.unwrap();
    assert_eq!(lease_of(&mut client, "/diego/lock/bbs").await, held);
    clock.advance_ms(5_000);
    store.acquire_lock("bbs", "b", "http://b", 4).await.unwrap();
    assert_ne!(lease_of(&mut client, "/diego/lock/bbs").await, held);
}
