//! Route paths of the container API, shared by the server and the client so they cannot drift.
//!
//! Paths are axum templates: `{handle}` and `{id}` are one path segment each. The client fills
//! them in with [`fill`], which percent-encodes each value as a single segment, so a handle may
//! hold any character (including `/`).

/// `GET` → 200 (empty) when healthy.
pub const PING: &str = "/ping";
/// `GET` → `Capacity`.
pub const CAPACITY: &str = "/capacity";
/// `POST` `ContainerSpec` → 201 `ContainerInfo`.
/// `GET ?property.KEY=VALUE&…` → `["handle", …]` of the containers whose properties include
/// every pair.
pub const CONTAINERS: &str = "/containers";
/// `DELETE` → 204.
pub const CONTAINER: &str = "/containers/{handle}";
/// `GET` → `ContainerInfo`.
pub const CONTAINER_INFO: &str = "/containers/{handle}/info";
/// `POST ?kill=true|false` → 204.
pub const CONTAINER_STOP: &str = "/containers/{handle}/stop";
/// `POST` `ProcessSpec` → 200, header [`PROCESS_ID_HEADER`], body: the process's events in
/// the [`super::wire`] framing.
pub const PROCESSES: &str = "/containers/{handle}/processes";
/// `GET` → like [`PROCESSES`], replaying the process's events from its start.
pub const PROCESS_ATTACH: &str = "/containers/{handle}/processes/{id}/attach";
/// `POST` `{"signal":"TERM"}` → 204.
pub const PROCESS_SIGNAL: &str = "/containers/{handle}/processes/{id}/signal";
/// `PUT ?path=/dst`, body = tar bytes (streamed) → 204.
/// `GET ?path=/src` → 200, body = tar bytes (streamed).
pub const FILES: &str = "/containers/{handle}/files";
/// `POST` `["h1", "h2"]` → `{"h1": ContainerMetrics, …}` (missing handles left out).
pub const METRICS: &str = "/metrics";

/// Body of a [`PROCESS_SIGNAL`] request: `{"signal":"TERM"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignalRequest {
    pub signal: crate::Signal,
}

/// Response header carrying the process id of a `run` or `attach`, so the client has it before
/// any event arrives.
pub const PROCESS_ID_HEADER: &str = "x-process-id";
/// Query-parameter prefix of a property filter: `?property.owner=cell-1`.
pub const PROPERTY_PREFIX: &str = "property.";
/// Content type of a process event stream.
pub const EVENTS_CONTENT_TYPE: &str = "application/vnd.diego.process-events";

/// The segments of `template` with each `{name}` replaced by its value from `params`
/// (unencoded; the caller pushes them as URL path segments, which encodes them).
///
/// Panics if a placeholder has no value: templates and call sites are both in this crate, so
/// that is a programming error caught by any test of the route.
pub fn fill<'a>(template: &'a str, params: &[(&str, &'a str)]) -> Vec<&'a str> {
    template
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => params
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| panic!("route {template}: no value for {{{name}}}")),
                None => seg,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_substitutes_placeholders_by_name() {
        assert_eq!(
            fill(PROCESS_SIGNAL, &[("id", "p/1"), ("handle", "h")]),
            ["containers", "h", "processes", "p/1", "signal"]
        );
        assert_eq!(fill(PING, &[]), ["ping"]);
    }
}
