//! The shipper's decisions, as plain data: what happens to a line a container writes, what
//! the next batch is, and which notices are due. Time comes in as an argument.
//!
//! | situation | a new line | notice |
//! |---|---|---|
//! | its log guid is over the rate limit this second | dropped, counted for the guid | one per guid per notice interval while it drops: "N log lines dropped: over the rate limit of L lines per second" |
//! | the server is unreachable (the last send failed) | dropped, counted for the guid | when a send succeeds again, one per guid: "N log lines dropped while the log server was unreachable" |
//! | the buffer is full (the server is slower than the cell's output) | dropped, counted for the guid | once the buffer has room, one per guid: "N log lines dropped: the cell's log buffer was full" |
//! | otherwise | queued | — |
//!
//! A failed send drops the lines it carried and those still queued (counted as unreachable).
//! Notices are source `CELL`, of no instance, on stderr, and bypass the limit and the buffer
//! bound (there is at most one per log guid and cause).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::line::{source, LogLine, LogStream};

/// Bytes a queued line is reckoned to take besides its message.
const LINE_OVERHEAD: usize = 128;

/// Why a line was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drop {
    RateLimited,
    Unreachable,
    BufferFull,
}

impl Drop {
    /// The notice line's text for `n` lines dropped.
    pub fn notice(self, n: u64, lines_per_second: u32) -> String {
        let lines = if n == 1 { "line" } else { "lines" };
        match self {
            Drop::RateLimited => {
                format!("{n} log {lines} dropped: over the rate limit of {lines_per_second} lines per second")
            }
            Drop::Unreachable => format!("{n} log {lines} dropped while the log server was unreachable"),
            Drop::BufferFull => format!("{n} log {lines} dropped: the cell's log buffer was full"),
        }
    }
}

/// What became of an offered line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; `first` when the queue was empty before (the sender should be woken).
    Queued {
        first: bool,
    },
    Dropped(Drop),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lines per second per log guid; 0 = no limit.
    pub lines_per_second: u32,
    /// Bytes the queue holds at most (messages plus an allowance per line).
    pub buffer_bytes: usize,
    /// How often a log guid that keeps going over the rate limit gets a notice.
    pub notice_interval: Duration,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
    dropped: u64,
    last_notice: Option<Instant>,
}

/// Counts since start, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    pub sent: u64,
    pub rate_limited: u64,
    pub unreachable: u64,
    pub buffer_full: u64,
}

/// The shipper's state.
#[derive(Debug)]
pub struct ShipState {
    limits: Limits,
    queue: VecDeque<LogLine>,
    queued_bytes: usize,
    reachable: bool,
    windows: HashMap<String, Window>,
    /// Lines dropped per (cause, log guid) not yet reported (rate-limit drops live in the
    /// windows).
    pending: BTreeMap<(Drop, String), u64>,
    counts: Counts,
}

fn size(line: &LogLine) -> usize {
    line.message.len() + line.log_guid.len() + line.source_type.len() + LINE_OVERHEAD
}

fn notice(log_guid: &str, message: String, now_ns: u64) -> LogLine {
    LogLine {
        log_guid: log_guid.to_string(),
        source_type: source::CELL.to_string(),
        instance_index: None,
        stream: LogStream::Stderr,
        timestamp_ns: now_ns,
        message,
    }
}

impl ShipState {
    pub fn new(limits: Limits) -> Self {
        ShipState {
            limits,
            queue: VecDeque::new(),
            queued_bytes: 0,
            reachable: true,
            windows: HashMap::new(),
            pending: BTreeMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn reachable(&self) -> bool {
        self.reachable
    }

    /// Lines queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A line a container wrote, at `now`.
    pub fn offer(&mut self, line: LogLine, now: Instant) -> Offer {
        if self.limits.lines_per_second > 0 {
            let w = self.windows.entry(line.log_guid.clone()).or_insert(Window {
                started: now,
                count: 0,
                dropped: 0,
                last_notice: None,
            });
            if now.duration_since(w.started) >= Duration::from_secs(1) {
                w.started = now;
                w.count = 0;
            }
            if w.count >= self.limits.lines_per_second {
                w.dropped += 1;
                self.counts.rate_limited += 1;
                return Offer::Dropped(Drop::RateLimited);
            }
            w.count += 1;
        }
        let cause = if !self.reachable {
            Some(Drop::Unreachable)
        } else if self.queued_bytes + size(&line) > self.limits.buffer_bytes {
            Some(Drop::BufferFull)
        } else {
            None
        };
        if let Some(cause) = cause {
            self.drop_line(cause, line.log_guid);
            return Offer::Dropped(cause);
        }
        let first = self.queue.is_empty();
        self.queued_bytes += size(&line);
        self.queue.push_back(line);
        self.counts.queued += 1;
        Offer::Queued { first }
    }

    fn drop_line(&mut self, cause: Drop, log_guid: String) {
        match cause {
            Drop::Unreachable => self.counts.unreachable += 1,
            Drop::BufferFull => self.counts.buffer_full += 1,
            Drop::RateLimited => self.counts.rate_limited += 1,
        }
        *self.pending.entry((cause, log_guid)).or_default() += 1;
    }

    /// Queues the notices due at `now` (`now_ns` stamps them): buffer-full drops once there
    /// is room, unreachable drops once the server is back, rate-limit drops once per notice
    /// interval. Forgets rate windows idle for a while.
    pub fn tick(&mut self, now: Instant, now_ns: u64) {
        let mut notices = Vec::new();
        if self.reachable {
            let room = self.queued_bytes < self.limits.buffer_bytes / 2;
            self.pending.retain(|(cause, guid), n| {
                let due = *cause == Drop::Unreachable || room;
                if due {
                    notices.push(notice(guid, cause.notice(*n, 0), now_ns));
                }
                !due
            });
        }
        let (lps, interval) = (self.limits.lines_per_second, self.limits.notice_interval);
        for (guid, w) in &mut self.windows {
            let since = w.last_notice.map_or(Duration::MAX, |t| now.duration_since(t));
            if w.dropped > 0 && since >= interval {
                notices.push(notice(guid, Drop::RateLimited.notice(w.dropped, lps), now_ns));
                w.dropped = 0;
                w.last_notice = Some(now);
            }
        }
        self.windows.retain(|_, w| {
            w.dropped > 0 || now.duration_since(w.started) < interval.max(Duration::from_secs(1)) * 2
        });
        notices.sort_by(|a, b| a.log_guid.cmp(&b.log_guid));
        for n in notices {
            self.queued_bytes += size(&n);
            self.queue.push_back(n);
        }
    }

    /// Takes up to `max_lines` / about `max_bytes` from the queue, oldest first.
    pub fn take_batch(&mut self, max_lines: usize, max_bytes: usize) -> Vec<LogLine> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(line) = self.queue.front() {
            let n = size(line);
            if !batch.is_empty() && (batch.len() >= max_lines || bytes + n > max_bytes) {
                break;
            }
            bytes += n;
            self.queued_bytes -= n;
            batch.extend(self.queue.pop_front());
        }
        batch
    }

    /// A batch reached the server.
    pub fn sent(&mut self, lines: usize) {
        self.counts.sent += lines as u64;
        self.reachable = true;
    }

    /// A batch did not reach the server: it and everything queued are dropped, and lines are
    /// dropped as they come until [`ShipState::reachable_again`].
    pub fn failed(&mut self, batch: Vec<LogLine>) {
        self.reachable = false;
        let queued: Vec<LogLine> = self.queue.drain(..).collect();
        self.queued_bytes = 0;
        for line in batch.into_iter().chain(queued) {
            self.drop_line(Drop::Unreachable, line.log_guid);
        }
    }

    /// The server answers again: lines are queued again (the drop notices follow at the next
    /// [`ShipState::tick`]).
    pub fn reachable_again(&mut self) {
        self.reachable = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(guid: &str, message: &str) -> LogLine {
        LogLine {
            log_guid: guid.into(),
            source_type: "APP/PROC/WEB".into(),
            instance_index: Some(0),
            stream: LogStream::Stdout,
            timestamp_ns: 1,
            message: message.into(),
        }
    }

    fn limits(lines_per_second: u32, buffer_bytes: usize) -> Limits {
        Limits {
            lines_per_second,
            buffer_bytes,
            notice_interval: Duration::from_secs(5),
        }
    }

    fn messages(batch: &[LogLine]) -> Vec<String> {
        batch
            .iter()
            .map(|l| format!("{} {}", l.log_guid, l.message))
            .collect()
    }

    #[test]
    fn lines_queue_in_order_and_batches_are_bounded() {
        let mut s = ShipState::new(limits(0, 1 << 20));
        let t = Instant::now();
        assert_eq!(s.offer(line("a", "1"), t), Offer::Queued { first: true });
        assert_eq!(s.offer(line("b", "2"), t), Offer::Queued { first: false });
        s.offer(line("a", "3"), t);
        assert_eq!(messages(&s.take_batch(2, usize::MAX)), ["a 1", "b 2"]);
        assert_eq!(messages(&s.take_batch(2, usize::MAX)), ["a 3"]);
        assert!(s.take_batch(2, usize::MAX).is_empty());
        s.offer(line("a", "4"), t);
        s.offer(line("a", "5"), t);
        assert_eq!(
            messages(&s.take_batch(100, 1)),
            ["a 4"],
            "one line even over the byte bound"
        );
        assert_eq!(s.offer(line("a", "6"), t), Offer::Queued { first: false });
    }

    #[test]
    fn an_unreachable_server_drops_lines_and_one_notice_per_guid_follows_its_return() {
        let mut s = ShipState::new(limits(0, 1 << 20));
        let t = Instant::now();
        for m in ["1", "2", "3"] {
            s.offer(line("a", m), t);
        }
        s.offer(line("b", "1"), t);
        let batch = s.take_batch(2, usize::MAX);
        s.failed(batch);
        assert_eq!(s.queued(), 0, "what was queued went with the failed batch");
        assert_eq!(s.offer(line("a", "4"), t), Offer::Dropped(Drop::Unreachable));
        s.tick(t, 7);
        assert_eq!(s.queued(), 0, "no notice while the server is away");
        s.reachable_again();
        assert_eq!(s.offer(line("a", "5"), t), Offer::Queued { first: true });
        s.tick(t, 7);
        let batch = s.take_batch(100, usize::MAX);
        assert_eq!(
            messages(&batch),
            [
                "a 5",
                "a 4 log lines dropped while the log server was unreachable",
                "b 1 log line dropped while the log server was unreachable",
            ]
        );
        assert_eq!(batch[1].source_type, "CELL");
        assert_eq!((batch[1].instance_index, batch[1].timestamp_ns), (None, 7));
        s.tick(t, 8);
        assert!(
            s.take_batch(100, usize::MAX).is_empty(),
            "each drop reported once"
        );
        assert_eq!(s.counts().unreachable, 5);
    }

    #[test]
    fn the_rate_limit_drops_excess_per_guid_with_a_periodic_notice() {
        let mut s = ShipState::new(limits(3, 1 << 20));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        #[rustfmt::skip]
        let offers = [
            // (ms, guid, queued?)
            (0, "a", true), (10, "a", true), (20, "a", true), (30, "a", false), (40, "a", false),
            (50, "b", true),
            (999, "a", false),
            (1000, "a", true),
        ];
        for (i, (ms, guid, queued)) in offers.into_iter().enumerate() {
            let got = s.offer(line(guid, "x"), at(ms));
            assert_eq!(matches!(got, Offer::Queued { .. }), queued, "offer {i}: {got:?}");
        }
        s.take_batch(100, usize::MAX);
        s.tick(at(1000), 1);
        assert_eq!(
            messages(&s.take_batch(100, usize::MAX)),
            ["a 3 log lines dropped: over the rate limit of 3 lines per second"]
        );
        for ms in [1001, 1002, 1003] {
            s.offer(line("a", "x"), at(ms));
        }
        s.take_batch(100, usize::MAX);
        s.tick(at(2000), 1);
        assert!(
            s.take_batch(100, usize::MAX).is_empty(),
            "the next notice waits the interval"
        );
        s.tick(at(6000), 1);
        assert_eq!(
            messages(&s.take_batch(100, usize::MAX)),
            ["a 1 log line dropped: over the rate limit of 3 lines per second"]
        );
        assert_eq!(s.counts().rate_limited, 4);
    }

    #[test]
    fn a_full_buffer_drops_and_reports_once_there_is_room() {
        let one = size(&line("a", "x"));
        let mut s = ShipState::new(limits(0, one * 4));
        let t = Instant::now();
        for _ in 0..6 {
            s.offer(line("a", "x"), t);
        }
        assert_eq!(s.queued(), 4);
        s.tick(t, 1);
        assert_eq!(s.queued(), 4, "no notice while the buffer is full");
        assert_eq!(s.take_batch(4, usize::MAX).len(), 4);
        s.tick(t, 1);
        assert_eq!(
            messages(&s.take_batch(100, usize::MAX)),
            ["a 2 log lines dropped: the cell's log buffer was full"]
        );
        assert_eq!(s.counts().buffer_full, 2);
    }
}
