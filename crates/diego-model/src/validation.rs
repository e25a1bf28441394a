//! Field-level validation that reports every problem at once.
//!
//! Validators push [`FieldError`]s naming the offending field by its JSON path
//! (`action.serial.actions[1].run.path`) so a client can fix a request in one round trip.

use serde::{Deserialize, Serialize};

/// One invalid field: its JSON path and what is wrong with it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects field errors while walking a record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Validator {
    errors: Vec<FieldError>,
}

/// Maximum length of an annotation in characters (Diego's limit is 10 KiB; counting
/// characters lets the API document state the limit exactly).
pub const MAX_ANNOTATION_CHARS: usize = 10 * 1024;
/// Maximum serialised size of a desired LRP's routes, as in Diego (128 KiB).
pub const MAX_ROUTES_BYTES: usize = 128 * 1024;
/// Maximum length of a guid.
pub const MAX_GUID_BYTES: usize = 255;

// The rules below as JSON Schema patterns (ECMA-262), for the API document. Each states what
// the function named beside it checks; the BBS's fuzz test holds the two together.

/// [`Validator::guid`] (with a length of 1..=[`MAX_GUID_BYTES`]).
pub const GUID_PATTERN: &str = "^[a-zA-Z0-9_-]+$";
/// [`Validator::url`]: `http://` or `https://` and at least one character.
pub const URL_PATTERN: &str = "^https?://[\\s\\S]";
/// [`crate::common::validate_rootfs`]: `scheme:rest`, both non-empty.
pub const ROOTFS_PATTERN: &str = "^[a-zA-Z0-9+.-]+:[\\s\\S]";
/// [`crate::common::EnvironmentVariable::validate`]: a name without `=` or NUL.
pub const ENV_NAME_PATTERN: &str = "^[^=\\u0000]+$";

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.error(field, message());
        }
    }

    pub fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.error(field, "is required");
        }
    }

    /// Diego's guid rule: non-empty, `^[a-zA-Z0-9_-]+$`.
    pub fn guid(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.error(field, "is required");
        } else if value.len() > MAX_GUID_BYTES {
            self.error(
                field,
                format!("must be at most {MAX_GUID_BYTES} bytes (got {})", value.len()),
            );
        } else if !is_valid_guid(value) {
            self.error(field, format!("must match ^[a-zA-Z0-9_-]+$ (got {value:?})"));
        }
    }

    pub fn non_negative(&mut self, field: &str, value: i64) {
        if value < 0 {
            self.error(field, format!("must be >= 0 (got {value})"));
        }
    }

    pub fn positive(&mut self, field: &str, value: i64) {
        if value <= 0 {
            self.error(field, format!("must be > 0 (got {value})"));
        }
    }

    pub fn max_chars(&mut self, field: &str, value: &str, max: usize) {
        let len = value.chars().count();
        if len > max {
            self.error(field, format!("must be at most {max} characters (got {len})"));
        }
    }

    pub fn max_bytes(&mut self, field: &str, len: usize, max: usize) {
        if len > max {
            self.error(field, format!("must be at most {max} bytes (got {len})"));
        }
    }

    pub fn port(&mut self, field: &str, port: u32) {
        if port == 0 || port > 65535 {
            self.error(field, format!("must be a port between 1 and 65535 (got {port})"));
        }
    }

    /// An absolute URL with a scheme we can fetch from and something after it.
    pub fn url(&mut self, field: &str, value: &str) {
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"));
        if value.is_empty() {
            self.error(field, "is required");
        } else if rest.is_none_or(str::is_empty) {
            self.error(
                field,
                format!("must be an http:// or https:// URL (got {value:?})"),
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
}

pub fn is_valid_guid(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Joins a parent path and a child field name.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_charset() {
        assert!(is_valid_guid("abc-DEF_123"));
        assert!(!is_valid_guid(""));
        assert!(!is_valid_guid("a b"));
        assert!(!is_valid_guid("a/b"));
        assert!(!is_valid_guid("é"));
    }

    #[test]
    fn collects_every_error() {
        let mut v = Validator::new();
        v.guid("task_guid", "bad guid");
        v.non_negative("memory_mb", -1);
        v.required("domain", "");
        let errs = v.into_result().unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["task_guid", "memory_mb", "domain"]);
        assert!(errs[1].message.contains("-1"));
    }
}
