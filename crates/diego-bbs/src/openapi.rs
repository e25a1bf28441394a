//! The OpenAPI document: every route the BBS serves, generated from one table.
//!
//! `tests/openapi.rs` checks the table against the router (every documented operation is
//! routed) and against `diego_client::routes` (every route constant is documented).

use diego_client::routes::bbs as r;
use serde_json::{json, Map, Value};

use crate::handlers;

/// One documented operation: (method, path, summary, request body schema, success status,
/// response schema).
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

pub const OPERATIONS: &[Operation] = &[
    (
        "get",
        r::PING,
        "Is the BBS serving?",
        None,
        200,
        Some("PingResponse"),
    ),
    ("get", r::OPENAPI, "This document.", None, 200, None),
    (
        "get",
        r::METRICS,
        "Prometheus metrics (text format).",
        None,
        200,
        None,
    ),
    (
        "get",
        r::TASKS,
        "List tasks (filters: domain, cell_id, state).",
        None,
        200,
        Some("Task[]"),
    ),
    (
        "post",
        r::TASKS,
        "Desire a task; it starts PENDING.",
        Some("DesireTaskRequest"),
        201,
        Some("Task"),
    ),
    ("get", r::TASK, "Get a task.", None, 200, Some("Task")),
    ("delete", r::TASK, "Delete a RESOLVING task.", None, 204, None),
    (
        "post",
        r::TASK_START,
        "A cell starts a PENDING task (RUNNING).",
        Some("StartTaskRequest"),
        200,
        Some("StartTaskResponse"),
    ),
    (
        "post",
        r::TASK_COMPLETE,
        "The running cell completes a task.",
        Some("CompleteTaskRequest"),
        200,
        Some("Task"),
    ),
    (
        "post",
        r::TASK_REJECT,
        "Placement failed: back to PENDING, or failed after max retries.",
        Some("RejectTaskRequest"),
        200,
        Some("Task"),
    ),
    (
        "post",
        r::TASK_FAIL,
        "Fail a PENDING or RUNNING task.",
        Some("FailTaskRequest"),
        200,
        Some("Task"),
    ),
    (
        "post",
        r::TASK_CANCEL,
        "Cancel a PENDING or RUNNING task (COMPLETED, failed).",
        None,
        200,
        Some("Task"),
    ),
    (
        "post",
        r::TASK_RESOLVING,
        "COMPLETED → RESOLVING: claim the right to resolve.",
        None,
        200,
        Some("Task"),
    ),
    (
        "get",
        r::DESIRED_LRPS,
        "List desired LRPs (filters: domain, process_guid).",
        None,
        200,
        Some("DesiredLrp[]"),
    ),
    (
        "post",
        r::DESIRED_LRPS,
        "Desire an LRP; creates an UNCLAIMED instance per index.",
        Some("DesiredLrp"),
        201,
        Some("DesiredLrp"),
    ),
    (
        "get",
        r::DESIRED_LRP,
        "Get a desired LRP.",
        None,
        200,
        Some("DesiredLrp"),
    ),
    (
        "patch",
        r::DESIRED_LRP,
        "Update instances, routes, annotation or metric tags (scale up/down).",
        Some("DesiredLrpUpdate"),
        200,
        Some("DesiredLrp"),
    ),
    (
        "delete",
        r::DESIRED_LRP,
        "Delete a desired LRP and stop its instances.",
        None,
        204,
        None,
    ),
    (
        "get",
        r::SCHEDULING_INFOS,
        "List scheduling infos (filters: domain, process_guid).",
        None,
        200,
        Some("DesiredLrpSchedulingInfo[]"),
    ),
    (
        "get",
        r::SCHEDULING_INFO,
        "Get one scheduling info.",
        None,
        200,
        Some("DesiredLrpSchedulingInfo"),
    ),
    (
        "get",
        r::ACTUAL_LRPS,
        "List actual LRPs (filters: domain, cell_id, process_guid, index, state, presence).",
        None,
        200,
        Some("ActualLrp[]"),
    ),
    (
        "get",
        r::ACTUAL_LRP,
        "Every presence of one index.",
        None,
        200,
        Some("ActualLrp[]"),
    ),
    (
        "post",
        r::ACTUAL_LRP_CLAIM,
        "A cell claims an instance (CLAIMED).",
        Some("ClaimActualLrpRequest"),
        200,
        Some("ActualLrp"),
    ),
    (
        "post",
        r::ACTUAL_LRP_START,
        "A cell reports an instance RUNNING.",
        Some("StartActualLrpRequest"),
        200,
        Some("ActualLrp"),
    ),
    (
        "post",
        r::ACTUAL_LRP_CRASH,
        "A cell reports a crash; the restart policy decides what follows.",
        Some("CrashActualLrpRequest"),
        200,
        Some("ActualLrp"),
    ),
    (
        "post",
        r::ACTUAL_LRP_FAIL,
        "The auction could not place an UNCLAIMED instance.",
        Some("FailActualLrpRequest"),
        200,
        Some("ActualLrp"),
    ),
    (
        "post",
        r::PLACEMENT_FAILURES,
        "The auctioneer records a round's placement failures, grouped by LRP and reason; \
         unchanged ones are not written again, and none contends with other writes.",
        Some("PlacementFailuresRequest"),
        200,
        Some("PlacementFailuresResponse"),
    ),
    (
        "post",
        r::ACTUAL_LRP_REMOVE,
        "A cell removes an instance record.",
        Some("RemoveActualLrpRequest"),
        204,
        None,
    ),
    (
        "post",
        r::ACTUAL_LRP_RETIRE,
        "Stop an instance without changing what is desired.",
        None,
        204,
        None,
    ),
    (
        "post",
        r::ACTUAL_LRP_EVACUATE_RUNNING,
        "An evacuating cell reports a RUNNING instance: the first report moves it to an EVACUATING row and places the index again; keep_container says whether the cell keeps it.",
        Some("EvacuateRunningActualLrpRequest"),
        200,
        Some("EvacuationResponse"),
    ),
    (
        "post",
        r::ACTUAL_LRP_EVACUATE_CLAIMED,
        "An evacuating cell gives up a CLAIMED instance: unclaimed and placed again.",
        Some("EvacuateActualLrpRequest"),
        200,
        Some("EvacuationResponse"),
    ),
    (
        "post",
        r::ACTUAL_LRP_EVACUATE_CRASHED,
        "An evacuating cell's instance crashed: its EVACUATING row goes; an ORDINARY row it holds crashes.",
        Some("CrashActualLrpRequest"),
        200,
        Some("EvacuationResponse"),
    ),
    (
        "post",
        r::ACTUAL_LRP_EVACUATE_STOPPED,
        "An evacuating cell's instance stopped: the rows it held go.",
        Some("EvacuateActualLrpRequest"),
        200,
        Some("EvacuationResponse"),
    ),
    (
        "post",
        r::ACTUAL_LRP_REMOVE_EVACUATING,
        "Delete the caller's EVACUATING row.",
        Some("EvacuateActualLrpRequest"),
        204,
        None,
    ),
    (
        "get",
        r::DOMAINS,
        "List fresh domains.",
        None,
        200,
        Some("Domain[]"),
    ),
    (
        "post",
        r::DOMAINS,
        "Mark a domain fresh for a TTL.",
        Some("UpsertDomainRequest"),
        204,
        None,
    ),
    (
        "get",
        r::CELLS,
        "List live cell presences.",
        None,
        200,
        Some("PresenceRecord[]"),
    ),
    (
        "post",
        r::CELLS,
        "Register or renew a cell presence with a TTL.",
        Some("RegisterCellRequest"),
        204,
        None,
    ),
    ("delete", r::CELL, "Remove a cell presence.", None, 204, None),
    (
        "get",
        r::LAPSED_CELLS,
        "Cells whose presence lapsed while instances still name them (the active BBS's view; a passive BBS answers with none).",
        None,
        200,
        Some("LapsedCell[]"),
    ),
    (
        "post",
        r::LOCK,
        "Take or renew a lock for a TTL (409 LockCollision while another owner holds it).",
        Some("AcquireLockRequest"),
        200,
        Some("LockRecord"),
    ),
    (
        "get",
        r::LOCK,
        "The live holder of a lock.",
        None,
        200,
        Some("LockRecord"),
    ),
    (
        "delete",
        r::LOCK,
        "Release a lock held by ?owner=.",
        None,
        204,
        None,
    ),
    (
        "get",
        r::EVENTS_LRPS,
        "SSE stream of desired/actual LRP events; resumable with Last-Event-ID.",
        None,
        200,
        None,
    ),
    (
        "get",
        r::EVENTS_TASKS,
        "SSE stream of task events; resumable with Last-Event-ID.",
        None,
        200,
        None,
    ),
];

fn schema_ref(name: &str) -> Value {
    match name.strip_suffix("[]") {
        Some(item) => json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}),
        None => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

/// A path parameter's schema: an index is a non-negative `i32`; a guid follows the guid rule;
/// a lock key is any non-empty segment.
fn path_param_schema(name: &str) -> Value {
    use diego_model::validation::{GUID_PATTERN, MAX_GUID_BYTES};
    match name {
        "index" => json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": i32::MAX}),
        "task_guid" | "process_guid" | "cell_id" => json!({
            "type": "string", "minLength": 1, "maxLength": MAX_GUID_BYTES, "pattern": GUID_PATTERN
        }),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

fn params(method: &str, path: &str) -> Vec<Value> {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_param_schema(name)}))
        .collect();
    if let Some((_, _, query)) = QUERIES.iter().find(|(m, p, _)| *m == method && *p == path) {
        out.extend(query_params(*query));
    }
    out
}

/// The query string each operation reads: the handler's own query type.
type QuerySchema = fn(&mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema;

const QUERIES: &[(&str, &str, QuerySchema)] = &[
    ("get", r::TASKS, schema_of::<handlers::tasks::TaskQuery>),
    (
        "get",
        r::DESIRED_LRPS,
        schema_of::<handlers::desired_lrps::DesiredQuery>,
    ),
    (
        "get",
        r::SCHEDULING_INFOS,
        schema_of::<handlers::desired_lrps::DesiredQuery>,
    ),
    (
        "get",
        r::ACTUAL_LRPS,
        schema_of::<handlers::actual_lrps::ActualQuery>,
    ),
    ("delete", r::LOCK, schema_of::<handlers::locks::ReleaseQuery>),
    ("get", r::EVENTS_LRPS, schema_of::<handlers::events::EventsQuery>),
    ("get", r::EVENTS_TASKS, schema_of::<handlers::events::EventsQuery>),
];

fn schema_of<T: schemars::JsonSchema>(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    T::json_schema(gen)
}

/// One query parameter per member of the query type; required when the type requires it.
fn query_params(query: QuerySchema) -> Vec<Value> {
    let mut gen = schemars::gen::SchemaSettings::openapi3().into_generator();
    let mut schema = serde_json::to_value(query(&mut gen)).unwrap_or(Value::Null);
    crate::contract::walk(&mut schema);
    let required: Vec<&Value> = schema["required"].as_array().into_iter().flatten().collect();
    let mut out = Vec::new();
    for (name, mut prop) in schema["properties"].as_object().cloned().unwrap_or_default() {
        let description = prop.as_object_mut().and_then(|p| p.remove("description"));
        let mut param = json!({
            "name": name,
            "in": "query",
            "required": required.iter().any(|r| *r == &json!(name)),
            "schema": prop,
        });
        if let Some(d) = description {
            param["description"] = d;
        }
        out.push(param);
    }
    out
}

/// JSON Schemas of every request and response body, keyed by type name.
fn record_schemas() -> Map<String, Value> {
    use diego_model::api::*;
    use diego_model::*;
    let mut gen = schemars::gen::SchemaSettings::openapi3().into_generator();
    gen.subschema_for::<PingResponse>();
    gen.subschema_for::<ApiError>();
    gen.subschema_for::<Task>();
    gen.subschema_for::<DesireTaskRequest>();
    gen.subschema_for::<StartTaskRequest>();
    gen.subschema_for::<StartTaskResponse>();
    gen.subschema_for::<CompleteTaskRequest>();
    gen.subschema_for::<RejectTaskRequest>();
    gen.subschema_for::<FailTaskRequest>();
    gen.subschema_for::<DesiredLrp>();
    gen.subschema_for::<DesiredLrpUpdate>();
    gen.subschema_for::<DesiredLrpSchedulingInfo>();
    gen.subschema_for::<ActualLrp>();
    gen.subschema_for::<ClaimActualLrpRequest>();
    gen.subschema_for::<StartActualLrpRequest>();
    gen.subschema_for::<CrashActualLrpRequest>();
    gen.subschema_for::<FailActualLrpRequest>();
    gen.subschema_for::<PlacementFailuresRequest>();
    gen.subschema_for::<PlacementFailuresResponse>();
    gen.subschema_for::<RemoveActualLrpRequest>();
    gen.subschema_for::<EvacuateRunningActualLrpRequest>();
    gen.subschema_for::<EvacuateActualLrpRequest>();
    gen.subschema_for::<EvacuationResponse>();
    gen.subschema_for::<Domain>();
    gen.subschema_for::<UpsertDomainRequest>();
    gen.subschema_for::<RegisterCellRequest>();
    gen.subschema_for::<LapsedCell>();
    gen.subschema_for::<AcquireLockRequest>();
    gen.subschema_for::<Event>();
    let mut out: Map<String, Value> = gen
        .take_definitions()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    // Defined in diego-store, which does not derive schemas.
    out.insert(
        "LockRecord".into(),
        json!({
            "type": "object",
            "required": ["key", "owner", "value", "expires_at"],
            "properties": {
                "key": {"type": "string"},
                "owner": {"type": "string"},
                "value": {"type": "string"},
                "expires_at": {"type": "integer", "format": "int64", "description": "Unix nanoseconds"}
            }
        }),
    );
    out.insert(
        "PresenceRecord".into(),
        json!({
            "type": "object",
            "required": ["cell_presence", "expires_at"],
            "properties": {
                "cell_presence": {"$ref": "#/components/schemas/CellPresence"},
                "expires_at": {"type": "integer", "format": "int64", "description": "Unix nanoseconds"}
            }
        }),
    );
    out
}

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for (method, path, summary, request, status, response) in OPERATIONS {
        let mut op = Map::new();
        op.insert("summary".into(), json!(summary));
        let p = params(method, path);
        if !p.is_empty() {
            op.insert("parameters".into(), json!(p));
        }
        if let Some(req) = request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(req)}}}),
            );
        }
        let mut ok = json!({"description": "success"});
        if let Some(resp) = response {
            ok["content"] = json!({"application/json": {"schema": schema_ref(resp)}});
        }
        op.insert(
            "responses".into(),
            json!({
                status.to_string(): ok,
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}
            }),
        );
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = Value::Object(op);
    }
    // Every schema named above, generated from the model's own types (so it cannot drift
    // from what the server parses), plus their dependencies.
    schemas.extend(record_schemas());
    crate::contract::tighten(&mut schemas);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Diego BBS", "version": env!("CARGO_PKG_VERSION"), "description": "Diego in Rust: the BBS API (JSON over HTTP)."},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}
