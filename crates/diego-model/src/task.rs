//! Tasks: one-off work that runs at most once (diego-spec §1.1, §4.1).

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::clock::Timestamp;
use crate::common::{
    validate_metric_tags, validate_placement_tags, validate_rootfs, EnvironmentVariable, MetricTags,
};
use crate::error::{ErrorType, TransitionError};
use crate::modification_tag::ModificationTag;
use crate::validation::{Validator, MAX_ANNOTATION_CHARS};

/// Failure reason of a cancelled task, as Diego writes it.
pub const TASK_CANCELLED_REASON: &str = "task was cancelled";
/// Diego's default number of placement retries before a rejected task fails.
pub const DEFAULT_MAX_TASK_RETRIES: u32 = 3;
/// Rejection and failure reasons are truncated to this many bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// A task's result is at most this many bytes.
pub const MAX_RESULT_BYTES: usize = 10 * 1024;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Running,
    Completed,
    Resolving,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [Self::Pending, Self::Running, Self::Completed, Self::Resolving];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Resolving => "RESOLVING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task's `completion_callback_url` receives when it completes (Diego's
/// TaskCallbackResponse).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCallback {
    pub task_guid: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
    pub annotation: String,
    pub created_at: Timestamp,
}

/// What to run: everything about a task that its submitter chooses.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    #[serde(default)]
    pub rootfs: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub memory_mb: i32,
    #[serde(default)]
    pub disk_mb: i32,
    #[serde(default)]
    pub max_pids: i32,
    #[serde(default)]
    pub cpu_weight: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completion_callback_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "MetricTags::is_empty")]
    pub metric_tags: MetricTags,
    /// Placement retries before the task fails; `None` = the BBS default (3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

impl TaskDefinition {
    pub fn validate(&self, v: &mut Validator, path: &str) {
        let f = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        validate_rootfs(v, &f("rootfs"), &self.rootfs);
        match &self.action {
            Some(a) => a.validate(v, &f("action")),
            None => v.error(f("action"), "is required"),
        }
        v.non_negative(&f("memory_mb"), self.memory_mb.into());
        v.non_negative(&f("disk_mb"), self.disk_mb.into());
        v.non_negative(&f("max_pids"), self.max_pids.into());
        if !(0..=100).contains(&self.cpu_weight) {
            v.error(
                f("cpu_weight"),
                format!("must be between 0 and 100 (got {})", self.cpu_weight),
            );
        }
        for (i, e) in self.env.iter().enumerate() {
            e.validate(v, &format!("{}[{i}]", f("env")));
        }
        v.max_chars(&f("annotation"), &self.annotation, MAX_ANNOTATION_CHARS);
        if !self.completion_callback_url.is_empty() {
            v.url(&f("completion_callback_url"), &self.completion_callback_url);
        }
        if !self.result_file.is_empty() && !self.result_file.starts_with('/') {
            v.error(
                f("result_file"),
                format!("must be an absolute path (got {:?})", self.result_file),
            );
        }
        validate_placement_tags(v, &f("placement_tags"), &self.placement_tags);
        validate_metric_tags(&self.metric_tags, v, &f("metric_tags"));
    }
}

/// The body of a desire-task request (Diego's DesireTaskRequest).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesireTaskRequest {
    #[serde(default)]
    pub task_guid: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub task_definition: TaskDefinition,
}

impl DesireTaskRequest {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        v.guid("task_guid", &self.task_guid);
        v.required("domain", &self.domain);
        self.task_definition.validate(&mut v, "task_definition");
        v.into_result()
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_guid: String,
    pub domain: String,
    pub task_definition: TaskDefinition,
    pub state: TaskState,
    #[serde(default)]
    pub cell_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub first_completed_at: Timestamp,
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub failure_reason: String,
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub rejection_count: u32,
    #[serde(default)]
    pub rejection_reason: String,
    /// Why the auction found no cell, cell by cell (with `rejection_reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_explanation: Option<crate::auction::PlacementExplanation>,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn invalid(task: &Task, op: &str) -> TransitionError {
    TransitionError::new(
        ErrorType::InvalidStateTransition,
        format!(
            "task {:?}: cannot {op} a task in state {}",
            task.task_guid, task.state
        ),
    )
}

impl Task {
    /// A new PENDING task. `epoch` seeds its modification tag.
    pub fn desired(req: DesireTaskRequest, now: Timestamp, epoch: String) -> Self {
        Self {
            task_guid: req.task_guid,
            domain: req.domain,
            task_definition: req.task_definition,
            state: TaskState::Pending,
            cell_id: String::new(),
            created_at: now,
            updated_at: now,
            first_completed_at: 0,
            failed: false,
            failure_reason: String::new(),
            result: String::new(),
            rejection_count: 0,
            rejection_reason: String::new(),
            placement_explanation: None,
            modification_tag: ModificationTag::new(epoch),
        }
    }

    /// PENDING → RUNNING on `cell_id`. `Ok(None)` when it already runs there (the cell
    /// should not start it again).
    pub fn start(&self, cell_id: &str, now: Timestamp) -> Result<Option<Task>, TransitionError> {
        match self.state {
            TaskState::Pending => {
                let mut t = self.clone();
                t.state = TaskState::Running;
                t.cell_id = cell_id.to_string();
                t.updated_at = now;
                Ok(Some(t))
            }
            TaskState::Running if self.cell_id == cell_id => Ok(None),
            _ => Err(invalid(self, "start")),
        }
    }

    /// RUNNING on `cell_id` → COMPLETED with the outcome.
    pub fn complete(
        &self,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
        now: Timestamp,
    ) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Running if self.cell_id == cell_id => {
                Ok(self.completed(failed, failure_reason, result, now))
            }
            TaskState::Running => Err(TransitionError::new(
                ErrorType::RunningOnDifferentCell,
                format!(
                    "task {:?} is running on cell {:?}, not {:?}",
                    self.task_guid, self.cell_id, cell_id
                ),
            )),
            _ => Err(invalid(self, "complete")),
        }
    }

    fn completed(&self, failed: bool, failure_reason: &str, result: &str, now: Timestamp) -> Task {
        let mut t = self.clone();
        t.state = TaskState::Completed;
        t.failed = failed;
        t.failure_reason = if failed {
            truncate(failure_reason, MAX_REASON_BYTES)
        } else {
            String::new()
        };
        t.result = if failed {
            String::new()
        } else {
            truncate(result, MAX_RESULT_BYTES)
        };
        t.cell_id.clear();
        t.first_completed_at = now;
        t.updated_at = now;
        t
    }

    /// PENDING|RUNNING → COMPLETED, failed with `reason` (cancel, or a deliberate failure).
    pub fn fail(&self, reason: &str, now: Timestamp) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Pending | TaskState::Running => Ok(self.completed(true, reason, "", now)),
            _ => Err(invalid(self, "fail")),
        }
    }

    pub fn cancel(&self, now: Timestamp) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Pending | TaskState::Running => {
                Ok(self.completed(true, TASK_CANCELLED_REASON, "", now))
            }
            _ => Err(invalid(self, "cancel")),
        }
    }

    /// PENDING|RUNNING → PENDING with one more rejection, or → COMPLETED failed with the
    /// reason when the task had already been rejected `max_retries` times (Diego checks the
    /// pre-increment count, so it fails on rejection number `max_retries + 1`).
    pub fn reject(&self, reason: &str, max_retries: u32, now: Timestamp) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Pending | TaskState::Running => {
                if self.rejection_count >= max_retries {
                    let mut t = self.completed(true, reason, "", now);
                    t.rejection_reason = truncate(reason, MAX_REASON_BYTES);
                    Ok(t)
                } else {
                    let mut t = self.clone();
                    t.state = TaskState::Pending;
                    t.cell_id.clear();
                    t.rejection_count += 1;
                    t.rejection_reason = truncate(reason, MAX_REASON_BYTES);
                    t.updated_at = now;
                    Ok(t)
                }
            }
            _ => Err(invalid(self, "reject")),
        }
    }

    /// COMPLETED → RESOLVING: exactly one resolver wins.
    pub fn resolving(&self, now: Timestamp) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Completed => {
                let mut t = self.clone();
                t.state = TaskState::Resolving;
                t.updated_at = now;
                Ok(t)
            }
            _ => Err(invalid(self, "resolve")),
        }
    }

    /// RESOLVING → COMPLETED (convergence retries a resolution that stalled).
    pub fn demote(&self, now: Timestamp) -> Result<Task, TransitionError> {
        match self.state {
            TaskState::Resolving => {
                let mut t = self.clone();
                t.state = TaskState::Completed;
                t.updated_at = now;
                Ok(t)
            }
            _ => Err(invalid(self, "demote")),
        }
    }

    /// Deletion is allowed only once the task is RESOLVING.
    pub fn check_delete(&self) -> Result<(), TransitionError> {
        match self.state {
            TaskState::Resolving => Ok(()),
            _ => Err(invalid(self, "delete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::RunAction;

    fn task(state: TaskState, cell: &str) -> Task {
        let mut t = Task::desired(
            DesireTaskRequest {
                task_guid: "t1".into(),
                domain: "d".into(),
                task_definition: TaskDefinition {
                    rootfs: "preloaded:busybox".into(),
                    action: Some(Action::run(RunAction {
                        path: "true".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            },
            1,
            "e".into(),
        );
        t.state = state;
        t.cell_id = cell.into();
        t
    }

    /// Every (state, operation) pair, against diego-spec §4.1.
    #[test]
    fn transition_table() {
        use TaskState::*;
        for state in TaskState::ALL {
            let cell = if state == Running { "A" } else { "" };
            let t = task(state, cell);

            let start_a = t.start("A", 2);
            let start_b = t.start("B", 2);
            match state {
                Pending => {
                    assert_eq!(start_a.as_ref().unwrap().as_ref().unwrap().state, Running);
                    assert_eq!(start_a.unwrap().unwrap().cell_id, "A");
                }
                Running => {
                    assert_eq!(start_a.unwrap(), None, "restart on same cell is a no-op");
                    assert_eq!(start_b.unwrap_err().kind, ErrorType::InvalidStateTransition);
                }
                _ => assert_eq!(start_a.unwrap_err().kind, ErrorType::InvalidStateTransition),
            }

            let complete_a = t.complete("A", false, "", "42", 3);
            let complete_b = t.complete("B", false, "", "42", 3);
            match state {
                Running => {
                    let c = complete_a.unwrap();
                    assert_eq!(
                        (c.state, c.result.as_str(), c.cell_id.as_str()),
                        (Completed, "42", "")
                    );
                    assert_eq!(c.first_completed_at, 3);
                    assert_eq!(complete_b.unwrap_err().kind, ErrorType::RunningOnDifferentCell);
                }
                _ => assert_eq!(complete_a.unwrap_err().kind, ErrorType::InvalidStateTransition),
            }

            let cancel = t.cancel(4);
            match state {
                Pending | Running => {
                    let c = cancel.unwrap();
                    assert_eq!((c.state, c.failed), (Completed, true));
                    assert_eq!(c.failure_reason, TASK_CANCELLED_REASON);
                }
                _ => assert_eq!(cancel.unwrap_err().kind, ErrorType::InvalidStateTransition),
            }

            let reject = t.reject("no room", 3, 5);
            match state {
                Pending | Running => {
                    let r = reject.unwrap();
                    assert_eq!((r.state, r.rejection_count, r.cell_id.as_str()), (Pending, 1, ""));
                }
                _ => assert_eq!(reject.unwrap_err().kind, ErrorType::InvalidStateTransition),
            }

            let resolving = t.resolving(6);
            match state {
                Completed => assert_eq!(resolving.unwrap().state, Resolving),
                _ => assert_eq!(resolving.unwrap_err().kind, ErrorType::InvalidStateTransition),
            }

            let demote = t.demote(7);
            match state {
                Resolving => assert_eq!(demote.unwrap().state, Completed),
                _ => assert!(demote.is_err()),
            }

            assert_eq!(t.check_delete().is_ok(), state == Resolving);
        }
    }

    #[test]
    fn reject_fails_after_max_retries() {
        let mut t = task(TaskState::Pending, "");
        for n in 1..=3 {
            t = t.reject("insufficient resources", 3, n).unwrap();
            assert_eq!((t.state, t.rejection_count), (TaskState::Pending, n as u32));
        }
        let t = t.reject("insufficient resources", 3, 9).unwrap();
        assert_eq!(t.state, TaskState::Completed);
        assert!(t.failed);
        assert_eq!(t.failure_reason, "insufficient resources");
    }

    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let t = task(TaskState::Running, "A");
        let long = "é".repeat(1000);
        let c = t.complete("A", true, &long, "", 1).unwrap();
        assert!(c.failure_reason.len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn state_names() {
        assert_eq!(
            serde_json::to_string(&TaskState::Resolving).unwrap(),
            "\"RESOLVING\""
        );
        assert_eq!(TaskState::parse("running"), Some(TaskState::Running));
    }
}
