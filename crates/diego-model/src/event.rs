//! Events the BBS streams: Diego's event type names, with before/after on changes.

use serde::{Deserialize, Serialize};

use crate::actual_lrp::{ActualLrp, ActualLrpInstanceKey, ActualLrpKey};
use crate::clock::Timestamp;
use crate::desired_lrp::DesiredLrp;
use crate::task::Task;

/// An event and its payload. The SSE `event:` field carries [`Event::name`]; `data:` carries
/// the payload as JSON.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    DesiredLrpCreated {
        desired_lrp: Box<DesiredLrp>,
    },
    DesiredLrpChanged {
        before: Box<DesiredLrp>,
        after: Box<DesiredLrp>,
    },
    DesiredLrpRemoved {
        desired_lrp: Box<DesiredLrp>,
    },
    ActualLrpCreated {
        actual_lrp: Box<ActualLrp>,
    },
    ActualLrpChanged {
        before: Box<ActualLrp>,
        after: Box<ActualLrp>,
    },
    ActualLrpRemoved {
        actual_lrp: Box<ActualLrp>,
    },
    ActualLrpCrashed(Box<ActualLrpCrashed>),
    TaskCreated {
        task: Box<Task>,
    },
    TaskChanged {
        before: Box<Task>,
        after: Box<Task>,
    },
    TaskRemoved {
        task: Box<Task>,
    },
    /// The subscriber missed events (it fell behind the retained history, or asked to
    /// resume from a point no longer kept): it must relist and continue from this event.
    Resync {
        reason: String,
    },
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActualLrpCrashed {
    #[serde(flatten)]
    pub key: ActualLrpKey,
    #[serde(flatten)]
    pub instance_key: ActualLrpInstanceKey,
    pub crash_count: i32,
    pub crash_reason: String,
    pub since: Timestamp,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::DesiredLrpCreated { .. } => "desired_lrp_created",
            Event::DesiredLrpChanged { .. } => "desired_lrp_changed",
            Event::DesiredLrpRemoved { .. } => "desired_lrp_removed",
            Event::ActualLrpCreated { .. } => "actual_lrp_created",
            Event::ActualLrpChanged { .. } => "actual_lrp_changed",
            Event::ActualLrpRemoved { .. } => "actual_lrp_removed",
            Event::ActualLrpCrashed(_) => "actual_lrp_crashed",
            Event::TaskCreated { .. } => "task_created",
            Event::TaskChanged { .. } => "task_changed",
            Event::TaskRemoved { .. } => "task_removed",
            Event::Resync { .. } => "resync",
        }
    }

    pub fn is_task_event(&self) -> bool {
        matches!(
            self,
            Event::TaskCreated { .. } | Event::TaskChanged { .. } | Event::TaskRemoved { .. }
        )
    }
}
