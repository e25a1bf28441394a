//! A BBS with one LRP `web` whose instances the test makes RUNNING at the addresses it
//! chooses, on a cell registered for the test's length (so convergence leaves them).

#![allow(dead_code)]

use diego_client::BbsClient;
use diego_model::api::StartActualLrpRequest;
use diego_model::{Action, ActualLrpInstanceKey, ActualLrpNetInfo, DesiredLrp, PortMapping, RunAction};

/// LRP `web` with `instances`, its port 8080 routed at `hostname`.
pub fn web(instances: i32, hostname: &str) -> DesiredLrp {
    let mut d = DesiredLrp {
        process_guid: "web".into(),
        log_guid: "web-logs".into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        ports: vec![8080],
        action: Some(Action::run(RunAction {
            path: "httpd".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    d.routes.insert(
        "cf-router".into(),
        serde_json::json!([{"hostnames": [hostname], "port": 8080}]),
    );
    d
}

/// Instance `index`'s key: its instance guid is `instance-<index>`.
pub fn key(index: i32) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey::new(format!("instance-{index}"), "cell-1")
}

/// The cell the instances are on, present for the test's length.
pub async fn register_cell(c: &BbsClient) {
    let req = diego_model::RegisterCellRequest {
        cell_presence: diego_model::CellPresence {
            cell_id: "cell-1".into(),
            rep_url: "http://127.0.0.1:9".into(),
            zone: "z1".into(),
            capacity: Default::default(),
            rootfs_providers: vec![],
            placement_tags: vec![],
            optional_placement_tags: vec![],
        },
        ttl_seconds: 600,
    };
    c.register_cell(&req).await.unwrap();
}

/// Claims and starts instance `index` of `web` at 127.0.0.1:`host_port`.
pub async fn run_instance(c: &BbsClient, index: i32, host_port: u32) {
    c.claim_actual_lrp("web", index, &key(index)).await.unwrap();
    let req = StartActualLrpRequest {
        instance_key: key(index),
        net_info: ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port,
                ..Default::default()
            }],
            instance_address: String::new(),
        },
        routable: None,
        availability_zone: "z1".into(),
    };
    c.start_actual_lrp("web", index, &req).await.unwrap();
}
