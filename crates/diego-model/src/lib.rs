//! Diego's domain model: plain data and pure functions.
//!
//! This crate must not depend on tokio, axum, a database or any IO. It holds:
//! - records: [`Task`], [`DesiredLrp`] (split into [`DesiredLrpSchedulingInfo`] and
//!   [`DesiredLrpRunInfo`]), [`ActualLrp`], [`CellPresence`], [`Domain`], the [`Action`] tree,
//!   [`CheckDefinition`];
//! - validation that reports every invalid field at once ([`Validator`], [`FieldError`]);
//! - state transitions as pure functions (`task.start(..)`, `actual.claim(..)`), matching
//!   diego-spec §4.1 and §4.3; the store applies them with compare-and-swap;
//! - the crash [`RestartPolicy`] (diego-spec §5);
//! - Diego's error model ([`ApiError`], [`ErrorType`]) and [`Event`]s;
//! - an injectable [`Clock`].

pub mod action;
pub mod actual_lrp;
pub mod api;
pub mod auction;
pub mod cell;
pub mod check;
pub mod clock;
pub mod common;
pub mod desired_lrp;
pub mod error;
pub mod evacuation;
pub mod event;
pub mod locks;
pub mod modification_tag;
pub mod restart;
pub mod routes;
pub mod task;
pub mod validation;

pub use action::{Action, ActionKind, RunAction};
pub use actual_lrp::{
    allows_transition, ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, ActualLrpState,
    CrashOutcome, PortMapping, Presence,
};
pub use cell::{
    AcquireLockRequest, CellCapacity, CellPresence, ContainerMetrics as CellContainerMetrics, Domain,
    LapsedCell, RegisterCellRequest, RootfsProvider, UpsertDomainRequest,
};
pub use check::{Check, CheckDefinition, HttpCheck, TcpCheck};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use common::{log_guid_or, EnvironmentVariable, MetricTagValue, MetricTags, Resources, Routes};
pub use desired_lrp::{DesiredLrp, DesiredLrpRunInfo, DesiredLrpSchedulingInfo, DesiredLrpUpdate};
pub use error::{ApiError, ErrorType, TransitionError};
pub use event::{ActualLrpCrashed, Event};
pub use modification_tag::ModificationTag;
pub use restart::{CrashPolicy, RestartDecision, RestartPolicy};
pub use routes::{CfRoute, CF_ROUTER};
pub use task::{DesireTaskRequest, Task, TaskDefinition, TaskState};
pub use validation::{FieldError, Validator};
