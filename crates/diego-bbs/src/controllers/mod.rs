//! Lifecycle rules: the model's pure transitions applied with compare-and-swap.
//!
//! Each operation reads the record, asks the model for the next one, and commits it on the
//! tag it read. A concurrent writer makes the commit fail with `Conflict`; the operation then
//! re-reads and re-decides, so the outcome is always the one the model allows for the state
//! that actually won.

pub mod actual_lrps;
pub mod desired_lrps;
pub mod evacuation;
pub mod tasks;

use diego_model::ErrorType;
use diego_store::StoreError;

use crate::error::HandlerError;

/// Attempts of one read-decide-CAS cycle before giving up. Only a record under heavy
/// contention ever needs more than one or two.
pub const CAS_ATTEMPTS: usize = 32;

pub fn contention(what: &str) -> HandlerError {
    HandlerError::new(
        ErrorType::ResourceConflict,
        format!("{what} kept changing concurrently; retry the request"),
    )
}

/// Whether a commit error means "someone else wrote first; decide again".
pub fn is_retryable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. } | StoreError::NotFound { .. } | StoreError::Exists { .. }
    )
}
