//! Request and response bodies of the BBS API that are not records themselves.
//!
//! Records (`Task`, `DesiredLrp`, `ActualLrp`, …) travel as themselves; these are the
//! bodies of lifecycle verbs. Route paths live in `diego-client` so servers and clients
//! share one definition.

use serde::{Deserialize, Serialize};

use crate::actual_lrp::{ActualLrpInstanceKey, ActualLrpNetInfo};
use crate::validation::{FieldError, Validator};

/// `POST /v1/tasks/{task_guid}/start`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTaskRequest {
    pub cell_id: String,
}

/// Whether the cell should run the task (false when it already runs it).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTaskResponse {
    pub should_start: bool,
}

/// `POST /v1/tasks/{task_guid}/complete`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteTaskRequest {
    pub cell_id: String,
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub failure_reason: String,
    #[serde(default)]
    pub result: String,
}

/// `POST /v1/tasks/{task_guid}/reject`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectTaskRequest {
    pub rejection_reason: String,
    /// The auction's account of why no cell fit, if it rejected the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_explanation: Option<crate::auction::PlacementExplanation>,
}

/// `POST /v1/tasks/{task_guid}/fail`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailTaskRequest {
    pub failure_reason: String,
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/claim`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimActualLrpRequest {
    pub instance_key: ActualLrpInstanceKey,
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/start`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartActualLrpRequest {
    pub instance_key: ActualLrpInstanceKey,
    pub net_info: ActualLrpNetInfo,
    /// `None` when the instance has no readiness checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routable: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/crash`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashActualLrpRequest {
    pub instance_key: ActualLrpInstanceKey,
    pub error_message: String,
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/fail`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailActualLrpRequest {
    pub error_message: String,
    /// The auction's account of why no cell fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_explanation: Option<crate::auction::PlacementExplanation>,
}

/// `POST /v1/actual_lrps/placement_failures`: what one auction round could not place, grouped
/// by process and reason, so a round that places nothing costs one request, not one per instance.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementFailuresRequest {
    pub lrps: Vec<LrpPlacementFailure>,
}

/// Instances of one LRP the auction could not place, for one reason.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpPlacementFailure {
    pub process_guid: String,
    pub indices: Vec<u32>,
    pub placement_error: String,
    /// The auction's account of why no cell fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_explanation: Option<crate::auction::PlacementExplanation>,
}

/// What became of a [`PlacementFailuresRequest`], per instance named in it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementFailuresResponse {
    /// UNCLAIMED instances that now carry the error.
    pub recorded: u64,
    /// Instances that carried this very error and explanation already (nothing written).
    pub unchanged: u64,
    /// Instances gone, claimed, beyond the LRP's count, or changed while the report was
    /// written (the next round reports them again if they are still unplaced).
    pub skipped: u64,
}

impl PlacementFailuresRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        for (i, f) in self.lrps.iter().enumerate() {
            v.guid(&format!("lrps[{i}].process_guid"), &f.process_guid);
            v.required(&format!("lrps[{i}].placement_error"), &f.placement_error);
        }
        v.into_result()
    }
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/remove`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveActualLrpRequest {
    /// When set, the stored instance must be this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_key: Option<ActualLrpInstanceKey>,
}

/// `POST /v1/actual_lrps/{process_guid}/{index}/evacuate_running`: an evacuating cell's RUNNING
/// instance, where it can be reached now.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuateRunningActualLrpRequest {
    pub instance_key: ActualLrpInstanceKey,
    pub net_info: ActualLrpNetInfo,
}

/// `POST …/evacuate_claimed`, `…/evacuate_stopped`, `…/remove_evacuating`: which instance of
/// an evacuating cell.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuateActualLrpRequest {
    pub instance_key: ActualLrpInstanceKey,
}

/// The answer to every evacuation report: whether the cell keeps the container running (and
/// reports again later) or stops and deletes it now.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationResponse {
    pub keep_container: bool,
}

/// `GET /v1/ping`
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    pub available: bool,
    /// `active` (holds the BBS lock: runs convergence, start requests and task callbacks) or
    /// `passive` (serves the API and stands by to take over when the lock lapses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// This BBS's name in the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The BBS holding the lock now, and its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder_url: Option<String>,
    /// Why this BBS last stopped being active, if it ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_down: Option<String>,
}

impl StartTaskRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        v.required("cell_id", &self.cell_id);
        v.into_result()
    }
}

impl CompleteTaskRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        v.required("cell_id", &self.cell_id);
        if self.failed {
            v.required("failure_reason", &self.failure_reason);
        }
        v.into_result()
    }
}

impl ClaimActualLrpRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        self.instance_key.validate(&mut v, "instance_key");
        v.into_result()
    }
}

impl StartActualLrpRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        self.instance_key.validate(&mut v, "instance_key");
        self.net_info.validate(&mut v, "net_info");
        v.into_result()
    }
}

impl EvacuateRunningActualLrpRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        self.instance_key.validate(&mut v, "instance_key");
        self.net_info.validate(&mut v, "net_info");
        v.into_result()
    }
}

impl EvacuateActualLrpRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        self.instance_key.validate(&mut v, "instance_key");
        v.into_result()
    }
}

impl CrashActualLrpRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::new();
        self.instance_key.validate(&mut v, "instance_key");
        v.into_result()
    }
}
