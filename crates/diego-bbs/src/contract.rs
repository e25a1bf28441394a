//! The API document's constraints: what the validators enforce, said in JSON Schema.
//!
//! The schemas generated from the model's types say only what parses. The validators refuse
//! more: empty guids, negative sizes, a check with both a TCP and an HTTP member. This module
//! states those rules in the document, from the validators' own constants and patterns, so
//! that every request the document allows is accepted or refused only for a state reason
//! (404, 409, 412). `tests/openapi_fuzz.rs` holds the two together: it generates requests
//! from the document and fails on any valid one the server refuses.
//!
//! The rules are exact: a response (any record the server accepted) satisfies them too, so
//! the same schemas serve requests and responses. One liberty: `null` for an optional member
//! is accepted as absent but not offered. Two rules are stated in prose only, as JSON Schema
//! cannot say them: the action tree's depth limit and the serialised size of routes.

use diego_model::desired_lrp::MAX_INSTANCES;
use diego_model::restart::{
    DEFAULT_MAX_RESTART_ATTEMPTS, DEFAULT_MIN_BACKOFF_MS, MAX_CRASH_BACKOFF_MS, MAX_IMMEDIATE_RESTARTS,
};
use diego_model::validation::{
    ENV_NAME_PATTERN, GUID_PATTERN, MAX_ANNOTATION_CHARS, MAX_GUID_BYTES, ROOTFS_PATTERN, URL_PATTERN,
};
use serde_json::{json, Map, Value};

/// What a validator requires of one field.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Present and a guid (`Validator::guid`).
    Guid,
    /// Present and non-empty (`Validator::required`).
    Required,
    /// Present and > 0 (`Validator::positive`).
    Positive,
    /// Present (an object member the validator insists on).
    Present,
    /// Present and an http(s) URL (`Validator::url`).
    Url,
    /// Empty or an http(s) URL.
    OptionalUrl,
    /// Present and `scheme:rest` (`validate_rootfs`).
    Rootfs,
    /// Empty or starting with `/` (an absolute path).
    EmptyOrAbsolutePath,
    /// An integer in `min..=max`.
    Range(i64, i64),
    /// A port, 1..=65535 (`Validator::port`).
    Port,
    /// Every item a port.
    PortItems,
    /// At most this many characters (`Validator::max_chars`).
    MaxChars(usize),
    /// A list of non-empty strings (`validate_placement_tags`).
    NonEmptyItems,
    /// A list of at least one item.
    NonEmptyList,
    /// A metric-tag map: non-empty names (`validate_metric_tags`).
    TagNames,
    /// Present and an environment variable name.
    EnvName,
}

use Rule::*;

const NON_NEGATIVE: Rule = Range(0, i32::MAX as i64);
const CPU_WEIGHT: Rule = Range(0, 100);
const NON_NEGATIVE_MS: Rule = Range(0, i64::MAX);

/// (schema, property, rule): each line is one check a validator makes.
pub const FIELD_RULES: &[(&str, &str, Rule)] = &[
    ("DesireTaskRequest", "task_guid", Guid),
    ("DesireTaskRequest", "domain", Required),
    ("DesireTaskRequest", "task_definition", Present),
    ("TaskDefinition", "rootfs", Rootfs),
    ("TaskDefinition", "action", Present),
    ("TaskDefinition", "memory_mb", NON_NEGATIVE),
    ("TaskDefinition", "disk_mb", NON_NEGATIVE),
    ("TaskDefinition", "max_pids", NON_NEGATIVE),
    ("TaskDefinition", "cpu_weight", CPU_WEIGHT),
    ("TaskDefinition", "annotation", MaxChars(MAX_ANNOTATION_CHARS)),
    ("TaskDefinition", "completion_callback_url", OptionalUrl),
    ("TaskDefinition", "result_file", EmptyOrAbsolutePath),
    ("TaskDefinition", "placement_tags", NonEmptyItems),
    ("TaskDefinition", "metric_tags", TagNames),
    ("EnvironmentVariable", "name", EnvName),
    ("DownloadAction", "from", Url),
    ("DownloadAction", "to", Required),
    ("UploadAction", "from", Required),
    ("UploadAction", "to", Url),
    ("RunAction", "path", Required),
    ("TimeoutAction", "timeout_ms", Positive),
    ("TimeoutAction", "action", Present),
    ("TryAction", "action", Present),
    ("EmitProgressAction", "action", Present),
    ("SerialAction", "actions", NonEmptyList),
    ("ParallelAction", "actions", NonEmptyList),
    ("CodependentAction", "actions", NonEmptyList),
    ("DesiredLrp", "process_guid", Guid),
    ("DesiredLrp", "domain", Required),
    ("DesiredLrp", "rootfs", Rootfs),
    ("DesiredLrp", "instances", Range(0, MAX_INSTANCES as i64)),
    ("DesiredLrp", "action", Present),
    ("DesiredLrp", "start_timeout_ms", NON_NEGATIVE_MS),
    ("DesiredLrp", "memory_mb", NON_NEGATIVE),
    ("DesiredLrp", "disk_mb", NON_NEGATIVE),
    ("DesiredLrp", "max_pids", NON_NEGATIVE),
    ("DesiredLrp", "cpu_weight", CPU_WEIGHT),
    ("DesiredLrp", "ports", PortItems),
    ("DesiredLrp", "annotation", MaxChars(MAX_ANNOTATION_CHARS)),
    ("DesiredLrp", "placement_tags", NonEmptyItems),
    ("DesiredLrp", "metric_tags", TagNames),
    ("DesiredLrpUpdate", "instances", Range(0, MAX_INSTANCES as i64)),
    ("DesiredLrpUpdate", "annotation", MaxChars(MAX_ANNOTATION_CHARS)),
    ("DesiredLrpUpdate", "metric_tags", TagNames),
    (
        "CrashPolicy",
        "max_backoff_ms",
        Range(DEFAULT_MIN_BACKOFF_MS, MAX_CRASH_BACKOFF_MS),
    ),
    ("CrashPolicy", "max_restarts", Range(1, u32::MAX as i64)),
    (
        "CrashPolicy",
        "immediate_restarts",
        Range(0, MAX_IMMEDIATE_RESTARTS as i64),
    ),
    ("TcpCheck", "port", Port),
    ("TcpCheck", "connect_timeout_ms", NON_NEGATIVE_MS),
    ("TcpCheck", "interval_ms", NON_NEGATIVE_MS),
    ("HttpCheck", "port", Port),
    ("HttpCheck", "request_timeout_ms", NON_NEGATIVE_MS),
    ("HttpCheck", "interval_ms", NON_NEGATIVE_MS),
    ("HttpCheck", "path", EmptyOrAbsolutePath),
    ("StartTaskRequest", "cell_id", Required),
    ("CompleteTaskRequest", "cell_id", Required),
    ("ActualLrpInstanceKey", "instance_guid", Required),
    ("ActualLrpInstanceKey", "cell_id", Required),
    ("ActualLrpNetInfo", "address", Required),
    ("PortMapping", "container_port", Port),
    ("PortMapping", "host_port", Port),
    ("CrashActualLrpRequest", "error_message", Required),
    ("FailActualLrpRequest", "error_message", Required),
    ("LrpPlacementFailure", "process_guid", Guid),
    ("LrpPlacementFailure", "placement_error", Required),
    ("RegisterCellRequest", "ttl_seconds", Range(1, i64::MAX)),
    ("CellPresence", "cell_id", Guid),
    ("CellPresence", "rep_url", Url),
    ("CellCapacity", "memory_mb", NON_NEGATIVE),
    ("CellCapacity", "disk_mb", NON_NEGATIVE),
    ("CellCapacity", "containers", NON_NEGATIVE),
    ("RootfsProvider", "name", Required),
    ("UpsertDomainRequest", "domain", Guid),
    ("UpsertDomainRequest", "ttl_seconds", Range(0, i64::MAX)),
    ("AcquireLockRequest", "owner", Required),
    ("AcquireLockRequest", "ttl_seconds", Range(1, i64::MAX)),
];

/// Exactly one of these members (the validators' "must have exactly one of …").
const ONE_OF_MEMBERS: &[&str] = &["Action", "Check", "MetricTagValue"];

/// Adds the validators' rules to the generated schemas.
pub fn tighten(schemas: &mut Map<String, Value>) {
    for schema in schemas.values_mut() {
        walk(schema);
    }
    for (name, field, rule) in FIELD_RULES {
        let schema = schemas
            .get_mut(*name)
            .unwrap_or_else(|| panic!("contract names schema {name}, which is not generated"));
        apply(schema, field, *rule);
    }
    for name in ONE_OF_MEMBERS {
        let s = &mut schemas[*name];
        s["minProperties"] = json!(1);
        s["maxProperties"] = json!(1);
    }
    // A download's checksum: none, or both with a known algorithm.
    schemas["DownloadAction"]["anyOf"] = json!([
        {"not": {"anyOf": [{"required": ["checksum_algorithm"]}, {"required": ["checksum_value"]}]}},
        {
            "required": ["checksum_algorithm", "checksum_value"],
            "properties": {
                "checksum_algorithm": {"pattern": "^([mM][dD]5|[sS][hH][aA](1|256))$"},
                "checksum_value": {"minLength": 1}
            }
        }
    ]);
    // A completed task that failed says why.
    schemas["CompleteTaskRequest"]["anyOf"] = json!([
        {"properties": {"failed": {"enum": [false]}}},
        {"required": ["failure_reason"], "properties": {"failure_reason": {"minLength": 1}}}
    ]);
    // An update changes something (the modification tag alone does not).
    schemas["DesiredLrpUpdate"]["anyOf"] =
        json!(
            ["instances", "routes", "annotation", "metric_tags", "crash_policy"]
                .map(|f| json!({"required": [f]}))
        );
    schemas["CrashPolicy"]["anyOf"] = immediate_restarts_within_max();
    describe(&mut schemas["Action"], "Nested at most 64 levels deep.");
    describe(
        &mut schemas["DesiredLrp"]["properties"]["routes"],
        "At most 128 KiB serialised.",
    );
}

/// `immediate_restarts <= max_restarts` (default 200). JSON Schema cannot compare two
/// members, but `immediate_restarts` is at most 10, so one alternative per value says it
/// exactly: some `k` in 1..=10 lies between them.
fn immediate_restarts_within_max() -> Value {
    const _: () = assert!(MAX_IMMEDIATE_RESTARTS <= DEFAULT_MAX_RESTART_ATTEMPTS);
    let mut ladder = vec![
        json!({"not": {"required": ["immediate_restarts"]}}),
        json!({"not": {"required": ["max_restarts"]}}),
    ];
    for k in 1..=MAX_IMMEDIATE_RESTARTS {
        ladder.push(json!({
            "required": ["max_restarts"],
            "properties": {
                "immediate_restarts": {"maximum": k},
                "max_restarts": {"minimum": k}
            }
        }));
    }
    Value::Array(ladder)
}

fn describe(schema: &mut Value, more: &str) {
    let text = match schema.get("description").and_then(Value::as_str) {
        Some(d) => format!("{d} {more}"),
        None => more.to_string(),
    };
    schema["description"] = json!(text);
}

fn require(schema: &mut Value, field: &str) {
    let required = schema
        .as_object_mut()
        .expect("object schema")
        .entry("required")
        .or_insert_with(|| json!([]));
    let list = required.as_array_mut().expect("required is a list");
    if !list.iter().any(|f| f == field) {
        list.push(json!(field));
    }
}

fn apply(schema: &mut Value, field: &str, rule: Rule) {
    let Some(prop) = schema["properties"].get_mut(field) else {
        panic!("contract names {field}, which the schema lacks: {schema}")
    };
    let p = prop.as_object_mut().expect("property schema is an object");
    let mut string = |min: usize, pattern: Option<&str>| {
        p.insert("minLength".into(), json!(min));
        if let Some(pattern) = pattern {
            p.insert("pattern".into(), json!(pattern));
        }
    };
    let required = match rule {
        Guid => {
            string(1, Some(GUID_PATTERN));
            p.insert("maxLength".into(), json!(MAX_GUID_BYTES));
            true
        }
        Required => {
            string(1, None);
            true
        }
        Present => true,
        Positive => {
            p.insert("minimum".into(), json!(1));
            true
        }
        Url => {
            string(1, Some(URL_PATTERN));
            true
        }
        Rootfs => {
            string(1, Some(ROOTFS_PATTERN));
            true
        }
        EnvName => {
            string(1, Some(ENV_NAME_PATTERN));
            true
        }
        OptionalUrl => {
            p.insert("pattern".into(), json!(format!("^$|{URL_PATTERN}")));
            false
        }
        EmptyOrAbsolutePath => {
            p.insert("pattern".into(), json!("^(/|$)"));
            false
        }
        Range(min, max) => {
            p.insert("minimum".into(), json!(min));
            p.insert("maximum".into(), json!(max));
            false
        }
        Port => {
            p.insert("minimum".into(), json!(1));
            p.insert("maximum".into(), json!(65535));
            false
        }
        PortItems => {
            p.insert(
                "items".into(),
                json!({"type": "integer", "minimum": 1, "maximum": 65535}),
            );
            false
        }
        MaxChars(max) => {
            p.insert("maxLength".into(), json!(max));
            false
        }
        NonEmptyItems => {
            p.insert("items".into(), json!({"type": "string", "minLength": 1}));
            false
        }
        NonEmptyList => {
            p.insert("minItems".into(), json!(1));
            true
        }
        TagNames => {
            // OpenAPI 3.0 has no `propertyNames`; "the key \"\" is absent" says the same.
            p.insert("not".into(), json!({"required": [""]}));
            false
        }
    };
    if required {
        require(schema, field);
    }
}

/// Rules that follow from the Rust types alone, applied to every schema: integers stay in
/// their type's range, objects have no members but their own, and optional members are
/// left out rather than sent as `null` (the server serialises none of them as `null`).
pub fn walk(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("integer")) {
                if let Some((min, max)) = map.get("format").and_then(Value::as_str).and_then(bounds) {
                    map.entry("minimum").or_insert(json!(min));
                    map.entry("maximum").or_insert(json!(max));
                    // schemars writes unsigned minimums as floats (`0.0`).
                    if map["minimum"] == json!(0.0) {
                        map.insert("minimum".into(), json!(0));
                    }
                }
            }
            map.remove("nullable");
            if map.contains_key("$ref") {
                // Siblings of a reference are ignored in OpenAPI 3.0; keep it bare.
                map.retain(|k, _| k == "$ref" || k == "description");
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            for v in map.values_mut() {
                walk(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

fn bounds(format: &str) -> Option<(i64, i64)> {
    Some(match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" => (i64::MIN, i64::MAX),
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        // JSON Schema cannot say u64::MAX in an i64; the document offers what an i64 holds.
        "uint64" | "uint" => (0, i64::MAX),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_generated_property() {
        // `document()` panics on a rule naming a schema or member that is not generated.
        let doc = crate::openapi::document();
        let task = &doc["components"]["schemas"]["DesireTaskRequest"];
        assert_eq!(task["properties"]["task_guid"]["pattern"], GUID_PATTERN);
        assert!(task["required"].as_array().unwrap().contains(&json!("task_guid")));
        assert_eq!(task["additionalProperties"], false);
    }

    #[test]
    fn integer_formats_bound_their_values() {
        let doc = crate::openapi::document();
        let explanation = &doc["components"]["schemas"]["NamedCount"]["properties"]["cells"];
        assert_eq!(explanation["maximum"], u32::MAX);
        assert_eq!(explanation["minimum"], 0);
    }
}
