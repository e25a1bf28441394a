//! The SQL of a record transaction, run by the writer thread inside the batch transaction.

use diego_model::{ModificationTag, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{desired_from_halves, kind_of, Encoded, PreparedWrite};
use super::schema::{db_error, presence_rank};
use crate::{Record, RecordKey, StoreError};

/// What a write needs to know of the record it replaces.
struct Stored {
    tag: ModificationTag,
    /// The whole record's JSON: the change feed's `before`.
    json: String,
    /// The indexed columns as stored.
    indexed: Indexed,
}

/// The values of a record's indexed columns (empty where its table has no such index).
/// Most updates (claims, starts, state changes) leave them alone; SQLite rewrites an index
/// only when the UPDATE's SET clause names one of its columns, so such updates skip them.
#[derive(PartialEq, Eq)]
struct Indexed {
    domain: String,
    cell_id: String,
    state: String,
}

impl Indexed {
    fn of(record: &Record) -> Indexed {
        let (domain, cell_id, state) = match record {
            Record::Task(t) => (&t.domain, t.cell_id.as_str(), t.state.as_str()),
            Record::ActualLrp(a) => (&a.domain, a.cell_id.as_str(), ""),
            Record::DesiredLrp(d) => (&d.domain, "", ""),
            Record::CellPresence(_) => unreachable!("{IN_TXN}"),
        };
        Indexed {
            domain: domain.clone(),
            cell_id: cell_id.to_string(),
            state: state.to_string(),
        }
    }
}

fn tag(r: &rusqlite::Row<'_>, first: usize) -> Result<ModificationTag, rusqlite::Error> {
    Ok(ModificationTag {
        epoch: r.get(first)?,
        index: r.get(first + 1)?,
    })
}

/// Cell presences never reach the SQL of transactions: `Txn::check_writes` refuses them.
const IN_TXN: &str = "a cell presence in a transaction (Txn::check_writes refuses it)";

fn lookup(conn: &Connection, key: &RecordKey) -> Result<Option<Stored>, StoreError> {
    let q = |e| db_error(&format!("reading {key}"), e);
    match key {
        RecordKey::CellPresence { .. } => Err(StoreError::Invalid(IN_TXN.into())),
        RecordKey::Task { task_guid } => conn
            .prepare_cached(
                "SELECT tag_epoch, tag_index, data, domain, cell_id, state FROM tasks WHERE task_guid = ?1",
            )
            .map_err(q)?
            .query_row([task_guid], |r| {
                let indexed = Indexed {
                    domain: r.get(3)?,
                    cell_id: r.get(4)?,
                    state: r.get(5)?,
                };
                Ok(Stored {
                    tag: tag(r, 0)?,
                    json: r.get(2)?,
                    indexed,
                })
            })
            .optional()
            .map_err(q),
        RecordKey::ActualLrp {
            process_guid,
            index,
            presence,
        } => conn
            .prepare_cached(
                "SELECT tag_epoch, tag_index, data, domain, cell_id FROM actual_lrps \
                 WHERE process_guid = ?1 AND idx = ?2 AND presence = ?3",
            )
            .map_err(q)?
            .query_row(params![process_guid, index, presence_rank(*presence)], |r| {
                let indexed = Indexed {
                    domain: r.get(3)?,
                    cell_id: r.get(4)?,
                    state: String::new(),
                };
                Ok(Stored {
                    tag: tag(r, 0)?,
                    json: r.get(2)?,
                    indexed,
                })
            })
            .optional()
            .map_err(q),
        RecordKey::DesiredLrp { process_guid } => {
            let row: Option<(ModificationTag, String, String, String)> = conn
                .prepare_cached(
                    "SELECT tag_epoch, tag_index, scheduling_info, run_info, domain FROM desired_lrps \
                     WHERE process_guid = ?1",
                )
                .map_err(q)?
                .query_row([process_guid], |r| {
                    Ok((tag(r, 0)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()
                .map_err(q)?;
            // Desired LRPs are stored in halves; the change feed wants the whole record.
            // They change rarely, so reassembling here costs little.
            row.map(|(tag, s, r, domain)| {
                let whole = desired_from_halves(&s, &r)?;
                let json = serde_json::to_string(&whole)
                    .map_err(|e| StoreError::unavailable_from(format!("sqlite: re-encoding {key}"), e))?;
                Ok(Stored {
                    tag,
                    json,
                    indexed: Indexed {
                        domain,
                        cell_id: String::new(),
                        state: String::new(),
                    },
                })
            })
            .transpose()
        }
    }
}

/// Checks write `i`'s precondition; returns the record it replaces.
fn check(conn: &Connection, i: usize, w: &PreparedWrite) -> Result<Option<Stored>, StoreError> {
    let stored = lookup(conn, &w.key)?;
    match (&w.expect, stored) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(StoreError::Exists {
            write: i,
            key: w.key.clone(),
        }),
        (Some(_), None) => Err(StoreError::NotFound {
            write: i,
            key: w.key.clone(),
        }),
        (Some(expected), Some(stored)) if *expected != stored.tag => Err(StoreError::Conflict {
            write: i,
            key: w.key.clone(),
            expected: expected.clone(),
            found: stored.tag,
        }),
        (Some(_), Some(stored)) => Ok(Some(stored)),
    }
}

/// Why a transaction was not applied.
pub(super) enum Failure {
    /// Nothing of it was written (a precondition failed, a read failed, or its writes were
    /// rolled back to its savepoint). The rest of the batch stands.
    Refused(StoreError),
    /// A statement failed after others of this transaction had run, outside a savepoint: the
    /// batch transaction holds part of it and must be rolled back.
    Broken(StoreError),
}

/// Applies one transaction. Preconditions are all checked before anything is modified (keys
/// are distinct, so each depends only on the state before the transaction), so only an SQL
/// error can stop it half-way. With `isolate`, the modifications run inside a savepoint and
/// such an error rolls back just this transaction; without, the caller must roll back the
/// whole batch (savepoints copy every page they touch that the batch already changed, which
/// costs the common case of nothing failing).
///
/// Advances `head` by one per write on success; leaves it unchanged on failure.
pub(super) fn commit(
    conn: &Connection,
    writes: &[PreparedWrite],
    head: &mut u64,
    at: Timestamp,
    isolate: bool,
) -> Result<(), Failure> {
    let befores = writes
        .iter()
        .enumerate()
        .map(|(i, w)| check(conn, i, w))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Refused)?;

    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    if isolate {
        run("SAVEPOINT txn").map_err(|e| Failure::Refused(db_error("savepoint", e)))?;
    }
    let mut next = *head;
    let result = writes.iter().zip(&befores).try_for_each(|(w, before)| {
        next += 1;
        write_row(conn, w, before.as_ref().map(|b| &b.indexed))?;
        append_change(
            conn,
            next,
            at,
            kind_of(&w.key),
            before.as_ref().map(|b| b.json.as_str()),
            w.encoded.as_ref().map(Encoded::full),
        )
    });
    match (result, isolate) {
        (Ok(()), false) => {
            *head = next;
            Ok(())
        }
        (Ok(()), true) => {
            run("RELEASE txn").map_err(|e| Failure::Broken(db_error("releasing savepoint", e)))?;
            *head = next;
            Ok(())
        }
        (Err(e), false) => Err(Failure::Broken(db_error("applying transaction", e))),
        (Err(e), true) => {
            // If SQLite already rolled the whole transaction back (IO error, disk full) these
            // fail too; the writer notices via autocommit and fails the batch.
            let _ = conn.execute_batch("ROLLBACK TO txn; RELEASE txn");
            Err(Failure::Refused(db_error("applying transaction", e)))
        }
    }
}

/// Inserts, updates or deletes the row of `w`. `stored` is the replaced record's indexed
/// columns (`None`: there is no row yet).
fn write_row(conn: &Connection, w: &PreparedWrite, stored: Option<&Indexed>) -> Result<(), rusqlite::Error> {
    let Some(record) = &w.after else {
        return delete_row(conn, &w.key);
    };
    let tag = record.modification_tag();
    let same_indexed = stored.is_some_and(|s| *s == Indexed::of(record));
    match (record, &w.encoded) {
        (Record::Task(t), Some(Encoded::Task(json))) => {
            if same_indexed {
                conn.prepare_cached(
                    "UPDATE tasks SET tag_epoch = ?2, tag_index = ?3, data = ?4 WHERE task_guid = ?1",
                )?
                .execute(params![t.task_guid, tag.epoch, tag.index, json])?;
                return Ok(());
            }
            let sql = if stored.is_some() {
                "UPDATE tasks SET domain = ?2, cell_id = ?3, state = ?4, tag_epoch = ?5, tag_index = ?6, \
                 data = ?7 WHERE task_guid = ?1"
            } else {
                "INSERT INTO tasks (task_guid, domain, cell_id, state, tag_epoch, tag_index, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            };
            conn.prepare_cached(sql)?.execute(params![
                t.task_guid,
                t.domain,
                t.cell_id,
                t.state.as_str(),
                tag.epoch,
                tag.index,
                json
            ])?;
        }
        (Record::ActualLrp(a), Some(Encoded::ActualLrp(json))) => {
            let pk = params![a.process_guid, a.index, presence_rank(a.presence)];
            if same_indexed {
                let sql = "UPDATE actual_lrps SET state = ?4, tag_epoch = ?5, tag_index = ?6, data = ?7 \
                           WHERE process_guid = ?1 AND idx = ?2 AND presence = ?3";
                conn.prepare_cached(sql)?.execute(params![
                    pk[0],
                    pk[1],
                    pk[2],
                    a.state.as_str(),
                    tag.epoch,
                    tag.index,
                    json
                ])?;
                return Ok(());
            }
            let sql = if stored.is_some() {
                "UPDATE actual_lrps SET domain = ?4, cell_id = ?5, state = ?6, tag_epoch = ?7, tag_index = ?8, \
                 data = ?9 WHERE process_guid = ?1 AND idx = ?2 AND presence = ?3"
            } else {
                "INSERT INTO actual_lrps \
                 (process_guid, idx, presence, domain, cell_id, state, tag_epoch, tag_index, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            };
            conn.prepare_cached(sql)?.execute(params![
                pk[0],
                pk[1],
                pk[2],
                a.domain,
                a.cell_id,
                a.state.as_str(),
                tag.epoch,
                tag.index,
                json
            ])?;
        }
        (Record::DesiredLrp(d), Some(Encoded::DesiredLrp { scheduling, run, .. })) => {
            // The domain index is the only one; leave it alone when the domain did not change.
            let sql = match (stored.is_some(), same_indexed) {
                (true, true) => {
                    "UPDATE desired_lrps SET tag_epoch = ?3, tag_index = ?4, scheduling_info = ?5, \
                     run_info = ?6 WHERE process_guid = ?1 AND domain = ?2"
                }
                (true, false) => {
                    "UPDATE desired_lrps SET domain = ?2, tag_epoch = ?3, tag_index = ?4, scheduling_info = ?5, \
                     run_info = ?6 WHERE process_guid = ?1"
                }
                (false, _) => {
                    "INSERT INTO desired_lrps (process_guid, domain, tag_epoch, tag_index, scheduling_info, \
                     run_info) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                }
            };
            conn.prepare_cached(sql)?.execute(params![
                d.process_guid,
                d.domain,
                tag.epoch,
                tag.index,
                scheduling,
                run
            ])?;
        }
        // codec::prepare encodes each record as its own kind; refuse rather than panic the
        // writer thread should that ever break.
        _ => {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                "record and its encoding differ in kind".into(),
            ))
        }
    }
    Ok(())
}

fn delete_row(conn: &Connection, key: &RecordKey) -> Result<(), rusqlite::Error> {
    match key {
        RecordKey::CellPresence { .. } => unreachable!("{IN_TXN}"),
        RecordKey::Task { task_guid } => {
            conn.prepare_cached("DELETE FROM tasks WHERE task_guid = ?1")?
                .execute([task_guid])?;
        }
        RecordKey::DesiredLrp { process_guid } => {
            conn.prepare_cached("DELETE FROM desired_lrps WHERE process_guid = ?1")?
                .execute([process_guid])?;
        }
        RecordKey::ActualLrp {
            process_guid,
            index,
            presence,
        } => {
            conn.prepare_cached(
                "DELETE FROM actual_lrps WHERE process_guid = ?1 AND idx = ?2 AND presence = ?3",
            )?
            .execute(params![process_guid, index, presence_rank(*presence)])?;
        }
    }
    Ok(())
}

/// Appends one change to the feed (documents as JSON, `None` for absent).
pub(super) fn append_change(
    conn: &Connection,
    revision: u64,
    at: Timestamp,
    kind: i64,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO changes (revision, at, kind, before, after) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![revision as i64, at, kind, before, after])?;
    Ok(())
}

/// Persists the change-feed head and drops changes beyond the retention window. Once per
/// batch, not per write: both touch few rows and the head only matters at commit.
pub(super) fn finish_batch(conn: &Connection, head: u64, retention: u64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'head'")
        .and_then(|mut s| s.execute([head as i64]))
        .map_err(|e| db_error("saving change-feed head", e))?;
    if head > retention {
        conn.prepare_cached("DELETE FROM changes WHERE revision <= ?1")
            .and_then(|mut s| s.execute([(head - retention) as i64]))
            .map_err(|e| db_error("pruning change feed", e))?;
    }
    Ok(())
}
