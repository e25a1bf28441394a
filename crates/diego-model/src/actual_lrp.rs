//! Actual LRPs: one record per running (or wanted) instance (diego-spec §1.3, §4.3).
//!
//! The transition rules of diego-spec §4.3 live in [`allows_transition`]; every lifecycle
//! operation (`claim`, `start`, `crash`, `fail`, `unclaim`) is a pure function from the
//! stored record to the next one. The store then writes it with a compare-and-swap on the
//! modification tag, so two cells racing for one index cannot both win.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::common::MetricTags;
use crate::error::{ErrorType, TransitionError};
use crate::modification_tag::ModificationTag;
use crate::restart::{RestartDecision, RestartPolicy};
use crate::task::MAX_REASON_BYTES;
use crate::validation::{join, Validator};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActualLrpState {
    Unclaimed,
    Claimed,
    Running,
    Crashed,
}

impl ActualLrpState {
    pub const ALL: [ActualLrpState; 4] = [Self::Unclaimed, Self::Claimed, Self::Running, Self::Crashed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unclaimed => "UNCLAIMED",
            Self::Claimed => "CLAIMED",
            Self::Running => "RUNNING",
            Self::Crashed => "CRASHED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for ActualLrpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    #[default]
    Ordinary,
    Evacuating,
    Suspect,
}

impl Presence {
    pub const ALL: [Presence; 3] = [Self::Ordinary, Self::Evacuating, Self::Suspect];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ordinary => "ORDINARY",
            Self::Evacuating => "EVACUATING",
            Self::Suspect => "SUSPECT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

/// Which process and index an instance is.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActualLrpKey {
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
}

/// Which container on which cell an instance is.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActualLrpInstanceKey {
    #[serde(default)]
    pub instance_guid: String,
    #[serde(default)]
    pub cell_id: String,
}

impl ActualLrpInstanceKey {
    pub fn new(instance_guid: impl Into<String>, cell_id: impl Into<String>) -> Self {
        Self {
            instance_guid: instance_guid.into(),
            cell_id: cell_id.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instance_guid.is_empty() && self.cell_id.is_empty()
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        v.required(&join(path, "instance_guid"), &self.instance_guid);
        v.required(&join(path, "cell_id"), &self.cell_id);
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub container_tls_proxy_port: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_tls_proxy_port: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a running instance can be reached.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrpNetInfo {
    /// The cell's host address.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The container's own address, when it has one reachable from other cells.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_address: String,
}

impl ActualLrpNetInfo {
    pub fn validate(&self, v: &mut Validator, path: &str) {
        v.required(&join(path, "address"), &self.address);
        for (i, p) in self.ports.iter().enumerate() {
            v.port(
                &format!("{}[{i}].container_port", join(path, "ports")),
                p.container_port,
            );
            v.port(&format!("{}[{i}].host_port", join(path, "ports")), p.host_port);
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActualLrp {
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
    #[serde(default)]
    pub instance_guid: String,
    #[serde(default)]
    pub cell_id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_address: String,
    pub state: ActualLrpState,
    #[serde(default)]
    pub crash_count: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crash_reason: String,
    /// When the record last changed state (Unix ns).
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub placement_error: String,
    /// Why the auction found no cell, cell by cell (with `placement_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_explanation: Option<crate::auction::PlacementExplanation>,
    #[serde(default)]
    pub presence: Presence,
    /// `None` until readiness is known; an instance without readiness checks is routable
    /// once RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routable: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "MetricTags::is_empty")]
    pub metric_tags: MetricTags,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

/// The result of a crash: the record to store and whether to place the instance again now.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashOutcome {
    pub lrp: ActualLrp,
    pub restart_now: bool,
}

/// diego-spec §4.3: may a record in `from` (holding `stored`) move to `to` when the caller
/// presents `caller`? "Same key" requires a non-empty key equal to the stored one.
pub fn allows_transition(
    from: ActualLrpState,
    to: ActualLrpState,
    stored: &ActualLrpInstanceKey,
    caller: &ActualLrpInstanceKey,
) -> bool {
    use ActualLrpState::*;
    let same = !caller.is_empty() && caller == stored;
    let empty = caller.is_empty();
    match (from, to) {
        (Unclaimed, Unclaimed | Claimed | Running) => true,
        (Unclaimed, Crashed) => false,
        (Claimed, Running) => true,
        (Claimed | Running | Crashed, Unclaimed) => empty,
        (Claimed | Running | Crashed, Claimed) => same,
        (Running | Crashed, Running) => same,
        (Claimed | Running, Crashed) => same,
        (Crashed, Crashed) => false,
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl ActualLrp {
    /// A fresh UNCLAIMED, ORDINARY instance.
    pub fn unclaimed(key: ActualLrpKey, now: Timestamp, epoch: String) -> Self {
        Self {
            process_guid: key.process_guid,
            index: key.index,
            domain: key.domain,
            instance_guid: String::new(),
            cell_id: String::new(),
            address: String::new(),
            ports: Vec::new(),
            instance_address: String::new(),
            state: ActualLrpState::Unclaimed,
            crash_count: 0,
            crash_reason: String::new(),
            since: now,
            placement_error: String::new(),
            placement_explanation: None,
            presence: Presence::Ordinary,
            routable: None,
            availability_zone: String::new(),
            metric_tags: MetricTags::new(),
            modification_tag: ModificationTag::new(epoch),
        }
    }

    pub fn key(&self) -> ActualLrpKey {
        ActualLrpKey {
            process_guid: self.process_guid.clone(),
            index: self.index,
            domain: self.domain.clone(),
        }
    }

    pub fn instance_key(&self) -> ActualLrpInstanceKey {
        ActualLrpInstanceKey {
            instance_guid: self.instance_guid.clone(),
            cell_id: self.cell_id.clone(),
        }
    }

    pub fn net_info(&self) -> ActualLrpNetInfo {
        ActualLrpNetInfo {
            address: self.address.clone(),
            ports: self.ports.clone(),
            instance_address: self.instance_address.clone(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "actual LRP {:?} index {} ({})",
            self.process_guid, self.index, self.state
        )
    }

    fn set_instance(&mut self, ik: &ActualLrpInstanceKey) {
        self.instance_guid = ik.instance_guid.clone();
        self.cell_id = ik.cell_id.clone();
    }

    fn clear_instance(&mut self) {
        self.instance_guid.clear();
        self.cell_id.clear();
        self.address.clear();
        self.ports.clear();
        self.instance_address.clear();
        self.routable = None;
        self.availability_zone.clear();
    }

    fn set_state(&mut self, state: ActualLrpState, now: Timestamp) {
        if self.state != state {
            self.since = now;
        }
        self.state = state;
    }

    /// → CLAIMED by `ik`. `Ok(None)` if already claimed by `ik` (idempotent).
    pub fn claim(
        &self,
        ik: &ActualLrpInstanceKey,
        now: Timestamp,
    ) -> Result<Option<ActualLrp>, TransitionError> {
        if self.state == ActualLrpState::Claimed && self.instance_key() == *ik {
            return Ok(None);
        }
        if !allows_transition(self.state, ActualLrpState::Claimed, &self.instance_key(), ik) {
            return Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeClaimed,
                format!("{} cannot be claimed by cell {:?}", self.describe(), ik.cell_id),
            ));
        }
        let mut a = self.clone();
        a.clear_instance();
        a.set_instance(ik);
        a.placement_error.clear();
        a.placement_explanation = None;
        a.set_state(ActualLrpState::Claimed, now);
        Ok(Some(a))
    }

    /// → RUNNING by `ik` at `net`. `Ok(None)` if nothing would change.
    pub fn start(
        &self,
        ik: &ActualLrpInstanceKey,
        net: &ActualLrpNetInfo,
        routable: Option<bool>,
        availability_zone: &str,
        now: Timestamp,
    ) -> Result<Option<ActualLrp>, TransitionError> {
        if !allows_transition(self.state, ActualLrpState::Running, &self.instance_key(), ik) {
            return Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeStarted,
                format!("{} cannot be started by cell {:?}", self.describe(), ik.cell_id),
            ));
        }
        let mut a = self.clone();
        a.set_instance(ik);
        a.address = net.address.clone();
        a.ports = net.ports.clone();
        a.instance_address = net.instance_address.clone();
        a.routable = routable;
        a.availability_zone = availability_zone.to_string();
        a.placement_error.clear();
        a.placement_explanation = None;
        a.set_state(ActualLrpState::Running, now);
        if a == *self {
            return Ok(None);
        }
        Ok(Some(a))
    }

    /// CLAIMED|RUNNING (same key) → CRASHED, or straight back to UNCLAIMED when the restart
    /// policy says to restart at once.
    pub fn crash(
        &self,
        ik: &ActualLrpInstanceKey,
        reason: &str,
        policy: &RestartPolicy,
        now: Timestamp,
    ) -> Result<CrashOutcome, TransitionError> {
        if !allows_transition(self.state, ActualLrpState::Crashed, &self.instance_key(), ik) {
            return Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeCrashed,
                format!("{} cannot be crashed by cell {:?}", self.describe(), ik.cell_id),
            ));
        }
        let mut a = self.clone();
        a.crash_count = RestartPolicy::next_crash_count(
            self.crash_count,
            self.state == ActualLrpState::Running,
            self.since,
            now,
        );
        a.crash_reason = truncate(reason, MAX_REASON_BYTES);
        a.clear_instance();
        let restart_now = policy.decide(a.crash_count) == RestartDecision::Immediately;
        a.state = if restart_now {
            ActualLrpState::Unclaimed
        } else {
            ActualLrpState::Crashed
        };
        a.since = now;
        Ok(CrashOutcome { lrp: a, restart_now })
    }

    /// UNCLAIMED → UNCLAIMED with a placement error (the auction could not place it).
    pub fn fail(&self, placement_error: &str, now: Timestamp) -> Result<ActualLrp, TransitionError> {
        if self.state != ActualLrpState::Unclaimed {
            return Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeFailed,
                format!(
                    "{} cannot be failed: only UNCLAIMED instances take a placement error",
                    self.describe()
                ),
            ));
        }
        let mut a = self.clone();
        a.placement_error = truncate(placement_error, MAX_REASON_BYTES);
        a.since = now;
        Ok(a)
    }

    /// → UNCLAIMED (placed again from scratch; the crash count is kept).
    pub fn unclaim(&self, now: Timestamp) -> Result<Option<ActualLrp>, TransitionError> {
        if self.state == ActualLrpState::Unclaimed {
            return Ok(None);
        }
        if !allows_transition(
            self.state,
            ActualLrpState::Unclaimed,
            &self.instance_key(),
            &Default::default(),
        ) {
            return Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeUnclaimed,
                format!("{} cannot be unclaimed", self.describe()),
            ));
        }
        let mut a = self.clone();
        a.clear_instance();
        a.set_state(ActualLrpState::Unclaimed, now);
        Ok(Some(a))
    }

    /// A removal that names an instance key must name the one stored.
    pub fn check_remove(&self, ik: Option<&ActualLrpInstanceKey>) -> Result<(), TransitionError> {
        match ik {
            Some(ik) if !ik.is_empty() && *ik != self.instance_key() => Err(TransitionError::new(
                ErrorType::ActualLrpCannotBeRemoved,
                format!(
                    "{} is held by instance {:?} on cell {:?}, not {:?} on {:?}",
                    self.describe(),
                    self.instance_guid,
                    self.cell_id,
                    ik.instance_guid,
                    ik.cell_id
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The per-state invariants of diego-spec §1.3.
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        v.guid("process_guid", &self.process_guid);
        v.required("domain", &self.domain);
        v.non_negative("index", self.index.into());
        let ik = self.instance_key();
        match self.state {
            ActualLrpState::Unclaimed => {
                v.check(ik.is_empty(), "instance_guid", || {
                    "must be empty when UNCLAIMED".into()
                });
                v.check(self.address.is_empty(), "address", || {
                    "must be empty when UNCLAIMED".into()
                });
                v.check(self.presence == Presence::Ordinary, "presence", || {
                    "must be ORDINARY when UNCLAIMED".into()
                });
            }
            ActualLrpState::Claimed => {
                ik.validate(&mut v, "");
                v.check(self.address.is_empty(), "address", || {
                    "must be empty when CLAIMED".into()
                });
                v.check(self.placement_error.is_empty(), "placement_error", || {
                    "must be empty when CLAIMED".into()
                });
            }
            ActualLrpState::Running => {
                ik.validate(&mut v, "");
                self.net_info().validate(&mut v, "");
                v.check(self.placement_error.is_empty(), "placement_error", || {
                    "must be empty when RUNNING".into()
                });
            }
            ActualLrpState::Crashed => {
                v.check(ik.is_empty(), "instance_guid", || {
                    "must be empty when CRASHED".into()
                });
                v.check(self.address.is_empty(), "address", || {
                    "must be empty when CRASHED".into()
                });
                v.check(self.placement_error.is_empty(), "placement_error", || {
                    "must be empty when CRASHED".into()
                });
            }
        }
        v.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActualLrpState::*;

    fn key() -> ActualLrpKey {
        ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "apps".into(),
        }
    }

    fn a_key() -> ActualLrpInstanceKey {
        ActualLrpInstanceKey::new("ig-a", "cell-a")
    }

    fn b_key() -> ActualLrpInstanceKey {
        ActualLrpInstanceKey::new("ig-b", "cell-b")
    }

    fn net() -> ActualLrpNetInfo {
        ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61000,
                ..Default::default()
            }],
            instance_address: String::new(),
        }
    }

    /// A record in `state`; CLAIMED and RUNNING ones are held by cell A.
    fn in_state(state: ActualLrpState) -> ActualLrp {
        let mut a = ActualLrp::unclaimed(key(), 10, "e".into());
        match state {
            Unclaimed => {}
            Claimed => a = a.claim(&a_key(), 20).unwrap().unwrap(),
            Running => a = a.start(&a_key(), &net(), Some(true), "z1", 20).unwrap().unwrap(),
            Crashed => {
                a = a.start(&a_key(), &net(), None, "z1", 20).unwrap().unwrap();
                a.crash_count = 3;
                a = a
                    .crash(&a_key(), "boom", &RestartPolicy::default(), 30)
                    .unwrap()
                    .lrp;
                assert_eq!(a.state, Crashed);
            }
        }
        a.validate().unwrap();
        a
    }

    /// The whole of diego-spec §4.3: every (from, to) pair with the same, another and an
    /// empty caller key.
    #[test]
    fn allows_transition_matches_the_table() {
        let empty = ActualLrpInstanceKey::default();
        // (from, to, same key, different key, empty key)
        let table = [
            (Unclaimed, Unclaimed, true, true, true),
            (Unclaimed, Claimed, true, true, true),
            (Unclaimed, Running, true, true, true),
            (Unclaimed, Crashed, false, false, false),
            (Claimed, Unclaimed, false, false, true),
            (Claimed, Claimed, true, false, false),
            (Claimed, Running, true, true, true),
            (Claimed, Crashed, true, false, false),
            (Running, Unclaimed, false, false, true),
            (Running, Claimed, true, false, false),
            (Running, Running, true, false, false),
            (Running, Crashed, true, false, false),
            (Crashed, Unclaimed, false, false, true),
            (Crashed, Claimed, true, false, false),
            (Crashed, Running, true, false, false),
            (Crashed, Crashed, false, false, false),
        ];
        assert_eq!(table.len(), 16);
        for (from, to, same, other, empty_ok) in table {
            let stored = a_key();
            assert_eq!(
                allows_transition(from, to, &stored, &a_key()),
                same,
                "{from}->{to} same key"
            );
            assert_eq!(
                allows_transition(from, to, &stored, &b_key()),
                other,
                "{from}->{to} other key"
            );
            assert_eq!(
                allows_transition(from, to, &stored, &empty),
                empty_ok,
                "{from}->{to} empty key"
            );
        }
    }

    #[test]
    fn claim_from_every_state() {
        for state in ActualLrpState::ALL {
            let a = in_state(state);
            let by_a = a.claim(&a_key(), 100);
            let by_b = a.claim(&b_key(), 100);
            match state {
                Unclaimed => {
                    let c = by_a.unwrap().unwrap();
                    assert_eq!((c.state, c.cell_id.as_str(), c.since), (Claimed, "cell-a", 100));
                    assert_eq!(by_b.unwrap().unwrap().cell_id, "cell-b");
                }
                Claimed => {
                    assert_eq!(by_a.unwrap(), None, "re-claim by the holder is a no-op");
                    assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeClaimed);
                }
                Running => {
                    let c = by_a.unwrap().unwrap();
                    assert_eq!((c.state, c.address.as_str()), (Claimed, ""));
                    assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeClaimed);
                }
                Crashed => {
                    assert_eq!(by_a.unwrap_err().kind, ErrorType::ActualLrpCannotBeClaimed);
                    assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeClaimed);
                }
            }
        }
    }

    #[test]
    fn start_from_every_state() {
        for state in ActualLrpState::ALL {
            let a = in_state(state);
            let by_a = a.start(&a_key(), &net(), Some(true), "z1", 100);
            let by_b = a.start(&b_key(), &net(), Some(true), "z2", 100);
            match state {
                Unclaimed | Claimed => {
                    let s = by_a.unwrap().unwrap();
                    assert_eq!((s.state, s.address.as_str()), (Running, "127.0.0.1"));
                    s.validate().unwrap();
                    // A CLAIMED instance may be taken over by whichever cell actually runs it.
                    assert_eq!(by_b.unwrap().unwrap().cell_id, "cell-b");
                }
                Running => {
                    assert_eq!(by_a.unwrap(), None, "same start twice is a no-op");
                    assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeStarted);
                    let not_ready = a
                        .start(&a_key(), &net(), Some(false), "z1", 200)
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        (not_ready.routable, not_ready.since),
                        (Some(false), 20),
                        "since moves only on state change"
                    );
                }
                Crashed => {
                    assert_eq!(by_a.unwrap_err().kind, ErrorType::ActualLrpCannotBeStarted);
                    assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeStarted);
                }
            }
        }
    }

    #[test]
    fn crash_from_every_state() {
        let policy = RestartPolicy::default();
        for state in ActualLrpState::ALL {
            let a = in_state(state);
            let by_a = a.crash(&a_key(), "Exit status 1", &policy, 100);
            let by_b = a.crash(&b_key(), "Exit status 1", &policy, 100);
            assert_eq!(by_b.unwrap_err().kind, ErrorType::ActualLrpCannotBeCrashed);
            match state {
                Claimed | Running => {
                    let o = by_a.unwrap();
                    assert!(o.restart_now, "first crash restarts at once");
                    assert_eq!((o.lrp.state, o.lrp.crash_count), (Unclaimed, 1));
                    assert_eq!(o.lrp.crash_reason, "Exit status 1");
                    o.lrp.validate().unwrap();
                }
                Unclaimed | Crashed => {
                    assert_eq!(by_a.unwrap_err().kind, ErrorType::ActualLrpCannotBeCrashed)
                }
            }
        }
    }

    #[test]
    fn crash_applies_the_restart_policy() {
        let policy = RestartPolicy::default();
        let mut a = in_state(Unclaimed);
        let mut states = Vec::new();
        for n in 1..=5 {
            a = a.start(&a_key(), &net(), None, "", n * 10).unwrap().unwrap_or(a);
            let o = a.crash(&a_key(), "boom", &policy, n * 10 + 1).unwrap();
            states.push((o.lrp.crash_count, o.lrp.state));
            a = o.lrp;
            if a.state == Crashed {
                break;
            }
        }
        assert_eq!(
            states,
            [(1, Unclaimed), (2, Unclaimed), (3, Unclaimed), (4, Crashed)]
        );
    }

    #[test]
    fn fail_and_unclaim_from_every_state() {
        for state in ActualLrpState::ALL {
            let a = in_state(state);
            let failed = a.fail("insufficient resources", 100);
            match state {
                Unclaimed => assert_eq!(failed.unwrap().placement_error, "insufficient resources"),
                _ => assert_eq!(failed.unwrap_err().kind, ErrorType::ActualLrpCannotBeFailed),
            }
            let unclaimed = a.unclaim(100).unwrap();
            match state {
                Unclaimed => assert_eq!(unclaimed, None),
                _ => {
                    let u = unclaimed.unwrap();
                    assert_eq!((u.state, u.cell_id.as_str()), (Unclaimed, ""));
                    u.validate().unwrap();
                }
            }
        }
        let claimed = in_state(Claimed).claim(&a_key(), 1).unwrap();
        assert_eq!(claimed, None);
        let c = in_state(Unclaimed)
            .fail("x", 5)
            .unwrap()
            .claim(&a_key(), 6)
            .unwrap()
            .unwrap();
        assert!(c.placement_error.is_empty(), "claim clears the placement error");
    }

    #[test]
    fn remove_checks_the_instance_key() {
        let a = in_state(Running);
        assert!(a.check_remove(None).is_ok());
        assert!(a.check_remove(Some(&a_key())).is_ok());
        assert_eq!(
            a.check_remove(Some(&b_key())).unwrap_err().kind,
            ErrorType::ActualLrpCannotBeRemoved
        );
    }

    #[test]
    fn wire_names() {
        let a = in_state(Running);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["state"], "RUNNING");
        assert_eq!(v["presence"], "ORDINARY");
        assert_eq!(v["ports"][0]["host_port"], 61000);
        let back: ActualLrp = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }
}
