//! The log line (diego-spec §7.2) and its JSON shape, a product contract:
//!
//! ```json
//! {"log_guid":"…","source_type":"APP/PROC/WEB","instance_index":0,"stream":"stdout","timestamp_ns":1,"message":"…"}
//! ```
//!
//! `instance_index` is left out for lines that belong to no instance (tasks, notices).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The source type used when neither the action nor the container names one.
pub const DEFAULT_LOG_SOURCE: &str = "LOG";

/// Longest message sent as one line; longer lines are split (Diego's loggregator limit).
pub const MAX_MESSAGE_BYTES: usize = 61_440;

/// Source types the platform itself writes. Apps write under their action's `log_source`
/// (`APP/PROC/WEB`, `STG`, …).
pub mod source {
    /// App output when the LRP names no source.
    pub const APP: &str = "APP";
    /// The cell's own messages about a container (lifecycle, health monitoring, notices).
    pub const CELL: &str = "CELL";
    /// Health-check probe output and readiness changes.
    pub const HEALTH: &str = "HEALTH";
    /// Staging.
    pub const STG: &str = "STG";
    /// Router access lines.
    pub const RTR: &str = "RTR";
}

/// Which output stream a line came from (`OUT` / `ERR` in `cf logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// `OUT` or `ERR`, as `cf logs` prints it.
    pub fn short(self) -> &'static str {
        match self {
            LogStream::Stdout => "OUT",
            LogStream::Stderr => "ERR",
        }
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Whose line it is: the LRP's or task's `log_guid`.
    pub log_guid: String,
    /// `APP/PROC/WEB`, `CELL`, `HEALTH`, `STG`, `RTR`, `LOG`, …
    pub source_type: String,
    /// The instance index; `None` for tasks and for lines about no one instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_index: Option<u32>,
    pub stream: LogStream,
    /// When the line was written, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub message: String,
}

impl LogLine {
    /// A line stamped now.
    pub fn now(
        log_guid: impl Into<String>,
        source_type: impl Into<String>,
        instance_index: Option<u32>,
        stream: LogStream,
        message: impl Into<String>,
    ) -> Self {
        LogLine {
            log_guid: log_guid.into(),
            source_type: source_type.into(),
            instance_index,
            stream,
            timestamp_ns: now_ns(),
            message: message.into(),
        }
    }

    /// `APP/PROC/WEB/0`, or just the source type for a line of no instance.
    pub fn source_label(&self) -> String {
        match self.instance_index {
            Some(i) => format!("{}/{i}", self.source_type),
            None => self.source_type.clone(),
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_shape_is_the_contract() {
        let mut line = LogLine {
            log_guid: "g".into(),
            source_type: "APP/PROC/WEB".into(),
            instance_index: Some(0),
            stream: LogStream::Stdout,
            timestamp_ns: 17,
            message: "hello".into(),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"log_guid":"g","source_type":"APP/PROC/WEB","instance_index":0,"stream":"stdout","timestamp_ns":17,"message":"hello"}"#
        );
        line.instance_index = None;
        line.stream = LogStream::Stderr;
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"log_guid":"g","source_type":"APP/PROC/WEB","stream":"stderr","timestamp_ns":17,"message":"hello"}"#
        );
        assert_eq!(serde_json::from_str::<LogLine>(&text).unwrap(), line);
        let err = serde_json::from_str::<LogLine>(
            r#"{"log_guid":"g","source_type":"A","stream":"stdout","timestamp_ns":1,"message":"","x":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn labels_name_the_instance_when_there_is_one() {
        let mut line = LogLine::now("g", "APP/PROC/WEB", Some(3), LogStream::Stdout, "m");
        assert_eq!(line.source_label(), "APP/PROC/WEB/3");
        line.instance_index = None;
        assert_eq!(line.source_label(), "APP/PROC/WEB");
        assert!(line.timestamp_ns > 1_600_000_000_000_000_000);
    }
}
