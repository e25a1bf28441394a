//! Taking work (diego-spec §6.4, §4.4): reserve what fits, then claim (LRP) or start (task) in
//! the BBS and run the container; anything refused gives its reservation back.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diego_executor::checks::{health_steps, CheckContext, PortResolver};
use diego_executor::{MonitorFactory, RunRequest, StepContext};
use diego_garden::Limits;
use diego_model::auction::{LrpWork, TaskStartRequest, Work};
use diego_model::{ActualLrpInstanceKey, DesiredLrp, EnvironmentVariable, Task};
use tracing::{debug, info, warn};

use crate::Rep;

/// The properties each container of this cell carries, so a restarted rep can tell what it
/// runs (`recover.rs` reads them back).
pub(crate) mod prop {
    pub const CELL_ID: &str = "diego.cell_id";
    /// `lrp`, `task` or `self-check`.
    pub const KIND: &str = "diego.kind";
    pub const PROCESS_GUID: &str = "diego.process_guid";
    pub const INDEX: &str = "diego.index";
    pub const INSTANCE_GUID: &str = "diego.instance_guid";
    pub const TASK_GUID: &str = "diego.task_guid";
}

/// What a container of this cell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Lrp {
        process_guid: String,
        index: i32,
        domain: String,
        instance_guid: String,
        memory_mb: i32,
        disk_mb: i32,
    },
    Task {
        task_guid: String,
        domain: String,
        memory_mb: i32,
        disk_mb: i32,
        /// Set once the task has been started in the BBS (so its completion is reported).
        started: bool,
        /// Set when the BBS cancelled it: its container goes without a report.
        cancelled: bool,
    },
}

impl Workload {
    pub(crate) fn instance_key(&self, cell_id: &str) -> Option<ActualLrpInstanceKey> {
        match self {
            Workload::Lrp { instance_guid, .. } => Some(ActualLrpInstanceKey {
                instance_guid: instance_guid.clone(),
                cell_id: cell_id.to_string(),
            }),
            Workload::Task { .. } => None,
        }
    }
}

/// `POST /work`: what fits is reserved and started in the background; the rest is returned.
pub(crate) fn admit(rep: &Arc<Rep>, work: Work) -> Work {
    let mut failed = Work {
        cell_id: work.cell_id.clone(),
        ..Default::default()
    };
    let mut lrps = work.lrps;
    lrps.sort_by_key(|l| std::cmp::Reverse(l.resource.memory_mb));
    for lrp in lrps {
        // One instance per index on a cell.
        let held = rep.workloads().values().any(|w| {
            matches!(w, Workload::Lrp { process_guid, index, .. }
                if *process_guid == lrp.process_guid && *index == lrp.index)
        });
        if held {
            continue;
        }
        let instance_guid = uuid::Uuid::new_v4().to_string();
        let (memory, disk) = (lrp.resource.memory_mb.max(0), lrp.resource.disk_mb.max(0));
        match rep.store.reserve(&instance_guid, memory as u64, disk as u64) {
            Ok(_) => {
                rep.workloads().insert(
                    instance_guid.clone(),
                    Workload::Lrp {
                        process_guid: lrp.process_guid.clone(),
                        index: lrp.index,
                        domain: lrp.domain.clone(),
                        instance_guid: instance_guid.clone(),
                        memory_mb: memory,
                        disk_mb: disk,
                    },
                );
                tokio::spawn(start_lrp(rep.clone(), instance_guid, lrp));
            }
            Err(e) => {
                debug!(process_guid = %lrp.process_guid, index = lrp.index, error = %e, "cannot take LRP instance");
                failed.lrps.push(lrp);
            }
        }
    }
    let mut tasks = work.tasks;
    tasks.sort_by_key(|t| std::cmp::Reverse(t.resource.memory_mb));
    for task in tasks {
        if rep.workloads().contains_key(&task.task_guid) {
            continue;
        }
        let (memory, disk) = (task.resource.memory_mb.max(0), task.resource.disk_mb.max(0));
        match rep.store.reserve(&task.task_guid, memory as u64, disk as u64) {
            Ok(_) => {
                rep.workloads().insert(
                    task.task_guid.clone(),
                    Workload::Task {
                        task_guid: task.task_guid.clone(),
                        domain: task.domain.clone(),
                        memory_mb: memory,
                        disk_mb: disk,
                        started: false,
                        cancelled: false,
                    },
                );
                tokio::spawn(start_task(rep.clone(), task));
            }
            Err(e) => {
                debug!(task_guid = %task.task_guid, error = %e, "cannot take task");
                failed.tasks.push(task);
            }
        }
    }
    failed
}

/// Marks task `guid` as cancelled (its container then goes without a completion report);
/// false when the cell has no such task.
pub(crate) fn mark_cancelled(rep: &Rep, guid: &str) -> bool {
    match rep.workloads().get_mut(guid) {
        Some(Workload::Task { cancelled, .. }) => {
            *cancelled = true;
            true
        }
        _ => false,
    }
}

/// Gives a reservation back (and forgets the workload).
pub(crate) async fn release(rep: &Rep, guid: &str) {
    rep.workloads().remove(guid);
    if let Err(e) = rep.store.delete(guid).await {
        warn!(guid, error = %e, "deleting a container");
    }
}

fn env(vars: &[EnvironmentVariable]) -> Vec<String> {
    vars.iter().map(|v| format!("{}={}", v.name, v.value)).collect()
}

fn limits(memory_mb: i32, disk_mb: i32, max_pids: i32, cpu_weight: i32) -> Limits {
    Limits {
        memory_bytes: (memory_mb.max(0) as u64) << 20,
        disk_bytes: (disk_mb.max(0) as u64) << 20,
        pids: max_pids.max(0) as u64,
        cpu_shares: Limits::cpu_shares_for_weight(cpu_weight.max(0) as u32),
    }
}

/// The health monitor of an instance of `lrp`, if it has checks: probes go from the cell to the
/// container's mapped ports on the host address; readiness changes update `routable` in the BBS.
fn monitor(rep: &Arc<Rep>, lrp: &DesiredLrp, index: i32, instance_guid: &str) -> Option<MonitorFactory> {
    let def = lrp.check_definition.clone()?;
    if def.checks.is_empty() && def.startup_checks.is_empty() && def.readiness_checks.is_empty() {
        return None;
    }
    let start_timeout = Duration::from_millis(if lrp.start_timeout_ms > 0 {
        lrp.start_timeout_ms as u64
    } else {
        diego_model::desired_lrp::DEFAULT_START_TIMEOUT_MS as u64
    });
    let rep = rep.clone();
    let (process_guid, instance_guid) = (lrp.process_guid.clone(), instance_guid.to_string());
    Some(Box::new(
        move |ctx: &StepContext, host_ip: &str, ports: &[diego_garden::PortMapping], on_healthy| {
            let ip: std::net::IpAddr = host_ip.parse().unwrap_or([127, 0, 0, 1].into());
            let map: HashMap<u16, u16> = ports
                .iter()
                .filter_map(|p| {
                    Some((
                        u16::try_from(p.container_port).ok()?,
                        u16::try_from(p.host_port).ok()?,
                    ))
                })
                .collect();
            let resolver: PortResolver =
                Arc::new(move |port| map.get(&port).map(|h| SocketAddr::new(ip, *h)));
            let mut checks = CheckContext::new(resolver, &ctx.streamer);
            if ctx.backend.can_connect() {
                // Straight into the container: exact even where the host port is a proxy.
                let (backend, handle) = (ctx.backend.clone(), ctx.handle.clone());
                checks = checks.with_dialer(Arc::new(move |port| {
                    let (backend, handle) = (backend.clone(), handle.clone());
                    Box::pin(async move { backend.connect(&handle, port).await })
                }));
            }
            let checks = checks
                .with_on_healthy(move || on_healthy())
                .with_on_ready(move |ready| {
                    let (rep, guid, iguid) = (rep.clone(), process_guid.clone(), instance_guid.clone());
                    tokio::spawn(async move {
                        crate::harmonize::set_routable(&rep, &guid, index, &iguid, ready).await
                    });
                });
            health_steps(&def, start_timeout, &checks).unwrap_or_else(|| {
                Box::new(diego_executor::steps::FailStep::new(
                    diego_executor::StepError::Invalid("check definition without checks".into()),
                ))
            })
        },
    ))
}

/// The run request for instance `index` (`instance_guid`) of `lrp`.
pub(crate) fn lrp_run_request(
    rep: &Arc<Rep>,
    lrp: &DesiredLrp,
    index: i32,
    instance_guid: &str,
) -> Option<RunRequest> {
    let action = lrp.action.clone()?;
    let mut vars = env(&lrp.env);
    for (k, v) in [
        ("INSTANCE_INDEX", index.to_string()),
        ("INSTANCE_GUID", instance_guid.to_string()),
        ("CF_INSTANCE_INDEX", index.to_string()),
        ("CF_INSTANCE_GUID", instance_guid.to_string()),
    ] {
        vars.push(format!("{k}={v}"));
    }
    let mut properties = BTreeMap::new();
    properties.insert(prop::KIND.into(), "lrp".into());
    properties.insert(prop::PROCESS_GUID.into(), lrp.process_guid.clone());
    properties.insert(prop::INDEX.into(), index.to_string());
    properties.insert(prop::INSTANCE_GUID.into(), instance_guid.to_string());
    properties.insert(prop::CELL_ID.into(), rep.config.cell_id.clone());
    Some(RunRequest {
        rootfs: lrp.rootfs.clone(),
        env: vars,
        setup: lrp.setup.clone(),
        action,
        ports: lrp.ports.iter().filter_map(|p| u16::try_from(*p).ok()).collect(),
        limits: limits(lrp.memory_mb, lrp.disk_mb, lrp.max_pids, lrp.cpu_weight),
        privileged: lrp.privileged,
        properties,
        log_guid: diego_model::log_guid_or(&lrp.log_guid, &lrp.process_guid).to_string(),
        log_instance_index: u32::try_from(index).ok(),
        log_source: lrp.log_source.clone(),
        monitor: monitor(rep, lrp, index, instance_guid),
    })
}

/// The run request for `task`.
pub(crate) fn task_run_request(rep: &Rep, task: &Task) -> Option<RunRequest> {
    let d = &task.task_definition;
    let action = d.action.clone()?;
    let mut properties = BTreeMap::new();
    properties.insert(prop::KIND.into(), "task".into());
    properties.insert(prop::TASK_GUID.into(), task.task_guid.clone());
    properties.insert(prop::CELL_ID.into(), rep.config.cell_id.clone());
    Some(RunRequest {
        rootfs: d.rootfs.clone(),
        env: env(&d.env),
        setup: None,
        action,
        ports: Vec::new(),
        limits: limits(d.memory_mb, d.disk_mb, d.max_pids, d.cpu_weight),
        privileged: d.privileged,
        properties,
        log_guid: diego_model::log_guid_or(&d.log_guid, &task.task_guid).to_string(),
        log_instance_index: None,
        log_source: d.log_source.clone(),
        monitor: None,
    })
}

async fn start_lrp(rep: Arc<Rep>, instance_guid: String, lrp: LrpWork) {
    let ik = ActualLrpInstanceKey {
        instance_guid: instance_guid.clone(),
        cell_id: rep.config.cell_id.clone(),
    };
    if let Err(e) = rep.bbs.claim_actual_lrp(&lrp.process_guid, lrp.index, &ik).await {
        info!(process_guid = %lrp.process_guid, index = lrp.index, error = %e, "claim refused; giving the reservation back");
        release(&rep, &instance_guid).await;
        return;
    }
    let request = match rep.bbs.desired_lrp(&lrp.process_guid).await {
        Ok(desired) => lrp_run_request(&rep, &desired, lrp.index, &instance_guid)
            .ok_or_else(|| "the desired LRP has no action".to_string()),
        Err(e) => Err(format!("fetching the desired LRP: {e}")),
    };
    let ran = request.and_then(|r| rep.store.run(&instance_guid, r).map_err(|e| e.to_string()));
    if let Err(e) = ran {
        // Claimed but cannot run: crash it (so the restart policy places it again; Diego
        // removes it and lets convergence recreate it, which is not built here yet) and give
        // the space back.
        warn!(process_guid = %lrp.process_guid, index = lrp.index, error = %e, "cannot run a claimed instance");
        let _ = rep
            .bbs
            .crash_actual_lrp(&lrp.process_guid, lrp.index, &ik, "failed to run container")
            .await;
        release(&rep, &instance_guid).await;
    }
}

async fn start_task(rep: Arc<Rep>, task: TaskStartRequest) {
    let guid = task.task_guid.clone();
    match rep.bbs.start_task(&guid, &rep.config.cell_id).await {
        Ok(true) => {}
        Ok(false) => {
            debug!(task_guid = %guid, "the BBS says not to start the task");
            release(&rep, &guid).await;
            return;
        }
        Err(e) => {
            info!(task_guid = %guid, error = %e, "start refused; giving the reservation back");
            release(&rep, &guid).await;
            return;
        }
    }
    if let Some(Workload::Task { started, .. }) = rep.workloads().get_mut(&guid) {
        *started = true;
    }
    let run = match rep.bbs.task(&guid).await {
        Ok(t) => task_run_request(&rep, &t),
        Err(e) => {
            warn!(task_guid = %guid, error = %e, "fetching the task");
            None
        }
    };
    let result = match run {
        Some(request) => rep.store.run(&guid, request).map_err(|e| e.to_string()),
        None => Err("the task has no action".to_string()),
    };
    if let Err(e) = result {
        warn!(task_guid = %guid, error = %e, "running the task's container");
        let req = diego_model::api::CompleteTaskRequest {
            cell_id: rep.config.cell_id.clone(),
            failed: true,
            // Diego's text (diego-spec §1.1).
            failure_reason: "failed to run container".into(),
            result: String::new(),
        };
        let _ = rep.bbs.complete_task(&guid, &req).await;
        release(&rep, &guid).await;
    }
}
