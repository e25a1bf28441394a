//! The LRP lifecycle over HTTP: desire, scale, delete, and every actual-LRP transition.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn actuals(s: &Server, guid: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/v1/actual_lrps?process_guid={guid}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

fn indices_and_states(v: &[Value]) -> Vec<(i64, String)> {
    v.iter()
        .map(|a| {
            (
                a["index"].as_i64().unwrap(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn unclaimed(indices: std::ops::Range<i64>) -> Vec<(i64, String)> {
    indices.map(|i| (i, "UNCLAIMED".to_string())).collect()
}

#[tokio::test]
async fn desire_creates_unclaimed_instances_and_scaling_adds_and_removes() {
    let s = start().await;
    let (st, d) = s.desire_lrp("web", 3).await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    assert_eq!(d["instances"], 3);
    assert_eq!(indices_and_states(&actuals(&s, "web").await), unclaimed(0..3));

    let (st, d) = s
        .call("PATCH", "/v1/desired_lrps/web", Some(json!({"instances": 5})))
        .await;
    assert_eq!((st, d["instances"].as_i64()), (StatusCode::OK, Some(5)));
    assert_eq!(indices_and_states(&actuals(&s, "web").await), unclaimed(0..5));

    let (st, _) = s
        .call("PATCH", "/v1/desired_lrps/web", Some(json!({"instances": 2})))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(indices_and_states(&actuals(&s, "web").await), unclaimed(0..2));

    let (st, r) = s.desire_lrp("web", 1).await;
    assert_eq!((st, error_type(&r)), (StatusCode::CONFLICT, "ResourceExists"));

    let (st, si) = s.get("/v1/desired_lrp_scheduling_infos/web").await;
    assert_eq!((st, si["instances"].as_i64()), (StatusCode::OK, Some(2)));
    assert!(
        si.get("action").is_none(),
        "scheduling info carries no run info: {si}"
    );

    let (st, _) = s.call("DELETE", "/v1/desired_lrps/web", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(actuals(&s, "web").await.is_empty());
    let (st, r) = s.get("/v1/desired_lrps/web").await;
    assert_eq!((st, error_type(&r)), (StatusCode::NOT_FOUND, "ResourceNotFound"));
}

#[tokio::test]
async fn scale_down_asks_the_cell_to_stop_held_instances() {
    let (rep_url, mut calls) = fake_rep().await;
    let s = start().await;
    s.register_cell("cell-a", &rep_url).await;
    s.desire_lrp("app", 3).await;
    for i in 0..3 {
        let (st, r) = s
            .post(
                &format!("/v1/actual_lrps/app/{i}/claim"),
                json!({"instance_key": ik("cell-a")}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{r}");
    }
    s.post(
        "/v1/actual_lrps/app/2/start",
        json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
    )
    .await;
    s.call("PATCH", "/v1/desired_lrps/app", Some(json!({"instances": 1})))
        .await;

    let mut stopped = Vec::new();
    for _ in 0..2 {
        let p = tokio::time::timeout(Duration::from_secs(5), calls.recv())
            .await
            .unwrap()
            .unwrap();
        stopped.push(p);
    }
    stopped.sort();
    assert_eq!(
        stopped,
        [
            "/v1/lrps/app/instances/ig-cell-a/stop",
            "/v1/lrps/app/instances/ig-cell-a/stop"
        ]
    );
    // Held instances stay until their cell removes them.
    assert_eq!(actuals(&s, "app").await.len(), 3);
    let (st, _) = s
        .post(
            "/v1/actual_lrps/app/2/remove",
            json!({"instance_key": ik("cell-a")}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(actuals(&s, "app").await.len(), 2);
}

#[tokio::test]
async fn held_instances_of_an_absent_cell_are_deleted_on_scale_down() {
    let s = start().await;
    s.desire_lrp("ghost", 2).await;
    s.post(
        "/v1/actual_lrps/ghost/1/claim",
        json!({"instance_key": ik("gone-cell")}),
    )
    .await;
    s.call("PATCH", "/v1/desired_lrps/ghost", Some(json!({"instances": 1})))
        .await;
    assert_eq!(indices_and_states(&actuals(&s, "ghost").await), unclaimed(0..1));
}

/// Drives one instance into `state`, held by cell A where it is held.
async fn into_state(s: &Server, guid: &str, state: &str) {
    s.desire_lrp(guid, 1).await;
    let path = |verb: &str| format!("/v1/actual_lrps/{guid}/0/{verb}");
    match state {
        "UNCLAIMED" => {}
        "CLAIMED" => {
            s.post(&path("claim"), json!({"instance_key": ik("cell-a")}))
                .await;
        }
        "RUNNING" => {
            s.post(
                &path("start"),
                json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
            )
            .await;
        }
        "CRASHED" => {
            // Immediate restarts for the first three crashes; the fourth stays CRASHED.
            for _ in 0..4 {
                s.post(
                    &path("start"),
                    json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
                )
                .await;
                s.post(
                    &path("crash"),
                    json!({"instance_key": ik("cell-a"), "error_message": "Exit status 1"}),
                )
                .await;
            }
        }
        _ => unreachable!(),
    }
    let (_, v) = s.get(path("").trim_end_matches('/')).await;
    assert_eq!(v[0]["state"], state, "setting up {state}: {v}");
}

/// Every (state, operation, caller) combination of diego-spec §4.3, over HTTP.
#[tokio::test]
async fn every_transition_is_allowed_or_refused_as_the_table_says() {
    let s = start().await;
    let states = ["UNCLAIMED", "CLAIMED", "RUNNING", "CRASHED"];
    // (op, caller) → expected result per state: Some(new state) or Err type.
    type Row = (
        &'static str,
        &'static str,
        [Result<&'static str, &'static str>; 4],
    );
    let table: [Row; 6] = [
        (
            "claim",
            "cell-a",
            [
                Ok("CLAIMED"),
                Ok("CLAIMED"),
                Ok("CLAIMED"),
                Err("ActualLRPCannotBeClaimed"),
            ],
        ),
        (
            "claim",
            "cell-b",
            [
                Ok("CLAIMED"),
                Err("ActualLRPCannotBeClaimed"),
                Err("ActualLRPCannotBeClaimed"),
                Err("ActualLRPCannotBeClaimed"),
            ],
        ),
        (
            "start",
            "cell-a",
            [
                Ok("RUNNING"),
                Ok("RUNNING"),
                Ok("RUNNING"),
                Err("ActualLRPCannotBeStarted"),
            ],
        ),
        (
            "start",
            "cell-b",
            [
                Ok("RUNNING"),
                Ok("RUNNING"),
                Err("ActualLRPCannotBeStarted"),
                Err("ActualLRPCannotBeStarted"),
            ],
        ),
        (
            "crash",
            "cell-a",
            [
                Err("ActualLRPCannotBeCrashed"),
                Ok("UNCLAIMED"),
                Ok("UNCLAIMED"),
                Err("ActualLRPCannotBeCrashed"),
            ],
        ),
        (
            "crash",
            "cell-b",
            [
                Err("ActualLRPCannotBeCrashed"),
                Err("ActualLRPCannotBeCrashed"),
                Err("ActualLRPCannotBeCrashed"),
                Err("ActualLRPCannotBeCrashed"),
            ],
        ),
    ];
    let mut n = 0;
    for (op, cell, expected) in table {
        for (state, want) in states.iter().zip(expected) {
            n += 1;
            let guid = format!("t{n}");
            into_state(&s, &guid, state).await;
            let body = match op {
                "claim" => json!({"instance_key": ik(cell)}),
                "start" => json!({"instance_key": ik(cell), "net_info": net_info()}),
                _ => json!({"instance_key": ik(cell), "error_message": "boom"}),
            };
            let (st, r) = s.post(&format!("/v1/actual_lrps/{guid}/0/{op}"), body).await;
            match want {
                Ok(new_state) => {
                    assert_eq!(st, StatusCode::OK, "{op} by {cell} from {state}: {r}");
                    assert_eq!(r["state"], new_state, "{op} by {cell} from {state}");
                }
                Err(kind) => {
                    assert_eq!(
                        (st, error_type(&r)),
                        (StatusCode::CONFLICT, kind),
                        "{op} by {cell} from {state}"
                    );
                    let (_, v) = s.get(&format!("/v1/actual_lrps/{guid}/0")).await;
                    assert_eq!(v[0]["state"], *state, "a refused {op} changes nothing");
                }
            }
        }
    }

    // fail: only UNCLAIMED takes a placement error.
    for state in states {
        n += 1;
        let guid = format!("t{n}");
        into_state(&s, &guid, state).await;
        let (st, r) = s
            .post(
                &format!("/v1/actual_lrps/{guid}/0/fail"),
                json!({"error_message": "insufficient resources"}),
            )
            .await;
        if state == "UNCLAIMED" {
            assert_eq!(
                (st, r["placement_error"].as_str()),
                (StatusCode::OK, Some("insufficient resources"))
            );
            let (_, c) = s
                .post(
                    &format!("/v1/actual_lrps/{guid}/0/claim"),
                    json!({"instance_key": ik("cell-a")}),
                )
                .await;
            assert!(
                c.get("placement_error").is_none(),
                "claim clears the placement error: {c}"
            );
        } else {
            assert_eq!(
                (st, error_type(&r)),
                (StatusCode::CONFLICT, "ActualLRPCannotBeFailed"),
                "fail from {state}"
            );
        }
    }

    // remove with another cell's key is refused; with the holder's key it deletes.
    n += 1;
    let guid = format!("t{n}");
    into_state(&s, &guid, "RUNNING").await;
    let (st, r) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/0/remove"),
            json!({"instance_key": ik("cell-b")}),
        )
        .await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "ActualLRPCannotBeRemoved")
    );
    let (st, _) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/0/remove"),
            json!({"instance_key": ik("cell-a")}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn crash_applies_the_crash_policy() {
    let s = start().await;
    s.desire_lrp("crashy", 1).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        s.post(
            "/v1/actual_lrps/crashy/0/start",
            json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
        )
        .await;
        let (st, a) = s
            .post(
                "/v1/actual_lrps/crashy/0/crash",
                json!({"instance_key": ik("cell-a"), "error_message": "Exit status 2"}),
            )
            .await;
        if st != StatusCode::OK {
            break;
        }
        seen.push((
            a["crash_count"].as_i64().unwrap(),
            a["state"].as_str().unwrap().to_string(),
        ));
        assert_eq!(a["crash_reason"], "Exit status 2");
    }
    assert_eq!(
        seen,
        [
            (1, "UNCLAIMED".into()),
            (2, "UNCLAIMED".into()),
            (3, "UNCLAIMED".into()),
            (4, "CRASHED".into())
        ]
    );

    // A per-LRP override: no immediate restarts at all.
    let mut body = lrp("strict", 1);
    body["crash_policy"] = json!({"immediate_restarts": 0});
    s.post("/v1/desired_lrps", body).await;
    s.post(
        "/v1/actual_lrps/strict/0/start",
        json!({"instance_key": ik("cell-a"), "net_info": net_info()}),
    )
    .await;
    let (_, a) = s
        .post(
            "/v1/actual_lrps/strict/0/crash",
            json!({"instance_key": ik("cell-a"), "error_message": "x"}),
        )
        .await;
    assert_eq!(
        (a["crash_count"].as_i64(), a["state"].as_str()),
        (Some(1), Some("CRASHED"))
    );
}

#[tokio::test]
async fn retire_deletes_an_unheld_instance() {
    let s = start().await;
    s.desire_lrp("one", 1).await;
    let (st, _) = s.post("/v1/actual_lrps/one/0/retire", json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(actuals(&s, "one").await.is_empty());
}

#[tokio::test]
async fn actual_lrp_filters() {
    let s = start().await;
    s.desire_lrp("f1", 2).await;
    let mut other = lrp("f2", 1);
    other["domain"] = json!("other");
    s.post("/v1/desired_lrps", other).await;
    s.post(
        "/v1/actual_lrps/f1/1/claim",
        json!({"instance_key": ik("cell-z")}),
    )
    .await;
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(count(s.get("/v1/actual_lrps").await.1), 3);
    assert_eq!(count(s.get("/v1/actual_lrps?domain=other").await.1), 1);
    assert_eq!(count(s.get("/v1/actual_lrps?cell_id=cell-z").await.1), 1);
    assert_eq!(count(s.get("/v1/actual_lrps?process_guid=f1&index=0").await.1), 1);
    assert_eq!(count(s.get("/v1/actual_lrps?state=UNCLAIMED").await.1), 2);
    assert_eq!(count(s.get("/v1/actual_lrps?presence=ORDINARY").await.1), 3);
    let (st, r) = s.get("/v1/actual_lrps?index=abc").await;
    assert_eq!((st, error_type(&r)), (StatusCode::BAD_REQUEST, "InvalidRequest"));
}

#[tokio::test]
async fn an_update_with_a_stale_modification_tag_is_refused() {
    let s = start().await;
    let (_, d) = s.desire_lrp("tagged", 1).await;
    let read_tag = d["modification_tag"].clone();
    assert_eq!(read_tag["index"], 0);
    let (st, d2) = s
        .call(
            "PATCH",
            "/v1/desired_lrps/tagged",
            Some(json!({"instances": 2, "modification_tag": read_tag})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{d2}");
    assert_eq!(d2["modification_tag"]["index"], 1);
    // A second writer still holding the old tag loses, and nothing changes.
    let (st, r) = s
        .call(
            "PATCH",
            "/v1/desired_lrps/tagged",
            Some(json!({"instances": 5, "modification_tag": read_tag})),
        )
        .await;
    assert_eq!((st, error_type(&r)), (StatusCode::CONFLICT, "ResourceConflict"));
    let (_, now) = s.get("/v1/desired_lrps/tagged").await;
    assert_eq!(now["instances"], 2);
    assert_eq!(actuals(&s, "tagged").await.len(), 2);
}

#[tokio::test]
async fn placement_failures_are_recorded_once_grouped_and_only_where_they_apply() {
    let s = start().await;
    s.desire_lrp("web", 3).await;
    let report = |indices: Vec<i64>, error: &str| {
        json!({"lrps": [
            {"process_guid": "web", "indices": indices, "placement_error": error,
             "placement_explanation": {"total_cells": 1}},
            {"process_guid": "gone", "indices": [0], "placement_error": error},
        ]})
    };
    let tags = |v: &[Value]| -> Vec<Value> { v.iter().map(|a| a["modification_tag"].clone()).collect() };
    // Index 7 is beyond the count, "gone" does not exist: both skipped.
    let (st, r) = s
        .call(
            "POST",
            "/v1/placement_failures",
            Some(report(vec![0, 1, 7], "insufficient resources: memory")),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"recorded": 2, "unchanged": 0, "skipped": 2}));
    let rows = actuals(&s, "web").await;
    let errors: Vec<&str> = rows
        .iter()
        .map(|a| a["placement_error"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        errors,
        [
            "insufficient resources: memory",
            "insufficient resources: memory",
            ""
        ]
    );
    assert_eq!(rows[0]["placement_explanation"]["total_cells"], 1);

    // The same failure again writes nothing: the rows keep their tags.
    let (st, r) = s
        .call(
            "POST",
            "/v1/placement_failures",
            Some(report(vec![0, 1], "insufficient resources: memory")),
        )
        .await;
    assert_eq!(
        (st, r),
        (
            StatusCode::OK,
            json!({"recorded": 0, "unchanged": 2, "skipped": 1})
        )
    );
    assert_eq!(tags(&actuals(&s, "web").await), tags(&rows));

    // Another reason is written.
    let (_, r) = s
        .call(
            "POST",
            "/v1/placement_failures",
            Some(report(vec![1], "insufficient resources: disk")),
        )
        .await;
    assert_eq!(r["recorded"], 1);

    // Bad input names the field and changes nothing.
    let (st, r) = s
        .call(
            "POST",
            "/v1/placement_failures",
            Some(json!({"lrps": [{"process_guid": "web", "indices": [2], "placement_error": ""}]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("lrps[0].placement_error"),
        "{r}"
    );
    assert_eq!(
        actuals(&s, "web").await[2]["placement_error"]
            .as_str()
            .unwrap_or(""),
        ""
    );
}
