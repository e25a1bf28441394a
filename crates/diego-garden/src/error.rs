//! Errors of the container API, named by what the caller can do.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "type", content = "message")]
pub enum GardenError {
    /// No such container (or process in it).
    #[error("not found: {0}")]
    NotFound(String),
    /// A container with this handle (or a process with this id) already exists.
    #[error("already exists: {0}")]
    Exists(String),
    /// The request cannot be carried out as asked (bad rootfs, bad path, over capacity).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend could not do it (runc failed, IO error). Retrying may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl GardenError {
    pub fn not_found(what: impl Into<String>) -> Self {
        GardenError::NotFound(what.into())
    }
}
