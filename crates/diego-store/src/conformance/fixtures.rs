//! Sample records for the suite: realistic enough that both halves of a desired LRP and
//! every filterable field carry data.

use diego_model::action::RunAction;
use diego_model::{
    Action, ActualLrp, ActualLrpKey, ActualLrpState, CellCapacity, CellPresence, DesireTaskRequest,
    DesiredLrp, EnvironmentVariable, PortMapping, Presence, Task, TaskDefinition, Timestamp,
};

/// Where every suite clock starts (2023-11-14T22:13:20Z).
pub const START: Timestamp = 1_700_000_000_000_000_000;

fn run(path: &str) -> Action {
    Action::run(RunAction {
        path: path.into(),
        args: vec!["-c".into(), "sleep 1".into()],
        ..Default::default()
    })
}

/// A PENDING task.
pub fn task(task_guid: &str, domain: &str) -> Task {
    let req = DesireTaskRequest {
        task_guid: task_guid.into(),
        domain: domain.into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(run("/bin/sh")),
            memory_mb: 64,
            env: vec![EnvironmentVariable::new("A", "1")],
            ..Default::default()
        },
    };
    Task::desired(req, START, format!("epoch-{task_guid}"))
}

/// A task in `state` on `cell_id`.
pub fn task_on(task_guid: &str, domain: &str, cell_id: &str, state: diego_model::TaskState) -> Task {
    Task {
        cell_id: cell_id.into(),
        state,
        ..task(task_guid, domain)
    }
}

/// A desired LRP whose scheduling and run halves both hold data.
pub fn desired_lrp(process_guid: &str, domain: &str) -> DesiredLrp {
    let mut routes = diego_model::Routes::new();
    routes.insert(
        "cf-router".into(),
        serde_json::json!([{"hostnames": [format!("{process_guid}.example.com")], "port": 8080}]),
    );
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: domain.into(),
        rootfs: "preloaded:busybox".into(),
        instances: 3,
        env: vec![EnvironmentVariable::new("PORT", "8080")],
        action: Some(run("/bin/server")),
        memory_mb: 128,
        disk_mb: 256,
        ports: vec![8080],
        routes,
        log_guid: format!("log-{process_guid}"),
        annotation: "conformance".into(),
        created_at: START,
        modification_tag: diego_model::ModificationTag::new(format!("epoch-{process_guid}")),
        ..Default::default()
    }
}

/// An UNCLAIMED, ORDINARY instance.
pub fn actual_lrp(process_guid: &str, index: i32, domain: &str) -> ActualLrp {
    let key = ActualLrpKey {
        process_guid: process_guid.into(),
        index,
        domain: domain.into(),
    };
    ActualLrp::unclaimed(key, START, format!("epoch-{process_guid}-{index}"))
}

/// An instance RUNNING on `cell_id` with the given presence.
pub fn actual_lrp_on(
    process_guid: &str,
    index: i32,
    domain: &str,
    cell_id: &str,
    presence: Presence,
) -> ActualLrp {
    ActualLrp {
        instance_guid: format!("{process_guid}-{index}-{}", presence.as_str()),
        cell_id: cell_id.into(),
        address: "10.0.0.1".into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 61000,
            ..Default::default()
        }],
        state: ActualLrpState::Running,
        presence,
        ..actual_lrp(process_guid, index, domain)
    }
}

pub fn cell(cell_id: &str) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        rep_url: format!("http://{cell_id}.local:1800"),
        zone: "z1".into(),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 100,
        },
        ..Default::default()
    }
}
