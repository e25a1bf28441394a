//! What lapses: cell presences, locks and domains.
//!
//! Expiry is decided on the injected clock, as in every backend: the value carries
//! `expires_at`, reads ignore lapsed ones, and a sweeper removes lapsed presences (so their
//! expiry reaches the feed with nobody writing). Presences and locks also sit on an etcd
//! lease of their TTL plus [`LEASE_GRACE_SECONDS`](super::LEASE_GRACE_SECONDS), renewed by
//! each `set_presence` / `acquire_lock` (a fresh lease; the old one is revoked): when every
//! BBS is gone, etcd itself removes a dead cell's presence and a dead BBS's lock.

use std::sync::Weak;
use std::time::Duration;

use diego_model::CellPresence;
use etcd_client::{GetOptions, TxnOp, TxnOpResponse};

use super::known::Seen;
use super::ops::{self, Attempt, Failure};
use super::write::EtcdTxn;
use super::{decode, encode, head_at, Inner, LEASE_GRACE_SECONDS};
use crate::ttl::{domain_expiry, is_live, lease_expiry};
use crate::{Domain, LockRecord, PresenceRecord, Record, StoreError};

impl Inner {
    async fn grant(&self, ttl_seconds: i64) -> Result<i64, StoreError> {
        let ttl = ttl_seconds.saturating_add(LEASE_GRACE_SECONDS);
        let resp = ops::retrying("granting an etcd lease", &self.members, |client| {
            let mut lease = client.lease_client();
            async move { lease.grant(ttl, None).await }
        })
        .await?;
        Ok(resp.id())
    }

    /// `lease` (the one a stored record is on) kept alive for another TTL, when it is still
    /// there and was granted for `ttl_seconds`: a keep-alive is answered by etcd's leader
    /// without a raft write, where a grant and the old lease's revocation are two. Otherwise,
    /// or when the keep-alive fails, a new lease.
    async fn refresh(&self, lease: i64, ttl_seconds: i64) -> Result<i64, StoreError> {
        let want = ttl_seconds.saturating_add(LEASE_GRACE_SECONDS);
        if lease != 0 {
            let mut client = self.members.current().1.lease_client();
            let kept = tokio::time::timeout(ops::REQUEST_TIMEOUT, async move {
                // Opening the stream sends one keep-alive and fails if the lease is gone; the
                // second one's answer says the TTL it was granted for.
                let (mut keeper, mut answers) = client.keep_alive(lease).await?;
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match kept {
                Ok(Ok(Some(answer))) if answer.ttl() == want => return Ok(lease),
                // Gone (TTL 0), granted for another TTL, or no answer: a new one.
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "keeping an etcd lease alive failed"),
                Err(_) => tracing::debug!("keeping an etcd lease alive timed out"),
            }
        }
        self.grant(ttl_seconds).await
    }

    /// Revokes a lease nothing is attached to any more, in the background: if it fails, the
    /// lease lapses by itself.
    fn revoke(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        let mut client = self.members.current().1.lease_client();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ops::REQUEST_TIMEOUT, client.revoke(lease)).await;
        });
    }

    pub(super) async fn set_presence(
        &self,
        presence: &CellPresence,
        ttl_seconds: i64,
    ) -> Result<PresenceRecord, StoreError> {
        let now = self.clock.now();
        let record = PresenceRecord {
            cell_presence: presence.clone(),
            expires_at: lease_expiry("presence", now, ttl_seconds)?,
        };
        let key = self.keys.cell(&presence.cell_id);
        let value = encode(&"a cell presence", &record)?;
        if self
            .renew_unchanged(&key, &value, presence, ttl_seconds, now)
            .await?
        {
            return Ok(record);
        }
        let txn_id = uuid::Uuid::new_v4().to_string();
        let mut writer = self.writer.lock().await;
        let lease = self.grant(ttl_seconds).await?;
        loop {
            let snap = ops::snapshot(
                &self.members,
                "reading a cell presence",
                &[key.clone(), self.keys.head()],
            )
            .await?;
            let stored_kv = snap.values[0].as_ref();
            let stored = stored_kv
                .map(|kv| decode::<PresenceRecord>("a cell presence", kv.value()))
                .transpose()?;
            let head = head_at(snap.values[1].as_ref())?;
            let mut changes = Vec::new();
            let live = match stored {
                Some(s) if !is_live(s.expires_at, now) => {
                    // It lapsed before the sweeper got to it: its expiry comes first.
                    changes.push((Some(Record::CellPresence(s.cell_presence)), None));
                    None
                }
                s => s.map(|s| s.cell_presence),
            };
            // A renewal that says nothing new is no change (a lease keep-alive).
            if live.as_ref() != Some(presence) {
                changes.push((
                    live.map(Record::CellPresence),
                    Some(Record::CellPresence(presence.clone())),
                ));
            }
            let mut txn = EtcdTxn::default();
            txn.unchanged(key.clone(), stored_kv);
            txn.put(key.clone(), value.clone(), Some(lease));
            let new = if changes.is_empty() {
                None
            } else {
                Some(self.append_changes(&mut txn, &head, changes, now, &txn_id)?)
            };
            // Unanswered is safe to repeat: an attempt that applied is read back as a renewal.
            if let Attempt::Applied(r) =
                ops::attempt(&self.members, "setting a presence", txn.into_etcd()).await?
            {
                if let Some(new) = new {
                    writer.wrote_head(new, &r);
                    self.publish(new.head);
                }
                if let Some(old) = stored_kv.map(|kv| kv.lease()).filter(|&l| l != lease) {
                    self.revoke(old);
                }
                return Ok(record);
            }
        }
    }

    /// A cell's renewal of its live presence, unchanged: nothing for the feed, so neither the
    /// head nor the writer lock is needed, only the key as read (the sweeper's removal and
    /// any other write of it compare the same key). `false` when it is not that (new,
    /// changed, lapsed) or the write did not apply: the caller takes the full path, which
    /// reads again.
    async fn renew_unchanged(
        &self,
        key: &[u8],
        value: &[u8],
        presence: &CellPresence,
        ttl_seconds: i64,
        now: diego_model::Timestamp,
    ) -> Result<bool, StoreError> {
        let snap = ops::snapshot(&self.members, "reading a cell presence", &[key.to_vec()]).await?;
        let Some(kv) = snap.values[0].as_ref() else {
            return Ok(false);
        };
        let stored: PresenceRecord = decode("a cell presence", kv.value())?;
        if !is_live(stored.expires_at, now) || stored.cell_presence != *presence {
            return Ok(false);
        }
        let lease = self.refresh(kv.lease(), ttl_seconds).await?;
        let mut txn = EtcdTxn::default();
        txn.unchanged(key.to_vec(), Some(kv));
        txn.put(key.to_vec(), value.to_vec(), Some(lease));
        match ops::attempt(&self.members, "renewing a presence", txn.into_etcd()).await? {
            Attempt::Applied(_) => {
                if lease != kv.lease() {
                    self.revoke(kv.lease());
                }
                Ok(true)
            }
            Attempt::Conflicted => {
                if lease != kv.lease() {
                    self.revoke(lease);
                }
                Ok(false)
            }
            // It may have applied on the new lease: that one is left to lapse by itself.
            Attempt::Unanswered => Ok(false),
        }
    }

    pub(super) async fn remove_presence(&self, cell_id: &str) -> Result<bool, StoreError> {
        let key = self.keys.cell(cell_id);
        let txn_id = uuid::Uuid::new_v4().to_string();
        let mut writer = self.writer.lock().await;
        let mut tried = false;
        loop {
            let snap = ops::snapshot(
                &self.members,
                "reading a cell presence",
                &[key.clone(), self.keys.head()],
            )
            .await?;
            let Some(kv) = snap.values[0].as_ref() else {
                // Gone: by this call's own earlier attempt whose answer was lost, or another's.
                return Ok(tried);
            };
            let stored: PresenceRecord = decode("a cell presence", kv.value())?;
            let now = self.clock.now();
            let head = head_at(snap.values[1].as_ref())?;
            let mut txn = EtcdTxn::default();
            txn.unchanged(key.clone(), Some(kv));
            txn.delete(key.clone());
            let live = is_live(stored.expires_at, now);
            let change = (Some(Record::CellPresence(stored.cell_presence)), None);
            let new = self.append_changes(&mut txn, &head, vec![change], now, &txn_id)?;
            match ops::attempt(&self.members, "removing a presence", txn.into_etcd()).await? {
                Attempt::Applied(r) => {
                    writer.wrote_head(new, &r);
                    self.publish(new.head);
                    self.revoke(kv.lease());
                    // A lapsed one was expired, not removed by this call.
                    return Ok(live);
                }
                Attempt::Conflicted => {}
                Attempt::Unanswered => tried = live,
            }
        }
    }

    /// Removes every lapsed presence in one transaction, their expiries in the feed.
    /// Returns how many; 0 when another writer (another BBS's sweeper) got there first.
    async fn sweep(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let (cells, _) = ops::range(&self.members, "listing cell presences", &self.keys.cells()).await?;
        let lapsed = |kv: &etcd_client::KeyValue| {
            decode::<PresenceRecord>("a cell presence", kv.value()).is_ok_and(|p| !is_live(p.expires_at, now))
        };
        if !cells.iter().any(lapsed) {
            return Ok(0);
        }
        let mut writer = self.writer.lock().await;
        // Read again under the writer lock, with the head, at one revision.
        let cells_prefix = self.keys.cells();
        let range = GetOptions::new().with_range(super::keys::prefix_end(&cells_prefix));
        let ops_ = vec![
            TxnOp::get(cells_prefix, Some(range)),
            TxnOp::get(self.keys.head(), None),
        ];
        let resp = ops::retrying("reading lapsed presences", &self.members, |client| {
            let mut kv = ops::kv(client);
            let txn = etcd_client::Txn::new().and_then(ops_.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs(),
            _ => Vec::new(),
        });
        let cells = gets.next().unwrap_or_default();
        let head = head_at(gets.next().unwrap_or_default().first())?;
        let mut txn = EtcdTxn::default();
        let mut changes = Vec::new();
        let mut leases = Vec::new();
        for kv in cells.iter().filter(|kv| lapsed(kv)) {
            let p: PresenceRecord = decode("a cell presence", kv.value())?;
            txn.unchanged(kv.key().to_vec(), Some(kv));
            txn.delete(kv.key().to_vec());
            changes.push((Some(Record::CellPresence(p.cell_presence)), None));
            leases.push(kv.lease());
        }
        let n = changes.len();
        if n == 0 {
            return Ok(0);
        }
        let new = self.append_changes(&mut txn, &head, changes, now, &uuid::Uuid::new_v4().to_string())?;
        match ops::txn_once(&self.members, txn.into_etcd()).await {
            Ok(r) if r.succeeded() => {
                writer.wrote_head(new, &r);
                self.publish(new.head);
                leases.into_iter().for_each(|l| self.revoke(l));
                Ok(n)
            }
            Ok(_) => Ok(0),
            Err(Failure::Refused(m)) => Err(StoreError::Invalid(format!("sweeping presences: {m}"))),
            Err(Failure::Transient(m)) => Err(StoreError::unavailable(format!("sweeping presences: {m}"))),
        }
    }

    pub(super) async fn acquire_lock(
        &self,
        key: &str,
        owner: &str,
        value: &str,
        ttl_seconds: i64,
    ) -> Result<LockRecord, StoreError> {
        let now = self.clock.now();
        let lock = LockRecord {
            key: key.to_string(),
            owner: owner.to_string(),
            value: value.to_string(),
            expires_at: lease_expiry("lock", now, ttl_seconds)?,
        };
        let etcd_key = self.keys.lock(key);
        let encoded = encode(&"a lock", &lock)?;
        let mut lease = None;
        loop {
            let snap =
                ops::snapshot(&self.members, "reading a lock", std::slice::from_ref(&etcd_key)).await?;
            self.known
                .read(std::slice::from_ref(&etcd_key), &snap.values, snap.revision);
            let stored_kv = snap.values[0].as_ref();
            if let Some(kv) = stored_kv {
                let held: LockRecord = decode("a lock", kv.value())?;
                if held.owner != owner && is_live(held.expires_at, now) {
                    if let Some(l) = lease {
                        self.revoke(l);
                    }
                    return Err(StoreError::LockCollision {
                        key: key.to_string(),
                        owner: held.owner,
                    });
                }
            }
            // A renewal keeps the holder's own lease alive; a new holder gets a new lease.
            let ours = stored_kv
                .filter(|kv| decode::<LockRecord>("a lock", kv.value()).is_ok_and(|l| l.owner == owner))
                .map(|kv| kv.lease());
            let lease_id = match (lease, ours) {
                (Some(l), _) => l,
                (None, Some(l)) => *lease.insert(self.refresh(l, ttl_seconds).await?),
                (None, None) => *lease.insert(self.grant(ttl_seconds).await?),
            };
            let mut txn = EtcdTxn::default();
            txn.unchanged(etcd_key.clone(), stored_kv);
            txn.put(etcd_key.clone(), encoded.clone(), Some(lease_id));
            // Unanswered is safe to repeat: an attempt that applied is read back as this
            // owner's lock.
            if let Attempt::Applied(r) =
                ops::attempt(&self.members, "acquiring a lock", txn.into_etcd()).await?
            {
                // Fenced commits compare this key: they need not read it.
                let revision = r.header().map_or(0, |h| h.revision());
                self.known.saw(
                    &etcd_key,
                    Seen {
                        revision,
                        value: Some(encoded.clone()),
                    },
                );
                if let Some(old) = stored_kv.map(|kv| kv.lease()).filter(|&l| l != lease_id) {
                    self.revoke(old);
                }
                return Ok(lock);
            }
        }
    }

    pub(super) async fn release_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let etcd_key = self.keys.lock(key);
        let mut tried = false;
        loop {
            let snap =
                ops::snapshot(&self.members, "reading a lock", std::slice::from_ref(&etcd_key)).await?;
            let Some(kv) = snap.values[0].as_ref() else {
                return Ok(tried);
            };
            let held: LockRecord = decode("a lock", kv.value())?;
            if held.owner != owner {
                return Ok(false);
            }
            let mut txn = EtcdTxn::default();
            txn.unchanged(etcd_key.clone(), Some(kv));
            txn.delete(etcd_key.clone());
            match ops::attempt(&self.members, "releasing a lock", txn.into_etcd()).await? {
                Attempt::Applied(r) => {
                    let revision = r.header().map_or(0, |h| h.revision());
                    self.known.saw(
                        &etcd_key,
                        Seen {
                            revision,
                            value: None,
                        },
                    );
                    self.revoke(kv.lease());
                    return Ok(true);
                }
                Attempt::Conflicted => {}
                Attempt::Unanswered => tried = true,
            }
        }
    }

    pub(super) async fn upsert_domain(&self, domain: &str, ttl_seconds: i64) -> Result<Domain, StoreError> {
        let d = Domain {
            domain: domain.to_string(),
            expires_at: domain_expiry(self.clock.now(), ttl_seconds)?,
        };
        let (key, value) = (self.keys.domain(domain), encode(&"a domain", &d)?);
        // A plain put: the newest freshness wins, and repeating it is harmless.
        ops::retrying("marking a domain fresh", &self.members, |client| {
            let mut kv = ops::kv(client);
            let (key, value) = (key.clone(), value.clone());
            async move { kv.put(key, value, None).await }
        })
        .await?;
        Ok(d)
    }
}

/// The sweeper: ends when the store is dropped.
pub(super) async fn sweep_every(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "removed lapsed cell presences"),
            Err(e) => tracing::warn!(error = %e, "sweeping lapsed cell presences failed; trying again"),
        }
    }
}
