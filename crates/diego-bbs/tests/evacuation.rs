//! Evacuation over HTTP (diego-spec §4.7): an evacuating cell's reports move its instances to
//! EVACUATING rows, place them again, and tell it when to drop each container.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

type Calls = tokio::sync::mpsc::UnboundedReceiver<(String, Value)>;

/// A server whose auctioneer is a recorder.
async fn with_auctioneer() -> (Server, Calls) {
    let s = start().await;
    let (url, calls) = fake_auctioneer().await;
    let (st, _) = s
        .post(
            "/v1/locks/auctioneer",
            json!({"owner": "a1", "value": url, "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    (s, calls)
}

/// The indices of `guid` in the next start request naming it (within 5 s); requests for other
/// LRPs (re-placements of earlier steps) are skipped.
async fn next_auction(calls: &mut Calls, guid: &str) -> Vec<i64> {
    loop {
        let (path, body) = tokio::time::timeout(Duration::from_secs(5), calls.recv())
            .await
            .unwrap_or_else(|_| panic!("no start request for {guid} within 5 s"))
            .unwrap();
        assert_eq!(path, "/v1/lrps", "{body}");
        if let Some(r) = body
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["process_guid"] == guid)
        {
            return r["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_i64().unwrap())
                .collect();
        }
    }
}

/// Every presence of index `i`, as (presence, state, cell_id), ordinary first.
async fn rows(s: &Server, guid: &str, i: i32) -> Vec<(String, String, String)> {
    let (st, v) = s.get(&format!("/v1/actual_lrps/{guid}/{i}")).await;
    if st == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut rows: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["presence"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
                a["cell_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(presence: &str, state: &str, cell: &str) -> (String, String, String) {
    (presence.into(), state.into(), cell.into())
}

/// `guid` desired with one instance, RUNNING on cell A; the desire's own auction consumed.
async fn running_on_a(s: &Server, calls: &mut Calls, guid: &str) {
    assert_eq!(s.desire_lrp(guid, 1).await.0, StatusCode::CREATED);
    assert_eq!(next_auction(calls, guid).await, [0]);
    let (st, r) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/0/start"),
            json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
}

async fn evacuate(s: &Server, guid: &str, verb: &str, body: Value) -> (StatusCode, Value) {
    s.post(&format!("/v1/actual_lrps/{guid}/0/{verb}"), body).await
}

fn running_report(cell: &str) -> Value {
    json!({"instance_key": ik(cell), "net_info": net_info()})
}

#[tokio::test]
async fn a_running_instance_keeps_serving_until_its_replacement_runs() {
    let (s, mut calls) = with_auctioneer().await;
    running_on_a(&s, &mut calls, "web").await;

    // First report: EVACUATING copy (still RUNNING on A, same address), ORDINARY unclaimed
    // and placed again.
    let (st, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    assert_eq!((st, r.clone()), (StatusCode::OK, json!({"keep_container": true})));
    assert_eq!(
        rows(&s, "web", 0).await,
        [
            row("EVACUATING", "RUNNING", "cell-a"),
            row("ORDINARY", "UNCLAIMED", "")
        ]
    );
    assert_eq!(next_auction(&mut calls, "web").await, [0]);
    let (_, all) = s.get("/v1/actual_lrps/web/0").await;
    let evac = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["presence"] == "EVACUATING")
        .unwrap();
    assert_eq!(
        (evac["address"].as_str(), evac["ports"][0]["host_port"].as_i64()),
        (Some("127.0.0.1"), Some(61001)),
        "{evac}"
    );

    // While the replacement is UNCLAIMED, then CLAIMED on B: keep it.
    let (_, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    assert_eq!(r, json!({"keep_container": true}));
    let (st, _) = s
        .post(
            "/v1/actual_lrps/web/0/claim",
            json!({"instance_key": ik("cell-b")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    assert_eq!(r, json!({"keep_container": true}));
    assert_eq!(rows(&s, "web", 0).await.len(), 2);

    // The replacement runs: its start deletes the EVACUATING row; A is told to drop.
    let (st, _) = s
        .post(
            "/v1/actual_lrps/web/0/start",
            json!({"instance_key": ik("cell-b"), "net_info": net_info()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rows(&s, "web", 0).await, [row("ORDINARY", "RUNNING", "cell-b")]);
    let (_, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    assert_eq!(r, json!({"keep_container": false}));
    assert_eq!(
        rows(&s, "web", 0).await,
        [row("ORDINARY", "RUNNING", "cell-b")],
        "the replacement is not touched"
    );
}

#[tokio::test]
async fn a_crashed_replacement_or_a_deleted_lrp_ends_the_wait() {
    let (s, mut calls) = with_auctioneer().await;
    running_on_a(&s, &mut calls, "web").await;
    evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    // The replacement starts on B and crashes for good (restart policy exhausted).
    s.post(
        "/v1/actual_lrps/web/0/claim",
        json!({"instance_key": ik("cell-b")}),
    )
    .await;
    let (_, all) = s.get("/v1/actual_lrps/web/0").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    // Force CRASHED: enough crashes that the policy stops restarting at once.
    for _ in 0..4 {
        s.post(
            "/v1/actual_lrps/web/0/claim",
            json!({"instance_key": ik("cell-b")}),
        )
        .await;
        s.post(
            "/v1/actual_lrps/web/0/crash",
            json!({"instance_key": ik("cell-b"), "error_message": "boom"}),
        )
        .await;
    }
    let ordinary_state = rows(&s, "web", 0)
        .await
        .into_iter()
        .find(|r| r.0 == "ORDINARY")
        .unwrap()
        .1;
    assert_eq!(ordinary_state, "CRASHED");
    let (_, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    assert_eq!(r, json!({"keep_container": false}));
    assert_eq!(rows(&s, "web", 0).await, [row("ORDINARY", "CRASHED", "")]);

    // No longer desired: the evacuating instance goes too.
    running_on_a(&s, &mut calls, "api").await;
    evacuate(&s, "api", "evacuate_running", running_report("cell-a")).await;
    let (st, _) = s.call("DELETE", "/v1/desired_lrps/api", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, r) = evacuate(&s, "api", "evacuate_running", running_report("cell-a")).await;
    assert_eq!(r, json!({"keep_container": false}));
    assert!(rows(&s, "api", 0).await.is_empty());
}

#[tokio::test]
async fn another_cells_instance_is_never_touched() {
    let (s, mut calls) = with_auctioneer().await;
    running_on_a(&s, &mut calls, "web").await;
    // B reports an instance it does not hold: drop, and A's instance stays as it is.
    let (st, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-b")).await;
    assert_eq!((st, r), (StatusCode::OK, json!({"keep_container": false})));
    for verb in ["evacuate_claimed", "evacuate_stopped"] {
        let (st, r) = evacuate(&s, "web", verb, json!({"instance_key": ik("cell-b")})).await;
        assert_eq!(
            (st, r),
            (StatusCode::OK, json!({"keep_container": false})),
            "{verb}"
        );
    }
    let (st, r) = evacuate(
        &s,
        "web",
        "evacuate_crashed",
        json!({"instance_key": ik("cell-b"), "error_message": "x"}),
    )
    .await;
    assert_eq!((st, r), (StatusCode::OK, json!({"keep_container": false})));
    assert_eq!(rows(&s, "web", 0).await, [row("ORDINARY", "RUNNING", "cell-a")]);

    // Once A evacuates it, a second evacuating cell cannot take the EVACUATING slot.
    evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    let (_, r) = evacuate(&s, "web", "evacuate_running", running_report("cell-b")).await;
    assert_eq!(r, json!({"keep_container": false}));
    assert_eq!(
        rows(&s, "web", 0).await,
        [
            row("EVACUATING", "RUNNING", "cell-a"),
            row("ORDINARY", "UNCLAIMED", "")
        ]
    );
}

#[tokio::test]
async fn claimed_crashed_and_stopped_instances() {
    let (s, mut calls) = with_auctioneer().await;
    // CLAIMED on A: unclaimed and placed again; A drops its container.
    assert_eq!(s.desire_lrp("web", 1).await.0, StatusCode::CREATED);
    next_auction(&mut calls, "web").await;
    s.post(
        "/v1/actual_lrps/web/0/claim",
        json!({"instance_key": ik("cell-a")}),
    )
    .await;
    let (st, r) = evacuate(
        &s,
        "web",
        "evacuate_claimed",
        json!({"instance_key": ik("cell-a")}),
    )
    .await;
    assert_eq!((st, r), (StatusCode::OK, json!({"keep_container": false})));
    assert_eq!(rows(&s, "web", 0).await, [row("ORDINARY", "UNCLAIMED", "")]);
    assert_eq!(next_auction(&mut calls, "web").await, [0]);

    // Crashed while evacuating: the EVACUATING row goes.
    running_on_a(&s, &mut calls, "api").await;
    evacuate(&s, "api", "evacuate_running", running_report("cell-a")).await;
    next_auction(&mut calls, "api").await;
    let (st, r) = evacuate(
        &s,
        "api",
        "evacuate_crashed",
        json!({"instance_key": ik("cell-a"), "error_message": "Exit status 1"}),
    )
    .await;
    assert_eq!((st, r), (StatusCode::OK, json!({"keep_container": false})));
    assert_eq!(rows(&s, "api", 0).await, [row("ORDINARY", "UNCLAIMED", "")]);

    // Crashed while still holding the ORDINARY row: an ordinary crash (restart policy).
    running_on_a(&s, &mut calls, "db").await;
    evacuate(
        &s,
        "db",
        "evacuate_crashed",
        json!({"instance_key": ik("cell-a"), "error_message": "Exit status 2"}),
    )
    .await;
    let (_, all) = s.get("/v1/actual_lrps/db/0").await;
    assert_eq!(
        (all[0]["state"].as_str(), all[0]["crash_count"].as_i64()),
        (Some("UNCLAIMED"), Some(1)),
        "{all}"
    );
    assert_eq!(all[0]["crash_reason"], "Exit status 2");

    // Stopped (scale-down during evacuation): the rows the cell held go.
    running_on_a(&s, &mut calls, "job").await;
    let (_, r) = evacuate(
        &s,
        "job",
        "evacuate_stopped",
        json!({"instance_key": ik("cell-a")}),
    )
    .await;
    assert_eq!(r, json!({"keep_container": false}));
    assert!(rows(&s, "job", 0).await.is_empty());
}

#[tokio::test]
async fn remove_evacuating_names_what_is_wrong() {
    let (s, mut calls) = with_auctioneer().await;
    running_on_a(&s, &mut calls, "web").await;
    let remove = |cell: &'static str| {
        let s = &s;
        async move {
            s.post(
                "/v1/actual_lrps/web/0/remove_evacuating",
                json!({"instance_key": ik(cell)}),
            )
            .await
        }
    };
    let (st, r) = remove("cell-a").await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
    assert!(
        r["message"].as_str().unwrap().contains("no EVACUATING instance"),
        "{r}"
    );
    evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    let (st, r) = remove("cell-b").await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "ActualLRPCannotBeRemoved")
    );
    assert!(r["message"].as_str().unwrap().contains("cell-a"), "{r}");
    let (st, _) = remove("cell-a").await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(rows(&s, "web", 0).await, [row("ORDINARY", "UNCLAIMED", "")]);
}

#[tokio::test]
async fn invalid_reports_name_the_field() {
    let s = start().await;
    s.desire_lrp("web", 1).await;
    let (st, r) = s
        .post(
            "/v1/actual_lrps/web/0/evacuate_running",
            json!({"instance_key": {"instance_guid": "", "cell_id": "cell-a"}, "net_info": {"address": ""}}),
        )
        .await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRecord"));
    let fields: Vec<&str> = r["field_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["instance_key.instance_guid", "net_info.address"], "{r}");
    for verb in ["evacuate_claimed", "evacuate_stopped", "remove_evacuating"] {
        let (st, r) = s
            .post(
                &format!("/v1/actual_lrps/web/0/{verb}"),
                json!({"instance_key": {"instance_guid": "ig", "cell_id": ""}}),
            )
            .await;
        assert_eq!(
            (st, error_type(&r)),
            (StatusCode::BAD_REQUEST, "InvalidRecord"),
            "{verb}"
        );
        assert_eq!(
            r["field_errors"][0]["field"], "instance_key.cell_id",
            "{verb}: {r}"
        );
    }
    let (st, r) = s
        .post(
            "/v1/actual_lrps/web/x/evacuate_claimed",
            json!({"instance_key": ik("a")}),
        )
        .await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRequest"));
}

#[tokio::test]
async fn watchers_see_the_evacuating_copy_and_the_unclaimed_ordinary_row() {
    let (s, mut calls) = with_auctioneer().await;
    running_on_a(&s, &mut calls, "web").await;
    let mut events = s.subscribe("/v1/events/lrps", None).await;
    evacuate(&s, "web", "evacuate_running", running_report("cell-a")).await;
    let frames = events.take(2).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    let created = frames
        .iter()
        .find(|f| f.event == "actual_lrp_created")
        .unwrap_or_else(|| panic!("{frames:?}"));
    assert_eq!(
        created.data["actual_lrp"]["presence"], "EVACUATING",
        "{created:?}"
    );
    let changed = frames
        .iter()
        .find(|f| f.event == "actual_lrp_changed")
        .unwrap_or_else(|| panic!("{frames:?}"));
    assert_eq!(changed.data["before"]["state"], "RUNNING", "{changed:?}");
    assert_eq!(changed.data["after"]["state"], "UNCLAIMED", "{changed:?}");
}
