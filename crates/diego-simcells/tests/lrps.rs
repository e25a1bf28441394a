//! `/work` with LRP instances: admitted at once, claimed and started in the BBS, refused
//! when they do not fit or were sent to the wrong cell, stopped when the BBS scales down.

mod common;

use anyhow::{bail, ensure};
use common::{lrp, start, Sim, WAIT};
use diego_client::ActualLrpQuery;
use diego_model::auction::Work;
use diego_model::{ActualLrp, ActualLrpState, DesiredLrpUpdate, ErrorType};
use diego_testkit::eventually;

async fn actuals(sim: &Sim, guid: &str) -> anyhow::Result<Vec<ActualLrp>> {
    let mut all = sim
        .bbs
        .client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await?;
    all.sort_by_key(|a| a.index);
    Ok(all)
}

/// Waits until every listed index is RUNNING on the given cell.
async fn running_on(sim: &Sim, guid: &str, placed: &[(i32, &str)]) -> Vec<ActualLrp> {
    eventually(WAIT, || async {
        let all = actuals(sim, guid).await?;
        for &(index, cell) in placed {
            let Some(a) = all.iter().find(|a| a.index == index) else {
                bail!("index {index} missing: {all:?}");
            };
            ensure!(
                a.state == ActualLrpState::Running && a.cell_id == cell,
                "index {index} is {} on {:?}",
                a.state,
                a.cell_id
            );
        }
        Ok(all)
    })
    .await
}

#[tokio::test]
async fn work_is_held_at_once_then_claimed_and_started_on_its_cells() {
    let sim = start(3, |_| {}).await;
    let web = lrp("web", 4, 128);
    sim.bbs.client.desire_lrp(&web).await.unwrap();

    let failed = sim.rep(0).perform(&sim.lrp_work(0, &web, &[0, 1])).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    let failed = sim.rep(1).perform(&sim.lrp_work(1, &web, &[2, 3])).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");

    // Reserved before the answer: the next /state already shows it.
    let a = sim.rep(0).state().await.unwrap();
    let held: Vec<i32> = a.lrps.iter().map(|l| l.index).collect();
    assert_eq!(held, [0, 1]);
    assert!(a
        .lrps
        .iter()
        .all(|l| l.process_guid == "web" && l.memory_mb == 128));
    assert_eq!(a.available_resources.memory_mb, 16 * 1024 - 256);
    assert_eq!(a.available_resources.disk_mb, 64 * 1024 - 128);
    assert_eq!(a.available_resources.containers, 248);
    let c = sim.rep(2).state().await.unwrap();
    assert!(c.lrps.is_empty());

    let (a_id, b_id) = (sim.cell(0).to_string(), sim.cell(1).to_string());
    let all = running_on(&sim, "web", &[(0, &a_id), (1, &a_id), (2, &b_id), (3, &b_id)]).await;
    // The instance guid the cell reports is the one it claimed with.
    let a = sim.rep(0).state().await.unwrap();
    for l in &a.lrps {
        let actual = all.iter().find(|x| x.index == l.index).unwrap();
        assert_eq!(actual.instance_guid, l.instance_guid);
        assert_eq!(actual.address, "127.0.0.1");
        assert_eq!(actual.ports.len(), 1);
        assert_eq!(actual.ports[0].container_port, 8080);
    }
    assert_eq!(a.starting_container_count, 0);
    let stats = sim.cells.stats();
    assert_eq!(
        (stats.lrps_admitted, stats.lrps_claimed, stats.lrps_started),
        (4, 4, 4)
    );
}

#[tokio::test]
async fn work_beyond_memory_comes_back_failed_and_is_not_claimed() {
    let sim = start(1, |c| c.memory_mb = 1024).await;
    let big = lrp("big", 2, 600);
    sim.bbs.client.desire_lrp(&big).await.unwrap();

    let failed = sim.rep(0).perform(&sim.lrp_work(0, &big, &[0, 1])).await.unwrap();
    assert_eq!(failed.cell_id, sim.cell(0));
    assert_eq!(failed.lrps.len(), 1, "{failed:?}");
    assert!(failed.tasks.is_empty());
    let refused = failed.lrps[0].index;
    let taken = 1 - refused;
    assert_eq!(failed.lrps[0].resource.memory_mb, 600);

    let cell = sim.cell(0).to_string();
    let all = running_on(&sim, "big", &[(taken, &cell)]).await;
    let other = all.iter().find(|a| a.index == refused).unwrap();
    assert_eq!(other.state, ActualLrpState::Unclaimed);
    assert!(other.cell_id.is_empty());
    let state = sim.rep(0).state().await.unwrap();
    assert_eq!(state.lrps.len(), 1);
    assert_eq!(state.available_resources.memory_mb, 1024 - 600);
    assert_eq!(sim.cells.stats().work_refused, 1);
}

#[tokio::test]
async fn work_for_another_cell_is_refused_whole() {
    let sim = start(2, |_| {}).await;
    let web = lrp("web", 2, 128);
    sim.bbs.client.desire_lrp(&web).await.unwrap();

    // Addressed to cell 1, posted to cell 0.
    let work = sim.lrp_work(1, &web, &[0, 1]);
    let err = sim.rep(0).perform(&work).await.unwrap_err();
    let api = err.api_error().expect("an error answer");
    assert_eq!(api.kind, ErrorType::ResourceConflict);
    assert!(
        api.message.contains("sim-0001") && api.message.contains("sim-0000"),
        "{api:?}"
    );

    for i in 0..2 {
        let state = sim.rep(i).state().await.unwrap();
        assert!(state.lrps.is_empty(), "cell {i} took work: {state:?}");
    }
    // Give any stray claim time to land, then check none did.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let all = actuals(&sim, "web").await.unwrap();
    assert!(
        all.iter().all(|a| a.state == ActualLrpState::Unclaimed),
        "{all:?}"
    );
}

#[tokio::test]
async fn an_index_claimed_elsewhere_is_dropped() {
    let sim = start(2, |_| {}).await;
    let web = lrp("web", 1, 128);
    sim.bbs.client.desire_lrp(&web).await.unwrap();
    let first = sim.cell(0).to_string();
    sim.rep(0).perform(&sim.lrp_work(0, &web, &[0])).await.unwrap();
    running_on(&sim, "web", &[(0, &first)]).await;

    // The same index to another cell: admitted (the cell cannot know), then the claim fails
    // and the reservation goes.
    let failed = sim.rep(1).perform(&sim.lrp_work(1, &web, &[0])).await.unwrap();
    assert!(failed.is_empty());
    eventually(WAIT, || async {
        let s = sim.rep(1).state().await?;
        ensure!(s.lrps.is_empty(), "still holds {:?}", s.lrps);
        ensure!(s.available_resources == s.total_resources, "room not given back");
        Ok(())
    })
    .await;
    assert_eq!(sim.cells.stats().lrps_claim_failed, 1);
    running_on(&sim, "web", &[(0, &first)]).await;
}

#[tokio::test]
async fn a_bbs_scale_down_stops_and_removes_the_instances() {
    let sim = start(2, |_| {}).await;
    let web = lrp("web", 4, 128);
    sim.bbs.client.desire_lrp(&web).await.unwrap();
    sim.rep(0).perform(&sim.lrp_work(0, &web, &[0, 2])).await.unwrap();
    sim.rep(1).perform(&sim.lrp_work(1, &web, &[1, 3])).await.unwrap();
    let (a, b) = (sim.cell(0).to_string(), sim.cell(1).to_string());
    running_on(&sim, "web", &[(0, &a), (1, &b), (2, &a), (3, &b)]).await;

    let update = DesiredLrpUpdate {
        instances: Some(2),
        ..Default::default()
    };
    sim.bbs.client.update_desired_lrp("web", &update).await.unwrap();

    // The BBS asks each cell to stop index 2 resp. 3; the cells drop them and remove the records.
    eventually(WAIT, || async {
        let all = actuals(&sim, "web").await?;
        let indices: Vec<i32> = all.iter().map(|a| a.index).collect();
        ensure!(indices == [0, 1], "instances left: {indices:?}");
        Ok(())
    })
    .await;
    for (i, kept) in [(0, 0), (1, 1)] {
        let s = sim.rep(i).state().await.unwrap();
        let held: Vec<i32> = s.lrps.iter().map(|l| l.index).collect();
        assert_eq!(held, [kept], "cell {i}");
        assert_eq!(s.available_resources.memory_mb, 16 * 1024 - 128);
    }
    assert_eq!(sim.cells.stats().lrps_stopped, 2);
    running_on(&sim, "web", &[(0, &a), (1, &b)]).await;
}

#[tokio::test]
async fn a_stop_for_an_unknown_instance_is_accepted() {
    let sim = start(1, |_| {}).await;
    let url = format!(
        "{}{}",
        sim.cells.rep_url(sim.cell(0)),
        diego_client::routes::path(
            diego_client::routes::rep::STOP_LRP_INSTANCE,
            &["nope", "no-instance"]
        )
    );
    let resp = reqwest::Client::new().post(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // Work for an unknown cell has nowhere to go.
    let rep = diego_client::RepClient::new(
        format!("{}/cells/elsewhere", sim.cells.base_url),
        reqwest::Client::new(),
        std::time::Duration::from_secs(5),
    );
    let err = rep
        .perform(&Work {
            cell_id: "elsewhere".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}
