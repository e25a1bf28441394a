//! A container's lifecycle in the executor (diego-spec §7.1), as plain data and a validated
//! transition function; the container store (a later phase) applies it under its lock.
//!
//! reserved → initializing → created → running → completed, and completed from any state
//! (a reservation can be cancelled, a create can fail, an action can exit before it is healthy).

use std::fmt;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerState {
    /// Resources are held in the executor's registry; nothing exists in the backend yet.
    Reserved,
    /// The backend container is being created (downloads, mounts, credentials).
    Initializing,
    /// The backend container exists and its steps have started.
    Created,
    /// The action is running and healthy (or has no health check).
    Running,
    /// Finished; carries a [`RunResult`]. Terminal.
    Completed,
}

impl ContainerState {
    /// Every state, in lifecycle order.
    pub const ALL: [ContainerState; 5] = [
        ContainerState::Reserved,
        ContainerState::Initializing,
        ContainerState::Created,
        ContainerState::Running,
        ContainerState::Completed,
    ];

    /// Diego's lowercase name (`reserved`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Reserved => "reserved",
            ContainerState::Initializing => "initializing",
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Completed => "completed",
        }
    }

    /// Whether `self → next` is a legal step: one step forward, or to completed from any
    /// state but completed itself.
    pub fn allows_transition_to(self, next: ContainerState) -> bool {
        use ContainerState::*;
        matches!(
            (self, next),
            (Reserved, Initializing)
                | (Initializing, Created)
                | (Created, Running)
                | (Reserved | Initializing | Created | Running, Completed)
        )
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a completed container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunResult {
    pub failed: bool,
    /// Why, when `failed` (e.g. `Exit status 1`).
    pub failure_reason: String,
    /// Whether running it again elsewhere may succeed (e.g. the backend was unavailable).
    pub retryable: bool,
    /// Completed because it was asked to stop, not because it exited on its own.
    pub stopped: bool,
}

impl RunResult {
    pub fn succeeded() -> Self {
        Self::default()
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            failed: true,
            failure_reason: reason.into(),
            ..Self::default()
        }
    }

    pub fn stopped() -> Self {
        Self {
            stopped: true,
            ..Self::default()
        }
    }
}

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {guid:?}: cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub guid: String,
    pub from: ContainerState,
    pub to: ContainerState,
}

/// The executor's record of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub guid: String,
    pub state: ContainerState,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Set exactly when `state` is completed.
    pub run_result: Option<RunResult>,
}

impl Container {
    /// A freshly reserved container.
    pub fn reserved(guid: impl Into<String>, memory_mb: u64, disk_mb: u64) -> Self {
        Self {
            guid: guid.into(),
            state: ContainerState::Reserved,
            memory_mb,
            disk_mb,
            run_result: None,
        }
    }

    /// Moves to `next` (not completed: use [`Container::complete`]).
    pub fn transition(&mut self, next: ContainerState) -> Result<(), InvalidTransition> {
        if next == ContainerState::Completed || !self.state.allows_transition_to(next) {
            return Err(self.refuse(next));
        }
        self.state = next;
        Ok(())
    }

    /// Completes the container with `result`; completing twice is refused so the first
    /// result (the real reason) is never overwritten.
    pub fn complete(&mut self, result: RunResult) -> Result<(), InvalidTransition> {
        if !self.state.allows_transition_to(ContainerState::Completed) {
            return Err(self.refuse(ContainerState::Completed));
        }
        self.state = ContainerState::Completed;
        self.run_result = Some(result);
        Ok(())
    }

    fn refuse(&self, to: ContainerState) -> InvalidTransition {
        InvalidTransition {
            guid: self.guid.clone(),
            from: self.state,
            to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::*;

    #[test]
    fn transition_table_over_every_pair() {
        // Rows: from; columns: to, in ALL order (reserved, initializing, created, running, completed).
        let table: [(ContainerState, [bool; 5]); 5] = [
            (Reserved, [false, true, false, false, true]),
            (Initializing, [false, false, true, false, true]),
            (Created, [false, false, false, true, true]),
            (Running, [false, false, false, false, true]),
            (Completed, [false, false, false, false, false]),
        ];
        for (from, row) in table {
            for (to, allowed) in ContainerState::ALL.into_iter().zip(row) {
                assert_eq!(from.allows_transition_to(to), allowed, "{from} -> {to}");
                let mut c = Container::reserved("g", 1, 1);
                c.state = from;
                let res = if to == Completed {
                    c.complete(RunResult::succeeded())
                } else {
                    c.transition(to)
                };
                assert_eq!(res.is_ok(), allowed, "{from} -> {to}: {res:?}");
                assert_eq!(c.state, if allowed { to } else { from });
            }
        }
    }

    #[test]
    fn full_life_keeps_the_first_result() {
        let mut c = Container::reserved("g", 256, 1024);
        for s in [Initializing, Created, Running] {
            c.transition(s).unwrap();
        }
        assert!(
            c.transition(Completed).is_err(),
            "completion goes through complete()"
        );
        c.complete(RunResult::failed("Exit status 1")).unwrap();
        let err = c.complete(RunResult::stopped()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"g\": cannot go from completed to completed"
        );
        let r = c.run_result.unwrap();
        assert!(r.failed && !r.stopped);
        assert_eq!(r.failure_reason, "Exit status 1");
    }
}
