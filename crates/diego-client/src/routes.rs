//! Route paths shared by servers and clients, so they cannot drift.
//!
//! Paths use axum's `{param}` syntax; [`path`] fills the parameters in for clients.

pub mod bbs {
    pub const PING: &str = "/v1/ping";
    pub const OPENAPI: &str = "/openapi.json";
    pub const METRICS: &str = "/metrics";

    /// GET (list; `?domain=&cell_id=&state=`), POST (desire).
    pub const TASKS: &str = "/v1/tasks";
    /// GET, DELETE.
    pub const TASK: &str = "/v1/tasks/{task_guid}";
    pub const TASK_START: &str = "/v1/tasks/{task_guid}/start";
    pub const TASK_COMPLETE: &str = "/v1/tasks/{task_guid}/complete";
    pub const TASK_REJECT: &str = "/v1/tasks/{task_guid}/reject";
    pub const TASK_FAIL: &str = "/v1/tasks/{task_guid}/fail";
    pub const TASK_CANCEL: &str = "/v1/tasks/{task_guid}/cancel";
    pub const TASK_RESOLVING: &str = "/v1/tasks/{task_guid}/resolving";

    /// GET (list; `?domain=&process_guid=`), POST (desire).
    pub const DESIRED_LRPS: &str = "/v1/desired_lrps";
    /// GET, PATCH (update), DELETE.
    pub const DESIRED_LRP: &str = "/v1/desired_lrps/{process_guid}";
    /// GET (list; `?domain=&process_guid=`).
    pub const SCHEDULING_INFOS: &str = "/v1/desired_lrp_scheduling_infos";
    pub const SCHEDULING_INFO: &str = "/v1/desired_lrp_scheduling_infos/{process_guid}";

    /// GET (list; `?domain=&cell_id=&process_guid=&index=&state=&presence=`).
    pub const ACTUAL_LRPS: &str = "/v1/actual_lrps";
    /// GET: every presence of one index.
    pub const ACTUAL_LRP: &str = "/v1/actual_lrps/{process_guid}/{index}";
    pub const ACTUAL_LRP_CLAIM: &str = "/v1/actual_lrps/{process_guid}/{index}/claim";
    pub const ACTUAL_LRP_START: &str = "/v1/actual_lrps/{process_guid}/{index}/start";
    pub const ACTUAL_LRP_CRASH: &str = "/v1/actual_lrps/{process_guid}/{index}/crash";
    pub const ACTUAL_LRP_FAIL: &str = "/v1/actual_lrps/{process_guid}/{index}/fail";
    pub const ACTUAL_LRP_REMOVE: &str = "/v1/actual_lrps/{process_guid}/{index}/remove";
    pub const ACTUAL_LRP_RETIRE: &str = "/v1/actual_lrps/{process_guid}/{index}/retire";
    /// Evacuation (an evacuating cell's reports; each answers `{"keep_container": bool}`).
    pub const ACTUAL_LRP_EVACUATE_RUNNING: &str = "/v1/actual_lrps/{process_guid}/{index}/evacuate_running";
    pub const ACTUAL_LRP_EVACUATE_CLAIMED: &str = "/v1/actual_lrps/{process_guid}/{index}/evacuate_claimed";
    pub const ACTUAL_LRP_EVACUATE_CRASHED: &str = "/v1/actual_lrps/{process_guid}/{index}/evacuate_crashed";
    pub const ACTUAL_LRP_EVACUATE_STOPPED: &str = "/v1/actual_lrps/{process_guid}/{index}/evacuate_stopped";
    /// POST: the auctioneer records a round's placement failures, grouped (a
    /// `PlacementFailuresRequest`; the answer counts what was recorded).
    pub const PLACEMENT_FAILURES: &str = "/v1/placement_failures";
    /// Deletes the caller's EVACUATING row (204).
    pub const ACTUAL_LRP_REMOVE_EVACUATING: &str = "/v1/actual_lrps/{process_guid}/{index}/remove_evacuating";

    /// GET (fresh domains), POST (upsert with TTL).
    pub const DOMAINS: &str = "/v1/domains";
    /// GET (live presences), POST (register/renew with TTL).
    pub const CELLS: &str = "/v1/cells";
    /// DELETE.
    pub const CELL: &str = "/v1/cells/{cell_id}";
    /// GET: cells whose presence lapsed while instances still name them (the active BBS's
    /// view; a passive BBS answers with none).
    pub const LAPSED_CELLS: &str = "/v1/lapsed_cells";

    /// POST (acquire or renew: `{owner, value, ttl_seconds}`), GET (the live holder),
    /// DELETE `?owner=` (release). Components' leader election (the auctioneer's, say).
    pub const LOCK: &str = "/v1/locks/{key}";

    /// SSE streams.
    pub const EVENTS_LRPS: &str = "/v1/events/lrps";
    pub const EVENTS_TASKS: &str = "/v1/events/tasks";
}

pub mod rep {
    /// GET: the cell's `CellState` (503 while its self-check fails).
    pub const STATE: &str = "/state";
    /// POST a `Work`: the answer is the `Work` it could not take.
    pub const WORK: &str = "/work";
    /// GET: what each of the cell's containers uses.
    pub const CONTAINER_METRICS: &str = "/container_metrics";
    /// GET: the rep's Prometheus metrics (capacity, containers, per-instance usage).
    pub const METRICS: &str = "/metrics";
    /// The BBS asks a cell's rep to stop an instance (scale-down, retire, delete).
    pub const STOP_LRP_INSTANCE: &str = "/v1/lrps/{process_guid}/instances/{instance_guid}/stop";
    /// The BBS tells a cell's rep a task was cancelled.
    pub const CANCEL_TASK: &str = "/v1/tasks/{task_guid}/cancel";
    /// POST: the cell starts evacuating (202); it exits once its work has moved or finished.
    pub const EVACUATE: &str = "/evacuate";
}

pub mod auctioneer {
    pub const PING: &str = "/v1/ping";
    pub const METRICS: &str = "/metrics";
    /// POST a JSON array of `LrpStartRequest`: 202, placed in the next batch.
    pub const LRPS: &str = "/v1/lrps";
    /// POST a JSON array of `TaskStartRequest`: 202, placed in the next batch.
    pub const TASKS: &str = "/v1/tasks";
}

/// Fills `{name}` placeholders of `template` in order with `args`, percent-encoding each.
pub fn path(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e + 1)
            .unwrap_or(rest.len());
        if let Some(a) = args.next() {
            encode_segment(a, &mut out);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `s` percent-encoded for a query value or a path segment.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_segment(s, &mut out);
    out
}

fn encode_segment(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_parameters() {
        assert_eq!(
            path(bbs::ACTUAL_LRP_CLAIM, &["web", "2"]),
            "/v1/actual_lrps/web/2/claim"
        );
        assert_eq!(path(bbs::TASK, &["a b/c"]), "/v1/tasks/a%20b%2Fc");
        assert_eq!(path(bbs::TASKS, &[]), "/v1/tasks");
    }
}
