//! The conformance suite against the in-memory backend.

use std::sync::Arc;

use diego_model::ManualClock;
use diego_store::conformance::Fixture;
use diego_store::memory::MemoryStore;

async fn memory(clock: ManualClock, change_retention: usize) -> Fixture {
    Fixture::new(Arc::new(MemoryStore::new(Arc::new(clock), change_retention)))
}

diego_store::conformance_tests!(memory);
