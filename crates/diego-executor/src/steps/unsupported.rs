//! A step that fails at once with a fixed error: used for actions that cannot run (invalid
//! trees, action kinds not implemented yet such as download and upload in phase 1).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Step, StepError};

pub struct FailStep {
    error: StepError,
}

impl FailStep {
    pub fn new(error: StepError) -> Self {
        Self { error }
    }
}

#[async_trait]
impl Step for FailStep {
    async fn perform(&self, _cancel: CancellationToken) -> Result<(), StepError> {
        Err(self.error.clone())
    }
}
