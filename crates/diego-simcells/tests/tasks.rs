//! `/work` with tasks: started and completed in the BBS, refused when they do not fit,
//! dropped when the BBS cancels them.

mod common;

use std::time::Duration;

use anyhow::ensure;
use common::{start, task, task_work, WAIT};
use diego_model::auction::Work;
use diego_model::TaskState;
use diego_simcells::TASK_RESULT;
use diego_testkit::eventually;

#[tokio::test]
async fn a_task_is_started_and_completed_then_released() {
    let sim = start(2, |_| {}).await;
    let req = task("t1", 256);
    sim.bbs.client.desire_task(&req).await.unwrap();
    let work = Work {
        cell_id: sim.cell(1).into(),
        lrps: Vec::new(),
        tasks: vec![task_work(&req)],
    };
    let failed = sim.rep(1).perform(&work).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");

    let t = eventually(WAIT, || async {
        let t = sim.bbs.client.task("t1").await?;
        ensure!(t.state == TaskState::Completed, "task is {}", t.state);
        Ok(t)
    })
    .await;
    // (A completed task no longer names a cell; `complete` only succeeds from the one running it.)
    assert!(!t.failed, "{t:?}");
    assert_eq!(t.result, TASK_RESULT);
    eventually(WAIT, || async {
        let s = sim.rep(1).state().await?;
        ensure!(s.tasks.is_empty(), "still holds {:?}", s.tasks);
        ensure!(s.available_resources == s.total_resources, "room not given back");
        Ok(())
    })
    .await;
    let stats = sim.cells.stats();
    assert_eq!(
        (stats.tasks_admitted, stats.tasks_started, stats.tasks_completed),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_running_task_is_held_until_it_completes_and_too_big_ones_come_back() {
    let sim = start(1, |c| {
        c.memory_mb = 1000;
        c.task_run_time = Duration::from_secs(2);
    })
    .await;
    let small = task("small", 600);
    let big = task("big", 700);
    for t in [&small, &big] {
        sim.bbs.client.desire_task(t).await.unwrap();
    }
    let work = Work {
        cell_id: sim.cell(0).into(),
        lrps: Vec::new(),
        tasks: vec![task_work(&small), task_work(&big)],
    };
    let failed = sim.rep(0).perform(&work).await.unwrap();
    // Largest first: the 700 MB task fits, then the 600 MB one does not.
    let refused: Vec<&str> = failed.tasks.iter().map(|t| t.task_guid.as_str()).collect();
    assert_eq!(refused, ["small"]);
    let s = sim.rep(0).state().await.unwrap();
    assert_eq!(s.tasks.len(), 1);
    assert_eq!(s.tasks[0].task_guid, "big");
    assert_eq!(s.available_resources.memory_mb, 300);

    eventually(WAIT, || async {
        let t = sim.bbs.client.task("big").await?;
        ensure!(t.state == TaskState::Running, "task is {}", t.state);
        ensure!(t.cell_id == "sim-0000", "running on {:?}", t.cell_id);
        Ok(())
    })
    .await;
    eventually(WAIT, || async {
        let t = sim.bbs.client.task("big").await?;
        ensure!(t.state == TaskState::Completed, "task is {}", t.state);
        Ok(())
    })
    .await;
    assert_eq!(
        sim.bbs.client.task("small").await.unwrap().state,
        TaskState::Pending
    );
}

#[tokio::test]
async fn a_cancelled_task_is_dropped_and_not_completed() {
    let sim = start(1, |c| c.task_run_time = Duration::from_secs(3600)).await;
    let req = task("long", 128);
    sim.bbs.client.desire_task(&req).await.unwrap();
    let work = Work {
        cell_id: sim.cell(0).into(),
        lrps: Vec::new(),
        tasks: vec![task_work(&req)],
    };
    sim.rep(0).perform(&work).await.unwrap();
    eventually(WAIT, || async {
        let t = sim.bbs.client.task("long").await?;
        ensure!(t.state == TaskState::Running, "task is {}", t.state);
        Ok(())
    })
    .await;

    // The BBS completes it as cancelled and tells the cell, which drops it.
    sim.bbs.client.cancel_task("long").await.unwrap();
    eventually(WAIT, || async {
        let s = sim.rep(0).state().await?;
        ensure!(s.tasks.is_empty(), "still holds {:?}", s.tasks);
        Ok(())
    })
    .await;
    let t = sim.bbs.client.task("long").await.unwrap();
    assert_eq!(t.state, TaskState::Completed);
    assert!(t.failed);
    assert_ne!(t.result, TASK_RESULT);
    assert_eq!(sim.cells.stats().tasks_cancelled, 1);
}
