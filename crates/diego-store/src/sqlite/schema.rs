//! The database layout, connection settings, and what is read back on open.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::StoreError;

/// Bumped whenever the tables below change incompatibly; a database written by another
/// version is refused rather than misread.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// Record kinds as stored in `changes.kind`.
pub(super) const KIND_TASK: i64 = 0;
pub(super) const KIND_DESIRED_LRP: i64 = 1;
pub(super) const KIND_ACTUAL_LRP: i64 = 2;
pub(super) const KIND_CELL_PRESENCE: i64 = 3;

/// Why the tables look like this:
/// - Filterable fields are columns (with indexes where listings filter on them); everything
///   else is the record's JSON, which also carries the modification tag. The tag is repeated
///   in columns so a compare-and-swap compares two columns without parsing JSON.
/// - `actual_lrps` is WITHOUT ROWID, clustered on its key, so the common full listing is one
///   sequential scan already in (process_guid, index, presence) order. `presence` is stored
///   as its rank (ORDINARY=0 < EVACUATING=1 < SUSPECT=2) so that order is the SQL order.
///   It has no domain index: nearly all instances share one or two domains, so it would not
///   narrow a listing, yet every insert of a random process guid would write one more page.
/// - `desired_lrps` keeps the scheduling half before the run half: listing scheduling infos
///   never reads the (possibly overflowing) run info pages.
/// - `meta.head` persists the change-feed head, because pruning may leave `changes` empty
///   and revisions must never restart.
const DDL: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tasks (
    task_guid TEXT PRIMARY KEY,
    domain    TEXT NOT NULL,
    cell_id   TEXT NOT NULL,
    state     TEXT NOT NULL,
    tag_epoch TEXT NOT NULL,
    tag_index INTEGER NOT NULL,
    data      TEXT NOT NULL
);
CREATE INDEX tasks_domain ON tasks(domain);
CREATE INDEX tasks_cell_id ON tasks(cell_id);
CREATE INDEX tasks_state ON tasks(state);

CREATE TABLE desired_lrps (
    process_guid    TEXT PRIMARY KEY,
    domain          TEXT NOT NULL,
    tag_epoch       TEXT NOT NULL,
    tag_index       INTEGER NOT NULL,
    scheduling_info TEXT NOT NULL,
    run_info        TEXT NOT NULL
);
CREATE INDEX desired_lrps_domain ON desired_lrps(domain);

CREATE TABLE actual_lrps (
    process_guid TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    presence     INTEGER NOT NULL,
    domain       TEXT NOT NULL,
    cell_id      TEXT NOT NULL,
    state        TEXT NOT NULL,
    tag_epoch    TEXT NOT NULL,
    tag_index    INTEGER NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (process_guid, idx, presence)
) WITHOUT ROWID;
CREATE INDEX actual_lrps_cell_id ON actual_lrps(cell_id);

CREATE TABLE domains (
    domain     TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE presences (
    cell_id    TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    data       TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE locks (
    key        TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    before   TEXT,
    after    TEXT
);
";

pub(super) fn db_error(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::unavailable_from(format!("sqlite: {context}"), e)
}

/// Opens the write connection, creating the schema on first use, and returns it with the
/// persisted change-feed head.
pub(super) fn open_writer(path: &Path) -> Result<(Connection, u64), StoreError> {
    let conn = Connection::open(path).map_err(|e| db_error(&format!("opening {}", path.display()), e))?;
    // First, so that another process opening the same file at once waits instead of failing.
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| db_error("setting busy_timeout", e))?;
    // WAL lets readers run beside the writer; synchronous=FULL makes every COMMIT fsync the
    // WAL, which is what "acknowledged only once durable" means. Group commit amortises it.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| db_error("enabling WAL", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| db_error("setting synchronous=FULL", e))?;
    // The checkpointer thread keeps the WAL short; this threshold (in pages) is only a
    // backstop so the WAL cannot grow without bound should it fall behind.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)
        .map_err(|e| db_error("setting wal_autocheckpoint", e))?;
    // CAS checks read the rows they replace: map the file instead of a read syscall per
    // page. (A larger page cache made commits slower: SQLite walks it at each commit.)
    conn.pragma_update(None, "mmap_size", 1i64 << 30)
        .map_err(|e| db_error("setting mmap_size", e))?;
    // Savepoints copy pages they touch into a sub-journal; keep it in memory, not a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(|e| db_error("setting temp_store", e))?;
    conn.set_prepared_statement_cache_capacity(64);

    // IMMEDIATE: a read lock upgraded to a write lock fails at once when another process
    // writes; taking the write lock first waits for it (busy_timeout) instead.
    let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_error("starting schema transaction", e))?;
    let has_meta: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| db_error("reading schema", e))?;
    if !has_meta {
        tx.execute_batch(DDL)
            .map_err(|e| db_error("creating schema", e))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('head', 0)",
            [SCHEMA_VERSION],
        )
        .map_err(|e| db_error("initialising meta", e))?;
    }
    let version: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| db_error("reading schema version", e))?;
    if version != Some(SCHEMA_VERSION) {
        return Err(StoreError::unavailable(format!(
            "{} has schema version {version:?}, this build understands {SCHEMA_VERSION}; \
             use a matching build or a fresh data directory",
            path.display()
        )));
    }
    let head = read_head(&tx)?;
    tx.commit().map_err(|e| db_error("committing schema", e))?;
    Ok((conn, head))
}

/// Opens one read-only connection of the reader pool.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| db_error(&format!("opening {} for reading", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| db_error("setting busy_timeout", e))?;
    // Memory-mapped reads skip a copy per page on large listings; the OS page cache is
    // shared by all readers, unlike per-connection caches.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)
        .map_err(|e| db_error("setting mmap_size", e))?;
    // One cached statement per filter combination in use.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

pub(super) fn read_head(conn: &Connection) -> Result<u64, StoreError> {
    let head: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'head'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| db_error("reading change-feed head", e))?;
    Ok(head as u64)
}

pub(super) fn presence_rank(p: diego_model::Presence) -> i64 {
    match p {
        diego_model::Presence::Ordinary => 0,
        diego_model::Presence::Evacuating => 1,
        diego_model::Presence::Suspect => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_rank_follows_presence_order() {
        let mut all = diego_model::Presence::ALL;
        all.sort();
        let ranks: Vec<i64> = all.iter().map(|p| presence_rank(*p)).collect();
        assert_eq!(ranks, vec![0, 1, 2]);
    }

    #[test]
    fn creates_schema_once_and_keeps_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let (conn, head) = open_writer(&path).unwrap();
        assert_eq!(head, 0);
        conn.execute("UPDATE meta SET value = 7 WHERE key = 'head'", [])
            .unwrap();
        drop(conn);
        let (_conn, head) = open_writer(&path).unwrap();
        assert_eq!(head, 7);
    }

    #[test]
    fn refuses_other_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let (conn, _) = open_writer(&path).unwrap();
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'", [])
            .unwrap();
        drop(conn);
        assert!(matches!(open_writer(&path), Err(StoreError::Unavailable { .. })));
    }
}
