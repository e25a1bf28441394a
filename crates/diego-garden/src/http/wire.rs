//! The wire format of a process's event stream: a sequence of length-prefixed binary frames
//! in a chunked HTTP body.
//!
//! ```text
//! frame = tag:u8  len:u32 (big-endian)  payload:[u8; len]
//! tag   = b'o' stdout (payload: the bytes as written)
//!       | b'e' stderr (payload: the bytes as written)
//!       | b'x' exited (payload: `ExitStatus` as JSON)
//! ```
//!
//! Binary framing rather than JSON lines so output needs no escaping or base64: bytes arrive
//! exactly as the process wrote them, at no size cost. HTTP chunk boundaries mean nothing;
//! [`Decoder`] reassembles frames split anywhere.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};

use crate::{ExitStatus, ProcessEvent};

const TAG_STDOUT: u8 = b'o';
const TAG_STDERR: u8 = b'e';
const TAG_EXITED: u8 = b'x';
const HEADER_LEN: usize = 5;

/// Largest payload of one frame. Bigger output chunks are split over several frames; a peer
/// announcing more is broken, and is refused rather than buffered.
pub const MAX_PAYLOAD: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    #[error("frame of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("bad exit status frame")]
    BadExit(#[source] serde_json::Error),
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// One event as one or more frames.
pub fn encode(event: &ProcessEvent) -> Bytes {
    let (tag, payload) = match event {
        ProcessEvent::Stdout(b) => (TAG_STDOUT, b.clone()),
        ProcessEvent::Stderr(b) => (TAG_STDERR, b.clone()),
        ProcessEvent::Exited(status) => (
            TAG_EXITED,
            Bytes::from(serde_json::to_vec(status).expect("ExitStatus serialises")),
        ),
    };
    let frames = payload.len().div_ceil(MAX_PAYLOAD).max(1);
    let mut out = BytesMut::with_capacity(payload.len() + frames * HEADER_LEN);
    // An empty chunk still becomes one (empty) frame, so encoding never loses an event.
    for i in 0..frames {
        let part = &payload[i * MAX_PAYLOAD..payload.len().min((i + 1) * MAX_PAYLOAD)];
        out.put_u8(tag);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
    }
    out.freeze()
}

/// Reassembles events from the body's chunks, wherever those were split.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, or `None` until more bytes are pushed.
    pub fn next_event(&mut self) -> Result<Option<ProcessEvent>, WireError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if !matches!(tag, TAG_STDOUT | TAG_STDERR | TAG_EXITED) {
            return Err(WireError::UnknownTag(tag));
        }
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(match tag {
            TAG_STDOUT => ProcessEvent::Stdout(payload),
            TAG_STDERR => ProcessEvent::Stderr(payload),
            _ => ProcessEvent::Exited(
                serde_json::from_slice::<ExitStatus>(&payload).map_err(WireError::BadExit)?,
            ),
        }))
    }

    /// Called at the end of the body: leftover bytes mean the stream was cut mid-frame.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(WireError::Truncated(n)),
        }
    }
}

/// The events carried by a body's chunks. Ends after `Exited`, or early — logging why — when
/// the transport fails or the bytes are not frames; a caller that needs the rest attaches
/// again (the backend replays from the start).
pub fn decode_stream<S, E>(chunks: S) -> BoxStream<'static, ProcessEvent>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    struct St<S> {
        chunks: std::pin::Pin<Box<S>>,
        decoder: Decoder,
        done: bool,
    }
    let st = St {
        chunks: Box::pin(chunks),
        decoder: Decoder::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.decoder.next_event() {
                Ok(Some(event)) => {
                    st.done = matches!(event, ProcessEvent::Exited(_));
                    return Some((event, st));
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "bad process event stream; ending it");
                    return None;
                }
            }
            match st.chunks.next().await {
                Some(Ok(chunk)) => st.decoder.push(&chunk),
                Some(Err(err)) => {
                    tracing::warn!(%err, "process event stream broke off before the exit");
                    return None;
                }
                None => {
                    if let Err(err) = st.decoder.finish() {
                        tracing::warn!(%err, "process event stream broke off mid-frame");
                    }
                    return None;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ProcessEvent> {
        vec![
            ProcessEvent::Stdout((0..=255u8).collect::<Vec<_>>().into()),
            ProcessEvent::Stderr(Bytes::from_static(b"\n\0{\"x\":1}\r\n")),
            ProcessEvent::Stdout(Bytes::new()),
            ProcessEvent::Exited(ExitStatus {
                code: 137,
                signal: Some(9),
                oom_killed: true,
            }),
        ]
    }

    fn encode_all(events: &[ProcessEvent]) -> Vec<u8> {
        events.iter().flat_map(|e| encode(e).to_vec()).collect()
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<ProcessEvent> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        d.finish().unwrap();
        out
    }

    #[test]
    fn round_trips_in_one_chunk() {
        let bytes = encode_all(&sample());
        assert_eq!(decode_all(&[&bytes]), sample());
    }

    #[test]
    fn round_trips_split_at_every_boundary_and_byte_by_byte() {
        let bytes = encode_all(&sample());
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_all(&[a, b]), sample(), "split at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&singles), sample());
        for size in [2, 3, 7, 64] {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(decode_all(&chunks), sample(), "chunks of {size}");
        }
    }

    #[test]
    fn huge_output_is_split_into_frames_and_reassembled() {
        let big = Bytes::from(vec![7u8; MAX_PAYLOAD + 10]);
        let bytes = encode(&ProcessEvent::Stdout(big.clone()));
        let events = decode_all(&[&bytes]);
        assert_eq!(events.len(), 2);
        let joined: Vec<u8> = events
            .iter()
            .flat_map(|e| match e {
                ProcessEvent::Stdout(b) => b.to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(joined, big);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut d = Decoder::new();
        d.push(b"z\0\0\0\0");
        assert!(matches!(d.next_event(), Err(WireError::UnknownTag(b'z'))));

        let mut d = Decoder::new();
        d.push(&[TAG_STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_event(), Err(WireError::TooLong(_))));

        let mut d = Decoder::new();
        d.push(&encode(&ProcessEvent::Stdout("abc".into()))[..6]);
        assert!(d.next_event().unwrap().is_none());
        assert!(matches!(d.finish(), Err(WireError::Truncated(6))));

        let mut d = Decoder::new();
        d.push(&[TAG_EXITED, 0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(d.next_event(), Err(WireError::BadExit(_))));
    }

    #[tokio::test]
    async fn decode_stream_ends_after_exit_and_on_transport_errors() {
        let bytes = Bytes::from(encode_all(&sample()));
        // Chunks of 3 bytes, then trailing junk after the exit that must be ignored.
        let mut chunks: Vec<Result<Bytes, String>> =
            bytes.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        chunks.push(Ok(Bytes::from_static(b"junk")));
        let events: Vec<_> = decode_stream(futures_util::stream::iter(chunks)).collect().await;
        assert_eq!(events, sample());

        let broken: Vec<Result<Bytes, String>> = vec![
            Ok(encode(&ProcessEvent::Stdout("a".into()))),
            Err("connection reset".into()),
        ];
        let events: Vec<_> = decode_stream(futures_util::stream::iter(broken)).collect().await;
        assert_eq!(events, [ProcessEvent::Stdout("a".into())]);
    }
}
