//! Declarative health checks (Diego's CheckDefinition).

use serde::{Deserialize, Serialize};

use crate::validation::{join, Validator};

/// Liveness checks (`checks`) run for the life of the instance; a failure crashes it.
/// Readiness checks flip the instance's `routable` flag without crashing it.
/// Startup checks gate the instance becoming RUNNING; when none are given, the liveness
/// checks are used for startup, as Diego does.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDefinition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_check: Option<TcpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_check: Option<HttpCheck>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCheck {
    pub port: u32,
    /// 0 = the default (1 s).
    #[serde(default)]
    pub connect_timeout_ms: i64,
    /// 0 = the default steady interval.
    #[serde(default)]
    pub interval_ms: i64,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    pub port: u32,
    #[serde(default)]
    pub request_timeout_ms: i64,
    /// Request path; empty means "/".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default)]
    pub interval_ms: i64,
}

impl Check {
    pub fn tcp(port: u32) -> Self {
        Self {
            tcp_check: Some(TcpCheck {
                port,
                ..Default::default()
            }),
            http_check: None,
        }
    }

    pub fn http(port: u32, path: &str) -> Self {
        Self {
            tcp_check: None,
            http_check: Some(HttpCheck {
                port,
                path: path.into(),
                ..Default::default()
            }),
        }
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        match (&self.tcp_check, &self.http_check) {
            (Some(t), None) => {
                let p = join(path, "tcp_check");
                v.port(&join(&p, "port"), t.port);
                v.non_negative(&join(&p, "connect_timeout_ms"), t.connect_timeout_ms);
                v.non_negative(&join(&p, "interval_ms"), t.interval_ms);
            }
            (None, Some(h)) => {
                let p = join(path, "http_check");
                v.port(&join(&p, "port"), h.port);
                v.non_negative(&join(&p, "request_timeout_ms"), h.request_timeout_ms);
                v.non_negative(&join(&p, "interval_ms"), h.interval_ms);
                if !h.path.is_empty() && !h.path.starts_with('/') {
                    v.error(join(&p, "path"), format!("must start with / (got {:?})", h.path));
                }
            }
            _ => v.error(path, "must have exactly one of tcp_check, http_check"),
        }
    }
}

impl CheckDefinition {
    pub fn validate(&self, v: &mut Validator, path: &str) {
        for (name, checks) in [
            ("checks", &self.checks),
            ("readiness_checks", &self.readiness_checks),
            ("startup_checks", &self.startup_checks),
        ] {
            for (i, c) in checks.iter().enumerate() {
                c.validate(v, &format!("{}[{i}]", join(path, name)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_each_check() {
        let def = CheckDefinition {
            checks: vec![Check::tcp(0), Check::default()],
            readiness_checks: vec![Check::http(8080, "health")],
            ..Default::default()
        };
        let mut v = Validator::new();
        def.validate(&mut v, "check_definition");
        let fields: Vec<_> = v.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "check_definition.checks[0].tcp_check.port",
                "check_definition.checks[1]",
                "check_definition.readiness_checks[0].http_check.path"
            ]
        );
    }
}
