//! Calls to etcd: bounded retries of what is safe to repeat, consistent multi-key reads,
//! paged range reads, and what etcd's errors mean to the store's callers.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::time::Instant;

use super::members::Members;
use crate::StoreError;

/// How long an operation keeps retrying an unreachable or leaderless cluster (a member
/// killed, an election under way) before the caller gets `Unavailable`.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(20);
/// How long one request may take before it is abandoned (and, if safe, retried).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per page of a range read.
const PAGE: i64 = 1_000;
/// Largest response accepted (a page of big desired LRPs; tonic's default is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// What an etcd failure means for the operation.
pub(super) enum Failure {
    /// etcd refused the request itself: retrying cannot help.
    Refused(String),
    /// Unreachable, timed out, no leader: the request may or may not have applied.
    Transient(String),
}

pub(super) fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        // gRPC's INVALID_ARGUMENT: etcd checked the request and will never take it.
        etcd_client::Error::GRpcStatus(s) if s.code() as i32 == GRPC_INVALID_ARGUMENT => {
            Failure::Refused(format!(
                "etcd refused the request: {} (a transaction beyond etcd's --max-txn-ops, or a \
                 request beyond --max-request-bytes)",
                s.message()
            ))
        }
        etcd_client::Error::InvalidArgs(m) => Failure::Refused(m.clone()),
        e => Failure::Transient(e.to_string()),
    }
}

/// gRPC's status code 3.
const GRPC_INVALID_ARGUMENT: i32 = 3;

pub(super) fn kv(client: &Client) -> KvClient {
    client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Runs `call` on the current member until it succeeds, etcd refuses it, or [`RETRY_FOR`]
/// passes; a member that does not answer hands the next attempt to the next member. Only for
/// calls that are safe to repeat (reads, idempotent writes).
pub(super) async fn retrying<T, F, Fut>(what: &str, members: &Members, mut call: F) -> Result<T, StoreError>
where
    F: FnMut(&Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = Duration::from_millis(20);
    loop {
        let (member, client) = members.current();
        let failure = match tokio::time::timeout(REQUEST_TIMEOUT, call(client)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => classify(&e),
            Err(_) => Failure::Transient(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        if let Failure::Transient(m) = &failure {
            members.failed(member, m);
        }
        match failure {
            Failure::Refused(m) => return Err(StoreError::Invalid(format!("{what}: {m}"))),
            Failure::Transient(m) if Instant::now() + backoff >= deadline => {
                return Err(StoreError::unavailable(format!(
                    "{what}: etcd did not answer within {RETRY_FOR:?} ({m})"
                )))
            }
            Failure::Transient(m) => {
                tracing::debug!(what, error = %m, "etcd request failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// One transaction, sent once to the current member: a transient failure leaves its outcome
/// unknown, which only the caller can resolve (and moves later calls to the next member).
pub(super) async fn txn_once(members: &Members, txn: Txn) -> Result<TxnResponse, Failure> {
    let (member, client) = members.current();
    let failure = match tokio::time::timeout(REQUEST_TIMEOUT, kv(client).txn(txn)).await {
        Ok(Ok(r)) => return Ok(r),
        Ok(Err(e)) => classify(&e),
        Err(_) => Failure::Transient(format!("no answer within {REQUEST_TIMEOUT:?}")),
    };
    if let Failure::Transient(m) = &failure {
        members.failed(member, m);
    }
    Err(failure)
}

/// How one write of a read-compare-write loop went.
pub(super) enum Attempt {
    Applied(TxnResponse),
    /// The compare failed: someone wrote between the read and the write. Read again.
    Conflicted,
    /// No answer: it may or may not have applied. Read again (after a short pause) and let
    /// what is stored tell.
    Unanswered,
}

/// Pause before reading again after an unanswered write.
const UNANSWERED_PAUSE: Duration = Duration::from_millis(50);

/// One write of a loop that reads, compares and writes until the write applies; `what`
/// names it in errors and logs ("setting a presence"). A write etcd refuses is
/// [`StoreError::Invalid`]; one it did not answer comes back after [`UNANSWERED_PAUSE`].
pub(super) async fn attempt(members: &Members, what: &str, txn: Txn) -> Result<Attempt, StoreError> {
    match txn_once(members, txn).await {
        Ok(r) if r.succeeded() => Ok(Attempt::Applied(r)),
        Ok(_) => Ok(Attempt::Conflicted),
        Err(Failure::Refused(m)) => Err(StoreError::Invalid(format!("{what}: {m}"))),
        Err(Failure::Transient(m)) => {
            tracing::debug!(error = %m, "etcd did not answer {what}; reading again");
            tokio::time::sleep(UNANSWERED_PAUSE).await;
            Ok(Attempt::Unanswered)
        }
    }
}

/// What one read returned: each key's value (if any), read at one revision.
pub(super) struct Snapshot {
    pub values: Vec<Option<KeyValue>>,
    /// etcd's revision the read saw.
    pub revision: i64,
}

/// Reads `keys` at one revision (one transaction of gets).
pub(super) async fn snapshot(
    members: &Members,
    what: &str,
    keys: &[Vec<u8>],
) -> Result<Snapshot, StoreError> {
    let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.clone(), None)).collect();
    let resp = retrying(what, members, |client| {
        let mut kv = kv(client);
        let txn = Txn::new().and_then(ops.clone());
        async move { kv.txn(txn).await }
    })
    .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let values = resp
        .op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        })
        .collect();
    Ok(Snapshot { values, revision })
}

/// Every key starting with `prefix`, in key order, read at one revision in pages.
pub(super) async fn range(
    members: &Members,
    what: &str,
    prefix: &[u8],
) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let end = super::keys::prefix_end(prefix);
    let mut out = Vec::new();
    let mut start = prefix.to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = retrying(what, members, |client| {
            let mut kv = kv(client);
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last) = kvs.last() else { break };
        start = last.key().to_vec();
        start.push(0);
        out.extend(kvs);
        if !more {
            break;
        }
    }
    Ok((out, revision))
}
