//! Log streaming (diego-spec §7.2): process output and executor messages become [`LogLine`]s
//! tagged with a source type (`APP/PROC/WEB`, `CELL`, `HEALTH`, default `LOG`) and the instance
//! index, handed to a [`LogSink`]. Where the lines go (loggregator, a log server) is the sink's
//! business, not the steps'.

use std::sync::{Arc, Mutex};

/// The source type used when neither the action nor the container names one.
pub const DEFAULT_LOG_SOURCE: &str = "LOG";

/// Longest message sent as one line; longer lines are split (Diego's loggregator limit).
pub const MAX_MESSAGE_BYTES: usize = 61_440;

/// Which output stream a line came from (`OUT` / `ERR` in `cf logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Source id of the app (the LRP's or task's `log_guid`).
    pub source_id: String,
    /// `APP/PROC/WEB`, `CELL`, `HEALTH`, `LOG`, …
    pub source_type: String,
    /// The instance index, as text (empty for tasks).
    pub source_instance: String,
    pub message: String,
    pub stream: LogStream,
}

/// Where log lines go. Must not block: called from async steps.
pub trait LogSink: Send + Sync + 'static {
    fn emit(&self, line: LogLine);
}

/// A sink that keeps every line, for tests.
#[derive(Default)]
pub struct MemorySink {
    lines: Mutex<Vec<LogLine>>,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Every line emitted so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Just the messages, in order.
    pub fn messages(&self) -> Vec<String> {
        self.lines().into_iter().map(|l| l.message).collect()
    }
}

impl LogSink for MemorySink {
    fn emit(&self, line: LogLine) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

/// A sink plus the tags of the lines written through it. Cheap to clone; each action may
/// override the source type for its subtree ([`LogStreamer::with_source`]).
#[derive(Clone)]
pub struct LogStreamer {
    sink: Arc<dyn LogSink>,
    source_id: String,
    source_type: String,
    source_instance: String,
}

impl LogStreamer {
    pub fn new(
        sink: Arc<dyn LogSink>,
        source_id: impl Into<String>,
        source_type: impl Into<String>,
        source_instance: impl Into<String>,
    ) -> Self {
        let source_type = source_type.into();
        Self {
            sink,
            source_id: source_id.into(),
            source_type: if source_type.is_empty() {
                DEFAULT_LOG_SOURCE.to_string()
            } else {
                source_type
            },
            source_instance: source_instance.into(),
        }
    }

    /// The same streamer with `source_type` instead, unless it is empty (inherit).
    pub fn with_source(&self, source_type: &str) -> Self {
        let mut s = self.clone();
        if !source_type.is_empty() {
            s.source_type = source_type.to_string();
        }
        s
    }

    pub fn source_type(&self) -> &str {
        &self.source_type
    }

    /// Emits `message` as one line (split if over [`MAX_MESSAGE_BYTES`]).
    pub fn line(&self, stream: LogStream, message: &str) {
        for part in split_long(message.as_bytes()) {
            self.sink.emit(LogLine {
                source_id: self.source_id.clone(),
                source_type: self.source_type.clone(),
                source_instance: self.source_instance.clone(),
                message: String::from_utf8_lossy(part).into_owned(),
                stream,
            });
        }
    }

    pub fn stdout(&self, message: &str) {
        self.line(LogStream::Stdout, message);
    }

    pub fn stderr(&self, message: &str) {
        self.line(LogStream::Stderr, message);
    }
}

fn split_long(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty = bytes.is_empty();
    bytes.chunks(MAX_MESSAGE_BYTES).chain(empty.then_some(&[][..]))
}

/// Turns a process's output chunks into lines: splits on `\n` and `\r`, drops empty lines,
/// keeps a partial last line until more output or [`LineBuffer::flush`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends a chunk and returns the complete lines in it.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    lines.push(std::mem::take(&mut self.partial));
                }
            } else {
                self.partial.push(b);
                // A line this long is sent in pieces rather than held without bound.
                if self.partial.len() == MAX_MESSAGE_BYTES {
                    lines.push(std::mem::take(&mut self.partial));
                }
            }
        }
        lines
    }

    /// The unterminated rest, if any (at process exit).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newline_and_carriage_return() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"one\ntw"), vec![b"one".to_vec()]);
        assert_eq!(b.push(b"o\r\nthree\r"), vec![b"two".to_vec(), b"three".to_vec()]);
        assert_eq!(b.push(b"\n\nfour"), Vec::<Vec<u8>>::new());
        assert_eq!(b.flush(), Some(b"four".to_vec()));
        assert_eq!(b.flush(), None);
    }

    #[test]
    fn long_lines_are_split_and_sources_inherit() {
        let sink = MemorySink::new();
        let s = LogStreamer::new(sink.clone(), "app-guid", "", "3");
        assert_eq!(s.source_type(), DEFAULT_LOG_SOURCE);
        let child = s.with_source("APP/PROC/WEB");
        assert_eq!(child.with_source("").source_type(), "APP/PROC/WEB");
        child.stderr(&"x".repeat(MAX_MESSAGE_BYTES + 5));
        s.stdout("");
        let lines = sink.lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].message.len(), MAX_MESSAGE_BYTES);
        assert_eq!(lines[1].message.len(), 5);
        assert_eq!(lines[0].source_type, "APP/PROC/WEB");
        assert_eq!(lines[0].stream, LogStream::Stderr);
        assert_eq!(lines[0].source_instance, "3");
        assert_eq!(lines[0].source_id, "app-guid");
        assert_eq!(lines[2].source_type, "LOG");
        assert_eq!(lines[2].message, "");
    }
}
