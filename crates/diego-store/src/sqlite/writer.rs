//! The writer thread: group commit over the single write connection.
//!
//! Every write request (transactions, domains, presences, locks) is sent over a channel to
//! one thread that owns the write connection. It blocks for a first request, drains whatever
//! else is queued, applies them all in one `BEGIN IMMEDIATE … COMMIT`, and only then replies.
//! One fsync thus covers a whole batch: throughput scales with concurrency instead of being
//! capped by the disk's fsync rate, and no caller is acknowledged before its data is durable.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use diego_model::{CellPresence, Clock, Domain, Timestamp};
use rusqlite::Connection;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

use super::apply::{self, Failure};
use super::checkpoint::{Checkpointer, Nudge};
use super::codec::PreparedWrite;
use super::leases;
use super::schema::{db_error, read_head};
use crate::{Committed, Fence, LockRecord, PresenceRecord, StoreError};

/// How often an idle writer looks for commits by other processes sharing the file.
const FOREIGN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Most requests in one batch: bounds the latency one COMMIT adds to the earliest request.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Request {
    Commit {
        writes: Vec<PreparedWrite>,
        fence: Option<Fence>,
        reply: Reply<Committed>,
    },
    UpsertDomain {
        domain: String,
        ttl_seconds: i64,
        reply: Reply<Domain>,
    },
    SetPresence {
        presence: CellPresence,
        ttl_seconds: i64,
        reply: Reply<PresenceRecord>,
    },
    RemovePresence {
        cell_id: String,
        reply: Reply<bool>,
    },
    AcquireLock {
        lock: LockRecord,
        ttl_seconds: i64,
        reply: Reply<LockRecord>,
    },
    ReleaseLock {
        key: String,
        owner: String,
        reply: Reply<bool>,
    },
}

/// What an applied request produced, held back until its batch is durable.
enum Outcome {
    Committed { revision: u64 },
    Domain(Domain),
    Presence(PresenceRecord),
    Removed(bool),
    Lock(LockRecord),
}

impl Request {
    /// Sends `outcome` (or a failure) to the caller.
    fn reply(self, outcome: Result<Outcome, StoreError>) {
        // The caller may have given up (its future dropped); the write stands regardless.
        fn send<T>(reply: Reply<T>, r: Result<T, StoreError>) {
            let _ = reply.send(r);
        }
        let mismatch = || StoreError::unavailable("sqlite writer: outcome of another request kind (a bug)");
        match self {
            Request::Commit { writes, reply, .. } => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Committed { revision } => Ok(Committed {
                        records: writes.into_iter().map(|w| w.after).collect(),
                        revision,
                    }),
                    _ => Err(mismatch()),
                }),
            ),
            Request::UpsertDomain { reply, .. } => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Domain(d) => Ok(d),
                    _ => Err(mismatch()),
                }),
            ),
            Request::SetPresence { reply, .. } => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Presence(p) => Ok(p),
                    _ => Err(mismatch()),
                }),
            ),
            Request::RemovePresence { reply, .. } | Request::ReleaseLock { reply, .. } => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Removed(b) => Ok(b),
                    _ => Err(mismatch()),
                }),
            ),
            Request::AcquireLock { reply, .. } => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Lock(l) => Ok(l),
                    _ => Err(mismatch()),
                }),
            ),
        }
    }
}

/// Why a batch did not commit.
enum BatchFailure {
    /// One transaction failed half-way without a savepoint; retry the batch with them.
    Broken,
    /// Request `at` made SQLite abort the whole transaction; retry the batch without it.
    Aborted { at: usize, message: String },
    /// The batch as a whole failed (BEGIN or COMMIT).
    Fatal(String),
}

/// The caller's handle on the writer thread. Dropping it lets the thread finish the queued
/// requests and exit, and waits for that, so the database is closed when the store is.
pub(super) struct Writer {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    pub fn spawn(
        conn: Connection,
        path: &std::path::Path,
        head: u64,
        clock: Arc<dyn Clock>,
        change_retention: usize,
        head_tx: watch::Sender<u64>,
    ) -> Result<Writer, StoreError> {
        let (checkpointer, nudge) = Checkpointer::spawn(path)?;
        let (tx, rx) = mpsc::channel();
        let state = WriterThread {
            conn,
            head,
            clock,
            retention: u64::try_from(change_retention).unwrap_or(u64::MAX),
            head_tx,
            nudge,
        };
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| StoreError::unavailable_from("starting the sqlite writer thread", e))?;
        Ok(Writer {
            requests: Some(tx),
            thread: Some(thread),
            checkpointer: Some(checkpointer),
        })
    }

    /// Sends a request and waits for its durable outcome.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::unavailable("sqlite writer thread has stopped");
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(make(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                error!("sqlite writer thread panicked");
            }
        }
        // The writer thread held the checkpointer's nudge; with it gone, the checkpointer stops.
        if let Some(c) = self.checkpointer.take() {
            c.join();
        }
    }
}

struct WriterThread {
    conn: Connection,
    /// Revision of the newest change in the database, including the open batch's.
    head: u64,
    clock: Arc<dyn Clock>,
    retention: u64,
    head_tx: watch::Sender<u64>,
    nudge: Nudge,
}

impl WriterThread {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut data_version = self.data_version();
        loop {
            let first = match rx.recv_timeout(FOREIGN_POLL) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Another process sharing the file may have committed: follow its head.
                    let v = self.data_version();
                    if v != data_version {
                        data_version = v;
                        self.follow_foreign_head();
                    }
                    // A lapsed presence is a change too: an empty batch sweeps it.
                    match leases::has_expired_presence(&self.conn, self.clock.now()) {
                        Ok(true) => {
                            self.process(&mut batch);
                            data_version = self.data_version();
                        }
                        Ok(false) => {}
                        Err(e) => error!(error = %e, "looking for expired presences"),
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
            data_version = self.data_version();
        }
        debug!("sqlite writer stopping: store dropped");
    }

    /// SQLite's count of commits by other connections to this file.
    fn data_version(&self) -> i64 {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Publishes the head another process committed, so this process's change-feed readers
    /// (event streams, the converger's wake-ups) see its changes.
    fn follow_foreign_head(&mut self) {
        match read_head(&self.conn) {
            Ok(head) if head > self.head => {
                self.head = head;
                self.head_tx.send_replace(head);
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "reading the change-feed head another process wrote"),
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let now = self.clock.now();
        // Optimistically without savepoints. Should a transaction fail half-way, redo the
        // batch with one savepoint per transaction, so only the failing ones fail; should one
        // make SQLite abort the whole transaction (IO error, full disk), redo the batch
        // without it. Each retry sets one more request aside, so this ends.
        let mut isolate = false;
        let mut set_aside: Vec<Option<String>> = vec![None; batch.len()];
        let outcomes = loop {
            match self.apply_batch(batch, now, isolate, &set_aside) {
                Err(BatchFailure::Broken) if !isolate => isolate = true,
                Err(BatchFailure::Aborted { at, message }) if set_aside[at].is_none() => {
                    error!(error = %message, "a write aborted its batch; retrying the batch without it");
                    set_aside[at] = Some(message);
                }
                other => break other,
            }
        };
        match outcomes {
            Ok(outcomes) => {
                // Watchers learn of the new head before callers hear back, so a caller that
                // reads the head after its commit never sees an older one.
                if *self.head_tx.borrow() != self.head {
                    self.head_tx.send_replace(self.head);
                }
                batch.drain(..).zip(outcomes).for_each(|(r, o)| r.reply(o));
                self.nudge.nudge();
            }
            Err(failure) => {
                let message = match failure {
                    BatchFailure::Fatal(m) | BatchFailure::Aborted { message: m, .. } => m,
                    BatchFailure::Broken => "sqlite: a transaction failed half-way inside a savepoint".into(),
                };
                error!(requests = batch.len(), error = %message, "write batch failed; nothing of it was applied");
                batch
                    .drain(..)
                    .for_each(|r| r.reply(Err(StoreError::unavailable(&message))));
            }
        }
    }

    /// Applies every request of `batch` (except those set aside, which fail with their
    /// message) in one transaction and commits it. On failure nothing is applied and
    /// `self.head` is unchanged.
    fn apply_batch(
        &mut self,
        batch: &[Request],
        now: Timestamp,
        isolate: bool,
        set_aside: &[Option<String>],
    ) -> Result<Vec<Result<Outcome, StoreError>>, BatchFailure> {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return Err(BatchFailure::Fatal(format!(
                "sqlite: starting a write transaction: {e}"
            )));
        }
        // Another process sharing the file may have advanced the head since the last batch;
        // inside BEGIN IMMEDIATE nobody else can until COMMIT.
        match read_head(&self.conn) {
            Ok(head) => self.head = self.head.max(head),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(BatchFailure::Fatal(format!("{e}: {}", source_text(&e))));
            }
        }
        let start_head = self.head;
        // Presences that lapsed leave the feed a change before anything else of the batch.
        if let Err(e) = leases::sweep_expired_presences(&self.conn, now, &mut self.head) {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.head = start_head;
            return Err(BatchFailure::Fatal(format!("{e}: {}", source_text(&e))));
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (i, request) in batch.iter().enumerate() {
            if let Some(message) = &set_aside[i] {
                outcomes.push(Err(StoreError::unavailable(message)));
                continue;
            }
            match self.apply(request, now, isolate) {
                Ok(outcome) => outcomes.push(outcome),
                Err(broken) => {
                    failure = Some(if isolate {
                        BatchFailure::Fatal(format!("{broken}: {}", source_text(&broken)))
                    } else {
                        BatchFailure::Broken
                    });
                    break;
                }
            }
            // An IO error or full disk can make SQLite roll back the whole transaction; later
            // statements would then run in autocommit mode, outside the batch.
            if self.conn.is_autocommit() {
                let message = match &outcomes[i] {
                    Err(e) => format!("{e}: {}", source_text(e)),
                    Ok(_) => "sqlite: the write transaction was aborted".into(),
                };
                failure = Some(BatchFailure::Aborted { at: i, message });
                break;
            }
        }
        if failure.is_none() {
            let finished = if self.head != start_head {
                apply::finish_batch(&self.conn, self.head, self.retention)
            } else {
                Ok(())
            };
            if let Err(e) = finished.and_then(|()| {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(|e| db_error("committing", e))
            }) {
                failure = Some(BatchFailure::Fatal(format!("{e}: {}", source_text(&e))));
            }
        }
        match failure {
            None => Ok(outcomes),
            Some(f) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.head = start_head;
                Err(f)
            }
        }
    }

    /// Applies one request. `Err` only when it left the batch transaction half-changed.
    fn apply(
        &mut self,
        request: &Request,
        now: Timestamp,
        isolate: bool,
    ) -> Result<Result<Outcome, StoreError>, StoreError> {
        let conn = &self.conn;
        Ok(match request {
            Request::Commit { writes, fence, .. } => {
                // Checked inside the batch's write transaction, so no lock change can come
                // between the check and the writes.
                if let Some(e) = fence
                    .as_ref()
                    .and_then(|f| leases::check_fence(conn, f, now).err())
                {
                    return Ok(Err(e));
                }
                match apply::commit(conn, writes, &mut self.head, now, isolate) {
                    Ok(()) => Ok(Outcome::Committed { revision: self.head }),
                    Err(Failure::Refused(e)) => Err(e),
                    Err(Failure::Broken(e)) => return Err(e),
                }
            }
            Request::UpsertDomain {
                domain, ttl_seconds, ..
            } => leases::upsert_domain(conn, domain, *ttl_seconds, now).map(Outcome::Domain),
            Request::SetPresence {
                presence,
                ttl_seconds,
                ..
            } => {
                leases::set_presence(conn, presence, *ttl_seconds, now, &mut self.head).map(Outcome::Presence)
            }
            Request::RemovePresence { cell_id, .. } => {
                leases::remove_presence(conn, cell_id, now, &mut self.head).map(Outcome::Removed)
            }
            Request::AcquireLock {
                lock, ttl_seconds, ..
            } => leases::acquire_lock(conn, lock, *ttl_seconds, now).map(Outcome::Lock),
            Request::ReleaseLock { key, owner, .. } => {
                leases::release_lock(conn, key, owner).map(Outcome::Removed)
            }
        })
    }
}

fn source_text(e: &StoreError) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::fixtures::task;
    use crate::sqlite::{codec, read, schema};
    use crate::{Record, Txn, Write};
    use diego_model::ManualClock;

    async fn commit(w: &Writer, txn: Txn) -> Result<Committed, StoreError> {
        let writes = txn
            .writes
            .into_iter()
            .map(codec::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        w.call(|reply| Request::Commit {
            writes,
            fence: None,
            reply,
        })
        .await
    }

    /// An SQL failure inside a batch (here: the database is full) fails that transaction
    /// with `Unavailable`, applies nothing of it, and leaves the store usable.
    #[tokio::test]
    async fn a_failing_write_applies_nothing_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let (conn, head) = schema::open_writer(&path).unwrap();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let _: i64 = conn
            .query_row(&format!("PRAGMA max_page_count = {}", pages + 20), [], |r| {
                r.get(0)
            })
            .unwrap();
        let (head_tx, head_rx) = watch::channel(head);
        let clock = Arc::new(ManualClock::new(0));
        let w = Writer::spawn(conn, &path, head, clock, 1000, head_tx).unwrap();

        commit(&w, Txn::one(Write::insert(Record::Task(task("small", "d")))))
            .await
            .unwrap();
        let mut big = task("big", "d");
        big.task_definition.annotation = "x".repeat(512 * 1024);
        let txn = Txn {
            fence: None,
            writes: vec![
                Write::insert(Record::Task(task("other", "d"))),
                Write::insert(Record::Task(big)),
            ],
        };
        // Sent together, so they likely share a batch: the big one must fail alone.
        let neighbour = Txn::one(Write::insert(Record::Task(task("neighbour", "d"))));
        let (failed, ok) = tokio::join!(commit(&w, txn), commit(&w, neighbour));
        let err = failed.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert_eq!(
            ok.unwrap().revision,
            2,
            "the neighbour committed as the only change"
        );
        assert_eq!(*head_rx.borrow(), 2, "the failed transaction appended no change");

        let c = commit(&w, Txn::one(Write::insert(Record::Task(task("after", "d")))))
            .await
            .unwrap();
        assert_eq!(c.revision, 3, "revisions stay consecutive");
        let reader = schema::open_reader(&path).unwrap();
        let guids: Vec<String> = read::list_tasks(&reader, &Default::default())
            .unwrap()
            .into_iter()
            .map(|t| t.task_guid)
            .collect();
        assert_eq!(guids, ["after", "neighbour", "small"]);
    }

    #[tokio::test]
    async fn calls_after_the_writer_stopped_are_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let (conn, head) = schema::open_writer(&path).unwrap();
        let (head_tx, _) = watch::channel(head);
        let mut w = Writer::spawn(conn, &path, head, Arc::new(ManualClock::new(0)), 10, head_tx).unwrap();
        drop(w.requests.take());
        w.thread.take().unwrap().join().unwrap();
        let err = w
            .call(|reply| Request::RemovePresence {
                cell_id: "c".into(),
                reply,
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("writer thread has stopped"), "{err}");
    }

    /// One batch in which a write makes SQLite abort the whole transaction (the database is
    /// full): that write fails, its batch neighbours commit.
    #[test]
    fn a_write_that_aborts_its_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bbs.db");
        let (conn, head) = schema::open_writer(&path).unwrap();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let _: i64 = conn
            .query_row(&format!("PRAGMA max_page_count = {}", pages + 20), [], |r| {
                r.get(0)
            })
            .unwrap();
        let (head_tx, head_rx) = watch::channel(head);
        let mut writer = WriterThread {
            conn,
            head,
            clock: Arc::new(ManualClock::new(0)),
            retention: 1000,
            head_tx,
            nudge: Nudge::detached(),
        };
        let request = |t: diego_model::Task| {
            let (reply, rx) = oneshot::channel();
            let writes = vec![codec::prepare(Write::insert(Record::Task(t))).unwrap()];
            (
                Request::Commit {
                    writes,
                    fence: None,
                    reply,
                },
                rx,
            )
        };
        let mut big = task("big", "d");
        big.task_definition.annotation = "x".repeat(512 * 1024);
        let (r1, mut rx1) = request(task("first", "d"));
        let (r2, mut rx2) = request(big);
        let (r3, mut rx3) = request(task("third", "d"));
        writer.process(&mut vec![r1, r2, r3]);

        assert_eq!(rx1.try_recv().unwrap().unwrap().revision, 1);
        let err = rx2.try_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(rx3.try_recv().unwrap().unwrap().revision, 2);
        assert_eq!(*head_rx.borrow(), 2);
    }
}
