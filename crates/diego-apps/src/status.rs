//! An app's instances (Diego's TPS): its desired LRP joined with the BBS's actual LRPs, one
//! line per index — state, since when, crashes, where — with the indices the BBS has no
//! instance for yet shown as `DOWN`, and an evacuating instance shown beside its replacement.

use diego_model::actual_lrp::{ActualLrp, ActualLrpState, Presence};
use serde::{Deserialize, Serialize};

/// What an instance's container uses, from its cell (`GET /container_metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Average CPU since the container started, in percent of one core.
    pub cpu_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub index: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_guid: String,
    /// `UNCLAIMED`, `CLAIMED`, `RUNNING`, `CRASHED`, or `DOWN` when the BBS has no instance.
    pub state: String,
    /// `EVACUATING` or `SUSPECT` when the instance is one of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    /// Unix nanoseconds of the last change of state (0 when DOWN).
    pub since: i64,
    pub crash_count: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crash_reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cell_id: String,
    /// `host:port` of the app's port on its cell, when running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub placement_error: String,
    /// Memory, disk and CPU, when its cell answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The instances of an LRP of `instances` instances, from its actual LRPs.
pub fn instances<'a>(
    instances: i32,
    actuals: impl IntoIterator<Item = &'a ActualLrp>,
    app_port: u32,
) -> Vec<InstanceStatus> {
    let mut out: Vec<InstanceStatus> = actuals
        .into_iter()
        .filter(|a| a.index < instances || a.presence == Presence::Evacuating)
        .map(|a| InstanceStatus {
            index: a.index,
            state: a.state.as_str().to_string(),
            presence: match a.presence {
                Presence::Ordinary => None,
                Presence::Evacuating => Some("EVACUATING".into()),
                Presence::Suspect => Some("SUSPECT".into()),
            },
            since: a.since,
            crash_count: a.crash_count,
            crash_reason: a.crash_reason.clone(),
            cell_id: a.cell_id.clone(),
            address: match a.state {
                ActualLrpState::Running => a
                    .ports
                    .iter()
                    .find(|p| p.container_port == app_port)
                    .map(|p| format!("{}:{}", a.address, p.host_port))
                    .unwrap_or_default(),
                _ => String::new(),
            },
            placement_error: a.placement_error.clone(),
            instance_guid: a.instance_guid.clone(),
            usage: None,
        })
        .collect();
    for index in 0..instances {
        if !out.iter().any(|s| s.index == index) {
            out.push(InstanceStatus {
                index,
                state: "DOWN".into(),
                presence: None,
                since: 0,
                crash_count: 0,
                crash_reason: String::new(),
                cell_id: String::new(),
                address: String::new(),
                placement_error: String::new(),
                instance_guid: String::new(),
                usage: None,
            });
        }
    }
    out.sort_by_key(|s| (s.index, s.presence.is_some()));
    out
}

/// How many of `statuses` are RUNNING and not evacuating.
pub fn running(statuses: &[InstanceStatus]) -> usize {
    statuses
        .iter()
        .filter(|s| s.state == "RUNNING" && s.presence.as_deref() != Some("EVACUATING"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actual(index: i32, state: ActualLrpState, presence: Presence) -> ActualLrp {
        serde_json::from_value(serde_json::json!({
            "process_guid": "p", "index": index, "domain": "cf-apps", "state": state,
            "presence": presence, "cell_id": "cell-1", "address": "127.0.0.1",
            "ports": [{"container_port": 8080, "host_port": 61001}], "since": 5,
        }))
        .unwrap()
    }

    #[test]
    fn each_index_has_a_line_and_missing_ones_are_down() {
        let got = instances(
            3,
            &[
                actual(0, ActualLrpState::Running, Presence::Ordinary),
                actual(0, ActualLrpState::Running, Presence::Evacuating),
                actual(2, ActualLrpState::Crashed, Presence::Ordinary),
                actual(4, ActualLrpState::Running, Presence::Ordinary),
            ],
            8080,
        );
        let summary: Vec<(i32, &str, Option<&str>, &str)> = got
            .iter()
            .map(|s| {
                (
                    s.index,
                    s.state.as_str(),
                    s.presence.as_deref(),
                    s.address.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, "RUNNING", None, "127.0.0.1:61001"),
                (0, "RUNNING", Some("EVACUATING"), "127.0.0.1:61001"),
                (1, "DOWN", None, ""),
                (2, "CRASHED", None, ""),
            ],
            "index 4 is beyond the 3 desired and is left out"
        );
        assert_eq!(running(&got), 1);
    }
}
