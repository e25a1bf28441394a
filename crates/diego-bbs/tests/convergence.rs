//! The converger through a real BBS (diego-spec §4.2, §4.5, §4.6): rows changed behind the
//! BBS's back, cells that vanish, tasks that must never run twice. Passes run every 50 ms;
//! the store's clock is manual, so ages and TTLs move only when a test says so.

mod common;

use std::time::Duration;

use common::*;
use diego_model::{ActualLrp, ActualLrpKey};
use diego_store::{Record, Txn, Write};
use diego_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn converging() -> Server {
    start_with(|c| {
        c.convergence.interval = Duration::from_millis(50);
    })
    .await
}

async fn fresh_domain(s: &Server) {
    let (st, body) = s
        .call(
            "POST",
            "/v1/domains",
            Some(json!({"domain": "tests", "ttl_seconds": 3600})),
        )
        .await;
    assert!(st.is_success(), "{st} {body}");
}

async fn actuals(s: &Server, guid: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/v1/actual_lrps?process_guid={guid}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

/// (index, state, presence) of each row, sorted.
async fn rows(s: &Server, guid: &str) -> Vec<(i64, String, String)> {
    let mut r: Vec<_> = actuals(s, guid)
        .await
        .iter()
        .map(|a| {
            (
                a["index"].as_i64().unwrap(),
                a["state"].as_str().unwrap().to_string(),
                a["presence"].as_str().unwrap_or("ORDINARY").to_string(),
            )
        })
        .collect();
    r.sort();
    r
}

fn row(i: i64, state: &str, presence: &str) -> (i64, String, String) {
    (i, state.into(), presence.into())
}

/// Writes straight to the store, as a bug or an operator might: no API, no fence.
async fn behind_the_back(s: &Server, write: Write) {
    s.store.commit(Txn::one(write)).await.unwrap();
}

async fn stored_actual(s: &Server, guid: &str, index: i32) -> ActualLrp {
    let all = s.store.list_actual_lrps(&Default::default()).await.unwrap();
    all.into_iter()
        .find(|a| a.process_guid == guid && a.index == index)
        .unwrap()
}

fn stray(guid: &str, index: i32) -> Write {
    let key = ActualLrpKey {
        process_guid: guid.into(),
        index,
        domain: "tests".into(),
    };
    Write::insert(Record::ActualLrp(ActualLrp::unclaimed(
        key,
        1_700_000_000_000_000_000,
        "stray".into(),
    )))
}

/// Sets up web (2 instances) with index 1 deleted, an extra index 5 and an orphan.
async fn damaged(s: &Server) {
    s.desire_lrp("web", 2).await;
    eventually(WAIT, || async {
        let r = rows(s, "web").await;
        (r.len() == 2).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    let one = stored_actual(s, "web", 1).await;
    behind_the_back(s, Write::delete(&Record::ActualLrp(one))).await;
    behind_the_back(s, stray("web", 5)).await;
    behind_the_back(s, stray("ghost", 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_recreated_and_extras_and_orphans_retired_in_a_fresh_domain() {
    let s = converging().await;
    fresh_domain(&s).await;
    damaged(&s).await;
    eventually(WAIT, || async {
        let (web, ghost) = (rows(&s, "web").await, rows(&s, "ghost").await);
        let want = vec![row(0, "UNCLAIMED", "ORDINARY"), row(1, "UNCLAIMED", "ORDINARY")];
        if web == want && ghost.is_empty() {
            Ok(())
        } else {
            Err(format!("web {web:?} ghost {ghost:?}"))
        }
    })
    .await;
    // The passes show in /metrics under Diego's names.
    let (_, text) = s.raw("GET", "/metrics", Vec::new()).await;
    for name in [
        "LockHeld 1",
        "LRPsMissing ",
        "LRPsExtra ",
        "ConvergenceLRPDuration ",
        "PresentCells ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name:?} not in /metrics:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_stale_domain_extras_and_orphans_are_left_alone() {
    // No domain upserted: "tests" is not fresh.
    let s = converging().await;
    damaged(&s).await;
    eventually(WAIT, || async {
        let web = rows(&s, "web").await;
        web.iter()
            .any(|r| r.0 == 1)
            .then_some(())
            .ok_or(format!("index 1 not recreated: {web:?}"))
    })
    .await;
    // Many more passes: still nothing destroyed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let web: Vec<i64> = rows(&s, "web").await.iter().map(|r| r.0).collect();
    assert_eq!(web, [0, 1, 5], "the extra index stays while the domain is stale");
    assert_eq!(
        rows(&s, "ghost").await.len(),
        1,
        "the orphan stays while the domain is stale"
    );

    // The domain becomes fresh: now they go.
    fresh_domain(&s).await;
    eventually(WAIT, || async {
        let (web, ghost) = (rows(&s, "web").await, rows(&s, "ghost").await);
        if web.len() == 2 && ghost.is_empty() {
            Ok(())
        } else {
            Err(format!("web {web:?} ghost {ghost:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_vanished_cell_fails_and_never_starts_again() {
    let s = converging().await;
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    s.register_cell("cell-b", "http://127.0.0.1:9").await;
    s.desire_task("t1").await;
    let (st, r) = s.post("/v1/tasks/t1/start", json!({"cell_id": "cell-a"})).await;
    assert_eq!((st, &r["should_start"]), (StatusCode::OK, &json!(true)));

    let (st, _) = s.call("DELETE", "/v1/cells/cell-a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let t = eventually(WAIT, || async {
        let (_, t) = s.get("/v1/tasks/t1").await;
        (t["state"] == "COMPLETED")
            .then_some(t.clone())
            .ok_or(t.to_string())
    })
    .await;
    assert_eq!(t["failed"], true, "{t}");
    assert_eq!(t["failure_reason"], "cell disappeared before completion", "{t}");

    // Never run again: no cell may start it.
    let (st, r) = s.post("/v1/tasks/t1/start", json!({"cell_id": "cell-b"})).await;
    assert_eq!(
        (st, error_type(&r)),
        (StatusCode::CONFLICT, "InvalidStateTransition"),
        "{r}"
    );
}

async fn claim_and_start(s: &Server, guid: &str, index: i64, cell: &str, start: bool) {
    let ik = json!({"instance_guid": format!("ig-{cell}-{index}"), "cell_id": cell});
    let (st, r) = s
        .post(
            &format!("/v1/actual_lrps/{guid}/{index}/claim"),
            json!({"instance_key": ik}),
        )
        .await;
    assert!(st.is_success(), "claim {guid}/{index} on {cell}: {st} {r}");
    if start {
        let (st, r) = s
            .post(
                &format!("/v1/actual_lrps/{guid}/{index}/start"),
                json!({"instance_key": ik, "net_info": net_info()}),
            )
            .await;
        assert!(st.is_success(), "start {guid}/{index} on {cell}: {st} {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_a_lost_cell_become_suspect_or_unclaimed_and_the_suspect_goes_once_replaced() {
    let s = converging().await;
    fresh_domain(&s).await;
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    s.desire_lrp("web", 2).await;
    claim_and_start(&s, "web", 0, "cell-a", true).await;
    claim_and_start(&s, "web", 1, "cell-a", false).await;

    let (st, _) = s.call("DELETE", "/v1/cells/cell-a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // RUNNING → SUSPECT (still there, still serving) beside a replacement; CLAIMED → UNCLAIMED.
    eventually(WAIT, || async {
        let r = rows(&s, "web").await;
        let want = vec![
            row(0, "RUNNING", "SUSPECT"),
            row(0, "UNCLAIMED", "ORDINARY"),
            row(1, "UNCLAIMED", "ORDINARY"),
        ];
        (r == want).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    let suspect = actuals(&s, "web")
        .await
        .into_iter()
        .find(|a| a["presence"] == "SUSPECT")
        .unwrap();
    assert_eq!(suspect["cell_id"], "cell-a", "{suspect}");

    // The replacement runs on another cell: the suspect is removed.
    s.register_cell("cell-b", "http://127.0.0.1:9").await;
    claim_and_start(&s, "web", 0, "cell-b", true).await;
    eventually(WAIT, || async {
        let r = rows(&s, "web").await;
        let want = vec![row(0, "RUNNING", "ORDINARY"), row(1, "UNCLAIMED", "ORDINARY")];
        (r == want).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    let a = actuals(&s, "web")
        .await
        .into_iter()
        .find(|a| a["index"] == 0)
        .unwrap();
    assert_eq!(a["cell_id"], "cell-b", "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_whose_cell_comes_back_first_is_ordinary_again() {
    let s = converging().await;
    fresh_domain(&s).await;
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    s.desire_lrp("web", 1).await;
    claim_and_start(&s, "web", 0, "cell-a", true).await;
    let (st, _) = s.call("DELETE", "/v1/cells/cell-a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        let r = rows(&s, "web").await;
        let want = vec![row(0, "RUNNING", "SUSPECT"), row(0, "UNCLAIMED", "ORDINARY")];
        (r == want).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;

    // The cell returns before the replacement runs anywhere.
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    eventually(WAIT, || async {
        let r = rows(&s, "web").await;
        (r == vec![row(0, "RUNNING", "ORDINARY")])
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let a = &actuals(&s, "web").await[0];
    assert_eq!(a["cell_id"], "cell-a", "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_presence_is_listed_until_its_cell_returns() {
    let s = converging().await;
    fresh_domain(&s).await;
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    s.desire_lrp("web", 2).await;
    claim_and_start(&s, "web", 0, "cell-a", true).await;
    claim_and_start(&s, "web", 1, "cell-a", true).await;
    let (_, lapsed) = s.call("GET", "/v1/lapsed_cells", None).await;
    assert_eq!(lapsed, json!([]));

    // Nobody removes the presence: its TTL (30 s) runs out, and the expiry alone (a change
    // in the store's feed) starts recovery and lists the cell.
    s.clock.advance_ms(31_000);
    let listed = eventually(WAIT, || async {
        let (_, lapsed) = s.call("GET", "/v1/lapsed_cells", None).await;
        let r = rows(&s, "web").await;
        let suspects = r.iter().filter(|(_, _, p)| p == "SUSPECT").count();
        (suspects == 2 && lapsed[0]["instances"] == 2)
            .then_some(lapsed.clone())
            .ok_or(format!("{lapsed} {r:?}"))
    })
    .await;
    assert_eq!(listed[0]["cell_id"], "cell-a", "{listed}");
    assert_eq!(
        listed[0]["last_presence"]["rep_url"], "http://127.0.0.1:9",
        "{listed}"
    );
    assert!(listed[0]["lapsed_at"].as_i64().unwrap() > 0, "{listed}");
    let (_, cells) = s.call("GET", "/v1/cells", None).await;
    assert_eq!(cells, json!([]), "the live list no longer has it");

    // It registers again: its instances are ordinary again and it is no longer lapsed.
    s.register_cell("cell-a", "http://127.0.0.1:9").await;
    eventually(WAIT, || async {
        let (_, lapsed) = s.call("GET", "/v1/lapsed_cells", None).await;
        let r = rows(&s, "web").await;
        let ordinary = r == vec![row(0, "RUNNING", "ORDINARY"), row(1, "RUNNING", "ORDINARY")];
        (ordinary && lapsed == json!([]))
            .then_some(())
            .ok_or(format!("{lapsed} {r:?}"))
    })
    .await;
}
