//! Whether a failed attempt is tried again on another endpoint. Pure.
//!
//! Only a failure to *connect* is retried: then no byte of the request has left the router,
//! so the request (body included) can go to another instance unchanged. Once a request was
//! written, even partly, the backend may have acted on it; the router answers 502 or 504
//! instead of risking doing it twice. gorouter allows 3 attempts in all.

/// gorouter's limit: one attempt and two retries.
pub const DEFAULT_MAX_ATTEMPTS: usize = 3;

/// The most attempts a request may be given.
pub const MAX_ATTEMPTS: usize = 16;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The backend's port refused the connection.
    ConnectRefused,
    /// The connection was not set up within the connect timeout.
    ConnectTimeout,
    /// Connecting failed another way (unreachable, reset during the handshake).
    ConnectFailed,
    /// The request was sent but the backend failed before a whole response head.
    AfterSend,
    /// The per-backend timeout passed.
    Timeout,
}

impl Failure {
    /// Whether nothing of the request was sent.
    pub fn before_send(self) -> bool {
        matches!(
            self,
            Failure::ConnectRefused | Failure::ConnectTimeout | Failure::ConnectFailed
        )
    }

    /// The `kind` label of `router_backend_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "connect_refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectFailed => "connect_failed",
            Failure::AfterSend => "after_send",
            Failure::Timeout => "timeout",
        }
    }
}

/// Whether to make another attempt after `attempts` attempts, the last of which failed
/// with `failure`, when `untried` endpoints of the pool are left.
pub fn again(failure: Failure, attempts: usize, max_attempts: usize, untried: usize) -> bool {
    failure.before_send() && attempts < max_attempts && untried > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use Failure::*;

    #[test]
    fn only_what_was_never_sent_is_tried_again() {
        // (failure, attempts so far, untried endpoints) → again?
        let cases = [
            (ConnectRefused, 1, 2, true),
            (ConnectTimeout, 1, 2, true),
            (ConnectFailed, 2, 1, true),
            // Never after the request was written.
            (AfterSend, 1, 2, false),
            (Timeout, 1, 2, false),
            // Never past the limit, nor with nobody left to try.
            (ConnectRefused, 3, 5, false),
            (ConnectRefused, 1, 0, false),
        ];
        for (failure, attempts, untried, want) in cases {
            assert_eq!(
                again(failure, attempts, DEFAULT_MAX_ATTEMPTS, untried),
                want,
                "{failure:?} after {attempts} attempts, {untried} untried"
            );
        }
    }
}
