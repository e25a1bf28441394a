//! [`RepClient`]: the one client of a cell's rep (diego-spec §3.5): its state, the work it is
//! given, and the BBS's stop and cancel notifications.

use std::time::Duration;

use diego_model::auction::{CellState, Work};
use reqwest::Method;

use crate::error::Result;
use crate::http::Api;
use crate::routes::rep as r;

/// One cell's rep. Cheap to clone; build many from one shared `reqwest::Client`.
#[derive(Debug, Clone)]
pub struct RepClient {
    api: Api,
}

impl RepClient {
    /// `rep_url` as the cell registered it (a trailing `/` is ignored); every call gives up
    /// after `timeout` (Diego's `cell_state_timeout` is 10 s; the auctioneer uses less).
    pub fn new(rep_url: impl Into<String>, http: reqwest::Client, timeout: Duration) -> Self {
        RepClient {
            api: Api::new(rep_url, http).with_timeout(timeout),
        }
    }

    pub fn rep_url(&self) -> &str {
        self.api.base_url()
    }

    /// `GET /state`.
    pub async fn state(&self) -> Result<CellState> {
        self.api.get(r::STATE.to_string()).await
    }

    /// `GET /container_metrics`.
    pub async fn container_metrics(&self) -> Result<Vec<diego_model::CellContainerMetrics>> {
        self.api.get(r::CONTAINER_METRICS.to_string()).await
    }

    /// `POST /evacuate`: the cell starts evacuating (its work moves elsewhere, then it exits).
    pub async fn evacuate(&self) -> Result<()> {
        self.api
            .send_no_content(Method::POST, r::EVACUATE.to_string(), None::<&()>)
            .await
    }

    /// `POST /v1/lrps/{process_guid}/instances/{instance_guid}/stop`: stop one instance.
    pub async fn stop_lrp_instance(&self, process_guid: &str, instance_guid: &str) -> Result<()> {
        let path = crate::routes::path(r::STOP_LRP_INSTANCE, &[process_guid, instance_guid]);
        self.api.send_no_content(Method::POST, path, None::<&()>).await
    }

    /// `POST /v1/tasks/{task_guid}/cancel`: the task was cancelled; stop running it.
    pub async fn cancel_task(&self, task_guid: &str) -> Result<()> {
        let path = crate::routes::path(r::CANCEL_TASK, &[task_guid]);
        self.api.send_no_content(Method::POST, path, None::<&()>).await
    }

    /// `POST /work`: what the cell could not take.
    pub async fn perform(&self, work: &Work) -> Result<Work> {
        self.api
            .send(Method::POST, r::WORK.to_string(), Some(work), None::<&()>)
            .await
    }
}
