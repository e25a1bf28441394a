//! Desired LRPs: what should run, as N indexed instances (diego-spec §1.2).
//!
//! As in Diego, a desired LRP is stored in two halves: the **scheduling info** (small; what
//! convergence, the auctioneer and routing need) and the **run info** (the action tree and
//! everything else a cell needs to start an instance).

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::check::CheckDefinition;
use crate::clock::Timestamp;
use crate::common::{
    validate_metric_tags, validate_placement_tags, validate_rootfs, EnvironmentVariable, MetricTags, Routes,
};
use crate::modification_tag::ModificationTag;
use crate::restart::CrashPolicy;
use crate::validation::{Validator, MAX_ANNOTATION_CHARS, MAX_ROUTES_BYTES};

/// Most instances one desired LRP may ask for; a guard against typos such as `-i 1000000`.
pub const MAX_INSTANCES: i32 = 100_000;
/// Diego's default time for an instance to become healthy.
pub const DEFAULT_START_TIMEOUT_MS: i64 = 60_000;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredLrp {
    #[serde(default)]
    pub process_guid: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub rootfs: String,
    #[serde(default)]
    pub instances: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    #[serde(default)]
    pub action: Option<Action>,
    /// Time for an instance to pass its startup checks; 0 = the default (60 s).
    #[serde(default)]
    pub start_timeout_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_definition: Option<CheckDefinition>,
    #[serde(default)]
    pub memory_mb: i32,
    #[serde(default)]
    pub disk_mb: i32,
    #[serde(default)]
    pub max_pids: i32,
    #[serde(default)]
    pub cpu_weight: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(default, skip_serializing_if = "Routes::is_empty")]
    pub routes: Routes,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "MetricTags::is_empty")]
    pub metric_tags: MetricTags,
    /// This LRP's crash restart policy; unset = Diego's defaults (see [`CrashPolicy`]).
    /// (`restart_policy` is read too: records written before the rename.)
    #[serde(default, alias = "restart_policy", skip_serializing_if = "Option::is_none")]
    pub crash_policy: Option<CrashPolicy>,
    #[serde(default)]
    pub created_at: Timestamp,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

/// The half of a desired LRP that scheduling, convergence and routing read.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredLrpSchedulingInfo {
    pub process_guid: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    pub instances: i32,
    pub rootfs: String,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub max_pids: i32,
    #[serde(default, skip_serializing_if = "Routes::is_empty")]
    pub routes: Routes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    /// This LRP's crash restart policy; unset = Diego's defaults (see [`CrashPolicy`]).
    /// (`restart_policy` is read too: records written before the rename.)
    #[serde(default, alias = "restart_policy", skip_serializing_if = "Option::is_none")]
    pub crash_policy: Option<CrashPolicy>,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

/// The half of a desired LRP that only a cell starting an instance needs.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredLrpRunInfo {
    pub process_guid: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub start_timeout_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_definition: Option<CheckDefinition>,
    #[serde(default)]
    pub cpu_weight: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_guid: String,
    #[serde(default, skip_serializing_if = "MetricTags::is_empty")]
    pub metric_tags: MetricTags,
    #[serde(default)]
    pub created_at: Timestamp,
}

/// The fields of a desired LRP that can change in place; everything else needs a new LRP.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredLrpUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_tags: Option<MetricTags>,
    /// Replaces the crash policy whole; `{}` goes back to the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_policy: Option<CrashPolicy>,
    /// Optimistic concurrency: when set, the update applies only if the desired LRP still
    /// carries this tag (the one the client read); otherwise it is refused as a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_tag: Option<ModificationTag>,
}

fn validate_instances(v: &mut Validator, instances: i32) {
    if instances < 0 {
        v.error("instances", format!("must be >= 0 (got {instances})"));
    } else if instances > MAX_INSTANCES {
        v.error(
            "instances",
            format!("must be <= {MAX_INSTANCES} (got {instances})"),
        );
    }
}

fn validate_routes(v: &mut Validator, routes: &Routes) {
    let len = serde_json::to_vec(routes).map(|b| b.len()).unwrap_or(usize::MAX);
    v.max_bytes("routes", len, MAX_ROUTES_BYTES);
    crate::routes::validate_cf_routes(v, routes);
}

impl DesiredLrp {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        v.guid("process_guid", &self.process_guid);
        v.required("domain", &self.domain);
        validate_rootfs(&mut v, "rootfs", &self.rootfs);
        validate_instances(&mut v, self.instances);
        match &self.action {
            Some(a) => a.validate(&mut v, "action"),
            None => v.error("action", "is required"),
        }
        if let Some(s) = &self.setup {
            s.validate(&mut v, "setup");
        }
        v.non_negative("start_timeout_ms", self.start_timeout_ms);
        if let Some(c) = &self.check_definition {
            c.validate(&mut v, "check_definition");
        }
        v.non_negative("memory_mb", self.memory_mb.into());
        v.non_negative("disk_mb", self.disk_mb.into());
        v.non_negative("max_pids", self.max_pids.into());
        if !(0..=100).contains(&self.cpu_weight) {
            v.error(
                "cpu_weight",
                format!("must be between 0 and 100 (got {})", self.cpu_weight),
            );
        }
        for (i, p) in self.ports.iter().enumerate() {
            v.port(&format!("ports[{i}]"), *p);
        }
        for (i, e) in self.env.iter().enumerate() {
            e.validate(&mut v, &format!("env[{i}]"));
        }
        validate_routes(&mut v, &self.routes);
        v.max_chars("annotation", &self.annotation, MAX_ANNOTATION_CHARS);
        validate_placement_tags(&mut v, "placement_tags", &self.placement_tags);
        validate_metric_tags(&self.metric_tags, &mut v, "metric_tags");
        if let Some(p) = &self.crash_policy {
            p.validate(&mut v, "crash_policy");
        }
        v.into_result()
    }

    pub fn scheduling_info(&self) -> DesiredLrpSchedulingInfo {
        DesiredLrpSchedulingInfo {
            process_guid: self.process_guid.clone(),
            domain: self.domain.clone(),
            log_guid: self.log_guid.clone(),
            annotation: self.annotation.clone(),
            instances: self.instances,
            rootfs: self.rootfs.clone(),
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            max_pids: self.max_pids,
            routes: self.routes.clone(),
            placement_tags: self.placement_tags.clone(),
            crash_policy: self.crash_policy.clone(),
            modification_tag: self.modification_tag.clone(),
        }
    }

    pub fn run_info(&self) -> DesiredLrpRunInfo {
        DesiredLrpRunInfo {
            process_guid: self.process_guid.clone(),
            domain: self.domain.clone(),
            env: self.env.clone(),
            setup: self.setup.clone(),
            action: self.action.clone(),
            start_timeout_ms: self.start_timeout_ms,
            check_definition: self.check_definition.clone(),
            cpu_weight: self.cpu_weight,
            privileged: self.privileged,
            ports: self.ports.clone(),
            log_source: self.log_source.clone(),
            metrics_guid: self.metrics_guid.clone(),
            metric_tags: self.metric_tags.clone(),
            created_at: self.created_at,
        }
    }

    /// Reassembles a desired LRP from its two halves.
    pub fn from_parts(s: DesiredLrpSchedulingInfo, r: DesiredLrpRunInfo) -> Self {
        Self {
            process_guid: s.process_guid,
            domain: s.domain,
            rootfs: s.rootfs,
            instances: s.instances,
            env: r.env,
            setup: r.setup,
            action: r.action,
            start_timeout_ms: r.start_timeout_ms,
            check_definition: r.check_definition,
            memory_mb: s.memory_mb,
            disk_mb: s.disk_mb,
            max_pids: s.max_pids,
            cpu_weight: r.cpu_weight,
            privileged: r.privileged,
            ports: r.ports,
            routes: s.routes,
            log_source: r.log_source,
            log_guid: s.log_guid,
            metrics_guid: r.metrics_guid,
            annotation: s.annotation,
            placement_tags: s.placement_tags,
            metric_tags: r.metric_tags,
            crash_policy: s.crash_policy,
            created_at: r.created_at,
            modification_tag: s.modification_tag,
        }
    }

    /// The LRP after an in-place update (the tag is bumped by the store on write).
    pub fn apply_update(&self, update: &DesiredLrpUpdate) -> DesiredLrp {
        let mut d = self.clone();
        if let Some(n) = update.instances {
            d.instances = n;
        }
        if let Some(r) = &update.routes {
            d.routes = r.clone();
        }
        if let Some(a) = &update.annotation {
            d.annotation = a.clone();
        }
        if let Some(m) = &update.metric_tags {
            d.metric_tags = m.clone();
        }
        if let Some(p) = &update.crash_policy {
            d.crash_policy = (!p.is_empty()).then(|| p.clone());
        }
        d
    }
}

impl DesiredLrpUpdate {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        if let Some(n) = self.instances {
            validate_instances(&mut v, n);
        }
        if let Some(r) = &self.routes {
            validate_routes(&mut v, r);
        }
        if let Some(a) = &self.annotation {
            v.max_chars("annotation", a, MAX_ANNOTATION_CHARS);
        }
        if let Some(m) = &self.metric_tags {
            validate_metric_tags(m, &mut v, "metric_tags");
        }
        if let Some(p) = &self.crash_policy {
            p.validate(&mut v, "crash_policy");
        }
        if self.instances.is_none()
            && self.routes.is_none()
            && self.annotation.is_none()
            && self.metric_tags.is_none()
            && self.crash_policy.is_none()
        {
            v.error(
                "",
                "an update must set at least one of instances, routes, annotation, metric_tags, crash_policy",
            );
        }
        v.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::RunAction;

    pub(crate) fn lrp() -> DesiredLrp {
        DesiredLrp {
            process_guid: "web".into(),
            domain: "apps".into(),
            rootfs: "preloaded:busybox".into(),
            instances: 3,
            action: Some(Action::run(RunAction {
                path: "httpd".into(),
                ..Default::default()
            })),
            memory_mb: 128,
            ports: vec![8080],
            annotation: "a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn split_and_join_round_trip() {
        let mut d = lrp();
        d.routes.insert(
            "cf-router".into(),
            serde_json::json!([{"hostnames": ["web.example"], "port": 8080}]),
        );
        d.crash_policy = Some(CrashPolicy {
            immediate_restarts: Some(1),
            ..Default::default()
        });
        assert_eq!(DesiredLrp::from_parts(d.scheduling_info(), d.run_info()), d);
    }

    #[test]
    fn reports_every_bad_field() {
        let mut d = lrp();
        d.process_guid = "has space".into();
        d.instances = -1;
        d.memory_mb = -5;
        d.ports = vec![0];
        d.annotation = "x".repeat(MAX_ANNOTATION_CHARS + 1);
        d.rootfs = "busybox".into();
        d.routes.insert(
            "r".into(),
            serde_json::Value::String("y".repeat(MAX_ROUTES_BYTES)),
        );
        let errs = d.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "process_guid",
                "rootfs",
                "instances",
                "memory_mb",
                "ports[0]",
                "routes",
                "annotation"
            ]
        );
    }

    #[test]
    fn crash_policy_is_validated_and_updated_in_place() {
        let mut d = lrp();
        d.crash_policy = Some(CrashPolicy {
            max_restarts: Some(0),
            ..Default::default()
        });
        let errs = d.validate().unwrap_err();
        assert_eq!(errs[0].field, "crash_policy.max_restarts");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["crash_policy"], serde_json::json!({"max_restarts": 0}));
        let old: DesiredLrp =
            serde_json::from_value(serde_json::json!({"restart_policy": {"immediate_restarts": 1}})).unwrap();
        assert_eq!(old.crash_policy.unwrap().immediate_restarts, Some(1));

        let policy = CrashPolicy {
            immediate_restarts: Some(0),
            ..Default::default()
        };
        let update = DesiredLrpUpdate {
            crash_policy: Some(policy.clone()),
            ..Default::default()
        };
        assert!(update.validate().is_ok());
        let updated = lrp().apply_update(&update);
        assert_eq!(updated.crash_policy, Some(policy));
        let reset = DesiredLrpUpdate {
            crash_policy: Some(CrashPolicy::default()),
            ..Default::default()
        };
        assert_eq!(updated.apply_update(&reset).crash_policy, None);
        let bad = DesiredLrpUpdate {
            crash_policy: Some(CrashPolicy {
                max_backoff_ms: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err()[0].field,
            "crash_policy.max_backoff_ms"
        );
    }

    #[test]
    fn update_needs_a_field() {
        assert!(DesiredLrpUpdate::default().validate().is_err());
        assert!(DesiredLrpUpdate {
            instances: Some(2),
            ..Default::default()
        }
        .validate()
        .is_ok());
        assert!(DesiredLrpUpdate {
            instances: Some(-2),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
