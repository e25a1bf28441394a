//! Keeping the BBS true to the cell's containers (diego-spec §4.4): every executor event
//! becomes the BBS call Diego's rep makes, and a completed container is then deleted.
//!
//! | container | LRP instance | task |
//! |---|---|---|
//! | RUNNING | start (address, ports, zone); refused → stop the container | — |
//! | COMPLETED, stopped | remove | (cancelled: nothing) |
//! | COMPLETED, failed or exited | crash with the failure reason | complete (failed + reason, or the result file) |

use std::io::Read as _;
use std::sync::Arc;

use diego_executor::{ContainerEvent, RunResult};
use diego_model::api::{CompleteTaskRequest, StartActualLrpRequest};
use diego_model::{ActualLrpNetInfo, ErrorType, PortMapping};
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::work::{release, Workload};
use crate::Rep;

/// Diego's failure reason when a successful task's result file cannot be read.
pub const FETCH_RESULT_FAILED: &str = "failed to fetch result";

/// Diego reads at most this much of a task's result file.
const MAX_RESULT_BYTES: usize = 10 * 1024;

/// Handles container events from `events` (subscribed before any container can change).
pub(crate) async fn run(
    rep: Arc<Rep>,
    mut events: tokio::sync::broadcast::Receiver<ContainerEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(ContainerEvent::Running { guid, host_ip, ports }) => {
                let rep = rep.clone();
                tokio::spawn(async move { running(&rep, &guid, &host_ip, &ports).await });
            }
            Ok(ContainerEvent::Completed { guid, result }) => {
                let rep = rep.clone();
                tokio::spawn(async move { completed(&rep, &guid, result).await });
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => warn!(missed = n, "the harmonizer fell behind the container events"),
            Err(RecvError::Closed) => return,
        }
    }
}

pub(crate) async fn running(rep: &Rep, guid: &str, host_ip: &str, ports: &[diego_garden::PortMapping]) {
    if crate::evacuate::skip_running(rep, guid) {
        return;
    }
    let Some(w) = rep.workload(guid) else {
        return;
    };
    let Workload::Lrp {
        process_guid, index, ..
    } = &w
    else {
        return;
    };
    let req = StartActualLrpRequest {
        instance_key: w.instance_key(&rep.config.cell_id).unwrap_or_default(),
        net_info: ActualLrpNetInfo {
            address: host_ip.to_string(),
            ports: ports
                .iter()
                .map(|p| PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    ..Default::default()
                })
                .collect(),
            instance_address: String::new(),
        },
        routable: None,
        availability_zone: rep.config.zone.clone(),
    };
    match rep.bbs.start_actual_lrp(process_guid, *index, &req).await {
        Ok(_) => info!(process_guid, index, guid, "instance running"),
        Err(e) if e.kind() == Some(ErrorType::ActualLrpCannotBeStarted) || e.is_not_found() => {
            info!(process_guid, index, error = %e, "the BBS refused the start; stopping the container");
            let _ = rep.store.stop(guid);
        }
        Err(e) => warn!(process_guid, index, error = %e, "starting the actual LRP"),
    }
}

async fn completed(rep: &Rep, guid: &str, result: RunResult) {
    if crate::evacuate::completed(rep, guid, &result).await {
        release(rep, guid).await;
        return;
    }
    let Some(workload) = rep.workload(guid) else {
        return;
    };
    match &workload {
        Workload::Lrp {
            process_guid, index, ..
        } => {
            let ik = workload.instance_key(&rep.config.cell_id);
            // Asked to stop, it exited during its unroute delay: that is the stop, not a crash.
            let asked_to_stop = rep.set_stopping(guid, false);
            let reported = if result.stopped || asked_to_stop {
                rep.bbs
                    .remove_actual_lrp(process_guid, *index, ik.as_ref())
                    .await
                    .map(|_| ())
            } else {
                let reason = if result.failure_reason.is_empty() {
                    "the instance exited".to_string()
                } else {
                    result.failure_reason.clone()
                };
                info!(process_guid, index, reason, "instance crashed");
                rep.bbs
                    .crash_actual_lrp(process_guid, *index, &ik.unwrap_or_default(), &reason)
                    .await
                    .map(|_| ())
            };
            if let Err(e) = reported {
                debug!(process_guid, index, error = %e, "reporting a completed instance");
            }
        }
        Workload::Task {
            task_guid,
            started,
            cancelled,
            ..
        } => {
            if *started && !*cancelled {
                let req = task_completion(rep, task_guid, &result).await;
                match rep.bbs.complete_task(task_guid, &req).await {
                    Ok(_) => info!(task_guid, failed = req.failed, "task completed"),
                    Err(e) => warn!(task_guid, error = %e, "completing the task"),
                }
            }
        }
    }
    release(rep, guid).await;
}

async fn task_completion(rep: &Rep, task_guid: &str, result: &RunResult) -> CompleteTaskRequest {
    let mut req = CompleteTaskRequest {
        cell_id: rep.config.cell_id.clone(),
        failed: result.failed || result.stopped,
        failure_reason: if result.stopped && result.failure_reason.is_empty() {
            "task was stopped".to_string()
        } else {
            result.failure_reason.clone()
        },
        result: String::new(),
    };
    if req.failed {
        return req;
    }
    let result_file = match rep.bbs.task(task_guid).await {
        Ok(t) => t.task_definition.result_file,
        Err(e) => {
            warn!(task_guid, error = %e, "fetching the task for its result file");
            String::new()
        }
    };
    if result_file.is_empty() {
        return req;
    }
    match read_file(rep, task_guid, &result_file).await {
        Ok(text) => req.result = text,
        Err(e) => {
            warn!(task_guid, result_file, error = %e, "reading the result file");
            req.failed = true;
            req.failure_reason = FETCH_RESULT_FAILED.to_string();
        }
    }
    req
}

/// The first `MAX_RESULT_BYTES` of `path` in container `guid`.
async fn read_file(rep: &Rep, guid: &str, path: &str) -> Result<String, String> {
    let mut stream = rep
        .backend
        .stream_out(guid, path)
        .await
        .map_err(|e| e.to_string())?;
    let mut tar_bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar_bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if tar_bytes.len() > 4 * 1024 * 1024 {
            break;
        }
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.header().entry_type().is_file() {
            let mut content = Vec::new();
            entry
                .take(MAX_RESULT_BYTES as u64)
                .read_to_end(&mut content)
                .map_err(|e| e.to_string())?;
            return Ok(String::from_utf8_lossy(&content).into_owned());
        }
    }
    Err("no such file".to_string())
}

/// The instance's `routable` in the BBS becomes `ready` (a start with the same net info, as
/// Diego's rep does): on readiness changes, and `false` before the BBS's stop of an instance.
pub(crate) async fn set_routable(
    rep: &Rep,
    process_guid: &str,
    index: i32,
    instance_guid: &str,
    ready: bool,
) {
    let Ok(actuals) = rep.bbs.actual_lrp(process_guid, index).await else {
        return;
    };
    let Some(current) = actuals
        .into_iter()
        // Not an EVACUATING row: a start names the ORDINARY one, which a replacement may hold.
        .find(|a| {
            a.instance_guid == instance_guid
                && a.state == diego_model::ActualLrpState::Running
                && a.presence == diego_model::Presence::Ordinary
        })
    else {
        return;
    };
    let req = StartActualLrpRequest {
        instance_key: current.instance_key(),
        net_info: ActualLrpNetInfo {
            address: current.address.clone(),
            ports: current.ports.clone(),
            instance_address: current.instance_address.clone(),
        },
        routable: Some(ready),
        availability_zone: current.availability_zone.clone(),
    };
    match rep.bbs.start_actual_lrp(process_guid, index, &req).await {
        Ok(_) => info!(process_guid, index, routable = ready, "routability recorded"),
        Err(e) => warn!(process_guid, index, error = %e, "recording routability"),
    }
}
