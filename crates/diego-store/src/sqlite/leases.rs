//! The SQL of domain, presence and lock writes, run by the writer thread. Each is one
//! modifying statement, so SQLite's statement atomicity is all the isolation they need.

use diego_model::{CellPresence, Domain, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::db_error;
use crate::ttl::{self, domain_expiry, is_live, lease_expiry};
use crate::{Fence, LockRecord, PresenceRecord, StoreError};

pub(super) fn upsert_domain(
    conn: &Connection,
    domain: &str,
    ttl_seconds: i64,
    now: Timestamp,
) -> Result<Domain, StoreError> {
    let d = Domain {
        expires_at: domain_expiry(now, ttl_seconds)?,
        domain: domain.to_string(),
    };
    conn.prepare_cached(
        "INSERT INTO domains (domain, expires_at) VALUES (?1, ?2) \
         ON CONFLICT (domain) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .and_then(|mut s| s.execute(params![d.domain, d.expires_at]))
    .map_err(|e| db_error("upserting domain", e))?;
    Ok(d)
}

pub(super) fn set_presence(
    conn: &Connection,
    cell_presence: &CellPresence,
    ttl_seconds: i64,
    now: Timestamp,
) -> Result<PresenceRecord, StoreError> {
    let expires_at = lease_expiry("presence", now, ttl_seconds)?;
    let json = serde_json::to_string(cell_presence)
        .map_err(|e| StoreError::Invalid(format!("cell presence cannot be encoded as JSON: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO presences (cell_id, expires_at, data) VALUES (?1, ?2, ?3) \
         ON CONFLICT (cell_id) DO UPDATE SET expires_at = excluded.expires_at, data = excluded.data",
    )
    .and_then(|mut s| s.execute(params![cell_presence.cell_id, expires_at, json]))
    .map_err(|e| db_error("setting presence", e))?;
    Ok(PresenceRecord {
        cell_presence: cell_presence.clone(),
        expires_at,
    })
}

pub(super) fn remove_presence(conn: &Connection, cell_id: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM presences WHERE cell_id = ?1")
        .and_then(|mut s| s.execute([cell_id]))
        .map_err(|e| db_error("removing presence", e))?;
    Ok(n > 0)
}

pub(super) fn acquire_lock(
    conn: &Connection,
    lock: &LockRecord,
    ttl_seconds: i64,
    now: Timestamp,
) -> Result<LockRecord, StoreError> {
    let lock = LockRecord {
        expires_at: lease_expiry("lock", now, ttl_seconds)?,
        ..lock.clone()
    };
    let held: Option<(String, Timestamp)> = conn
        .prepare_cached("SELECT owner, expires_at FROM locks WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([&lock.key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| db_error("reading lock", e))?;
    if let Some((owner, expires_at)) = held {
        if owner != lock.owner && is_live(expires_at, now) {
            return Err(StoreError::LockCollision { key: lock.key, owner });
        }
    }
    conn.prepare_cached(
        "INSERT INTO locks (key, owner, value, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, value = excluded.value, \
         expires_at = excluded.expires_at",
    )
    .and_then(|mut s| s.execute(params![lock.key, lock.owner, lock.value, lock.expires_at]))
    .map_err(|e| db_error("writing lock", e))?;
    Ok(lock)
}

pub(super) fn release_lock(conn: &Connection, key: &str, owner: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM locks WHERE key = ?1 AND owner = ?2")
        .and_then(|mut s| s.execute([key, owner]))
        .map_err(|e| db_error("releasing lock", e))?;
    Ok(n > 0)
}

/// Whether `fence`'s lock is held by its owner at `now` ([`StoreError::LockLost`] if not).
pub(super) fn check_fence(conn: &Connection, fence: &Fence, now: Timestamp) -> Result<(), StoreError> {
    let held: Option<(String, Timestamp)> = conn
        .prepare_cached("SELECT owner, expires_at FROM locks WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([&fence.key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| db_error("reading lock", e))?;
    ttl::check_fence(fence, held.as_ref().map(|(o, t)| (o.as_str(), *t)), now)
}
