//! The log server's routes, shared by the server, the shipper and the client.
//!
//! - `POST /v1/lines`: a batch of lines, one JSON line each (`application/x-ndjson`), sent by
//!   cells over a kept-alive connection. Answers `{"accepted":N}`.
//! - `GET /v1/logs/{log_guid}?since_ns=&index=&source=&limit=`: the most recent matching
//!   lines held, oldest first, as JSON lines.
//! - `GET /v1/logs/{log_guid}/follow?since_ns=&index=&source=&recent=`: Server-Sent Events:
//!   `lines` frames (one JSON line per `data:` line, the `id` is the log guid's sequence number
//!   of the last line, for `Last-Event-ID`) and `dropped` frames (`{"count":N}`: lines the
//!   follower missed because they were evicted before it could read them).
//! - `GET /health`, `GET /metrics`.

pub const LINES: &str = "/v1/lines";
pub const LOGS: &str = "/v1/logs/{log_guid}";
pub const FOLLOW: &str = "/v1/logs/{log_guid}/follow";
pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";

/// SSE event names of a follow stream.
pub const EVENT_LINES: &str = "lines";
pub const EVENT_DROPPED: &str = "dropped";

/// Content type of a batch and of a recent-lines answer.
pub const NDJSON: &str = "application/x-ndjson";

/// `template` with its `{…}` parameter replaced by `log_guid`, percent-encoded.
pub fn logs_path(template: &str, log_guid: &str) -> String {
    let mut encoded = String::with_capacity(log_guid.len());
    for b in log_guid.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    template.replace("{log_guid}", &encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_guid() {
        assert_eq!(logs_path(LOGS, "web-1_a.b"), "/v1/logs/web-1_a.b");
        assert_eq!(logs_path(FOLLOW, "a b/c"), "/v1/logs/a%20b%2Fc/follow");
    }
}
