//! Decoding large listings on two threads.
//!
//! Listing 100,000 actual LRPs spends about four times longer in JSON decoding than in
//! SQLite. Rows can only be stepped on the connection's thread, so that thread scans; once a
//! listing proves large, a helper thread decodes chunks of raw JSON it is handed. The
//! scanning thread hands over a copied chunk only while the helper has little queued, and
//! otherwise decodes the next chunk itself, straight from the rows without a copy — so both
//! threads stay busy and small listings never start a thread.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use rusqlite::Rows;

use super::schema::db_error;
use crate::StoreError;

/// Listings up to this many rows are decoded on the calling thread alone.
const INLINE_ROWS: usize = 4096;
/// Rows per unit of work.
const CHUNK_ROWS: usize = 1024;
/// Chunks queued for the helper before the scanning thread starts decoding itself.
const HELPER_BACKLOG: usize = 2;

/// One column's text of up to `CHUNK_ROWS` rows, concatenated.
struct Chunk {
    seq: usize,
    text: String,
    ends: Vec<usize>,
}

impl Chunk {
    fn rows(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| &self.text[s..e])
    }
}

#[derive(Default)]
struct Queue {
    state: Mutex<(VecDeque<Chunk>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, c: Chunk) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push_back(c);
        self.ready.notify_one();
    }

    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
    }

    fn try_pop(&self) -> Option<Chunk> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.pop_front()
    }

    /// The next chunk, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<Chunk> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(c) = st.0.pop_front() {
                return Some(c);
            }
            if st.1 {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn text<'r>(rows: &'r mut Rows<'_>, col: usize) -> Result<Option<&'r str>, StoreError> {
    let q = |e| db_error("listing rows", e);
    match rows.next().map_err(q)? {
        None => Ok(None),
        Some(row) => {
            let v = row.get_ref(col).map_err(q)?;
            let s = v.as_str().map_err(|e| {
                q(rusqlite::Error::FromSqlConversionFailure(
                    col,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                ))
            })?;
            Ok(Some(s))
        }
    }
}

/// Decodes column `col` of every remaining row with `decode`, in row order.
pub(super) fn decode_rows<T, D>(rows: &mut Rows<'_>, col: usize, decode: D) -> Result<Vec<T>, StoreError>
where
    T: Send,
    D: Fn(&str) -> Result<T, StoreError> + Sync,
{
    let mut head = Vec::new();
    while head.len() < INLINE_ROWS {
        match text(rows, col)? {
            Some(s) => head.push(decode(s)?),
            None => return Ok(head),
        }
    }

    let queue = Queue::default();
    let decode_chunk = |c: &Chunk| c.rows().map(&decode).collect::<Result<Vec<T>, StoreError>>();
    let (scanned, helped) = std::thread::scope(|scope| {
        let helper = scope.spawn(|| {
            let mut done = Vec::new();
            while let Some(c) = queue.pop() {
                done.push((c.seq, decode_chunk(&c)));
            }
            done
        });
        let scanned = scan(rows, col, &queue, &decode);
        queue.close();
        // Help drain whatever the helper has not reached.
        let mut scanned = scanned.map(|mut mine| {
            while let Some(c) = queue.try_pop() {
                mine.push((c.seq, decode_chunk(&c)));
            }
            mine
        });
        let helped = helper
            .join()
            .map_err(|_| StoreError::unavailable("sqlite: a decoding thread panicked"));
        if let (Ok(mine), Ok(theirs)) = (&mut scanned, &helped) {
            mine.reserve(theirs.len());
        }
        (scanned, helped)
    });
    let mut chunks = scanned?;
    chunks.extend(helped?);
    chunks.sort_unstable_by_key(|(seq, _)| *seq);

    let mut out = Vec::with_capacity(head.len() + chunks.len() * CHUNK_ROWS);
    out.append(&mut head);
    for (_, decoded) in chunks {
        out.extend(decoded?);
    }
    Ok(out)
}

type Decoded<T> = Vec<(usize, Result<Vec<T>, StoreError>)>;

/// Steps through the rows: copies a chunk for the helper while its queue is short, and
/// decodes a chunk itself otherwise. Returns the chunks it decoded.
fn scan<T, D>(rows: &mut Rows<'_>, col: usize, queue: &Queue, decode: &D) -> Result<Decoded<T>, StoreError>
where
    D: Fn(&str) -> Result<T, StoreError>,
{
    let mut mine = Vec::new();
    for seq in 0.. {
        let mut n = 0;
        if queue.len() < HELPER_BACKLOG {
            let mut chunk = Chunk {
                seq,
                text: String::new(),
                ends: Vec::with_capacity(CHUNK_ROWS),
            };
            while n < CHUNK_ROWS {
                let Some(s) = text(rows, col)? else { break };
                chunk.text.push_str(s);
                chunk.ends.push(chunk.text.len());
                n += 1;
            }
            if n > 0 {
                queue.push(chunk);
            }
        } else {
            let mut decoded = Vec::with_capacity(CHUNK_ROWS);
            let mut result = Ok(());
            while n < CHUNK_ROWS {
                let Some(s) = text(rows, col)? else { break };
                match decode(s) {
                    Ok(v) => decoded.push(v),
                    Err(e) => result = Err(e),
                }
                n += 1;
            }
            if n > 0 {
                mine.push((seq, result.map(|()| decoded)));
            }
        }
        if n < CHUNK_ROWS {
            break;
        }
    }
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn table(n: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (i INTEGER PRIMARY KEY, data TEXT NOT NULL)")
            .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..n {
            tx.execute(
                "INSERT INTO t (i, data) VALUES (?1, ?2)",
                rusqlite::params![i as i64, i.to_string()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        conn
    }

    fn parse(s: &str) -> Result<usize, StoreError> {
        s.parse()
            .map_err(|_| StoreError::unavailable(format!("bad row {s:?}")))
    }

    #[test]
    fn keeps_row_order_across_inline_and_chunked_rows() {
        for n in [
            0,
            1,
            INLINE_ROWS,
            INLINE_ROWS + 1,
            INLINE_ROWS + CHUNK_ROWS * 7 + 3,
            50_000,
        ] {
            let conn = table(n);
            let mut stmt = conn.prepare("SELECT data FROM t ORDER BY i").unwrap();
            let mut rows = stmt.query([]).unwrap();
            let got = decode_rows(&mut rows, 0, parse).unwrap();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn reports_a_bad_row_in_any_chunk() {
        let conn = table(30_000);
        conn.execute("UPDATE t SET data = 'x' WHERE i = 25000", [])
            .unwrap();
        let mut stmt = conn.prepare("SELECT data FROM t ORDER BY i").unwrap();
        let mut rows = stmt.query([]).unwrap();
        let err = decode_rows(&mut rows, 0, parse).unwrap_err();
        assert!(err.to_string().contains("bad row"), "{err}");
    }
}
