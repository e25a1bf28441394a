//! [`AuctioneerClient`]: start requests for the auctioneer (diego-spec §3.4).

use std::time::Duration;

use diego_model::auction::{LrpStartRequest, TaskStartRequest};
use reqwest::Method;

use crate::error::Result;
use crate::http::Api;
use crate::routes::auctioneer as r;

/// Diego's BBS gives the auctioneer 10 s per call.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AuctioneerClient {
    api: Api,
}

impl AuctioneerClient {
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        AuctioneerClient {
            api: Api::new(base_url, http).with_timeout(TIMEOUT),
        }
    }

    pub fn base_url(&self) -> &str {
        self.api.base_url()
    }

    /// `POST /v1/lrps` (202: queued for the next batch).
    pub async fn request_lrp_auctions(&self, requests: &[LrpStartRequest]) -> Result<()> {
        self.api
            .send_no_content(Method::POST, r::LRPS.to_string(), Some(requests))
            .await
    }

    /// `POST /v1/tasks` (202: queued for the next batch).
    pub async fn request_task_auctions(&self, requests: &[TaskStartRequest]) -> Result<()> {
        self.api
            .send_no_content(Method::POST, r::TASKS.to_string(), Some(requests))
            .await
    }

    pub async fn ping(&self) -> Result<()> {
        self.api
            .send_no_content(Method::GET, r::PING.to_string(), None::<&()>)
            .await
    }
}
