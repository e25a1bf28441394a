//! The action tree: what a Task or LRP instance runs inside its container.
//!
//! As in Diego, an [`Action`] is a struct with nine optional members of which exactly one
//! must be set; this keeps the wire format identical (`{"run": {...}}`) and lets validation
//! say precisely what is wrong with a malformed tree instead of failing to parse it.

use serde::{Deserialize, Serialize};

use crate::common::EnvironmentVariable;
use crate::validation::{join, Validator};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutAction>,
    #[serde(default, rename = "try", skip_serializing_if = "Option::is_none")]
    pub try_: Option<TryAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<ParallelAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codependent: Option<CodependentAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_progress: Option<EmitProgressAction>,
}

/// A borrowed view of the one member an action holds.
#[derive(Debug, Clone, Copy)]
pub enum ActionKind<'a> {
    Download(&'a DownloadAction),
    Upload(&'a UploadAction),
    Run(&'a RunAction),
    Timeout(&'a TimeoutAction),
    Try(&'a TryAction),
    Serial(&'a SerialAction),
    Parallel(&'a ParallelAction),
    Codependent(&'a CodependentAction),
    EmitProgress(&'a EmitProgressAction),
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DownloadAction {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub artifact: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cache_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum_algorithm: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum_value: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadAction {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub artifact: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunAction {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    /// User to run as; empty means the container's default (non-root) user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suppress_log_output: bool,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeoutAction {
    #[serde(default)]
    pub action: Option<Box<Action>>,
    #[serde(default)]
    pub timeout_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TryAction {
    #[serde(default)]
    pub action: Option<Box<Action>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SerialAction {
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParallelAction {
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodependentAction {
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmitProgressAction {
    #[serde(default)]
    pub action: Option<Box<Action>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start_message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub success_message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_message_prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

const CHECKSUM_ALGORITHMS: [&str; 3] = ["md5", "sha1", "sha256"];

/// Deepest action tree accepted; deeper trees are almost certainly generated by mistake and
/// would make recursive validation and execution expensive.
pub const MAX_ACTION_DEPTH: usize = 64;

impl Action {
    pub fn run(run: RunAction) -> Self {
        Self {
            run: Some(run),
            ..Self::default()
        }
    }

    pub fn serial(actions: Vec<Action>) -> Self {
        Self {
            serial: Some(SerialAction {
                actions,
                log_source: String::new(),
            }),
            ..Self::default()
        }
    }

    pub fn parallel(actions: Vec<Action>) -> Self {
        Self {
            parallel: Some(ParallelAction {
                actions,
                log_source: String::new(),
            }),
            ..Self::default()
        }
    }

    pub fn codependent(actions: Vec<Action>) -> Self {
        Self {
            codependent: Some(CodependentAction {
                actions,
                log_source: String::new(),
            }),
            ..Self::default()
        }
    }

    pub fn timeout(action: Action, timeout_ms: i64) -> Self {
        Self {
            timeout: Some(TimeoutAction {
                action: Some(Box::new(action)),
                timeout_ms,
                log_source: String::new(),
            }),
            ..Self::default()
        }
    }

    pub fn try_(action: Action) -> Self {
        Self {
            try_: Some(TryAction {
                action: Some(Box::new(action)),
                log_source: String::new(),
            }),
            ..Self::default()
        }
    }

    /// Number of members set; a valid action has exactly one.
    pub fn member_count(&self) -> usize {
        [
            self.download.is_some(),
            self.upload.is_some(),
            self.run.is_some(),
            self.timeout.is_some(),
            self.try_.is_some(),
            self.serial.is_some(),
            self.parallel.is_some(),
            self.codependent.is_some(),
            self.emit_progress.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
    }

    /// The single member, or `None` when zero or several are set.
    pub fn kind(&self) -> Option<ActionKind<'_>> {
        if self.member_count() != 1 {
            return None;
        }
        if let Some(a) = &self.download {
            return Some(ActionKind::Download(a));
        }
        if let Some(a) = &self.upload {
            return Some(ActionKind::Upload(a));
        }
        if let Some(a) = &self.run {
            return Some(ActionKind::Run(a));
        }
        if let Some(a) = &self.timeout {
            return Some(ActionKind::Timeout(a));
        }
        if let Some(a) = &self.try_ {
            return Some(ActionKind::Try(a));
        }
        if let Some(a) = &self.serial {
            return Some(ActionKind::Serial(a));
        }
        if let Some(a) = &self.parallel {
            return Some(ActionKind::Parallel(a));
        }
        if let Some(a) = &self.codependent {
            return Some(ActionKind::Codependent(a));
        }
        self.emit_progress.as_ref().map(ActionKind::EmitProgress)
    }

    pub fn validate(&self, v: &mut Validator, path: &str) {
        self.validate_at_depth(v, path, 0);
    }

    fn validate_at_depth(&self, v: &mut Validator, path: &str, depth: usize) {
        if depth > MAX_ACTION_DEPTH {
            v.error(
                path,
                format!("action tree is nested deeper than {MAX_ACTION_DEPTH} levels"),
            );
            return;
        }
        let count = self.member_count();
        if count != 1 {
            v.error(
                path,
                format!(
                    "must have exactly one of download, upload, run, timeout, try, serial, parallel, \
                     codependent, emit_progress (got {count})"
                ),
            );
            return;
        }
        let child = |v: &mut Validator, name: &str, inner: &Option<Box<Action>>| {
            let p = join(path, name);
            match inner {
                Some(a) => a.validate_at_depth(v, &join(&p, "action"), depth + 1),
                None => v.error(join(&p, "action"), "is required"),
            }
        };
        let list = |v: &mut Validator, name: &str, actions: &[Action]| {
            let p = join(path, name);
            if actions.is_empty() {
                v.error(join(&p, "actions"), "must contain at least one action");
            }
            for (i, a) in actions.iter().enumerate() {
                a.validate_at_depth(v, &format!("{p}.actions[{i}]"), depth + 1);
            }
        };
        match self.kind().expect("exactly one member") {
            ActionKind::Download(d) => {
                let p = join(path, "download");
                v.url(&join(&p, "from"), &d.from);
                v.required(&join(&p, "to"), &d.to);
                if !d.checksum_algorithm.is_empty() || !d.checksum_value.is_empty() {
                    let alg = d.checksum_algorithm.to_ascii_lowercase();
                    if !CHECKSUM_ALGORITHMS.contains(&alg.as_str()) {
                        v.error(
                            join(&p, "checksum_algorithm"),
                            format!(
                                "must be one of md5, sha1, sha256 (got {:?})",
                                d.checksum_algorithm
                            ),
                        );
                    }
                    v.required(&join(&p, "checksum_value"), &d.checksum_value);
                }
            }
            ActionKind::Upload(u) => {
                let p = join(path, "upload");
                v.required(&join(&p, "from"), &u.from);
                v.url(&join(&p, "to"), &u.to);
            }
            ActionKind::Run(r) => {
                let p = join(path, "run");
                v.required(&join(&p, "path"), &r.path);
                for (i, e) in r.env.iter().enumerate() {
                    e.validate(v, &format!("{p}.env[{i}]"));
                }
            }
            ActionKind::Timeout(t) => {
                let p = join(path, "timeout");
                v.positive(&join(&p, "timeout_ms"), t.timeout_ms);
                child(v, "timeout", &t.action);
            }
            ActionKind::Try(t) => child(v, "try", &t.action),
            ActionKind::Serial(s) => list(v, "serial", &s.actions),
            ActionKind::Parallel(s) => list(v, "parallel", &s.actions),
            ActionKind::Codependent(s) => list(v, "codependent", &s.actions),
            ActionKind::EmitProgress(e) => child(v, "emit_progress", &e.action),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(a: &Action) -> Vec<String> {
        let mut v = Validator::new();
        a.validate(&mut v, "action");
        v.errors().iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn wire_format_is_member_keyed() {
        let a = Action::serial(vec![Action::run(RunAction {
            path: "/bin/true".into(),
            ..Default::default()
        })]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"serial":{"actions":[{"run":{"path":"/bin/true"}}]}}"#);
        let back: Action = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let t: Action = serde_json::from_str(r#"{"try":{"action":{"run":{"path":"x"}}}}"#).unwrap();
        assert!(matches!(t.kind(), Some(ActionKind::Try(_))));
    }

    #[test]
    fn exactly_one_member() {
        assert_eq!(errors(&Action::default()), ["action"]);
        let two: Action =
            serde_json::from_str(r#"{"run":{"path":"a"},"try":{"action":{"run":{"path":"b"}}}}"#).unwrap();
        assert_eq!(errors(&two), ["action"]);
    }

    #[test]
    fn nested_errors_are_named_by_path() {
        let a: Action = serde_json::from_str(
            r#"{"serial":{"actions":[{"run":{"path":""}},{"timeout":{"timeout_ms":0,"action":{"download":{"from":"ftp://x","to":""}}}},{"parallel":{"actions":[]}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            errors(&a),
            [
                "action.serial.actions[0].run.path",
                "action.serial.actions[1].timeout.timeout_ms",
                "action.serial.actions[1].timeout.action.download.from",
                "action.serial.actions[1].timeout.action.download.to",
                "action.serial.actions[2].parallel.actions",
            ]
        );
    }

    #[test]
    fn checksum_algorithm_checked() {
        let a: Action = serde_json::from_str(
            r#"{"download":{"from":"http://h/x.tgz","to":"/app","checksum_algorithm":"crc32","checksum_value":"1"}}"#,
        )
        .unwrap();
        assert_eq!(errors(&a), ["action.download.checksum_algorithm"]);
    }

    #[test]
    fn missing_child_is_reported() {
        let a: Action = serde_json::from_str(r#"{"emit_progress":{"start_message":"hi"}}"#).unwrap();
        assert_eq!(errors(&a), ["action.emit_progress.action"]);
    }

    #[test]
    fn overly_deep_trees_are_refused() {
        let mut a = Action::run(RunAction {
            path: "x".into(),
            ..Default::default()
        });
        for _ in 0..(MAX_ACTION_DEPTH + 2) {
            a = Action::try_(a);
        }
        assert!(!errors(&a).is_empty());
    }
}
