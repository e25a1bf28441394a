//! Apps as the apps service keeps them, and how a request to create or change one is checked.

use std::collections::BTreeMap;

use diego_fileserver::Digest;
use serde::{Deserialize, Serialize};

/// The domain of every Task and LRP the apps service makes; the sync keeps it fresh.
pub const DOMAIN: &str = "cf-apps";
/// The port an app listens on inside its container (`PORT`).
pub const APP_PORT: u16 = 8080;
/// Defaults of a new app.
pub const DEFAULT_INSTANCES: i32 = 1;
pub const DEFAULT_MEMORY_MB: i32 = 256;
pub const DEFAULT_DISK_MB: i32 = 1024;
/// Most instances an app may ask for (the BBS's own limit).
pub const MAX_INSTANCES: i32 = diego_model::desired_lrp::MAX_INSTANCES;
/// The stacks an app can run on: `preloaded:<stack>` root filesystems.
pub const STACKS: [&str; 2] = ["debian", "busybox"];
/// The log source of staging lines (the app's log guid is its guid).
pub const STAGING_LOG_SOURCE: &str = "STG";

/// How an app's instances are known to be healthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    /// A TCP connection to `PORT` succeeds.
    #[default]
    Port,
    /// `GET endpoint` on `PORT` answers 2xx.
    Http,
    /// The process is running.
    Process,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "type", default)]
    pub kind: HealthCheckType,
    /// The path an `http` check GETs [default: /].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The app's bits: a gzipped tar on the file server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub digest: Digest,
    pub uploaded_at_ms: u64,
}

/// A staged app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Droplet {
    pub digest: Digest,
    pub size: u64,
    /// The package it was staged from, with which buildpack asked for and on which stack:
    /// pushing the same again needs no staging.
    pub package_digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_buildpack: Option<String>,
    pub stack: String,
    pub detected_buildpack: String,
    pub start_command: String,
    pub staged_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildState {
    Staging,
    Staged,
    Failed,
}

/// One staging of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub guid: String,
    pub package_digest: Digest,
    pub state: BuildState,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The droplet it made, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet_digest: Option<Digest>,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

impl Build {
    /// The staging Task's guid.
    pub fn task_guid(&self) -> String {
        format!("staging-{}", self.guid)
    }
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Hostnames the router sends to the app.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Stage with this buildpack instead of detecting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpack: Option<String>,
    pub stack: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet: Option<Droplet>,
    /// The latest staging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// The buildpack cache the last staging left (a blob), given to the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<Digest>,
    /// Grows with each new droplet and each restart: part of the LRP's process guid, so new
    /// instances replace the old.
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl App {
    /// The desired LRP that runs this app's current droplet.
    pub fn process_guid(&self) -> String {
        format!("{}-{}", self.guid, self.version)
    }

    /// Whether the app should have a desired LRP: it has a droplet.
    pub fn runnable(&self) -> bool {
        self.droplet.is_some()
    }

    /// The blobs the app refers to (what a collection keeps).
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        out.extend(self.package.as_ref().map(|p| p.digest));
        if let Some(d) = &self.droplet {
            out.extend([d.digest, d.package_digest]);
        }
        out.extend(self.build_cache);
        if let Some(b) = &self.build {
            out.push(b.package_digest);
            out.extend(b.droplet_digest);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A request to create an app or change one: fields left out keep their value (or take the
/// default, for a new app).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<i32>,
    /// Replaces the app's variables whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Replaces the app's routes whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// `""` goes back to detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// A field of a request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

fn field(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// An app's name: a DNS label (it makes the default route `NAME.<domain>`).
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(field(
            "name",
            format!(
                "{name:?} is not an app name: 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'"
            ),
        ));
    }
    Ok(())
}

/// A hostname routed to an app: DNS labels separated by dots.
fn check_hostname(i: usize, host: &str) -> Result<(), FieldError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(field(
            &format!("routes[{i}]"),
            format!("{host:?} is not a hostname"),
        ));
    }
    Ok(())
}

/// What the apps service knows that a spec is checked against.
pub struct Known<'a> {
    /// Buildpacks the builder has.
    pub buildpacks: &'a [String],
}

impl AppSpec {
    /// Checks every field given, naming the first that is wrong.
    pub fn check(&self, known: &Known<'_>) -> Result<(), FieldError> {
        if let Some(n) = self.instances {
            if !(0..=MAX_INSTANCES).contains(&n) {
                return Err(field(
                    "instances",
                    format!("must be between 0 and {MAX_INSTANCES} (got {n})"),
                ));
            }
        }
        for (name, value) in [("memory_mb", self.memory_mb), ("disk_mb", self.disk_mb)] {
            if let Some(v) = value {
                if !(1..=1 << 20).contains(&v) {
                    return Err(field(name, format!("must be between 1 and 1048576 (got {v})")));
                }
            }
        }
        if let Some(env) = &self.env {
            let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            diego_lifecycle::env::check_user_env(&pairs)
                .map_err(|e| field(&format!("env.{}", e.name), e.problem))?;
        }
        if let Some(routes) = &self.routes {
            for (i, host) in routes.iter().enumerate() {
                check_hostname(i, host)?;
            }
        }
        if let Some(hc) = &self.health_check {
            match (hc.kind, &hc.endpoint) {
                (HealthCheckType::Http, Some(e)) if !e.starts_with('/') => {
                    return Err(field(
                        "health_check.endpoint",
                        format!("must be a path starting with '/' (got {e:?})"),
                    ))
                }
                (HealthCheckType::Port | HealthCheckType::Process, Some(_)) => {
                    return Err(field(
                        "health_check.endpoint",
                        "only an http health check has an endpoint",
                    ))
                }
                _ => {}
            }
        }
        if let Some(bp) = self.buildpack.as_deref().filter(|b| !b.is_empty()) {
            if !known.buildpacks.iter().any(|k| k == bp) {
                return Err(field(
                    "buildpack",
                    format!(
                        "no buildpack is named {bp:?}; there are: {}",
                        known.buildpacks.join(", ")
                    ),
                ));
            }
        }
        if let Some(stack) = &self.stack {
            if !STACKS.contains(&stack.as_str()) {
                return Err(field(
                    "stack",
                    format!("no stack is named {stack:?}; there are: {}", STACKS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// `app` changed as the spec says (after [`AppSpec::check`]).
    pub fn apply(&self, app: &mut App) {
        if let Some(n) = self.instances {
            app.instances = n;
        }
        if let Some(m) = self.memory_mb {
            app.memory_mb = m;
        }
        if let Some(d) = self.disk_mb {
            app.disk_mb = d;
        }
        if let Some(env) = &self.env {
            app.env = env.clone();
        }
        if let Some(routes) = &self.routes {
            app.routes = routes.clone();
        }
        if let Some(hc) = &self.health_check {
            app.health_check = hc.clone();
        }
        if let Some(bp) = &self.buildpack {
            app.buildpack = Some(bp.clone()).filter(|b| !b.is_empty());
        }
        if let Some(stack) = &self.stack {
            app.stack = stack.clone();
        }
    }

    /// Whether applying the spec changes what the running instances are (memory, disk, env,
    /// health check): then new instances replace them, as after a restart.
    pub fn changes_instances(&self, app: &App) -> bool {
        self.memory_mb.is_some_and(|m| m != app.memory_mb)
            || self.disk_mb.is_some_and(|d| d != app.disk_mb)
            || self.env.as_ref().is_some_and(|e| *e != app.env)
            || self.health_check.as_ref().is_some_and(|h| *h != app.health_check)
    }

    /// Whether applying the spec changes how the app stages (buildpack, stack): its droplet
    /// no longer fits and the next push stages again.
    pub fn changes_staging(&self, app: &App) -> bool {
        let bp = self
            .buildpack
            .as_ref()
            .map(|b| Some(b.clone()).filter(|b| !b.is_empty()));
        bp.is_some_and(|b| b != app.buildpack) || self.stack.as_ref().is_some_and(|s| *s != app.stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["static".into(), "python".into()]
    }

    fn check(spec: serde_json::Value) -> Result<(), FieldError> {
        let spec: AppSpec = serde_json::from_value(spec).unwrap();
        spec.check(&Known { buildpacks: &known() })
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (serde_json::json!({"instances": -1}), "instances"),
            (serde_json::json!({"instances": MAX_INSTANCES + 1}), "instances"),
            (serde_json::json!({"memory_mb": 0}), "memory_mb"),
            (serde_json::json!({"disk_mb": -5}), "disk_mb"),
            (serde_json::json!({"env": {"PORT": "1"}}), "env.PORT"),
            (serde_json::json!({"env": {"1X": "1"}}), "env.1X"),
            (
                serde_json::json!({"routes": ["ok.example", "bad host"]}),
                "routes[1]",
            ),
            (serde_json::json!({"routes": ["-x.example"]}), "routes[0]"),
            (
                serde_json::json!({"health_check": {"type": "http", "endpoint": "health"}}),
                "health_check.endpoint",
            ),
            (
                serde_json::json!({"health_check": {"type": "port", "endpoint": "/x"}}),
                "health_check.endpoint",
            ),
            (serde_json::json!({"buildpack": "ruby"}), "buildpack"),
            (serde_json::json!({"stack": "windows"}), "stack"),
        ];
        for (spec, want) in cases {
            let e = check(spec.clone()).expect_err(&spec.to_string());
            assert_eq!(e.field, want, "{spec}: {e}");
        }
        check(
            serde_json::json!({"instances": 0, "memory_mb": 64, "env": {"GREETING": "hi"},
            "routes": ["web.diego.localhost"], "health_check": {"type": "http", "endpoint": "/health"},
            "buildpack": "static", "stack": "busybox"}),
        )
        .unwrap();
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["web", "my-app-2", "a"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Web", "my_app", "-web", "web-", "a.b", &"x".repeat(64)] {
            assert_eq!(check_name(bad).unwrap_err().field, "name", "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<AppSpec>(serde_json::json!({"instnces": 2})).unwrap_err();
        assert!(e.to_string().contains("instnces"), "{e}");
    }
}
