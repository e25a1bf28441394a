//! What makes the log server's history outlive a restart (`--data-dir`): an append-only file
//! of the lines accepted, compacted now and then to what the store still holds.
//!
//! `DIR/lines.jsonl` holds one record per line, `{"seq":N,"line":{…}}`, in the order lines
//! were accepted. A writer thread appends each accepted batch and flushes it to the OS at once
//! (so a killed server loses nothing it had handed over), and `fsync`s at most once a second
//! (so a machine that loses power loses up to that second). When the file holds more than
//! twice what the store holds (and at least [`COMPACT_MIN_RECORDS`]), the writer rewrites it
//! from a snapshot of the store — to a temporary file, `fsync`ed, renamed over the old one —
//! and skips the queued records the snapshot already has (by log guid and seq). At start the
//! file is read back into the store (a torn last record is skipped) and compacted.
//!
//! What can be lost: lines accepted in the last moments before a kill (still in the writer's
//! queue, a few milliseconds' worth) and, on a power loss, up to the last second. Nothing
//! older, and never a line that was compacted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::line::LogLine;
use crate::store::{LogStore, StoredLine};

/// The journal's file name in the data dir.
pub const FILE: &str = "lines.jsonl";

/// Fewest records in the file before it is worth compacting.
pub const COMPACT_MIN_RECORDS: usize = 10_000;

/// Longest time an appended record waits for `fsync`.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    line: &'a LogLine,
}

#[derive(Deserialize)]
struct RecordIn {
    seq: u64,
    line: LogLine,
}

/// Failures opening or loading the journal, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// What loading found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Records read back.
    pub records: usize,
    /// Records that could not be read (a torn last write), skipped.
    pub skipped: usize,
    /// Records beyond the retention, evicted as they were loaded.
    pub evicted: usize,
}

/// The writer thread's handle. Dropping it (or [`Journal::close`]) lets the writer append
/// what is queued, `fsync` and stop.
pub struct Journal {
    tx: Option<mpsc::Sender<Vec<Arc<StoredLine>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    /// Loads `dir`'s journal into `store` (created if absent), compacts it, and starts the
    /// writer.
    pub fn open(dir: &Path, store: Arc<Mutex<LogStore>>) -> Result<(Journal, Loaded), JournalError> {
        let path = dir.join(FILE);
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let loaded = {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            load(&path, &mut store).map_err(err)?
        };
        let snapshot = lock(&store).snapshot();
        let file = rewrite(&path, &snapshot.0).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            out: BufWriter::with_capacity(1 << 20, file),
            records: snapshot.0.len(),
            skip: snapshot.1,
            store,
            unsynced: false,
            last_sync: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("logs-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(err)?;
        Ok((
            Journal {
                tx: Some(tx),
                thread: Some(thread),
            },
            loaded,
        ))
    }

    /// Queues an accepted batch for appending.
    pub fn append(&self, lines: Vec<Arc<StoredLine>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(lines);
        }
    }

    /// Appends what is queued, `fsync`s and stops the writer; returns once it has.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(store: &Mutex<LogStore>) -> std::sync::MutexGuard<'_, LogStore> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads every record of `path` (if it exists) into `store`.
fn load(path: &Path, store: &mut LogStore) -> io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(loaded),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        match serde_json::from_slice::<RecordIn>(&buf) {
            Ok(r) => {
                loaded.records += 1;
                loaded.evicted += store.restore(StoredLine {
                    seq: r.seq,
                    line: r.line,
                });
            }
            Err(e) => {
                loaded.skipped += 1;
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable journal record");
            }
        }
    }
    Ok(loaded)
}

fn write_record(out: &mut impl Write, stored: &StoredLine) -> io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &RecordOut {
            seq: stored.seq,
            line: &stored.line,
        },
    )?;
    out.write_all(b"\n")
}

/// Replaces `path` with `lines`, durably; the new file, opened for appending.
fn rewrite(path: &Path, lines: &[Arc<StoredLine>]) -> io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        for s in lines {
            write_record(&mut out, s)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    /// Records in the file.
    records: usize,
    /// Per log guid, the last seq the file already has from the latest compaction.
    skip: HashMap<String, u64>,
    store: Arc<Mutex<LogStore>>,
    unsynced: bool,
    last_sync: Instant,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Vec<Arc<StoredLine>>>) {
        loop {
            let open = match rx.recv_timeout(SYNC_INTERVAL) {
                Ok(batch) => {
                    self.step(|w| w.append(&batch));
                    // Take what else is queued before flushing once.
                    let mut open = true;
                    loop {
                        match rx.try_recv() {
                            Ok(batch) => self.step(|w| w.append(&batch)),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    self.step(|w| w.out.flush());
                    open
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            if !open {
                self.step(|w| w.sync());
                return;
            }
            if self.unsynced && self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.step(|w| w.sync());
            }
            let held = lock(&self.store).held();
            if self.records >= COMPACT_MIN_RECORDS && self.records > 2 * held {
                self.step(|w| w.compact());
            }
        }
    }

    /// Runs one IO step; a failure is logged and the writer goes on (the lines stay in memory).
    fn step(&mut self, f: impl FnOnce(&mut Self) -> io::Result<()>) {
        if let Err(e) = f(self) {
            tracing::error!(path = %self.path.display(), error = %e, "writing the log journal failed");
        }
    }

    fn append(&mut self, batch: &[Arc<StoredLine>]) -> io::Result<()> {
        for s in batch {
            if self.skip.get(&s.line.log_guid).is_some_and(|&seq| s.seq <= seq) {
                continue;
            }
            write_record(&mut self.out, s)?;
            self.records += 1;
        }
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let (lines, last) = lock(&self.store).snapshot();
        let before = self.records;
        let file = rewrite(&self.path, &lines)?;
        self.out = BufWriter::with_capacity(1 << 20, file);
        self.records = lines.len();
        self.skip = last;
        self.unsynced = false;
        self.last_sync = Instant::now();
        tracing::info!(path = %self.path.display(), before, after = self.records, "compacted the log journal");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::LogStream;
    use crate::query::LogQuery;

    fn line(guid: &str, message: &str) -> LogLine {
        LogLine {
            log_guid: guid.into(),
            source_type: "APP".into(),
            instance_index: Some(0),
            stream: LogStream::Stdout,
            timestamp_ns: 1,
            message: message.into(),
        }
    }

    fn accept(store: &Arc<Mutex<LogStore>>, journal: &Journal, lines: Vec<LogLine>) {
        let stored = {
            let mut s = lock(store);
            lines.into_iter().map(|l| s.append(l).0).collect()
        };
        journal.append(stored);
    }

    fn recent(store: &Arc<Mutex<LogStore>>, guid: &str) -> Vec<(u64, String)> {
        lock(store)
            .recent(guid, &LogQuery::default(), usize::MAX)
            .iter()
            .map(|s| (s.seq, s.line.message.clone()))
            .collect()
    }

    #[test]
    fn history_outlives_a_restart_and_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(LogStore::new(3)));
        let (journal, loaded) = Journal::open(dir.path(), store.clone()).unwrap();
        assert_eq!(loaded, Loaded::default());
        accept(
            &store,
            &journal,
            (0..5).map(|i| line("a", &format!("a{i}"))).collect(),
        );
        accept(&store, &journal, vec![line("b", "b0")]);
        journal.close();
        // A write cut short by a crash.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":9,"line":{"log_gu"#).unwrap();
        drop(f);

        let again = Arc::new(Mutex::new(LogStore::new(3)));
        let (journal, loaded) = Journal::open(dir.path(), again.clone()).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                records: 6,
                skipped: 1,
                evicted: 2
            }
        );
        let want = |v: &[(u64, &str)]| v.iter().map(|(s, m)| (*s, m.to_string())).collect::<Vec<_>>();
        assert_eq!(recent(&again, "a"), want(&[(3, "a2"), (4, "a3"), (5, "a4")]));
        assert_eq!(recent(&again, "b"), want(&[(1, "b0")]));
        // Numbering goes on where it stopped.
        accept(&again, &journal, vec![line("a", "a5")]);
        journal.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            5,
            "compacted at open, then one appended:\n{text}"
        );
        let third = Arc::new(Mutex::new(LogStore::new(3)));
        drop(Journal::open(dir.path(), third.clone()).unwrap());
        assert_eq!(recent(&third, "a"), want(&[(4, "a3"), (5, "a4"), (6, "a5")]));
    }

    #[test]
    fn the_file_is_compacted_to_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(LogStore::new(10)));
        let (journal, _) = Journal::open(dir.path(), store.clone()).unwrap();
        let total = COMPACT_MIN_RECORDS * 3;
        for chunk in 0..(total / 1000) {
            accept(
                &store,
                &journal,
                (0..1000)
                    .map(|i| line("a", &format!("m{}", chunk * 1000 + i)))
                    .collect(),
            );
        }
        let path = dir.path().join(FILE);
        // The writer compacts once it has written past the threshold.
        let deadline = Instant::now() + Duration::from_secs(30);
        let newest = format!("\"m{}\"", total - 1);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            let n = text.lines().count();
            if n < total && text.lines().last().is_some_and(|l| l.contains(&newest)) {
                break;
            }
            assert!(Instant::now() < deadline, "never compacted: {n} records");
            std::thread::sleep(Duration::from_millis(20));
        }
        journal.close();
        let n = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(n < COMPACT_MIN_RECORDS * 2, "{n} records after compaction");
        let again = Arc::new(Mutex::new(LogStore::new(10)));
        drop(Journal::open(dir.path(), again.clone()).unwrap());
        let got = recent(&again, "a");
        assert_eq!(got.len(), 10);
        assert_eq!(got.last().unwrap(), &(total as u64, format!("m{}", total - 1)));
        // No record written twice: seqs strictly rise.
        assert!(got.windows(2).all(|w| w[0].0 + 1 == w[1].0), "{got:?}");
    }
}
