//! Server-Sent Events framing: a pure, incremental parser (bytes in, frames out).
//!
//! Follows the WHATWG event-stream rules that matter to Diego's streams: lines end with
//! `\n`, `\r\n` or `\r` (a `\r\n` may be split across chunks); `data:` lines accumulate
//! with `\n` between them; lines starting with `:` are comments (keep-alives); one optional
//! space after the colon is dropped; a blank line dispatches the frame. It holds no IO so
//! it can be tested on arbitrary chunkings.

use diego_model::Event;

use crate::error::ClientError;

/// One dispatched frame of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field of this frame, if it had a numeric one. Not every frame carries one:
    /// when one change yields two events only the last is marked, so resuming from an id
    /// never skips half a change.
    pub id: Option<u64>,
    /// The `event:` field; `message` when absent, as in the SSE spec.
    pub event: String,
    /// Every `data:` line, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The Diego [`Event`] this frame carries (its `data` is the event's JSON).
    pub fn decode(&self) -> Result<Event, ClientError> {
        serde_json::from_str(&self.data).map_err(|source| ClientError::Decode {
            what: format!(
                "{} event{}",
                self.event,
                self.id.map(|i| format!(" {i}")).unwrap_or_default()
            ),
            source,
        })
    }
}

/// Feed it bytes as they arrive; it returns every frame completed by them.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next one belongs to it.
    after_cr: bool,
    /// A line was processed already (a UTF-8 BOM is dropped only before the first).
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<u64>,
    last_event_id: Option<u64>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The most recent `id:` seen on the stream, which persists across frames: what to send as
    /// `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }

    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.after_cr {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            if !chunk.is_empty() {
                self.after_cr = false;
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(chunk);
                    break;
                }
                Some(i) => {
                    self.line.extend_from_slice(&chunk[..i]);
                    let cr = chunk[i] == b'\r';
                    chunk = &chunk[i + 1..];
                    if cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    if let Some(frame) = self.process_line(&line) {
                        out.push(frame);
                    }
                }
            }
        }
        out
    }

    fn process_line(&mut self, mut line: &[u8]) -> Option<SseEvent> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" => {
                // Ids are revisions; anything else (or an empty id, which per the spec resets
                // it) leaves this frame without a usable id.
                let id = value.trim().parse::<u64>().ok();
                self.id = id;
                self.last_event_id = id;
            }
            // `retry:` and unknown fields are ignored.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let id = self.id.take();
        if !self.has_data {
            // A frame without data is not dispatched (an `id:`-only frame still moved
            // `last_event_id`).
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            id,
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: Option<u64>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id,
            event: event.into(),
            data: data.into(),
        }
    }

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new().feed(input)
    }

    #[test]
    fn parses_a_frame() {
        let got = parse_all(b"id: 17\nevent: task_created\ndata: {\"a\":1}\n\n");
        assert_eq!(got, vec![ev(Some(17), "task_created", "{\"a\":1}")]);
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        let got = parse_all(b"id: 1\r\nevent: a\r\ndata: x\r\n\r\nid: 2\revent: b\rdata: y\r\r");
        assert_eq!(got, vec![ev(Some(1), "a", "x"), ev(Some(2), "b", "y")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let got = parse_all(b"data: one\ndata:two\ndata:  three\ndata\n\n");
        assert_eq!(got, vec![ev(None, "message", "one\ntwo\n three\n")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let got = parse_all(b": keep-alive\n\n:\nretry: 100\nfoo: bar\nevent: e\ndata: d\n\n");
        assert_eq!(got, vec![ev(None, "e", "d")]);
    }

    #[test]
    fn frames_without_data_are_not_dispatched_but_move_the_last_id() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 9\nevent: x\n\n").is_empty());
        assert_eq!(p.last_event_id(), Some(9));
        // The next frame starts clean: no event name or id carried over.
        assert_eq!(p.feed(b"data: d\n\n"), vec![ev(None, "message", "d")]);
        assert_eq!(p.last_event_id(), Some(9));
    }

    #[test]
    fn the_id_belongs_to_one_frame_but_last_event_id_persists() {
        let mut p = SseParser::new();
        let got = p.feed(b"event: a\ndata: 1\n\nid: 5\nevent: b\ndata: 2\n\nevent: c\ndata: 3\n\n");
        assert_eq!(
            got,
            vec![ev(None, "a", "1"), ev(Some(5), "b", "2"), ev(None, "c", "3")]
        );
        assert_eq!(p.last_event_id(), Some(5));
    }

    #[test]
    fn non_numeric_ids_are_dropped() {
        let got = parse_all(b"id: abc\ndata: x\n\n");
        assert_eq!(got, vec![ev(None, "message", "x")]);
    }

    #[test]
    fn leading_bom_is_dropped() {
        let got = parse_all(b"\xEF\xBB\xBFdata: x\n\n");
        assert_eq!(got, vec![ev(None, "message", "x")]);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let input: &[u8] =
            "id: 1\r\nevent: actual_lrp_changed\r\ndata: {\"é\":\"ü\"}\r\ndata: more\r\n\r\n: ping\r\n\r\nid: 2\nevent: resync\ndata: {}\n\n"
                .as_bytes();
        let whole = parse_all(input);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0], ev(Some(1), "actual_lrp_changed", "{\"é\":\"ü\"}\nmore"));
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut p = SseParser::new();
                let mut got = p.feed(&input[..i]);
                got.extend(p.feed(&input[i..j]));
                got.extend(p.feed(&input[j..]));
                assert_eq!(got, whole, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let input = b"id: 3\r\nevent: e\r\ndata: x\r\n\r\n";
        let mut p = SseParser::new();
        let got: Vec<SseEvent> = input
            .iter()
            .flat_map(|b| p.feed(std::slice::from_ref(b)))
            .collect();
        assert_eq!(got, vec![ev(Some(3), "e", "x")]);
    }

    #[test]
    fn an_unfinished_frame_is_held_back() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 1\nevent: e\ndata: x\n").is_empty());
        assert_eq!(p.feed(b"\n"), vec![ev(Some(1), "e", "x")]);
    }

    #[test]
    fn decodes_diego_events() {
        let json = serde_json::to_string(&Event::Resync {
            reason: "behind".into(),
        })
        .unwrap();
        let frame = format!("id: 4\nevent: resync\ndata: {json}\n\n");
        let got = parse_all(frame.as_bytes());
        assert_eq!(
            got[0].decode().unwrap(),
            Event::Resync {
                reason: "behind".into()
            }
        );
        let bad = ev(Some(5), "task_created", "{not json");
        let err = bad.decode().unwrap_err();
        assert!(
            err.to_string().starts_with("decoding task_created event 5:"),
            "{err}"
        );
    }
}
