//! The SQL of domain, presence and lock writes, run by the writer thread. Each is one
//! modifying statement, so SQLite's statement atomicity is all the isolation they need.

use diego_model::{CellPresence, Domain, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use super::apply::append_change;
use super::schema::{db_error, KIND_CELL_PRESENCE};
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

/// Registers or renews a presence. A registration, or a renewal that changes what the
/// presence says (its URL, capacity…), appends a change at `*head + 1`; a plain renewal
/// appends none. Expired presences must have been swept first (`sweep_expired_presences`),
/// so a row found here is live.
pub(super) fn set_presence(
    conn: &Connection,
    cell_presence: &CellPresence,
    ttl_seconds: i64,
    now: Timestamp,
    head: &mut u64,
) -> Result<PresenceRecord, StoreError> {
    let expires_at = lease_expiry("presence", now, ttl_seconds)?;
    let json = serde_json::to_string(cell_presence)
        .map_err(|e| StoreError::Invalid(format!("cell presence cannot be encoded as JSON: {e}")))?;
    let before: Option<String> = conn
        .prepare_cached("SELECT data FROM presences WHERE cell_id = ?1")
        .and_then(|mut s| s.query_row([&cell_presence.cell_id], |r| r.get(0)).optional())
        .map_err(|e| db_error("reading presence", e))?;
    conn.prepare_cached(
        "INSERT INTO presences (cell_id, expires_at, data) VALUES (?1, ?2, ?3) \
         ON CONFLICT (cell_id) DO UPDATE SET expires_at = excluded.expires_at, data = excluded.data",
    )
    .and_then(|mut s| s.execute(params![cell_presence.cell_id, expires_at, json]))
    .map_err(|e| db_error("setting presence", e))?;
    if before.as_deref() != Some(json.as_str()) {
        *head += 1;
        append_change(
            conn,
            *head,
            now,
            KIND_CELL_PRESENCE,
            before.as_deref(),
            Some(&json),
        )
        .map_err(|e| db_error("recording presence change", e))?;
    }
    Ok(PresenceRecord {
        cell_presence: cell_presence.clone(),
        expires_at,
    })
}

/// Removes a presence; its removal is a change at `*head + 1`.
pub(super) fn remove_presence(
    conn: &Connection,
    cell_id: &str,
    now: Timestamp,
    head: &mut u64,
) -> Result<bool, StoreError> {
    let removed: Option<String> = conn
        .prepare_cached("DELETE FROM presences WHERE cell_id = ?1 RETURNING data")
        .and_then(|mut s| s.query_row([cell_id], |r| r.get(0)).optional())
        .map_err(|e| db_error("removing presence", e))?;
    if let Some(json) = &removed {
        *head += 1;
        append_change(conn, *head, now, KIND_CELL_PRESENCE, Some(json), None)
            .map_err(|e| db_error("recording presence change", e))?;
    }
    Ok(removed.is_some())
}

/// Whether a presence has expired and awaits `sweep_expired_presences`.
pub(super) fn has_expired_presence(conn: &Connection, now: Timestamp) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM presences WHERE expires_at != 0 AND expires_at <= ?1)")
        .and_then(|mut s| s.query_row([now], |r| r.get(0)))
        .map_err(|e| db_error("looking for expired presences", e))
}

/// Deletes the presences expired at `now`, each with a change (after: none), so the feed
/// shows a cell vanishing as it shows one being removed.
pub(super) fn sweep_expired_presences(
    conn: &Connection,
    now: Timestamp,
    head: &mut u64,
) -> Result<usize, StoreError> {
    let mut expired: Vec<String> = conn
        .prepare_cached("DELETE FROM presences WHERE expires_at != 0 AND expires_at <= ?1 RETURNING data")
        .and_then(|mut s| s.query_map([now], |r| r.get(0))?.collect())
        .map_err(|e| db_error("sweeping expired presences", e))?;
    expired.sort();
    for json in &expired {
        *head += 1;
        append_change(conn, *head, now, KIND_CELL_PRESENCE, Some(json), None)
            .map_err(|e| db_error("recording presence expiry", e))?;
    }
    Ok(expired.len())
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
