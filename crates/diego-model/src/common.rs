//! Small shared records: environment variables, port mappings, metric tags, placement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validation::{join, Validator};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

impl EnvironmentVariable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        let p = join(path, "name");
        if self.name.is_empty() {
            v.error(p, "is required");
        } else if self.name.contains('=') || self.name.contains('\0') {
            v.error(p, format!("must not contain '=' or NUL (got {:?})", self.name));
        }
    }
}

/// A metric tag value: a fixed string, or one resolved per instance.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricTagValue {
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<DynamicMetricTag>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DynamicMetricTag {
    Index,
    InstanceGuid,
}

pub type MetricTags = BTreeMap<String, MetricTagValue>;

pub fn validate_metric_tags(tags: &MetricTags, v: &mut Validator, path: &str) {
    for (name, value) in tags {
        let p = format!("{path}.{name}");
        if name.is_empty() {
            v.error(path, "tag names must not be empty");
        }
        if value.static_.is_some() == value.dynamic.is_some() {
            v.error(p, "must have exactly one of static, dynamic");
        }
    }
}

/// Where an LRP's or task's log lines go: its `log_guid`, or its own guid (process guid, task
/// guid) when that is empty. The cells, the router and `diego logs` all agree through this.
pub fn log_guid_or<'a>(log_guid: &'a str, own_guid: &'a str) -> &'a str {
    if log_guid.is_empty() {
        own_guid
    } else {
        log_guid
    }
}

/// Routes of a desired LRP: router name → opaque JSON understood by that router
/// (`cf-router`, `tcp-router`, `internal-router`, …).
pub type Routes = BTreeMap<String, serde_json::Value>;

/// What a cell must offer for work to land on it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub max_pids: i32,
}

pub fn validate_rootfs(v: &mut Validator, field: &str, rootfs: &str) {
    if rootfs.is_empty() {
        v.error(field, "is required");
        return;
    }
    match rootfs.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                && !rest.is_empty() => {}
        _ => v.error(
            field,
            format!("must be a URL with a scheme, e.g. preloaded:busybox or oci:///path (got {rootfs:?})"),
        ),
    }
}

pub fn validate_placement_tags(v: &mut Validator, field: &str, tags: &[String]) {
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() {
            v.error(format!("{field}[{i}]"), "must not be empty");
        }
    }
}
