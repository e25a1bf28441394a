//! One test suite for every [`Store`](crate::Store) backend.
//!
//! Each case is a public async function over a [`StoreFactory`], which builds a fresh, empty
//! store on a [`ManualClock`] (so cases control time for TTLs) with a given change-feed
//! retention. [`conformance_tests!`](crate::conformance_tests) expands to one `#[tokio::test]`
//! per case, so a backend's integration test is one line:
//!
//! ```ignore
//! use diego_store::conformance::Fixture;
//!
//! async fn memory(clock: diego_model::ManualClock, change_retention: usize) -> Fixture {
//!     Fixture::new(std::sync::Arc::new(MemoryStore::new(std::sync::Arc::new(clock), change_retention)))
//! }
//!
//! diego_store::conformance_tests!(memory);
//! ```
//!
//! The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
//! Cases assert only store semantics, never timings, so a remote backend (etcd) runs them too.

mod concurrency;
mod feed;
mod filters;
pub mod fixtures;
mod leases;
mod records;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use diego_model::ManualClock;

pub use self::concurrency::*;
pub use self::feed::*;
pub use self::filters::*;
pub use self::leases::*;
pub use self::records::*;
use crate::DynStore;

/// Change-feed retention for the cases that do not test retention: larger than any case writes.
pub const DEFAULT_RETENTION: usize = 100_000;

/// A store under test, plus whatever must outlive it (a temporary directory, a server).
pub struct Fixture {
    // Declared first so it is dropped first: the store closes before its directory goes.
    pub store: DynStore,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    pub fn new(store: DynStore) -> Self {
        Fixture {
            store,
            _keep_alive: None,
        }
    }

    /// A store that needs `guard` (e.g. a `tempfile::TempDir`) alive while it is used.
    pub fn keeping(store: DynStore, guard: impl Any + Send + Sync) -> Self {
        Fixture {
            store,
            _keep_alive: Some(Box::new(guard)),
        }
    }
}

/// Builds a fresh, empty store on `clock` keeping `change_retention` changes. Implemented
/// for every `async fn(ManualClock, usize) -> Fixture` and matching closure.
pub trait StoreFactory {
    fn make(
        &self,
        clock: ManualClock,
        change_retention: usize,
    ) -> Pin<Box<dyn Future<Output = Fixture> + '_>>;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn(ManualClock, usize) -> Fut,
    Fut: Future<Output = Fixture> + 'static,
{
    fn make(
        &self,
        clock: ManualClock,
        change_retention: usize,
    ) -> Pin<Box<dyn Future<Output = Fixture> + '_>> {
        Box::pin(self(clock, change_retention))
    }
}

/// A fresh store with the default retention and the clock that drives it.
async fn setup(factory: &impl StoreFactory) -> (Fixture, ManualClock) {
    let clock = ManualClock::new(fixtures::START);
    (factory.make(clock.clone(), DEFAULT_RETENTION).await, clock)
}

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `diego_store::conformance::<case>(&factory)`. With `run_if = ready`, each case first calls
/// `ready(case_name)` and returns at once when it is false (a backend whose server is not
/// installed; `ready` prints why).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_cases!(@tests $factory, |_: &str| true);
    };
    ($factory:expr, run_if = $ready:expr) => {
        $crate::__conformance_cases!(@tests $factory, $ready);
    };
}

/// Runs every conformance case, one after another, in the calling async function: for a
/// backend whose cases share something costly or stateful (a cluster that loses a member
/// mid-suite). `$before` is called as `before(position, case_name)` ahead of each case.
#[macro_export]
macro_rules! conformance_sequence {
    ($factory:expr, $before:expr) => {
        $crate::__conformance_cases!(@sequence $factory, $before)
    };
}

/// The one list of cases, handed to the macro that expands them.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($($how:tt)*) => {
        $crate::__conformance_expand! { $($how)*;
            insert_and_get,
            insert_existing_is_exists,
            update_bumps_tag,
            update_with_stale_tag_conflicts,
            update_missing_is_not_found,
            delete_compares_tag,
            txn_is_atomic,
            duplicate_key_in_txn_is_invalid,
            empty_txn_returns_head,
            list_tasks_filters,
            list_desired_lrps_filters,
            list_actual_lrps_filters,
            get_actual_lrps_returns_every_presence,
            filters_follow_updates,
            large_listings_are_complete_and_ordered,
            counts_by_state,
            domains_expire,
            presences_expire_renew_remove,
            locks_collide_renew_expire_release,
            fenced_writes_need_the_lock,
            change_feed_records_each_write,
            changes_since_pages,
            change_feed_retention,
            watch_head_advances,
            feed_resumes_across_writes_it_does_not_show,
            presences_appear_in_the_feed,
            concurrent_cas_increments,
            concurrent_inserts,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (@tests $factory:expr, $ready:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !($ready)(stringify!($case)) {
                    return;
                }
                $crate::conformance::$case(&$factory).await;
            }
        )+
    };
    (@sequence $factory:expr, $before:expr; $($case:ident),+ $(,)?) => {{
        let factory = &$factory;
        let mut before = $before;
        let mut position = 0usize;
        $(
            before(position, stringify!($case));
            $crate::conformance::$case(factory).await;
            position += 1;
        )+
        let _ = position;
    }};
}
