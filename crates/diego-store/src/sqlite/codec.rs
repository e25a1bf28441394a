//! Records to and from their row form (JSON columns).
//!
//! Encoding happens on the caller's task, before a write reaches the single writer thread:
//! the writer is the bottleneck under load, so it should only run SQL.

use diego_model::{
    ActualLrp, CellPresence, DesiredLrp, DesiredLrpRunInfo, DesiredLrpSchedulingInfo, ModificationTag, Task,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::schema::{KIND_ACTUAL_LRP, KIND_CELL_PRESENCE, KIND_DESIRED_LRP, KIND_TASK};
use crate::{Expect, Record, RecordKey, StoreError, Write};

/// A write ready for the writer thread: its precondition, the record as it will be stored,
/// and that record's JSON.
pub(super) struct PreparedWrite {
    pub key: RecordKey,
    /// `None`: the record must be absent. `Some(tag)`: the stored record must carry `tag`.
    pub expect: Option<ModificationTag>,
    /// The stored form (`None` for a delete); handed back to the caller in `Committed`.
    pub after: Option<Record>,
    pub encoded: Option<Encoded>,
}

/// JSON of a record to store. Tasks and actual LRPs are one document; a desired LRP is its
/// two halves plus the whole (for the change feed).
pub(super) enum Encoded {
    Task(String),
    DesiredLrp {
        scheduling: String,
        run: String,
        full: String,
    },
    ActualLrp(String),
}

impl Encoded {
    /// The whole record's JSON, as the change feed stores it.
    pub fn full(&self) -> &str {
        match self {
            Encoded::Task(s) | Encoded::ActualLrp(s) => s,
            Encoded::DesiredLrp { full, .. } => full,
        }
    }
}

pub(super) fn kind_of(key: &RecordKey) -> i64 {
    match key {
        RecordKey::Task { .. } => KIND_TASK,
        RecordKey::DesiredLrp { .. } => KIND_DESIRED_LRP,
        RecordKey::ActualLrp { .. } => KIND_ACTUAL_LRP,
        RecordKey::CellPresence { .. } => KIND_CELL_PRESENCE,
    }
}

fn to_json<T: Serialize>(key: &RecordKey, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("{key} cannot be encoded as JSON: {e}")))
}

pub(super) fn prepare(write: Write) -> Result<PreparedWrite, StoreError> {
    let key = write.key();
    let expect = match &write {
        Write::Put {
            expect: Expect::Absent,
            ..
        } => None,
        Write::Put {
            expect: Expect::Tag(t),
            ..
        }
        | Write::Delete { expect: t, .. } => Some(t.clone()),
    };
    let after = write.into_stored();
    let encoded = match &after {
        None => None,
        Some(Record::Task(t)) => Some(Encoded::Task(to_json(&key, t)?)),
        Some(Record::ActualLrp(a)) => Some(Encoded::ActualLrp(to_json(&key, a)?)),
        Some(Record::DesiredLrp(d)) => Some(Encoded::DesiredLrp {
            scheduling: to_json(&key, &d.scheduling_info())?,
            run: to_json(&key, &d.run_info())?,
            full: to_json(&key, d)?,
        }),
        // `Txn::check_writes` refuses these before they get here.
        Some(Record::CellPresence(_)) => {
            return Err(StoreError::Invalid(format!(
                "{key} cannot be written in a transaction"
            )))
        }
    };
    Ok(PreparedWrite {
        key,
        expect,
        after,
        encoded,
    })
}

pub(super) fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::unavailable_from(format!("sqlite: corrupt {what} row"), e))
}

pub(super) fn desired_from_halves(scheduling: &str, run: &str) -> Result<DesiredLrp, StoreError> {
    let s: DesiredLrpSchedulingInfo = from_json("desired LRP scheduling info", scheduling)?;
    let r: DesiredLrpRunInfo = from_json("desired LRP run info", run)?;
    Ok(DesiredLrp::from_parts(s, r))
}

/// Decodes a change-feed document of the given kind.
pub(super) fn record_from_json(kind: i64, json: &str) -> Result<Record, StoreError> {
    match kind {
        KIND_TASK => Ok(Record::Task(from_json::<Task>("change (task)", json)?)),
        KIND_DESIRED_LRP => Ok(Record::DesiredLrp(from_json::<DesiredLrp>(
            "change (desired LRP)",
            json,
        )?)),
        KIND_ACTUAL_LRP => Ok(Record::ActualLrp(from_json::<ActualLrp>(
            "change (actual LRP)",
            json,
        )?)),
        KIND_CELL_PRESENCE => Ok(Record::CellPresence(from_json::<CellPresence>(
            "change (cell presence)",
            json,
        )?)),
        other => Err(StoreError::unavailable(format!(
            "sqlite: change row of unknown kind {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::{ActualLrpKey, DesiredLrp};

    #[test]
    fn update_is_stored_with_next_tag() {
        let mut d = DesiredLrp {
            process_guid: "p".into(),
            domain: "d".into(),
            instances: 2,
            ..Default::default()
        };
        d.modification_tag = ModificationTag {
            epoch: "e".into(),
            index: 4,
        };
        let p = prepare(Write::update(Record::DesiredLrp(d))).unwrap();
        assert_eq!(
            p.expect,
            Some(ModificationTag {
                epoch: "e".into(),
                index: 4
            })
        );
        let stored = p.after.unwrap();
        assert_eq!(stored.modification_tag().index, 5);
        let Some(Encoded::DesiredLrp {
            scheduling,
            run,
            full,
        }) = p.encoded
        else {
            panic!("not a desired LRP")
        };
        assert_eq!(
            desired_from_halves(&scheduling, &run).unwrap(),
            *stored.as_desired_lrp().unwrap()
        );
        assert_eq!(record_from_json(KIND_DESIRED_LRP, &full).unwrap(), stored);
    }

    #[test]
    fn delete_has_no_row() {
        let a = ActualLrp::unclaimed(
            ActualLrpKey {
                process_guid: "p".into(),
                index: 0,
                domain: "d".into(),
            },
            1,
            "e".into(),
        );
        let p = prepare(Write::delete(&Record::ActualLrp(a))).unwrap();
        assert!(p.after.is_none() && p.encoded.is_none());
        assert_eq!(kind_of(&p.key), KIND_ACTUAL_LRP);
    }
}
