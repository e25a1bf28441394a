//! The conformance suite against a real etcd (Debian's `etcd-server`, started on free
//! loopback ports): every case on a single member of its own, and the whole suite in
//! sequence on one three-member cluster whose first member is SIGKILLed halfway through.
//! Skipped, saying why, when etcd is not installed locally; a failure under CI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use diego_model::ManualClock;
use diego_store::conformance::Fixture;
use diego_store::etcd::{EtcdOptions, EtcdStore};
use diego_testkit::Etcd;

const INSTALL: &str = "apt-get install etcd-server; scripts/test installs it";

async fn connect(
    endpoints: Vec<String>,
    prefix: String,
    clock: ManualClock,
    change_retention: usize,
) -> EtcdStore {
    let mut options = EtcdOptions::new(endpoints);
    options.prefix = prefix;
    options.change_retention = change_retention;
    options.sweep_interval = std::time::Duration::from_millis(50);
    EtcdStore::connect(options, Arc::new(clock))
        .await
        .expect("connecting to etcd")
}

/// Each case on a member of its own (~60 ms to start).
mod one_member {
    use super::*;

    async fn etcd(clock: ManualClock, change_retention: usize) -> Fixture {
        let server = Etcd::start("conformance_etcd").await.expect("etcd is installed");
        let store = connect(server.endpoints(), "/diego/".into(), clock, change_retention).await;
        Fixture::keeping(Arc::new(store), server)
    }

    diego_store::conformance_tests!(
        etcd,
        run_if = |case: &str| diego_testkit::host::tool_for(case, "etcd", INSTALL)
    );
}

/// Cases run before the first member is killed; the rest run on the two that are left.
const KILL_BEFORE_CASE: usize = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_three_members_with_one_killed_mid_suite() {
    const NAME: &str = "whole_suite_on_three_members_with_one_killed_mid_suite";
    let Some(cluster) = Etcd::cluster(NAME, 3).await else {
        return;
    };
    let endpoints = cluster.endpoints();
    let cluster = Arc::new(Mutex::new(cluster));
    // Each case gets a prefix of its own in the shared cluster: its own records, feed and head.
    let cases = Arc::new(AtomicUsize::new(0));
    let factory = move |clock: ManualClock, change_retention: usize| {
        let endpoints = endpoints.clone();
        let prefix = format!("/conformance/{}/", cases.fetch_add(1, Ordering::Relaxed));
        async move {
            Fixture::new(Arc::new(
                connect(endpoints, prefix, clock, change_retention).await,
            ))
        }
    };
    let killer = cluster.clone();
    let mut ran = 0;
    diego_store::conformance_sequence!(factory, |position: usize, case: &str| {
        if position == KILL_BEFORE_CASE {
            let mut c = killer.lock().unwrap();
            let pid = c.pid(0).expect("m1 runs");
            c.kill(0);
            println!("SIGKILLed member m1 (pid {pid})");
        }
        println!("case {position}: {case}");
        ran = position + 1;
    });
    assert!(
        ran > KILL_BEFORE_CASE,
        "the kill happened mid-suite ({ran} cases)"
    );
    let c = cluster.lock().unwrap();
    assert!(c.pid(0).is_none(), "m1 stayed dead");
    assert!(c.pid(1).is_some() && c.pid(2).is_some());
}
