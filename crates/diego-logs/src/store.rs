//! The log server's memory: a bounded history per log guid.
//!
//! Each log guid numbers its lines 1, 2, 3, … as they arrive (the line's `seq`) and keeps the
//! newest `retention` of them; older ones are evicted. The numbers are what a follower resumes
//! from (`Last-Event-ID`) and how it learns it missed lines: when the oldest line held is past
//! the one it expects next, the lines between were evicted. Plain data, no IO: the server
//! wraps it in a lock, the journal ([`crate::journal`]) makes it outlive a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::line::LogLine;
use crate::query::LogQuery;

/// Lines kept per log guid unless configured otherwise (`--retention-lines`).
pub const DEFAULT_RETENTION_LINES: usize = 10_000;

/// A line as held: its log guid's sequence number and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub seq: u64,
    pub line: LogLine,
}

#[derive(Debug, Default)]
struct History {
    lines: VecDeque<Arc<StoredLine>>,
    /// The seq of the last line appended (0 before the first).
    last_seq: u64,
}

/// What a read after a given seq found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct After {
    /// Matching lines after the seq, oldest first (at most the limit asked for).
    pub lines: Vec<Arc<StoredLine>>,
    /// Lines after the seq that were already evicted.
    pub missed: u64,
    /// The seq a reader has seen everything up to, once it took `lines` (those that did not
    /// match included).
    pub upto: u64,
}

/// Every log guid's history.
#[derive(Debug)]
pub struct LogStore {
    retention: usize,
    histories: HashMap<String, History>,
    held: usize,
}

impl LogStore {
    /// A store keeping `retention` lines per log guid (at least 1).
    pub fn new(retention: usize) -> Self {
        LogStore {
            retention: retention.max(1),
            histories: HashMap::new(),
            held: 0,
        }
    }

    pub fn retention(&self) -> usize {
        self.retention
    }

    /// Appends `line` as its log guid's next; the stored line and how many lines were
    /// evicted to make room (0 or 1).
    pub fn append(&mut self, line: LogLine) -> (Arc<StoredLine>, usize) {
        let h = self.histories.entry(line.log_guid.clone()).or_default();
        let stored = Arc::new(StoredLine {
            seq: h.last_seq + 1,
            line,
        });
        h.last_seq = stored.seq;
        h.lines.push_back(stored.clone());
        self.held += 1;
        let evicted = trim(h, self.retention);
        self.held -= evicted;
        (stored, evicted)
    }

    /// Puts back a line read from the journal, with its own seq. Lines must come in the
    /// order they were appended; one at or below its log guid's last seq is ignored.
    /// How many lines were evicted to make room.
    pub fn restore(&mut self, stored: StoredLine) -> usize {
        let h = self.histories.entry(stored.line.log_guid.clone()).or_default();
        if stored.seq <= h.last_seq {
            return 0;
        }
        h.last_seq = stored.seq;
        h.lines.push_back(Arc::new(stored));
        self.held += 1;
        let evicted = trim(h, self.retention);
        self.held -= evicted;
        evicted
    }

    /// The newest `limit` lines of `log_guid` matching `query`, oldest first.
    pub fn recent(&self, log_guid: &str, query: &LogQuery, limit: usize) -> Vec<Arc<StoredLine>> {
        let Some(h) = self.histories.get(log_guid) else {
            return Vec::new();
        };
        let mut out: Vec<Arc<StoredLine>> = h
            .lines
            .iter()
            .rev()
            .filter(|s| query.matches(&s.line))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Up to `limit` lines of `log_guid` after `seq` matching `query`, and how many after it
    /// were evicted already.
    pub fn after(&self, log_guid: &str, seq: u64, query: &LogQuery, limit: usize) -> After {
        let Some(h) = self.histories.get(log_guid) else {
            return After {
                upto: seq,
                ..After::default()
            };
        };
        let oldest = h.lines.front().map_or(h.last_seq + 1, |s| s.seq);
        let missed = oldest.saturating_sub(seq + 1);
        // Seqs rise along the deque.
        let start = h.lines.partition_point(|s| s.seq <= seq);
        let mut upto = seq.max(oldest.saturating_sub(1));
        let mut lines = Vec::new();
        for s in h.lines.iter().skip(start) {
            if lines.len() == limit {
                break;
            }
            upto = s.seq;
            if query.matches(&s.line) {
                lines.push(s.clone());
            }
        }
        After { lines, missed, upto }
    }

    /// The seq of the last line of `log_guid` (0 if none).
    pub fn last_seq(&self, log_guid: &str) -> u64 {
        self.histories.get(log_guid).map_or(0, |h| h.last_seq)
    }

    /// Log guids with a history.
    pub fn log_guids(&self) -> usize {
        self.histories.len()
    }

    /// Lines held, all log guids together.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Every line held, each log guid's oldest first, and each log guid's last seq: what a
    /// compacted journal is written from.
    pub fn snapshot(&self) -> (Vec<Arc<StoredLine>>, HashMap<String, u64>) {
        let mut lines = Vec::with_capacity(self.held);
        let mut last = HashMap::with_capacity(self.histories.len());
        for (guid, h) in &self.histories {
            lines.extend(h.lines.iter().cloned());
            last.insert(guid.clone(), h.last_seq);
        }
        (lines, last)
    }
}

fn trim(h: &mut History, retention: usize) -> usize {
    let mut evicted = 0;
    while h.lines.len() > retention {
        h.lines.pop_front();
        evicted += 1;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::LogStream;

    fn line(guid: &str, index: u32, t: u64, message: &str) -> LogLine {
        LogLine {
            log_guid: guid.into(),
            source_type: "APP/PROC/WEB".into(),
            instance_index: Some(index),
            stream: LogStream::Stdout,
            timestamp_ns: t,
            message: message.into(),
        }
    }

    fn messages(lines: &[Arc<StoredLine>]) -> Vec<&str> {
        lines.iter().map(|s| s.line.message.as_str()).collect()
    }

    #[test]
    fn each_log_guid_keeps_its_newest_lines() {
        let mut store = LogStore::new(3);
        let mut evicted = 0;
        for i in 0..5 {
            evicted += store.append(line("a", 0, i, &format!("a{i}"))).1;
        }
        evicted += store.append(line("b", 0, 9, "b0")).1;
        assert_eq!(evicted, 2);
        assert_eq!(store.held(), 4);
        assert_eq!(store.log_guids(), 2);
        let all = LogQuery::default();
        assert_eq!(messages(&store.recent("a", &all, 10)), ["a2", "a3", "a4"]);
        assert_eq!(messages(&store.recent("a", &all, 2)), ["a3", "a4"]);
        assert_eq!(messages(&store.recent("b", &all, 10)), ["b0"]);
        assert!(store.recent("c", &all, 10).is_empty());
        assert_eq!(store.last_seq("a"), 5);
        assert_eq!(store.recent("a", &all, 1)[0].seq, 5);
    }

    #[test]
    fn recent_reads_filter_before_they_limit() {
        let mut store = LogStore::new(100);
        for i in 0..10u32 {
            store.append(line("a", i % 2, u64::from(i), &format!("m{i}")));
        }
        let odd = LogQuery {
            index: Some(1),
            ..Default::default()
        };
        assert_eq!(messages(&store.recent("a", &odd, 2)), ["m7", "m9"]);
        let late = LogQuery {
            since_ns: Some(6),
            ..Default::default()
        };
        assert_eq!(messages(&store.recent("a", &late, 100)), ["m6", "m7", "m8", "m9"]);
    }

    #[test]
    fn reads_after_a_seq_as_a_table() {
        let mut store = LogStore::new(4);
        for i in 1..=6u64 {
            store.append(line("a", (i % 2) as u32, i, &format!("m{i}")));
        }
        // Held: seqs 3..=6.
        let all = LogQuery::default();
        let even = LogQuery {
            index: Some(0),
            ..Default::default()
        };
        type Case<'a> = (u64, &'a LogQuery, usize, &'a [&'a str], u64, u64);
        #[rustfmt::skip]
        let cases: [Case; 7] = [
            // (after, query, limit, lines, missed, upto)
            (0, &all, 10, &["m3", "m4", "m5", "m6"], 2, 6),
            (2, &all, 10, &["m3", "m4", "m5", "m6"], 0, 6),
            (4, &all, 10, &["m5", "m6"], 0, 6),
            (6, &all, 10, &[], 0, 6),
            (2, &all, 2, &["m3", "m4"], 0, 4),
            (0, &even, 10, &["m4", "m6"], 2, 6),
            (4, &even, 10, &["m6"], 0, 6),
        ];
        for (i, (after, q, limit, want, missed, upto)) in cases.into_iter().enumerate() {
            let got = store.after("a", after, q, limit);
            assert_eq!(messages(&got.lines), want, "case {i}");
            assert_eq!((got.missed, got.upto), (missed, upto), "case {i}");
        }
        let none = store.after("nobody", 3, &all, 10);
        assert_eq!((none.lines.len(), none.missed, none.upto), (0, 0, 3));
    }

    #[test]
    fn restored_lines_keep_their_seqs_and_retention() {
        let mut store = LogStore::new(2);
        for (seq, m) in [(4, "x"), (5, "y"), (5, "dup"), (7, "z")] {
            store.restore(StoredLine {
                seq,
                line: line("a", 0, seq, m),
            });
        }
        assert_eq!(messages(&store.recent("a", &LogQuery::default(), 10)), ["y", "z"]);
        assert_eq!(store.append(line("a", 0, 9, "next")).0.seq, 8);
        let (lines, last) = store.snapshot();
        assert_eq!(messages(&lines), ["z", "next"]);
        assert_eq!(last["a"], 8);
    }
}
