//! Expiry arithmetic shared by every backend, so domains, presences and locks lapse alike.

use diego_model::clock::NANOS_PER_SEC;
use diego_model::Timestamp;

use crate::StoreError;

/// When a domain marked fresh at `now` for `ttl_seconds` lapses; 0 (= never) for a zero TTL.
pub(crate) fn domain_expiry(now: Timestamp, ttl_seconds: i64) -> Result<Timestamp, StoreError> {
    if ttl_seconds < 0 {
        return Err(StoreError::Invalid(format!(
            "domain ttl_seconds must be >= 0 (got {ttl_seconds})"
        )));
    }
    if ttl_seconds == 0 {
        return Ok(0);
    }
    Ok(now.saturating_add(ttl_seconds.saturating_mul(NANOS_PER_SEC)))
}

/// When a presence or lock taken at `now` lapses. A zero TTL would create something already
/// expired, which is never what the caller meant.
pub(crate) fn lease_expiry(what: &str, now: Timestamp, ttl_seconds: i64) -> Result<Timestamp, StoreError> {
    if ttl_seconds <= 0 {
        return Err(StoreError::Invalid(format!(
            "{what} ttl_seconds must be > 0 (got {ttl_seconds})"
        )));
    }
    Ok(now.saturating_add(ttl_seconds.saturating_mul(NANOS_PER_SEC)))
}

/// Whether something expiring at `expires_at` is still live at `now` (0 = never expires).
pub(crate) fn is_live(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at == 0 || expires_at > now
}

/// Whether `fence` holds given the lock's stored `(owner, expires_at)` at `now`.
pub(crate) fn check_fence(
    fence: &crate::Fence,
    held: Option<(&str, Timestamp)>,
    now: Timestamp,
) -> Result<(), StoreError> {
    match held {
        Some((owner, expires_at)) if owner == fence.owner && is_live(expires_at, now) => Ok(()),
        held => Err(StoreError::LockLost {
            key: fence.key.clone(),
            owner: fence.owner.clone(),
            holder: held
                .filter(|&(_, expires_at)| is_live(expires_at, now))
                .map(|(owner, _)| owner.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_ttl_zero_never_expires() {
        assert_eq!(domain_expiry(5, 0).unwrap(), 0);
        assert!(is_live(0, i64::MAX));
    }

    #[test]
    fn domain_ttl_adds_seconds() {
        assert_eq!(domain_expiry(5, 2).unwrap(), 5 + 2 * NANOS_PER_SEC);
        assert!(matches!(domain_expiry(5, -1), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn lease_rejects_non_positive_ttl_and_saturates() {
        assert!(matches!(lease_expiry("lock", 5, 0), Err(StoreError::Invalid(_))));
        assert_eq!(lease_expiry("lock", i64::MAX - 1, 10).unwrap(), i64::MAX);
    }

    #[test]
    fn expiry_is_exclusive() {
        assert!(is_live(10, 9));
        assert!(!is_live(10, 10));
    }
}
