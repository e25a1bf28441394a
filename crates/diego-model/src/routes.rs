//! HTTP routes on a desired LRP (diego-spec §8): the `cf-router` entry of
//! [`DesiredLrp::routes`](crate::DesiredLrp::routes), which sends hostnames to a container port.
//!
//! Other routers' entries (`tcp-router`, `internal-router`, …) stay opaque JSON; only this one
//! is parsed, and it is validated when an LRP is desired or updated, so a router never meets a
//! malformed one it would have to skip.

use serde::{Deserialize, Serialize};

use crate::common::Routes;
use crate::validation::Validator;

/// The router name of HTTP routes in [`Routes`].
pub const CF_ROUTER: &str = "cf-router";

/// Longest hostname (DNS).
const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest label of a hostname (DNS).
const MAX_LABEL_BYTES: usize = 63;

/// One `cf-router` entry: these hostnames go to `port` of every routable instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfRoute {
    pub hostnames: Vec<String>,
    /// The container port the traffic goes to.
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_group_guid: Option<String>,
}

/// The `cf-router` entries of `routes` (none when there is no such entry).
///
/// An error names the field (`routes.cf-router[1].port`) and what is wrong with it.
pub fn cf_routes(routes: &Routes) -> Result<Vec<CfRoute>, Vec<crate::FieldError>> {
    let mut v = Validator::new();
    let parsed = parse(&mut v, routes);
    v.into_result().map(|()| parsed)
}

/// Checks the `cf-router` entry of `routes`, reporting into `v`.
pub fn validate_cf_routes(v: &mut Validator, routes: &Routes) {
    parse(v, routes);
}

fn parse(v: &mut Validator, routes: &Routes) -> Vec<CfRoute> {
    let Some(value) = routes.get(CF_ROUTER) else {
        return Vec::new();
    };
    let field = format!("routes.{CF_ROUTER}");
    let Some(entries) = value.as_array() else {
        v.error(field, "must be a list of {hostnames, port} objects");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{field}[{i}]");
        match serde_json::from_value::<CfRoute>(entry.clone()) {
            Ok(route) => {
                v.port(&format!("{path}.port"), route.port);
                if route.hostnames.is_empty() {
                    v.error(format!("{path}.hostnames"), "must name at least one hostname");
                }
                for (j, h) in route.hostnames.iter().enumerate() {
                    if let Err(why) = check_hostname(h) {
                        v.error(format!("{path}.hostnames[{j}]"), why);
                    }
                }
                if let Some(url) = &route.route_service_url {
                    v.url(&format!("{path}.route_service_url"), url);
                }
                out.push(route);
            }
            Err(e) => v.error(path, e.to_string()),
        }
    }
    out
}

/// Whether `host` is a hostname a route may name: DNS labels of letters, digits and `-`,
/// optionally starting with a `*.` wildcard label that matches any subdomain.
fn check_hostname(host: &str) -> Result<(), String> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() {
        return Err(format!("{host:?} is not a hostname"));
    }
    if host.len() > MAX_HOSTNAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_HOSTNAME_BYTES} are allowed",
            host.len()
        ));
    }
    for label in bare.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{host:?} is not a hostname: label {label:?} must be 1 to {MAX_LABEL_BYTES} letters, digits or inner '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routes(v: serde_json::Value) -> Routes {
        let mut r = Routes::new();
        r.insert(CF_ROUTER.into(), v);
        r
    }

    #[test]
    fn parses_entries_and_ignores_other_routers() {
        let mut r = routes(json!([
            {"hostnames": ["web.example.com", "*.apps.example.com"], "port": 8080},
            {"hostnames": ["admin.example.com"], "port": 9090, "route_service_url": "https://rs.example.com"}
        ]));
        r.insert("tcp-router".into(), json!([{"external_port": 5000}]));
        let parsed = cf_routes(&r).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].hostnames, ["web.example.com", "*.apps.example.com"]);
        assert_eq!(parsed[1].port, 9090);
        assert_eq!(
            parsed[1].route_service_url.as_deref(),
            Some("https://rs.example.com")
        );
        assert!(cf_routes(&Routes::new()).unwrap().is_empty());
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (json!({"hostnames": ["a"]}), "routes.cf-router", "must be a list"),
            (
                json!([{"hostnames": ["a"]}]),
                "routes.cf-router[0]",
                "missing field `port`",
            ),
            (
                json!([{"hostnames": ["a"], "port": 0}]),
                "routes.cf-router[0].port",
                "",
            ),
            (
                json!([{"hostnames": [], "port": 80}]),
                "routes.cf-router[0].hostnames",
                "at least one",
            ),
            (
                json!([{"hostnames": ["a b"], "port": 80}]),
                "routes.cf-router[0].hostnames[0]",
                "not a hostname",
            ),
            (
                json!([{"hostnames": ["-a.com"], "port": 80}]),
                "routes.cf-router[0].hostnames[0]",
                "label",
            ),
            (
                json!([{"hostnames": ["*."], "port": 80}]),
                "routes.cf-router[0].hostnames[0]",
                "not a hostname",
            ),
            (
                json!([{"hostnames": ["a..b"], "port": 80}]),
                "routes.cf-router[0].hostnames[0]",
                "label",
            ),
            (
                json!([{"hostnames": ["a"], "port": 80, "prot": 1}]),
                "routes.cf-router[0]",
                "unknown field `prot`",
            ),
        ];
        for (value, field, text) in cases {
            let errs = cf_routes(&routes(value.clone())).unwrap_err();
            assert_eq!(errs[0].field, field, "{value}");
            assert!(errs[0].message.contains(text), "{value}: {}", errs[0].message);
        }
    }

    #[test]
    fn wildcards_and_long_names() {
        assert!(check_hostname("*.example.com").is_ok());
        assert!(check_hostname("web").is_ok());
        assert!(check_hostname("a.*.com").is_err());
        let long = format!("{}.com", "a".repeat(64));
        assert!(check_hostname(&long).unwrap_err().contains("label"));
    }
}
