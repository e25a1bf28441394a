//! The checkpointer thread: copies the WAL back into the database file off the write path.
//!
//! By default SQLite checkpoints inside the COMMIT that crosses the WAL size threshold, so
//! the writer thread, which every write waits on, would spend a good part of its time
//! copying pages and fsyncing the database file. Instead the writer nudges this thread after
//! each batch, and it runs a PASSIVE checkpoint (which never blocks the writer or readers)
//! at most once per [`INTERVAL`]. The writer keeps a high auto-checkpoint threshold as a
//! backstop should this thread fall behind.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::{debug, warn};

use super::schema::db_error;
use crate::StoreError;

/// Least time between two checkpoints: each fsyncs the database file.
const INTERVAL: Duration = Duration::from_millis(100);

pub(super) struct Checkpointer {
    thread: JoinHandle<()>,
}

/// The writer's side: says "there is new WAL content".
pub(super) struct Nudge(mpsc::SyncSender<()>);

impl Nudge {
    /// A nudge nobody listens to, for tests of the writer alone.
    #[cfg(test)]
    pub fn detached() -> Nudge {
        Nudge(mpsc::sync_channel(1).0)
    }

    pub fn nudge(&self) {
        // Full means a nudge is already pending; that one will do.
        let _ = self.0.try_send(());
    }
}

impl Checkpointer {
    /// Starts the thread; it stops once the returned [`Nudge`] is dropped.
    pub fn spawn(path: &Path) -> Result<(Checkpointer, Nudge), StoreError> {
        let conn = Connection::open(path).map_err(|e| db_error("opening the checkpoint connection", e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| db_error("setting busy_timeout", e))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::unavailable_from("starting the sqlite checkpoint thread", e))?;
        Ok((Checkpointer { thread }, Nudge(tx)))
    }

    pub fn join(self) {
        if self.thread.join().is_err() {
            warn!("sqlite checkpoint thread panicked");
        }
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<()>) {
    let mut last = Instant::now();
    while rx.recv().is_ok() {
        // Let more batches land before copying, but stop promptly when the store closes.
        let due = last + INTERVAL;
        loop {
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((busy, wal_frames, copied)) => debug!(busy, wal_frames, copied, "checkpointed WAL"),
            Err(e) => warn!(error = %e, "WAL checkpoint failed; will retry after the next write"),
        }
        last = Instant::now();
    }
}
