//! Records, preconditions, filters and errors of the store interface.

use diego_model::{
    ActualLrp, ActualLrpState, CellPresence, DesiredLrp, ModificationTag, Presence, Task, TaskState,
    Timestamp,
};
use serde::{Deserialize, Serialize};

/// A stored record of a kind the change feed carries. Tasks and LRPs are written in
/// transactions (`commit`); cell presences only through `set_presence` / `remove_presence`, and
/// appear in the feed when one registers, changes, is removed or expires (not on renewals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
// Boxing the desired LRP would change the type every caller matches on; records are moved
// once per write, so the size costs a memcpy, not an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Task(Task),
    DesiredLrp(DesiredLrp),
    ActualLrp(ActualLrp),
    CellPresence(CellPresence),
}

/// The tag of records that have none (cell presences).
static NO_TAG: ModificationTag = ModificationTag {
    epoch: String::new(),
    index: 0,
};

impl Record {
    /// The record's compare-and-swap tag; cell presences have none (an empty tag).
    pub fn modification_tag(&self) -> &ModificationTag {
        match self {
            Record::Task(t) => &t.modification_tag,
            Record::DesiredLrp(d) => &d.modification_tag,
            Record::ActualLrp(a) => &a.modification_tag,
            Record::CellPresence(_) => &NO_TAG,
        }
    }

    pub fn as_cell_presence(&self) -> Option<&CellPresence> {
        match self {
            Record::CellPresence(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_task(&self) -> Option<&Task> {
        match self {
            Record::Task(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_desired_lrp(&self) -> Option<&DesiredLrp> {
        match self {
            Record::DesiredLrp(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_actual_lrp(&self) -> Option<&ActualLrp> {
        match self {
            Record::ActualLrp(a) => Some(a),
            _ => None,
        }
    }

    /// The same record carrying `tag`.
    pub fn with_modification_tag(mut self, tag: ModificationTag) -> Self {
        match &mut self {
            Record::Task(t) => t.modification_tag = tag,
            Record::DesiredLrp(d) => d.modification_tag = tag,
            Record::ActualLrp(a) => a.modification_tag = tag,
            Record::CellPresence(_) => {}
        }
        self
    }
}

/// Identifies one stored record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    Task {
        task_guid: String,
    },
    DesiredLrp {
        process_guid: String,
    },
    ActualLrp {
        process_guid: String,
        index: i32,
        presence: Presence,
    },
    CellPresence {
        cell_id: String,
    },
}

impl Record {
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Task(t) => RecordKey::Task {
                task_guid: t.task_guid.clone(),
            },
            Record::DesiredLrp(d) => RecordKey::DesiredLrp {
                process_guid: d.process_guid.clone(),
            },
            Record::ActualLrp(a) => RecordKey::ActualLrp {
                process_guid: a.process_guid.clone(),
                index: a.index,
                presence: a.presence,
            },
            Record::CellPresence(p) => RecordKey::CellPresence {
                cell_id: p.cell_id.clone(),
            },
        }
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Task { task_guid } => write!(f, "task {task_guid:?}"),
            RecordKey::DesiredLrp { process_guid } => write!(f, "desired LRP {process_guid:?}"),
            RecordKey::ActualLrp {
                process_guid,
                index,
                presence,
            } => {
                write!(
                    f,
                    "actual LRP {process_guid:?} index {index} ({})",
                    presence.as_str()
                )
            }
            RecordKey::CellPresence { cell_id } => write!(f, "cell presence {cell_id:?}"),
        }
    }
}

/// The precondition of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The record must not exist (an insert). It is stored with the tag it carries.
    Absent,
    /// The stored record must carry exactly this tag. It is stored with `tag.next()`.
    Tag(ModificationTag),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // see Record
pub enum Write {
    Put {
        record: Record,
        expect: Expect,
    },
    /// Deletes the record if it carries `expect`.
    Delete {
        key: RecordKey,
        expect: ModificationTag,
    },
}

impl Write {
    /// Insert a new record (fails with `Exists` if one is there).
    pub fn insert(record: Record) -> Self {
        Write::Put {
            record,
            expect: Expect::Absent,
        }
    }

    /// Replace a record, compare-and-swap on the tag the new record carries (the tag that was
    /// read). The store writes it with the next tag.
    pub fn update(record: Record) -> Self {
        let expect = Expect::Tag(record.modification_tag().clone());
        Write::Put { record, expect }
    }

    /// Delete `record`, compare-and-swap on its tag.
    pub fn delete(record: &Record) -> Self {
        Write::Delete {
            key: record.key(),
            expect: record.modification_tag().clone(),
        }
    }

    pub fn key(&self) -> RecordKey {
        match self {
            Write::Put { record, .. } => record.key(),
            Write::Delete { key, .. } => key.clone(),
        }
    }

    /// Checks this write's precondition (it is write `i` of its transaction) against the
    /// record stored under its key: every backend refuses a write with the same error.
    pub fn check(&self, i: usize, stored: Option<&Record>) -> Result<(), StoreError> {
        self.check_tag(i, stored.map(Record::modification_tag))
    }

    /// [`Write::check`] given only the stored record's tag (`None`: no record).
    pub fn check_tag(&self, i: usize, stored: Option<&ModificationTag>) -> Result<(), StoreError> {
        let expected: &ModificationTag = match self {
            Write::Put {
                expect: Expect::Absent,
                ..
            } => {
                return match stored {
                    Some(_) => Err(StoreError::Exists {
                        write: i,
                        key: self.key(),
                    }),
                    None => Ok(()),
                };
            }
            Write::Put {
                expect: Expect::Tag(t),
                ..
            }
            | Write::Delete { expect: t, .. } => t,
        };
        match stored {
            None => Err(StoreError::NotFound {
                write: i,
                key: self.key(),
            }),
            Some(found) if found != expected => Err(StoreError::Conflict {
                write: i,
                key: self.key(),
                expected: expected.clone(),
                found: found.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The record as the store keeps it once this write applies: as given for an insert,
    /// with `tag.next()` for a compare-and-swap update, `None` for a delete. Every backend
    /// stores exactly this, so the caller can compute it before the write is applied.
    pub fn into_stored(self) -> Option<Record> {
        match self {
            Write::Put {
                record,
                expect: Expect::Absent,
            } => Some(record),
            Write::Put {
                record,
                expect: Expect::Tag(tag),
            } => Some(record.with_modification_tag(tag.next())),
            Write::Delete { .. } => None,
        }
    }
}

/// A lock that must still be held, by this owner and unexpired, when a transaction applies:
/// the fencing that keeps a deposed holder (one that lost its lock while it was paused or cut
/// off) from writing. Checked atomically with the writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: String,
    pub owner: String,
}

/// An atomic group of writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    pub writes: Vec<Write>,
    /// If set, the transaction applies only while this lock is held ([`StoreError::LockLost`]).
    pub fence: Option<Fence>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn one(write: Write) -> Self {
        Self {
            writes: vec![write],
            fence: None,
        }
    }

    pub fn of(writes: Vec<Write>) -> Self {
        Self { writes, fence: None }
    }

    /// The same transaction, applied only while `fence` (if any) is held.
    pub fn fenced(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    pub fn push(&mut self, write: Write) -> &mut Self {
        self.writes.push(write);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Rejects a transaction that writes one record twice: its outcome would depend on the
    /// order the backend applies writes in, and preconditions are checked against the state
    /// before the transaction, so the second write could never see the first.
    /// Refuses a transaction no backend may apply: two writes of one key, or a write of a
    /// cell presence (presences are leases, written with `set_presence`).
    pub fn check_writes(&self) -> Result<(), StoreError> {
        let is_presence = |w: &Write| match w {
            Write::Put { record, .. } => matches!(record, Record::CellPresence(_)),
            Write::Delete { key, .. } => matches!(key, RecordKey::CellPresence { .. }),
        };
        if let Some(i) = self.writes.iter().position(is_presence) {
            return Err(StoreError::Invalid(format!(
                "write {i} targets {}: cell presences are set and removed with set_presence / \
                 remove_presence, not in transactions",
                self.writes[i].key()
            )));
        }
        if self.writes.len() < 2 {
            return Ok(());
        }
        let mut seen = std::collections::HashSet::with_capacity(self.writes.len());
        for (i, w) in self.writes.iter().enumerate() {
            if !seen.insert(w.key()) {
                return Err(StoreError::Invalid(format!(
                    "write {i} targets {} which an earlier write of the same transaction already writes; \
                     combine them into one write",
                    w.key()
                )));
            }
        }
        Ok(())
    }
}

/// The outcome of a committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The stored record for each `Put` (with its new tag), `None` for each `Delete`, in
    /// write order.
    pub records: Vec<Option<Record>>,
    /// Revision of the transaction's last change in the change feed.
    pub revision: u64,
}

/// One entry of the change feed: a record created (`before` is `None`), changed, or removed
/// (`after` is `None`). Each change's revision is greater than every earlier change's;
/// backends may leave gaps (etcd counts writes the feed does not show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    /// When the change was committed (Unix ns).
    pub at: Timestamp,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Where the retained feed starts: a reader positioned at `oldest - 1` or later has
    /// missed nothing; one positioned before it has missed pruned changes and must resync.
    /// (Revisions only increase; they need not be consecutive, so `oldest` need not be the
    /// revision of a retained change.)
    pub oldest: u64,
    /// The newest committed revision (0 when nothing was ever written).
    pub head: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    pub state: Option<TaskState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredLrpFilter {
    pub domain: Option<String>,
    /// Empty = all.
    pub process_guids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualLrpFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    pub process_guid: Option<String>,
    pub index: Option<i32>,
    pub state: Option<ActualLrpState>,
    pub presence: Option<Presence>,
}

impl TaskFilter {
    pub fn matches(&self, t: &Task) -> bool {
        self.domain.as_ref().is_none_or(|d| *d == t.domain)
            && self.cell_id.as_ref().is_none_or(|c| *c == t.cell_id)
            && self.state.is_none_or(|s| s == t.state)
    }
}

impl DesiredLrpFilter {
    pub fn matches(&self, d: &DesiredLrp) -> bool {
        self.domain.as_ref().is_none_or(|x| *x == d.domain)
            && (self.process_guids.is_empty() || self.process_guids.contains(&d.process_guid))
    }
}

impl ActualLrpFilter {
    pub fn matches(&self, a: &ActualLrp) -> bool {
        self.domain.as_ref().is_none_or(|d| *d == a.domain)
            && self.cell_id.as_ref().is_none_or(|c| *c == a.cell_id)
            && self.process_guid.as_ref().is_none_or(|p| *p == a.process_guid)
            && self.index.is_none_or(|i| i == a.index)
            && self.state.is_none_or(|s| s == a.state)
            && self.presence.is_none_or(|p| p == a.presence)
    }
}

/// A registered cell presence and when it lapses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub cell_presence: CellPresence,
    /// Unix ns.
    pub expires_at: Timestamp,
}

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub key: String,
    pub owner: String,
    pub value: String,
    /// Unix ns.
    pub expires_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A `Put` with `Expect::Absent` found the record already there.
    #[error("{key} already exists")]
    Exists { write: usize, key: RecordKey },
    /// A write's precondition named a record that is not there.
    #[error("{key} not found")]
    NotFound { write: usize, key: RecordKey },
    /// The stored record's tag differs from the expected one: someone else wrote first.
    #[error("{key} was modified concurrently (expected tag {expected:?}, found {found:?})")]
    Conflict {
        write: usize,
        key: RecordKey,
        expected: ModificationTag,
        found: ModificationTag,
    },
    /// Another owner holds the lock.
    #[error("lock {key:?} is held by {owner:?}")]
    LockCollision { key: String, owner: String },
    /// The transaction's [`Fence`] no longer holds: the lock lapsed or another owner has it.
    /// Nothing was written; the writer has been deposed and must stop acting as the holder.
    #[error("lock {key:?} is no longer held by {owner:?}{}", holder.as_ref().map(|h| format!(" (held by {h:?})")).unwrap_or_default())]
    LockLost {
        key: String,
        owner: String,
        /// The current holder, if any.
        holder: Option<String>,
    },
    /// The request itself is malformed (e.g. two writes to one record in a transaction).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend cannot serve (IO error, closed, corrupt data).
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    pub fn unavailable_from(
        message: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(guid: &str, index: u32) -> Record {
        let req = diego_model::DesireTaskRequest {
            task_guid: guid.into(),
            domain: "d".into(),
            ..Default::default()
        };
        let mut t = Task::desired(req, 0, "e".into());
        t.modification_tag.index = index;
        Record::Task(t)
    }

    #[test]
    fn stored_form_follows_the_precondition() {
        assert_eq!(Write::insert(task("t", 3)).into_stored(), Some(task("t", 3)));
        let cas = Write::Put {
            record: task("t", 9),
            expect: Expect::Tag(ModificationTag {
                epoch: "e".into(),
                index: 3,
            }),
        };
        assert_eq!(
            cas.into_stored(),
            Some(task("t", 4)),
            "the expected tag, not the carried one, is bumped"
        );
        assert_eq!(Write::delete(&task("t", 3)).into_stored(), None);
    }

    #[test]
    fn duplicate_keys_are_invalid() {
        let ok = Txn {
            fence: None,
            writes: vec![Write::insert(task("a", 0)), Write::insert(task("b", 0))],
        };
        assert!(ok.check_writes().is_ok());
        let dup = Txn {
            fence: None,
            writes: vec![Write::insert(task("a", 0)), Write::delete(&task("a", 0))],
        };
        assert!(matches!(dup.check_writes(), Err(StoreError::Invalid(m)) if m.contains("write 1")));
    }
}

/// How many records of each kind there are, by state: what metrics need, without reading the
/// records themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub tasks: std::collections::BTreeMap<TaskState, u64>,
    pub desired_lrps: u64,
    pub actual_lrps: std::collections::BTreeMap<(ActualLrpState, Presence), u64>,
}
