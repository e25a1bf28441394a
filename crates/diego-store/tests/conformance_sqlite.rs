//! The conformance suite against the SQLite backend, each case in its own temporary directory.

use std::sync::Arc;

use diego_model::ManualClock;
use diego_store::conformance::Fixture;
use diego_store::sqlite::{SqliteOptions, SqliteStore};

async fn sqlite(clock: ManualClock, change_retention: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let options = SqliteOptions {
        change_retention,
        read_connections: 4,
    };
    let store = SqliteStore::open(dir.path(), Arc::new(clock), options).expect("opening the sqlite store");
    Fixture::keeping(Arc::new(store), dir)
}

diego_store::conformance_tests!(sqlite);
