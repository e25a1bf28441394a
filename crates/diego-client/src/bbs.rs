//! [`BbsClient`]: one typed async method per BBS route.
//!
//! Paths come from [`crate::routes::bbs`], the same constants the server routes on. Every
//! non-success answer becomes [`ClientError::Api`] carrying the server's error body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use diego_model::api::{
    ClaimActualLrpRequest, CompleteTaskRequest, CrashActualLrpRequest, EvacuateActualLrpRequest,
    EvacuateRunningActualLrpRequest, EvacuationResponse, FailActualLrpRequest, FailTaskRequest, PingResponse,
    PlacementFailuresRequest, PlacementFailuresResponse, RejectTaskRequest, RemoveActualLrpRequest,
    StartActualLrpRequest, StartTaskRequest, StartTaskResponse,
};
use diego_model::auction::PlacementExplanation;
use diego_model::{
    AcquireLockRequest, ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, ActualLrpState, CellPresence,
    DesireTaskRequest, DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate, Domain, ErrorType, LapsedCell,
    Presence, RegisterCellRequest, Task, TaskState, Timestamp, UpsertDomainRequest,
};
use futures_util::Stream;
use reqwest::{Method, Response};
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};
use crate::failover::{Failover, Retry};
use crate::http::{check_status, execute, transport};
use crate::routes::{bbs as r, path};
use crate::sse::{SseEvent, SseParser};
use crate::urls::BbsUrls;

/// Lets the OS notice a dead peer on an idle event stream.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// `GET /v1/tasks` filters; `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
}

/// `GET /v1/desired_lrps` and `/v1/desired_lrp_scheduling_infos` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredLrpQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_guid: Option<String>,
}

/// `GET /v1/actual_lrps` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActualLrpQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ActualLrpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
}

/// One entry of `GET /v1/cells`: a live presence and when it lapses unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPresenceWithExpiry {
    pub cell_presence: CellPresence,
    /// Unix ns.
    pub expires_at: Timestamp,
}

/// The live holder of a lock (`/v1/locks/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub key: String,
    pub owner: String,
    pub value: String,
    /// Unix ns.
    pub expires_at: Timestamp,
}

/// A live event stream: frames as they arrive. It ends when the server closes the
/// connection; resubscribe with the last seen id to resume.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent>> + Send>>;

/// A client of the BBS: of one process, or of several sharing a store, failing over between
/// them (see [`crate::failover`]). Cheap to clone (clones share the connection pool and which
/// BBS they stick to).
#[derive(Debug, Clone)]
pub struct BbsClient {
    bbs: Failover,
}

impl BbsClient {
    /// `urls`: a [`BbsUrls`] list, or one URL like `http://127.0.0.1:8889` (a trailing `/` is
    /// ignored).
    pub fn new(urls: impl Into<BbsUrls>) -> Self {
        Self::with_tls(urls, None)
    }

    /// Like [`BbsClient::new`], over mutual TLS when `tls` is given (the URLs are then
    /// `https://…`).
    pub fn with_tls(urls: impl Into<BbsUrls>, tls: Option<&diego_runtime::tls::Tls>) -> Self {
        let http = diego_runtime::http_client(tls)
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            // Only fails when the TLS backend cannot initialise; its configuration is loaded.
            .expect("building the HTTP client");
        Self::with_http(urls, http)
    }

    /// Uses a caller-configured reqwest client (timeouts, pool size …).
    pub fn with_http(urls: impl Into<BbsUrls>, http: reqwest::Client) -> Self {
        Self {
            bbs: Failover::new(urls.into(), http),
        }
    }

    /// The BBS the next request goes to first: the one that answered last.
    pub fn base_url(&self) -> &str {
        self.bbs.current().base_url()
    }

    /// Every BBS this client may talk to, in order.
    pub fn urls(&self) -> &BbsUrls {
        self.bbs.urls()
    }

    // ---- tasks ----

    /// Sent again to the next BBS when the answer is lost: the BBS refuses a second task of
    /// one guid, and a refusal of the repeat is success when the stored task is this one.
    pub async fn desire_task(&self, req: &DesireTaskRequest) -> Result<Task> {
        let sent = self
            .bbs
            .send_with(
                Retry::Resend,
                Method::POST,
                path(r::TASKS, &[]),
                Some(req),
                None::<&()>,
            )
            .await;
        match sent.result {
            Err(e) if sent.resent && e.kind() == Some(ErrorType::ResourceExists) => {
                let stored = self.task(&req.task_guid).await?;
                if stored.domain == req.domain && stored.task_definition == req.task_definition {
                    Ok(stored)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<Task>> {
        self.bbs
            .send(Method::GET, path(r::TASKS, &[]), None::<&()>, Some(query))
            .await
    }

    pub async fn task(&self, task_guid: &str) -> Result<Task> {
        self.bbs.get(path(r::TASK, &[task_guid])).await
    }

    /// True when the cell should start the task; false when it is already running there.
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        let body = StartTaskRequest {
            cell_id: cell_id.to_string(),
        };
        let resp: StartTaskResponse = self.bbs.post(path(r::TASK_START, &[task_guid]), &body).await?;
        Ok(resp.should_start)
    }

    pub async fn complete_task(&self, task_guid: &str, req: &CompleteTaskRequest) -> Result<Task> {
        self.bbs.post(path(r::TASK_COMPLETE, &[task_guid]), req).await
    }

    /// A cell (or the auction, with its `explanation`) could not take the task.
    pub async fn reject_task(
        &self,
        task_guid: &str,
        rejection_reason: &str,
        explanation: Option<&PlacementExplanation>,
    ) -> Result<Task> {
        let body = RejectTaskRequest {
            rejection_reason: rejection_reason.to_string(),
            placement_explanation: explanation.cloned(),
        };
        self.bbs.post(path(r::TASK_REJECT, &[task_guid]), &body).await
    }

    pub async fn fail_task(&self, task_guid: &str, failure_reason: &str) -> Result<Task> {
        let body = FailTaskRequest {
            failure_reason: failure_reason.to_string(),
        };
        self.bbs.post(path(r::TASK_FAIL, &[task_guid]), &body).await
    }

    pub async fn cancel_task(&self, task_guid: &str) -> Result<Task> {
        self.bbs.post_empty(path(r::TASK_CANCEL, &[task_guid])).await
    }

    /// Marks a COMPLETED task as being resolved by its owner (the step before deleting it).
    pub async fn resolving_task(&self, task_guid: &str) -> Result<Task> {
        self.bbs.post_empty(path(r::TASK_RESOLVING, &[task_guid])).await
    }

    pub async fn delete_task(&self, task_guid: &str) -> Result<()> {
        self.delete(path(r::TASK, &[task_guid])).await
    }

    /// A DELETE, repeated on the next BBS after a lost answer; "not found" for the repeat is
    /// success (the lost attempt deleted it, or someone else did: the record is gone either way).
    async fn delete(&self, path: String) -> Result<()> {
        let sent = self
            .bbs
            .send_no_content_with(Retry::Idempotent, Method::DELETE, path, None::<&()>)
            .await;
        match sent.result {
            Err(e) if sent.resent && e.is_not_found() => Ok(()),
            other => other,
        }
    }

    // ---- desired LRPs ----

    pub async fn desire_lrp(&self, lrp: &DesiredLrp) -> Result<DesiredLrp> {
        self.bbs.post(path(r::DESIRED_LRPS, &[]), lrp).await
    }

    pub async fn desired_lrps(&self, query: &DesiredLrpQuery) -> Result<Vec<DesiredLrp>> {
        self.bbs
            .send(Method::GET, path(r::DESIRED_LRPS, &[]), None::<&()>, Some(query))
            .await
    }

    pub async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        self.bbs.get(path(r::DESIRED_LRP, &[process_guid])).await
    }

    pub async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: &DesiredLrpUpdate,
    ) -> Result<DesiredLrp> {
        self.bbs
            .send(
                Method::PATCH,
                path(r::DESIRED_LRP, &[process_guid]),
                Some(update),
                None::<&()>,
            )
            .await
    }

    pub async fn remove_desired_lrp(&self, process_guid: &str) -> Result<()> {
        self.delete(path(r::DESIRED_LRP, &[process_guid])).await
    }

    pub async fn scheduling_infos(&self, query: &DesiredLrpQuery) -> Result<Vec<DesiredLrpSchedulingInfo>> {
        self.bbs
            .send(
                Method::GET,
                path(r::SCHEDULING_INFOS, &[]),
                None::<&()>,
                Some(query),
            )
            .await
    }

    pub async fn scheduling_info(&self, process_guid: &str) -> Result<DesiredLrpSchedulingInfo> {
        self.bbs.get(path(r::SCHEDULING_INFO, &[process_guid])).await
    }

    // ---- actual LRPs ----

    pub async fn actual_lrps(&self, query: &ActualLrpQuery) -> Result<Vec<ActualLrp>> {
        self.bbs
            .send(Method::GET, path(r::ACTUAL_LRPS, &[]), None::<&()>, Some(query))
            .await
    }

    /// Every presence (ordinary, evacuating, suspect) of one index.
    pub async fn actual_lrp(&self, process_guid: &str, index: i32) -> Result<Vec<ActualLrp>> {
        self.bbs
            .get(path(r::ACTUAL_LRP, &[process_guid, &index.to_string()]))
            .await
    }

    pub async fn claim_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<ActualLrp> {
        let body = ClaimActualLrpRequest {
            instance_key: instance_key.clone(),
        };
        self.bbs
            .post(
                path(r::ACTUAL_LRP_CLAIM, &[process_guid, &index.to_string()]),
                &body,
            )
            .await
    }

    pub async fn start_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        req: &StartActualLrpRequest,
    ) -> Result<ActualLrp> {
        self.bbs
            .post(
                path(r::ACTUAL_LRP_START, &[process_guid, &index.to_string()]),
                req,
            )
            .await
    }

    pub async fn crash_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        error_message: &str,
    ) -> Result<ActualLrp> {
        let body = CrashActualLrpRequest {
            instance_key: instance_key.clone(),
            error_message: error_message.to_string(),
        };
        self.bbs
            .post(
                path(r::ACTUAL_LRP_CRASH, &[process_guid, &index.to_string()]),
                &body,
            )
            .await
    }

    /// Records a placement failure (and the auction's explanation) on an UNCLAIMED instance.
    pub async fn fail_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        error_message: &str,
        explanation: Option<&PlacementExplanation>,
    ) -> Result<ActualLrp> {
        let body = FailActualLrpRequest {
            error_message: error_message.to_string(),
            placement_explanation: explanation.cloned(),
        };
        self.bbs
            .post(
                path(r::ACTUAL_LRP_FAIL, &[process_guid, &index.to_string()]),
                &body,
            )
            .await
    }

    /// Records an auction round's placement failures in one request.
    pub async fn report_placement_failures(
        &self,
        request: &PlacementFailuresRequest,
    ) -> Result<PlacementFailuresResponse> {
        self.bbs.post(path(r::PLACEMENT_FAILURES, &[]), request).await
    }

    /// Removes the instance record; with `instance_key`, only if it is still that instance.
    pub async fn remove_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: Option<&ActualLrpInstanceKey>,
    ) -> Result<()> {
        let body = RemoveActualLrpRequest {
            instance_key: instance_key.cloned(),
        };
        let p = path(r::ACTUAL_LRP_REMOVE, &[process_guid, &index.to_string()]);
        self.bbs.send_no_content(Method::POST, p, Some(&body)).await
    }

    // ---- evacuation (an evacuating cell's reports) ----

    /// Posts an evacuation report for instance `index` of `process_guid` to `route`: whether
    /// the cell should keep the container.
    async fn evacuation<B: serde::Serialize>(
        &self,
        route: &str,
        process_guid: &str,
        index: i32,
        body: &B,
    ) -> Result<bool> {
        let p = path(route, &[process_guid, &index.to_string()]);
        let r: EvacuationResponse = self.bbs.post(p, body).await?;
        Ok(r.keep_container)
    }

    /// A RUNNING instance of an evacuating cell; `true` = keep the container and ask again.
    pub async fn evacuate_running_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        net_info: &ActualLrpNetInfo,
    ) -> Result<bool> {
        let body = EvacuateRunningActualLrpRequest {
            instance_key: instance_key.clone(),
            net_info: net_info.clone(),
        };
        self.evacuation(r::ACTUAL_LRP_EVACUATE_RUNNING, process_guid, index, &body)
            .await
    }

    /// A CLAIMED instance of an evacuating cell: placed again elsewhere.
    pub async fn evacuate_claimed_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<bool> {
        let body = EvacuateActualLrpRequest {
            instance_key: instance_key.clone(),
        };
        self.evacuation(r::ACTUAL_LRP_EVACUATE_CLAIMED, process_guid, index, &body)
            .await
    }

    /// A crashed instance of an evacuating cell.
    pub async fn evacuate_crashed_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
        error_message: &str,
    ) -> Result<bool> {
        let body = CrashActualLrpRequest {
            instance_key: instance_key.clone(),
            error_message: error_message.to_string(),
        };
        self.evacuation(r::ACTUAL_LRP_EVACUATE_CRASHED, process_guid, index, &body)
            .await
    }

    /// A stopped instance of an evacuating cell.
    pub async fn evacuate_stopped_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<bool> {
        let body = EvacuateActualLrpRequest {
            instance_key: instance_key.clone(),
        };
        self.evacuation(r::ACTUAL_LRP_EVACUATE_STOPPED, process_guid, index, &body)
            .await
    }

    /// Deletes the caller's EVACUATING row.
    pub async fn remove_evacuating_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<()> {
        let body = EvacuateActualLrpRequest {
            instance_key: instance_key.clone(),
        };
        let p = path(
            r::ACTUAL_LRP_REMOVE_EVACUATING,
            &[process_guid, &index.to_string()],
        );
        self.bbs.send_no_content(Method::POST, p, Some(&body)).await
    }

    /// Stops the instance (asking its cell when it holds one) and removes it.
    pub async fn retire_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        let p = path(r::ACTUAL_LRP_RETIRE, &[process_guid, &index.to_string()]);
        self.bbs.send_no_content(Method::POST, p, None::<&()>).await
    }

    // ---- domains and cells ----

    pub async fn domains(&self) -> Result<Vec<Domain>> {
        self.bbs.get(path(r::DOMAINS, &[])).await
    }

    pub async fn upsert_domain(&self, req: &UpsertDomainRequest) -> Result<()> {
        // An upsert of freshness: repeating it is harmless.
        self.bbs
            .send_no_content_with(Retry::Idempotent, Method::POST, path(r::DOMAINS, &[]), Some(req))
            .await
            .result
    }

    pub async fn cells(&self) -> Result<Vec<CellPresenceWithExpiry>> {
        self.bbs.get(path(r::CELLS, &[])).await
    }

    /// Cells whose presence lapsed while instances still name them.
    pub async fn lapsed_cells(&self) -> Result<Vec<LapsedCell>> {
        self.bbs.get(path(r::LAPSED_CELLS, &[])).await
    }

    /// Registers or renews a cell presence.
    pub async fn register_cell(&self, req: &RegisterCellRequest) -> Result<()> {
        // A presence upsert by its cell: repeating it is a renewal.
        self.bbs
            .send_no_content_with(Retry::Idempotent, Method::POST, path(r::CELLS, &[]), Some(req))
            .await
            .result
    }

    pub async fn remove_cell(&self, cell_id: &str) -> Result<()> {
        self.delete(path(r::CELL, &[cell_id])).await
    }

    // ---- locks ----

    /// Takes `key` for `owner` (or renews it); `Err` with `LockCollision` while another owner
    /// holds it.
    pub async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockHolder> {
        let req = AcquireLockRequest {
            owner: owner.into(),
            value: value.into(),
            ttl_seconds,
        };
        // Taking a lock one already holds renews it: repeating is harmless.
        self.bbs
            .send_with(
                Retry::Idempotent,
                Method::POST,
                path(r::LOCK, &[key]),
                Some(&req),
                None::<&()>,
            )
            .await
            .result
    }

    /// The live holder of `key`, if any.
    pub async fn lock_holder(&self, key: &str) -> Result<Option<LockHolder>> {
        match self.bbs.get(path(r::LOCK, &[key])).await {
            Ok(holder) => Ok(Some(holder)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Releases `key` if `owner` holds it.
    pub async fn release_lock(&self, key: &str, owner: &str) -> Result<()> {
        let url = format!(
            "{}?owner={}",
            path(r::LOCK, &[key]),
            crate::routes::encode_query(owner)
        );
        self.bbs.send_no_content(Method::DELETE, url, None::<&()>).await
    }

    pub async fn ping(&self) -> Result<PingResponse> {
        self.bbs.get(path(r::PING, &[])).await
    }

    // ---- events ----

    /// Desired and actual LRP events, from now or after `last_event_id`.
    pub async fn events_lrps(&self, last_event_id: Option<u64>) -> Result<EventStream> {
        self.events(path(r::EVENTS_LRPS, &[]), last_event_id).await
    }

    /// Task events, from now or after `last_event_id`.
    pub async fn events_tasks(&self, last_event_id: Option<u64>) -> Result<EventStream> {
        self.events(path(r::EVENTS_TASKS, &[]), last_event_id).await
    }

    /// Subscribes at the current BBS, or the next that answers. With the etcd store every BBS
    /// numbers the feed alike, so `last_event_id` from one resumes at another; one that no
    /// longer has it starts the stream with a resync event.
    async fn events(&self, path: String, last_event_id: Option<u64>) -> Result<EventStream> {
        let sent = self
            .bbs
            .run(Retry::Idempotent, |api| {
                let url = api.url(&path);
                async move {
                    let mut req = api
                        .http
                        .get(&url)
                        .header(reqwest::header::ACCEPT, "text/event-stream");
                    if let Some(id) = last_event_id {
                        req = req.header("Last-Event-ID", id.to_string());
                    }
                    let resp = execute(req, "GET", &url).await?;
                    let resp = check_status(resp, "GET", &url).await?;
                    Ok::<_, ClientError>((resp, url))
                }
            })
            .await;
        let (resp, url) = sent.result?;
        let state = StreamState {
            resp,
            url,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_frame)))
    }
}

struct StreamState {
    resp: Response,
    url: String,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    done: bool,
}

async fn next_frame(mut st: StreamState) -> Option<(Result<SseEvent>, StreamState)> {
    loop {
        if let Some(frame) = st.ready.pop_front() {
            return Some((Ok(frame), st));
        }
        if st.done {
            return None;
        }
        match st.resp.chunk().await {
            Ok(Some(bytes)) => st.ready.extend(st.parser.feed(&bytes)),
            Ok(None) => st.done = true,
            Err(source) => {
                st.done = true;
                let err = transport(source, "GET", &st.url);
                return Some((Err(err), st));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_serialise_only_what_is_set() {
        let q = ActualLrpQuery {
            process_guid: Some("web".into()),
            index: Some(2),
            state: Some(ActualLrpState::Unclaimed),
            ..Default::default()
        };
        let req = reqwest::Client::new()
            .get("http://x/v1/actual_lrps")
            .query(&q)
            .build()
            .unwrap();
        assert_eq!(
            req.url().query(),
            Some("process_guid=web&index=2&state=UNCLAIMED")
        );
        let req = reqwest::Client::new()
            .get("http://x/v1/tasks")
            .query(&TaskQuery::default())
            .build()
            .unwrap();
        assert_eq!(req.url().query(), None);
    }

    #[test]
    fn trailing_slash_is_ignored() {
        let c = BbsClient::new("http://127.0.0.1:1/");
        assert_eq!(c.bbs.current().url("/v1/ping"), "http://127.0.0.1:1/v1/ping");
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }
}
