//! How long [`serve`](super::serve) waits for a client, and how many clients it holds at once.

use std::time::Duration;

/// Longest wait for a request's head (request line and headers): from accepting the
/// connection, or from the end of the previous response on a kept-alive one.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the next part of a request body once the handler asks for it.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; further ones are refused with 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// What the server bounds while reading requests. Responses are never bounded: an event
/// stream lasts as long as its subscriber wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A client that has not sent a whole request head this long after the connection opened
    /// (or after the previous response on a kept-alive connection) is disconnected without a
    /// response. This is also how long an idle kept-alive connection stays open.
    pub header_read_timeout: Duration,
    /// A request whose body stops arriving for this long, while the handler waits for it, is
    /// answered `408 Request Timeout` and its connection closed. Only gaps count, so a large
    /// upload that keeps moving is never cut.
    pub body_idle_timeout: Duration,
    /// Connections served at once. A connection beyond it is answered
    /// `503 Service Unavailable` (`too many connections (limit N)`) and closed. The limit in
    /// force is at most half the process's open-file limit (`ulimit -n`), leaving the other
    /// half to the store, outgoing connections and containers' pipes: past the open-file
    /// limit the server could not even accept a connection to refuse it.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServeLimits {
    /// The connection limit in force: [`max_connections`](Self::max_connections), lowered to
    /// half the open-file limit when that is smaller, and at least 1.
    pub fn connection_limit(&self) -> usize {
        let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        connection_limit(self.max_connections, open_files)
    }
}

fn connection_limit(configured: usize, open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    configured.min(half).max(1)
}

#[cfg(test)]
mod tests {
    use super::connection_limit;

    #[test]
    fn the_limit_leaves_half_the_open_files_to_the_rest_of_the_process() {
        assert_eq!(connection_limit(10_000, Some(1024)), 512);
        assert_eq!(connection_limit(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_limit(10_000, None), 10_000, "unlimited");
        assert_eq!(connection_limit(4, Some(1024)), 4);
        assert_eq!(connection_limit(0, Some(1024)), 1);
        assert_eq!(connection_limit(10, Some(1)), 1);
    }
}
