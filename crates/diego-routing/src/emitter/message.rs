//! The messages of gorouter's NATS protocol (diego-spec §8), built and parsed without IO.
//!
//! - [`RegistryMessage`]: the body of `router.register` and `router.unregister`, one per
//!   [`Registration`]. Empty fields are left out, as gorouter's own message type does
//!   (`omitempty`): only `host`, `port` and `uris` are always there.
//! - [`RouterGreeting`]: what a router says on `router.start` and in answer to
//!   `router.greet` — how often it wants to hear every route again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::table::Registration;

/// `router.register`: add (or refresh) an endpoint under some hostnames.
pub const REGISTER: &str = "router.register";
/// `router.unregister`: remove an endpoint from some hostnames.
pub const UNREGISTER: &str = "router.unregister";
/// `router.greet`: a request a router answers with its [`RouterGreeting`].
pub const GREET: &str = "router.greet";
/// `router.start`: a router (re)started and says how often it wants registrations.
pub const START: &str = "router.start";

/// `protocol` of every registration: the routes of a desired LRP carry no protocol yet, and
/// HTTP/1.1 is what gorouter assumes for an app.
pub const PROTOCOL: &str = "http1";

/// `tags.component`, as Diego's route-emitter names itself.
pub const COMPONENT: &str = "route-emitter";

/// The JSON body of `router.register` / `router.unregister`, field names as gorouter reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryMessage {
    pub host: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u32>,
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The app's log guid: gorouter tags its access-log lines with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    /// The instance guid: a request with `X-CF-App-Instance` can pick this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_instance_id: Option<String>,
    /// The instance index, as a string (gorouter's type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_instance_index: Option<String>,
    /// The name gorouter expects in the instance's TLS certificate: its instance guid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cert_domain_san: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_segment: Option<String>,
    /// When the instance last changed state (Unix ns): gorouter keeps the newest of two
    /// registrations of one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_updated_at_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Per-route options (load balancing); the routes of a desired LRP carry none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl RegistryMessage {
    /// The message announcing `r` (the same body registers and unregisters it).
    pub fn for_registration(r: &Registration) -> Self {
        let e = &r.endpoint;
        let instance = non_empty(&e.instance_guid);
        let mut tags = BTreeMap::new();
        tags.insert("component".to_string(), COMPONENT.to_string());
        if !e.process_guid.is_empty() {
            tags.insert("process_guid".to_string(), e.process_guid.clone());
        }
        RegistryMessage {
            host: e.host.clone(),
            port: e.port,
            tls_port: e.tls_port.filter(|&p| p != 0),
            uris: r.uris.clone(),
            protocol: Some(PROTOCOL.to_string()),
            app: non_empty(&e.log_guid),
            route_service_url: r.route_service_url.as_deref().and_then(non_empty),
            // Diego leaves the index out with the instance guid: an index means nothing
            // without the instance it names.
            private_instance_index: instance.as_ref().map(|_| e.index.to_string()),
            server_cert_domain_san: instance.clone(),
            private_instance_id: instance,
            isolation_segment: r.isolation_segment.as_deref().and_then(non_empty),
            endpoint_updated_at_ns: (e.since > 0).then_some(e.since),
            tags,
            availability_zone: non_empty(&e.availability_zone),
            options: None,
        }
    }

    /// The JSON bytes sent on NATS.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and a string map always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a router asks of registrars in `router.start` (and its answer to `router.greet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterGreeting {
    /// How often the router wants every route registered again.
    pub register_interval: Duration,
    /// How long the router keeps a route nobody registered again (`None` when it did not say).
    pub prune_threshold: Option<Duration>,
}

/// A greeting that cannot be used, naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GreetingError {
    #[error("router greeting is not a JSON object: {0}")]
    NotJson(String),
    #[error("router greeting: {field} {problem}")]
    Field { field: &'static str, problem: String },
}

#[derive(Deserialize)]
struct GreetingWire {
    #[serde(rename = "minimumRegisterIntervalInSeconds")]
    minimum_register_interval: Option<serde_json::Value>,
    #[serde(rename = "pruneThresholdInSeconds")]
    prune_threshold: Option<serde_json::Value>,
}

/// Seconds as gorouter sends them: a whole number, at least 1.
fn seconds(field: &'static str, v: &serde_json::Value) -> Result<Duration, GreetingError> {
    match v.as_u64() {
        Some(n) if n >= 1 => Ok(Duration::from_secs(n)),
        _ => Err(GreetingError::Field {
            field,
            problem: format!("must be a whole number of seconds, at least 1 (got {v})"),
        }),
    }
}

impl RouterGreeting {
    /// Parses a `router.start` body (`{"id", "hosts", "minimumRegisterIntervalInSeconds",
    /// "pruneThresholdInSeconds"}`); other fields are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, GreetingError> {
        let wire: GreetingWire =
            serde_json::from_slice(body).map_err(|e| GreetingError::NotJson(e.to_string()))?;
        const INTERVAL: &str = "minimumRegisterIntervalInSeconds";
        const PRUNE: &str = "pruneThresholdInSeconds";
        let register_interval = match &wire.minimum_register_interval {
            Some(v) => seconds(INTERVAL, v)?,
            None => {
                return Err(GreetingError::Field {
                    field: INTERVAL,
                    problem: "is missing".into(),
                })
            }
        };
        let prune_threshold = match &wire.prune_threshold {
            None | Some(serde_json::Value::Null) => None,
            // gorouter sends 0 when it has no threshold configured.
            Some(v) if v.as_u64() == Some(0) => None,
            Some(v) => Some(seconds(PRUNE, v)?),
        };
        Ok(RouterGreeting {
            register_interval,
            prune_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Endpoint;
    use diego_model::Presence;
    use serde_json::json;

    fn registration() -> Registration {
        Registration {
            uris: vec!["web.example.com".into(), "www.example.com".into()],
            route_service_url: None,
            router_group_guid: None,
            isolation_segment: None,
            endpoint: Endpoint {
                host: "10.0.0.5".into(),
                port: 61001,
                tls_port: None,
                container_port: 8080,
                process_guid: "web".into(),
                index: 3,
                instance_guid: "ig-3".into(),
                cell_id: "cell-1".into(),
                log_guid: "log-web".into(),
                instance_address: String::new(),
                availability_zone: String::new(),
                presence: Presence::Ordinary,
                since: 0,
            },
        }
    }

    #[test]
    fn message_fields_from_a_registration() {
        let full = {
            let mut r = registration();
            r.route_service_url = Some("https://rs.example.com".into());
            r.isolation_segment = Some("iso-1".into());
            r.endpoint.tls_port = Some(61443);
            r.endpoint.availability_zone = "z1".into();
            r.endpoint.since = 1_700_000_000_123_456_789;
            r
        };
        let anonymous = {
            let mut r = registration();
            r.endpoint.instance_guid = String::new();
            r.endpoint.log_guid = String::new();
            r.endpoint.tls_port = Some(0);
            r.route_service_url = Some(String::new());
            r
        };
        let cases = [
            (
                "every field set",
                full,
                json!({
                    "host": "10.0.0.5", "port": 61001, "tls_port": 61443,
                    "uris": ["web.example.com", "www.example.com"],
                    "protocol": "http1", "app": "log-web",
                    "route_service_url": "https://rs.example.com",
                    "private_instance_id": "ig-3", "private_instance_index": "3",
                    "server_cert_domain_san": "ig-3", "isolation_segment": "iso-1",
                    "endpoint_updated_at_ns": 1_700_000_000_123_456_789_i64,
                    "tags": {"component": "route-emitter", "process_guid": "web"},
                    "availability_zone": "z1",
                }),
            ),
            (
                "empty fields are left out",
                registration(),
                json!({
                    "host": "10.0.0.5", "port": 61001,
                    "uris": ["web.example.com", "www.example.com"],
                    "protocol": "http1", "app": "log-web",
                    "private_instance_id": "ig-3", "private_instance_index": "3",
                    "server_cert_domain_san": "ig-3",
                    "tags": {"component": "route-emitter", "process_guid": "web"},
                }),
            ),
            (
                "no instance guid: no index either; zero TLS port and empty URLs are none",
                anonymous,
                json!({
                    "host": "10.0.0.5", "port": 61001,
                    "uris": ["web.example.com", "www.example.com"],
                    "protocol": "http1",
                    "tags": {"component": "route-emitter", "process_guid": "web"},
                }),
            ),
        ];
        for (name, r, want) in cases {
            let msg = RegistryMessage::for_registration(&r);
            let got: serde_json::Value = serde_json::from_slice(&msg.to_bytes()).unwrap();
            assert_eq!(got, want, "{name}");
            let back: RegistryMessage = serde_json::from_value(got).unwrap();
            assert_eq!(back, msg, "{name}: round trip");
        }
    }

    #[test]
    fn greetings() {
        let secs = Duration::from_secs;
        let cases: [(&str, Result<RouterGreeting, &str>); 8] = [
            (
                r#"{"id":"r1","hosts":["10.0.0.1"],"minimumRegisterIntervalInSeconds":20,"pruneThresholdInSeconds":120}"#,
                Ok(RouterGreeting {
                    register_interval: secs(20),
                    prune_threshold: Some(secs(120)),
                }),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":1}"#,
                Ok(RouterGreeting {
                    register_interval: secs(1),
                    prune_threshold: None,
                }),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":5,"pruneThresholdInSeconds":0}"#,
                Ok(RouterGreeting {
                    register_interval: secs(5),
                    prune_threshold: None,
                }),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":0}"#,
                Err("router greeting: minimumRegisterIntervalInSeconds must be a whole number of seconds, at least 1 (got 0)"),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":"20"}"#,
                Err("router greeting: minimumRegisterIntervalInSeconds must be a whole number of seconds, at least 1 (got \"20\")"),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":2.5}"#,
                Err("router greeting: minimumRegisterIntervalInSeconds must be a whole number of seconds, at least 1 (got 2.5)"),
            ),
            (
                r#"{"minimumRegisterIntervalInSeconds":20,"pruneThresholdInSeconds":-1}"#,
                Err("router greeting: pruneThresholdInSeconds must be a whole number of seconds, at least 1 (got -1)"),
            ),
            (
                r#"{"id":"r1"}"#,
                Err("router greeting: minimumRegisterIntervalInSeconds is missing"),
            ),
        ];
        for (body, want) in cases {
            let got = RouterGreeting::parse(body.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{body}");
        }
        let not_json = RouterGreeting::parse(b"hello").unwrap_err().to_string();
        assert!(
            not_json.starts_with("router greeting is not a JSON object"),
            "{not_json}"
        );
    }
}
