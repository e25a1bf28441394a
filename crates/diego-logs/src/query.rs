//! Which lines a reader wants: the query string of the read and follow routes, and the pure
//! test of a line against it.

use serde::{Deserialize, Serialize};

use crate::line::LogLine;

/// Lines a recent read returns when it names no `limit`.
pub const DEFAULT_RECENT_LIMIT: usize = 1_000;

/// Filters of a read or a follow, as query parameters. Every filter left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines stamped at or after this time (ns since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<u64>,
    /// Only lines of this instance index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Only lines of this source type or below it: `APP` matches `APP` and `APP/PROC/WEB`
    /// (ASCII case ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Read: at most this many lines, the most recent ones [default 1,000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Follow: first send up to this many recent matching lines [default 0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<usize>,
}

impl LogQuery {
    /// Whether `line` passes every filter.
    pub fn matches(&self, line: &LogLine) -> bool {
        self.since_ns.is_none_or(|t| line.timestamp_ns >= t)
            && self.index.is_none_or(|i| line.instance_index == Some(i))
            && self
                .source
                .as_deref()
                .is_none_or(|s| source_matches(s, &line.source_type))
    }
}

/// `wanted` is `source_type` or one of its ancestors in the `/` hierarchy.
fn source_matches(wanted: &str, source_type: &str) -> bool {
    let wanted = wanted.trim_end_matches('/');
    if source_type.len() < wanted.len() || !source_type.is_char_boundary(wanted.len()) {
        return false;
    }
    let (head, rest) = source_type.split_at(wanted.len());
    head.eq_ignore_ascii_case(wanted) && (rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::LogStream;

    fn line(source: &str, index: Option<u32>, t: u64) -> LogLine {
        LogLine {
            log_guid: "g".into(),
            source_type: source.into(),
            instance_index: index,
            stream: LogStream::Stdout,
            timestamp_ns: t,
            message: "m".into(),
        }
    }

    #[test]
    fn filters_as_a_table() {
        let q = |since_ns: Option<u64>, index: Option<u32>, source: Option<&str>| LogQuery {
            since_ns,
            index,
            source: source.map(String::from),
            ..Default::default()
        };
        #[rustfmt::skip]
        let cases = [
            // (query, line, matches)
            (q(None, None, None), line("APP/PROC/WEB", Some(0), 5), true),
            (q(Some(5), None, None), line("APP", Some(0), 5), true),
            (q(Some(6), None, None), line("APP", Some(0), 5), false),
            (q(None, Some(1), None), line("APP", Some(1), 5), true),
            (q(None, Some(1), None), line("APP", Some(0), 5), false),
            (q(None, Some(0), None), line("APP", None, 5), false),
            (q(None, None, Some("APP")), line("APP/PROC/WEB", Some(0), 5), true),
            (q(None, None, Some("app")), line("APP/PROC/WEB", Some(0), 5), true),
            (q(None, None, Some("APP/PROC/WEB")), line("APP/PROC/WEB", Some(0), 5), true),
            (q(None, None, Some("APP/PROC/WEB/")), line("APP/PROC/WEB", Some(0), 5), true),
            (q(None, None, Some("APP/PROC")), line("APP/PROC/WEB", Some(0), 5), true),
            (q(None, None, Some("AP")), line("APP/PROC/WEB", Some(0), 5), false),
            (q(None, None, Some("APP/PROC/WEB/X")), line("APP/PROC/WEB", Some(0), 5), false),
            (q(None, None, Some("CELL")), line("HEALTH", Some(0), 5), false),
            (q(None, None, Some("CELL")), line("CELL", None, 5), true),
            (q(Some(1), Some(2), Some("CELL")), line("CELL", Some(2), 1), true),
            (q(Some(1), Some(2), Some("CELL")), line("CELL", Some(3), 1), false),
            (q(None, None, Some("é")), line("éX", None, 1), false),
        ];
        for (i, (query, line, want)) in cases.iter().enumerate() {
            assert_eq!(query.matches(line), *want, "case {i}: {query:?} on {line:?}");
        }
    }
}
