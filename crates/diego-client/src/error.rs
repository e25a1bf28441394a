//! What can go wrong talking to a Diego service, split by what the caller can do about it.

use diego_model::{ApiError, ErrorType};

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `error` is its `{"type","message","field_errors"}`
    /// body (or a synthetic one holding the raw body when that was not JSON).
    #[error("{}", error.message)]
    Api {
        status: u16,
        error: ApiError,
        /// The server said it did not act on the request (the
        /// [`diego_runtime::UNPROCESSED_HEADER`]): safe to send again anywhere.
        unprocessed: bool,
    },
    /// The request never got an answer: connection refused, reset, timed out, …
    #[error("{method} {url}: {}", describe_transport(source))]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// No BBS of a client's list answered: each attempt's error, in the order tried.
    #[error("{}", describe_attempts(attempts))]
    Unreachable { attempts: Vec<ClientError> },
    /// The server answered but the body was not what the API promises.
    #[error("decoding {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The server's error body, when the server answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The Diego error type, when the server answered with an error.
    pub fn kind(&self) -> Option<ErrorType> {
        self.api_error().map(|e| e.kind)
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(ErrorType::ResourceNotFound)
    }

    /// True when nothing listens at the URL (or it could not be reached at all), as opposed
    /// to a request that failed half-way.
    pub fn is_connect(&self) -> bool {
        match self {
            ClientError::Transport { source, .. } => source.is_connect(),
            ClientError::Unreachable { attempts } => attempts.iter().all(ClientError::is_connect),
            _ => false,
        }
    }

    /// Builds the error for a non-success response body.
    /// `unprocessed`: the server said it did not act on the request.
    pub(crate) fn from_answer(status: u16, body: &[u8], unprocessed: bool) -> Self {
        let error = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => e,
            Err(_) => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let message = if text.is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    format!("HTTP {status}: {text}")
                };
                ApiError::new(kind_for_status(status), message)
            }
        };
        ClientError::Api {
            status,
            error,
            unprocessed,
        }
    }
}

/// The best-matching Diego error type for a status without a JSON error body (a proxy's
/// error page, a panic in a handler, …).
fn kind_for_status(status: u16) -> ErrorType {
    match status {
        400 => ErrorType::InvalidRequest,
        404 => ErrorType::ResourceNotFound,
        409 => ErrorType::ResourceConflict,
        413 => ErrorType::PayloadTooLarge,
        503 => ErrorType::ServiceUnavailable,
        504 => ErrorType::Timeout,
        _ => ErrorType::UnknownError,
    }
}

fn describe_attempts(attempts: &[ClientError]) -> String {
    let each: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    format!("no BBS answered: {}", each.join("; "))
}

/// reqwest's own message ("error sending request for url (…)") repeats the URL and hides
/// the cause; say what happened instead.
fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    // The innermost cause is the useful part ("Connection refused (os error 111)").
    let mut innermost = None;
    let mut next = std::error::Error::source(e);
    while let Some(c) = next {
        innermost = Some(c);
        next = c.source();
    }
    let described = match innermost {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    };
    // Over TLS 1.3 a server refuses a client certificate after the client has finished its
    // side of the handshake, so the client only sees the connection close.
    let https = e.url().is_some_and(|u| u.scheme() == "https");
    if https && what == "request failed" {
        return format!(
            "{described} (over TLS this is how a server refuses a client certificate: is --tls-cert signed by the CA the server trusts? The server's log names the reason)"
        );
    }
    described
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_error_bodies() {
        let body = br#"{"type":"ResourceNotFound","message":"task \"x\" not found","field_errors":[]}"#;
        let e = ClientError::from_answer(404, body, false);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "task \"x\" not found");
    }

    #[test]
    fn falls_back_to_the_raw_body() {
        let e = ClientError::from_answer(502, b"Bad Gateway\n", false);
        let api = e.api_error().unwrap();
        assert_eq!(api.kind, ErrorType::UnknownError);
        assert_eq!(api.message, "HTTP 502: Bad Gateway");
        let e = ClientError::from_answer(404, b"", false);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "HTTP 404 with an empty body");
    }
}
