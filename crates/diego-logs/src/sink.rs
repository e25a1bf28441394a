//! Where lines go: the [`LogSink`] interface, the [`LogStreamer`] that tags and stamps what a
//! container writes, the [`LineBuffer`] that cuts process output into lines, and a
//! [`MemorySink`] for tests. Where the lines end up (printed, shipped to a log server) is
//! the sink's business, not the writer's.

use std::sync::{Arc, Mutex};

use crate::line::{now_ns, LogLine, LogStream, DEFAULT_LOG_SOURCE, MAX_MESSAGE_BYTES};

/// Where log lines go. Must not block: called from async steps as output arrives.
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
    log_guid: String,
    source_type: String,
    instance_index: Option<u32>,
}

impl LogStreamer {
    /// Lines of `log_guid` from instance `instance_index` (`None` for a task), under
    /// `source_type` ([`DEFAULT_LOG_SOURCE`] when empty).
    pub fn new(
        sink: Arc<dyn LogSink>,
        log_guid: impl Into<String>,
        source_type: impl Into<String>,
        instance_index: Option<u32>,
    ) -> Self {
        let source_type = source_type.into();
        Self {
            sink,
            log_guid: log_guid.into(),
            source_type: if source_type.is_empty() {
                DEFAULT_LOG_SOURCE.to_string()
            } else {
                source_type
            },
            instance_index,
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

    /// Emits `message` as one line stamped now (split if over [`MAX_MESSAGE_BYTES`]).
    pub fn line(&self, stream: LogStream, message: &str) {
        let timestamp_ns = now_ns();
        for part in split_long(message.as_bytes()) {
            self.sink.emit(LogLine {
                log_guid: self.log_guid.clone(),
                source_type: self.source_type.clone(),
                instance_index: self.instance_index,
                stream,
                timestamp_ns,
                message: String::from_utf8_lossy(part).into_owned(),
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
        let s = LogStreamer::new(sink.clone(), "app-guid", "", Some(3));
        assert_eq!(s.source_type(), DEFAULT_LOG_SOURCE);
        let child = s.with_source("APP/PROC/WEB");
        assert_eq!(child.with_source("").source_type(), "APP/PROC/WEB");
        child.stderr(&"x".repeat(MAX_MESSAGE_BYTES + 5));
        s.stdout("");
        let lines = sink.lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].message.len(), MAX_MESSAGE_BYTES);
        assert_eq!(lines[1].message.len(), 5);
        assert_eq!(
            lines[0].timestamp_ns, lines[1].timestamp_ns,
            "one write, one time"
        );
        assert_eq!(lines[0].source_type, "APP/PROC/WEB");
        assert_eq!(lines[0].stream, LogStream::Stderr);
        assert_eq!(lines[0].instance_index, Some(3));
        assert_eq!(lines[0].log_guid, "app-guid");
        assert_eq!(lines[2].source_type, "LOG");
        assert_eq!(lines[2].message, "");
    }
}
