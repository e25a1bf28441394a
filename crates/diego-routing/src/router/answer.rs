//! The router's own answers, when it cannot hand a request to an instance. Each says which
//! case it is, as JSON (`{"type": …, "message": …}`) when the client accepts JSON, else as a
//! line of text, and carries gorouter's `X-Cf-Routererror` header. Pure.

use std::time::Duration;

use axum::http::StatusCode;

/// Why the router answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Host` header (nor an absolute request URI).
    NoHost,
    /// No route names the host.
    UnknownRoute { host: String },
    /// The route is known but no instance is running and routable.
    NoInstances { host: String },
    /// The backend could not be reached, or failed while answering.
    BackendFailed { backend: String, reason: String },
    /// The backend did not answer within the per-backend timeout.
    BackendTimeout { backend: String, timeout: Duration },
    /// The router stopped waiting for the backend because it is shutting down.
    ShuttingDown,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            Refusal::NoInstances { .. } | Refusal::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BackendFailed { .. } => StatusCode::BAD_GATEWAY,
            Refusal::BackendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `type` of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoHost => "NoHost",
            Refusal::UnknownRoute { .. } => "UnknownRoute",
            Refusal::NoInstances { .. } => "NoInstances",
            Refusal::BackendFailed { .. } => "BackendFailed",
            Refusal::BackendTimeout { .. } => "BackendTimeout",
            Refusal::ShuttingDown => "ShuttingDown",
        }
    }

    /// gorouter's `X-Cf-Routererror` value for the case.
    pub fn router_error(&self) -> &'static str {
        match self {
            Refusal::NoHost => "empty_host",
            Refusal::UnknownRoute { .. } => "unknown_route",
            Refusal::NoInstances { .. } => "no_endpoints",
            Refusal::BackendFailed { .. } => "endpoint_failure",
            Refusal::BackendTimeout { .. } => "endpoint_timeout",
            Refusal::ShuttingDown => "shutting_down",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NoHost => "no host: the request has no Host header".to_string(),
            Refusal::UnknownRoute { host } => format!("unknown route: no app is routed at {host:?}"),
            Refusal::NoInstances { host } => {
                format!("no instances: {host:?} is routed but no instance of it is running")
            }
            Refusal::BackendFailed { backend, reason } => format!("backend failed: {backend}: {reason}"),
            Refusal::BackendTimeout { backend, timeout } => {
                format!("backend timeout: {backend} did not answer within {timeout:?}")
            }
            Refusal::ShuttingDown => {
                "shutting down: the router stopped before the backend answered".to_string()
            }
        }
    }
}

/// A refusal's body and content type for a client whose `Accept` header is `accept`.
pub fn body(refusal: &Refusal, accept: Option<&str>) -> (&'static str, String) {
    if accept.is_some_and(accepts_json) {
        let body = serde_json::json!({"type": refusal.kind(), "message": refusal.message()});
        ("application/json", format!("{body}\n"))
    } else {
        ("text/plain; charset=utf-8", format!("{}\n", refusal.message()))
    }
}

/// Whether an `Accept` header names JSON (`application/json`, `*/json` or a `+json` type)
/// with a non-zero quality. `*/*` alone gets text: a browser or curl reads it best.
fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        !zero && (ty == "application/json" || ty == "*/json" || ty.ends_with("+json"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Refusal {
        Refusal::BackendFailed {
            backend: "127.0.0.1:61001".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn each_case_has_its_status_and_says_which() {
        let cases = [
            (Refusal::NoHost, 400, "no host: the request has no Host header"),
            (
                Refusal::UnknownRoute {
                    host: "foo.diego.localhost".into(),
                },
                404,
                r#"unknown route: no app is routed at "foo.diego.localhost""#,
            ),
            (
                Refusal::NoInstances {
                    host: "web.diego.localhost".into(),
                },
                503,
                r#"no instances: "web.diego.localhost" is routed but no instance of it is running"#,
            ),
            (
                failed(),
                502,
                "backend failed: 127.0.0.1:61001: connection refused",
            ),
            (
                Refusal::BackendTimeout {
                    backend: "127.0.0.1:61002".into(),
                    timeout: Duration::from_secs(60),
                },
                504,
                "backend timeout: 127.0.0.1:61002 did not answer within 60s",
            ),
            (
                Refusal::ShuttingDown,
                503,
                "shutting down: the router stopped before the backend answered",
            ),
        ];
        for (refusal, status, message) in cases {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.message(), message);
            let (ty, text) = body(&refusal, None);
            assert_eq!((ty, text), ("text/plain; charset=utf-8", format!("{message}\n")));
        }
    }

    #[test]
    fn json_for_clients_that_ask_for_it() {
        let cases = [
            (None, false),
            (Some("*/*"), false),
            (Some("text/html,application/xhtml+xml,*/*;q=0.8"), false),
            (Some("application/json"), true),
            (Some("text/plain, Application/JSON; q=0.5"), true),
            (Some("application/problem+json"), true),
            (Some("application/json;q=0"), false),
        ];
        for (accept, json) in cases {
            let (ty, text) = body(&failed(), accept);
            if json {
                assert_eq!(ty, "application/json", "{accept:?}");
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["type"], "BackendFailed");
                assert_eq!(v["message"], failed().message());
            } else {
                assert!(ty.starts_with("text/plain"), "{accept:?}");
            }
        }
    }
}
