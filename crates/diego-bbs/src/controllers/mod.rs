//! Lifecycle rules: the model's pure transitions applied with compare-and-swap.
//!
//! Each operation reads the record, asks the model for the next one, and commits it on the
//! tag it read ([`read_decide_cas`]). A concurrent writer makes the commit fail with
//! `Conflict`; the operation then re-reads and re-decides, so the outcome is always the one
//! the model allows for the state that actually won. Operations fail with a
//! [`ControllerError`], which the handlers turn into Diego's API errors.

pub mod actual_lrps;
pub mod desired_lrps;
pub mod evacuation;
pub mod tasks;

use std::future::Future;

use diego_model::{ErrorType, FieldError, TransitionError};
use diego_store::StoreError;

use crate::error::HandlerError;

/// Attempts of one read-decide-CAS cycle before giving up. Only a record under heavy
/// contention ever needs more than one or two.
pub const CAS_ATTEMPTS: usize = 32;

/// Why a lifecycle operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The record the operation is about does not exist (`task "t1" not found`).
    #[error("{0}")]
    NotFound(String),
    /// The record to create exists already.
    #[error("{0}")]
    Exists(String),
    /// The request's record breaks the model's rules; one error per field.
    #[error("invalid {what}")]
    Invalid { what: String, errors: Vec<FieldError> },
    /// The model refuses the transition from the record's current state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The record kept changing under every attempt (`CAS_ATTEMPTS`).
    #[error("{0} kept changing concurrently; retry the request")]
    Contention(String),
    /// Refused for the state of other records (a 409 with this message).
    #[error("{0}")]
    Conflict(String),
    /// The store failed, or refused a write (a lost race, inside [`read_decide_cas`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ControllerResult<T> = Result<T, ControllerError>;

impl From<ControllerError> for HandlerError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::NotFound(m) => HandlerError::not_found(m),
            ControllerError::Exists(m) => HandlerError::new(ErrorType::ResourceExists, m),
            ControllerError::Invalid { what, errors } => HandlerError::invalid_record(&what, errors),
            ControllerError::Transition(t) => t.into(),
            e @ ControllerError::Contention(_) => {
                HandlerError::new(ErrorType::ResourceConflict, e.to_string())
            }
            ControllerError::Conflict(m) => HandlerError::new(ErrorType::ResourceConflict, m),
            ControllerError::Store(s) => s.into(),
        }
    }
}

/// Whether a commit error means "someone else wrote first; decide again".
pub fn is_retryable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. } | StoreError::NotFound { .. } | StoreError::Exists { .. }
    )
}

/// Runs `attempt` (read, decide, commit on the tag read) until it returns anything but a
/// lost race: a commit refused with `Conflict`, `NotFound` or `Exists` (which `?` turns into
/// `ControllerError::Store`) reads and decides again. A record the attempt's own read did not
/// find is its `NotFound` answer, not a race. After `CAS_ATTEMPTS` lost races, `Contention`
/// naming `what`.
pub async fn read_decide_cas<T, F, Fut>(what: impl FnOnce() -> String, mut attempt: F) -> ControllerResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ControllerResult<T>>,
{
    for _ in 0..CAS_ATTEMPTS {
        match attempt().await {
            Err(ControllerError::Store(e)) if is_retryable(&e) => continue,
            other => return other,
        }
    }
    Err(ControllerError::Contention(what()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn conflict() -> ControllerError {
        ControllerError::Store(StoreError::Conflict {
            write: 0,
            key: diego_store::RecordKey::Task {
                task_guid: "t".into(),
            },
            expected: Default::default(),
            found: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_lost_race_is_decided_again_and_anything_else_is_the_answer() {
        let calls = AtomicUsize::new(0);
        let r = read_decide_cas(
            || "task \"t\"".into(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(conflict()),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let r: ControllerResult<()> = read_decide_cas(
            || "x".into(),
            || async { Err(ControllerError::NotFound("x not found".into())) },
        )
        .await;
        assert!(
            matches!(r, Err(ControllerError::NotFound(_))),
            "a read's not-found is final"
        );

        let r: ControllerResult<()> =
            read_decide_cas(|| "task \"t\"".into(), || async { Err(conflict()) }).await;
        let e = HandlerError::from(r.unwrap_err());
        assert_eq!(e.0.kind, ErrorType::ResourceConflict);
        assert_eq!(
            e.0.message,
            "task \"t\" kept changing concurrently; retry the request"
        );
    }
}
