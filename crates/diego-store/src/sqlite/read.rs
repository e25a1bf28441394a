//! Queries of the read side. Each runs on one read-only connection of the pool.
//!
//! Listings build their WHERE clause from the filter's set fields, so SQLite can use the
//! cell_id, domain and state indexes; each combination is its own cached statement. JSON is
//! decoded straight from the row's borrowed text, without copying it into a String first.

use diego_model::{
    ActualLrp, ActualLrpState, CellPresence, DesiredLrp, DesiredLrpSchedulingInfo, Domain, Presence, Task,
    TaskState, Timestamp,
};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;

use super::codec::{desired_from_halves, from_json, record_from_json};
use super::decode::decode_rows;
use super::schema::{db_error, presence_rank, read_head};
use crate::ttl::is_live;
use crate::{
    ActualLrpFilter, Change, ChangePage, Counts, DesiredLrpFilter, LockRecord, PresenceRecord, StoreError,
    TaskFilter,
};

fn not_text(i: usize, e: rusqlite::types::FromSqlError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, rusqlite::Error> {
    row.get_ref(i)?.as_str().map_err(|e| not_text(i, e))
}

fn text_or_null<'r>(row: &'r Row<'_>, i: usize) -> Result<Option<&'r str>, rusqlite::Error> {
    row.get_ref(i)?.as_str_or_null().map_err(|e| not_text(i, e))
}

fn json_col<T: DeserializeOwned>(row: &Row<'_>, i: usize, what: &str) -> Result<T, StoreError> {
    let s = text(row, i).map_err(|e| db_error(&format!("reading {what}"), e))?;
    from_json(what, s)
}

/// Runs `sql` and decodes every row with `decode`.
fn collect<T>(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let q = |e| db_error(&format!("listing {what}"), e);
    let mut stmt = conn.prepare_cached(sql).map_err(q)?;
    let mut rows = stmt.query(params).map_err(q)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(q)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs `sql` and decodes its first column as JSON; large results on two threads.
fn collect_json<T: DeserializeOwned + Send>(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<T>, StoreError> {
    let q = |e| db_error(&format!("listing {what}s"), e);
    let mut stmt = conn.prepare_cached(sql).map_err(q)?;
    let mut rows = stmt.query(params).map_err(q)?;
    decode_rows(&mut rows, 0, |s| from_json(what, s))
}

/// Accumulates `column = ?n` conditions for the set fields of a filter.
struct Where<'a> {
    sql: String,
    params: Vec<&'a dyn ToSql>,
}

impl<'a> Where<'a> {
    fn new(select: &str) -> Self {
        Where {
            sql: select.to_string(),
            params: Vec::new(),
        }
    }

    fn cond(&mut self, condition: &str, value: &'a dyn ToSql) {
        self.sql.push_str(if self.params.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        self.params.push(value);
        self.sql
            .push_str(&condition.replace('?', &format!("?{}", self.params.len())));
    }

    fn eq(&mut self, column: &str, value: Option<&'a dyn ToSql>) {
        if let Some(v) = value {
            self.cond(&format!("{column} = ?"), v);
        }
    }

    fn finish(mut self, order_by: &str) -> (String, Vec<&'a dyn ToSql>) {
        self.sql.push_str(" ORDER BY ");
        self.sql.push_str(order_by);
        (self.sql, self.params)
    }
}

pub(super) fn get_task(conn: &Connection, task_guid: &str) -> Result<Option<Task>, StoreError> {
    let rows = collect(
        conn,
        "tasks",
        "SELECT data FROM tasks WHERE task_guid = ?1",
        &[&task_guid],
        |r| json_col(r, 0, "task"),
    )?;
    Ok(rows.into_iter().next())
}

pub(super) fn list_tasks(conn: &Connection, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    let state = f.state.map(|s| s.as_str());
    let mut w = Where::new("SELECT data FROM tasks");
    w.eq("domain", f.domain.as_ref().map(|v| v as &dyn ToSql));
    w.eq("cell_id", f.cell_id.as_ref().map(|v| v as &dyn ToSql));
    w.eq("state", state.as_ref().map(|v| v as &dyn ToSql));
    let (sql, params) = w.finish("task_guid");
    collect_json(conn, "task", &sql, &params)
}

pub(super) fn get_desired_lrp(
    conn: &Connection,
    process_guid: &str,
) -> Result<Option<DesiredLrp>, StoreError> {
    let sql = "SELECT scheduling_info, run_info FROM desired_lrps WHERE process_guid = ?1";
    let rows = collect(conn, "desired LRPs", sql, &[&process_guid], decode_desired)?;
    Ok(rows.into_iter().next())
}

fn decode_desired(r: &Row<'_>) -> Result<DesiredLrp, StoreError> {
    let q = |e| db_error("reading desired LRP", e);
    desired_from_halves(text(r, 0).map_err(q)?, text(r, 1).map_err(q)?)
}

fn desired_where<'a>(
    select: &str,
    f: &'a DesiredLrpFilter,
    guids: &'a Option<String>,
) -> (String, Vec<&'a dyn ToSql>) {
    let mut w = Where::new(select);
    w.eq("domain", f.domain.as_ref().map(|v| v as &dyn ToSql));
    if let Some(g) = guids {
        // One statement for any number of guids: the list travels as a JSON array.
        w.cond("process_guid IN (SELECT value FROM json_each(?))", g);
    }
    w.finish("process_guid")
}

fn guid_list(f: &DesiredLrpFilter) -> Result<Option<String>, StoreError> {
    if f.process_guids.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&f.process_guids)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("process_guids cannot be encoded: {e}")))
}

pub(super) fn list_desired_lrps(
    conn: &Connection,
    f: &DesiredLrpFilter,
) -> Result<Vec<DesiredLrp>, StoreError> {
    let guids = guid_list(f)?;
    let (sql, params) = desired_where("SELECT scheduling_info, run_info FROM desired_lrps", f, &guids);
    collect(conn, "desired LRPs", &sql, &params, decode_desired)
}

pub(super) fn list_scheduling_infos(
    conn: &Connection,
    f: &DesiredLrpFilter,
) -> Result<Vec<DesiredLrpSchedulingInfo>, StoreError> {
    let guids = guid_list(f)?;
    let (sql, params) = desired_where("SELECT scheduling_info FROM desired_lrps", f, &guids);
    collect_json(conn, "desired LRP scheduling info", &sql, &params)
}

pub(super) fn get_actual_lrps(
    conn: &Connection,
    process_guid: &str,
    index: i32,
) -> Result<Vec<ActualLrp>, StoreError> {
    let sql = "SELECT data FROM actual_lrps WHERE process_guid = ?1 AND idx = ?2 ORDER BY presence";
    collect(conn, "actual LRPs", sql, &[&process_guid, &index], |r| {
        json_col(r, 0, "actual LRP")
    })
}

pub(super) fn list_actual_lrps(conn: &Connection, f: &ActualLrpFilter) -> Result<Vec<ActualLrp>, StoreError> {
    let (sql, params) = actual_where(f);
    let params: Vec<&dyn ToSql> = params.iter().map(|p| p.as_ref() as &dyn ToSql).collect();
    collect_json(conn, "actual LRP", &sql, &params)
}

/// The actual LRPs as one JSON array, straight from the stored text: rows are stored in the
/// API's own JSON form, so a listing is a concatenation, with no decoding and re-encoding of
/// 100,000 records and no 100,000 structs in memory.
pub(super) fn list_actual_lrps_json(conn: &Connection, f: &ActualLrpFilter) -> Result<String, StoreError> {
    let (sql, params) = actual_where(f);
    let q = |e| db_error("listing actual LRPs", e);
    let mut stmt = conn.prepare_cached(&sql).map_err(q)?;
    let params: Vec<&dyn ToSql> = params.iter().map(|p| p.as_ref() as &dyn ToSql).collect();
    let mut rows = stmt.query(params.as_slice()).map_err(q)?;
    let mut out = String::from("[");
    while let Some(row) = rows.next().map_err(q)? {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(text(row, 0).map_err(q)?);
    }
    out.push(']');
    Ok(out)
}

/// The query for a filtered actual-LRP listing and its owned parameters.
fn actual_where(f: &ActualLrpFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let mut sql = String::from("SELECT data FROM actual_lrps");
    let mut params: Vec<Box<dyn ToSql>> = Vec::new();
    let mut cond = |column: &str, value: Option<Box<dyn ToSql>>| {
        if let Some(v) = value {
            sql.push_str(if params.is_empty() { " WHERE " } else { " AND " });
            params.push(v);
            sql.push_str(&format!("{column} = ?{}", params.len()));
        }
    };
    cond(
        "process_guid",
        f.process_guid.clone().map(|v| Box::new(v) as Box<dyn ToSql>),
    );
    cond("idx", f.index.map(|v| Box::new(v) as Box<dyn ToSql>));
    cond(
        "presence",
        f.presence.map(|p| Box::new(presence_rank(p)) as Box<dyn ToSql>),
    );
    cond("domain", f.domain.clone().map(|v| Box::new(v) as Box<dyn ToSql>));
    cond(
        "cell_id",
        f.cell_id.clone().map(|v| Box::new(v) as Box<dyn ToSql>),
    );
    cond("state", f.state.map(|s| Box::new(s.as_str()) as Box<dyn ToSql>));
    sql.push_str(" ORDER BY process_guid, idx, presence");
    (sql, params)
}

/// Record counts by state, from the indexed state columns (no JSON is read).
pub(super) fn counts(conn: &Connection) -> Result<Counts, StoreError> {
    let q = |e| db_error("counting records", e);
    let mut c = Counts::default();
    let mut stmt = conn
        .prepare_cached("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        .map_err(q)?;
    let mut rows = stmt.query([]).map_err(q)?;
    while let Some(r) = rows.next().map_err(q)? {
        let state = TaskState::parse(text(r, 0).map_err(q)?)
            .ok_or_else(|| StoreError::unavailable("a stored task has an unknown state"))?;
        c.tasks.insert(state, r.get::<_, i64>(1).map_err(q)? as u64);
    }
    c.desired_lrps = conn
        .prepare_cached("SELECT COUNT(*) FROM desired_lrps")
        .map_err(q)?
        .query_row([], |r| r.get::<_, i64>(0))
        .map_err(q)? as u64;
    let mut stmt = conn
        .prepare_cached("SELECT state, presence, COUNT(*) FROM actual_lrps GROUP BY state, presence")
        .map_err(q)?;
    let mut rows = stmt.query([]).map_err(q)?;
    while let Some(r) = rows.next().map_err(q)? {
        let state = ActualLrpState::parse(text(r, 0).map_err(q)?)
            .ok_or_else(|| StoreError::unavailable("a stored actual LRP has an unknown state"))?;
        let presence = match r.get::<_, i64>(1).map_err(q)? {
            0 => Presence::Ordinary,
            1 => Presence::Evacuating,
            _ => Presence::Suspect,
        };
        c.actual_lrps
            .insert((state, presence), r.get::<_, i64>(2).map_err(q)? as u64);
    }
    Ok(c)
}

pub(super) fn list_domains(conn: &Connection, now: Timestamp) -> Result<Vec<Domain>, StoreError> {
    let sql =
        "SELECT domain, expires_at FROM domains WHERE expires_at = 0 OR expires_at > ?1 ORDER BY domain";
    collect(conn, "domains", sql, &[&now], |r| {
        Ok(Domain {
            domain: r.get(0).map_err(|e| db_error("reading domain", e))?,
            expires_at: r.get(1).map_err(|e| db_error("reading domain", e))?,
        })
    })
}

pub(super) fn list_presences(conn: &Connection, now: Timestamp) -> Result<Vec<PresenceRecord>, StoreError> {
    let sql =
        "SELECT data, expires_at FROM presences WHERE expires_at = 0 OR expires_at > ?1 ORDER BY cell_id";
    collect(conn, "presences", sql, &[&now], |r| {
        let cell_presence: CellPresence = json_col(r, 0, "cell presence")?;
        let expires_at = r.get(1).map_err(|e| db_error("reading presence", e))?;
        Ok(PresenceRecord {
            cell_presence,
            expires_at,
        })
    })
}

pub(super) fn get_lock(
    conn: &Connection,
    key: &str,
    now: Timestamp,
) -> Result<Option<LockRecord>, StoreError> {
    let lock = conn
        .prepare_cached("SELECT owner, value, expires_at FROM locks WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(LockRecord {
                    key: key.to_string(),
                    owner: r.get(0)?,
                    value: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(|e| db_error("reading lock", e))?;
    Ok(lock.filter(|l| is_live(l.expires_at, now)))
}

pub(super) fn changes_since(conn: &Connection, after: u64, limit: usize) -> Result<ChangePage, StoreError> {
    // One read transaction, so head, oldest and the page come from the same snapshot.
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| db_error("starting read transaction", e))?;
    let head = read_head(&tx)?;
    let oldest: Option<i64> = tx
        .prepare_cached("SELECT min(revision) FROM changes")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| db_error("reading change feed", e))?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = "SELECT revision, at, kind, before, after FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2";
    let changes = collect(&tx, "changes", sql, params![after, limit], |r| {
        let q = |e| db_error("reading change", e);
        let kind: i64 = r.get(2).map_err(q)?;
        let record = |i: usize| -> Result<_, StoreError> {
            match text_or_null(r, i).map_err(q)? {
                Some(json) => record_from_json(kind, json).map(Some),
                None => Ok(None),
            }
        };
        Ok(Change {
            revision: r.get::<_, i64>(0).map_err(q)? as u64,
            at: r.get(1).map_err(q)?,
            before: record(3)?,
            after: record(4)?,
        })
    })?;
    tx.commit().map_err(|e| db_error("ending read transaction", e))?;
    Ok(ChangePage {
        changes,
        oldest: oldest.map_or(head + 1, |o| o as u64),
        head,
    })
}
