//! An LRP too big for any cell, at the largest count allowed (no root needed: `diego dev`
//! with the process backend). Every auction round fails all 100,000 instances; the user's
//! delete and scale must still win at once over the placement failures being recorded, and
//! rounds must back off rather than fail them all again each time.

use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{Action, DesiredLrp, DesiredLrpUpdate, RunAction};
use diego_testkit::{eventually, free_port};

mod common;
use common::cluster::Proc;

const WAIT: Duration = Duration::from_secs(120);
const INSTANCES: i32 = 100_000;

fn huge(guid: &str) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "default".into(),
        rootfs: "preloaded:busybox".into(),
        instances: INSTANCES,
        memory_mb: 1_000_000,
        action: Some(Action::run(RunAction {
            path: "sleep".into(),
            args: vec!["600".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Waits until the auction has recorded a placement failure on some instance of `guid`.
async fn failing(client: &BbsClient, guid: &str) {
    eventually(WAIT, || async {
        let rows = client
            .actual_lrps(&ActualLrpQuery {
                process_guid: Some(guid.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let failed = rows.iter().filter(|a| !a.placement_error.is_empty()).count();
        (failed > 0)
            .then_some(())
            .ok_or(format!("{} rows, none with a placement error yet", rows.len()))
    })
    .await;
}

async fn rows_left(client: &BbsClient, guid: &str) -> Result<usize, String> {
    client
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(guid.into()),
            ..Default::default()
        })
        .await
        .map(|r| r.len())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_lrp_of_100k_instances_is_deleted_and_scaled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dev = Proc::spawn(
        "dev",
        dir.path(),
        &[
            "dev".into(),
            "--backend".into(),
            "process".into(),
            "--data-dir".into(),
            dir.path().join("dev").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        None,
    );
    let client = BbsClient::new(format!("http://127.0.0.1:{port}"));
    eventually(WAIT, || async {
        let cells = client.cells().await.map_err(|e| e.to_string())?;
        (!cells.is_empty()).then_some(()).ok_or("no cell yet".to_string())
    })
    .await;

    // Delete while the rounds record their failures: it is answered, not refused as contended.
    client.desire_lrp(&huge("huge")).await.unwrap();
    failing(&client, "huge").await;
    client
        .remove_desired_lrp("huge")
        .await
        .expect("a delete wins over placement failures being recorded");
    assert!(client.desired_lrp("huge").await.unwrap_err().is_not_found());
    eventually(WAIT, || async {
        match rows_left(&client, "huge").await? {
            0 => Ok(()),
            n => Err(format!("{n} instances left")),
        }
    })
    .await;

    // Scale to zero likewise.
    client.desire_lrp(&huge("big")).await.unwrap();
    failing(&client, "big").await;
    let scaled = client
        .update_desired_lrp(
            "big",
            &DesiredLrpUpdate {
                instances: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("a scale wins over placement failures being recorded");
    assert_eq!(scaled.instances, 0);
    eventually(WAIT, || async {
        match rows_left(&client, "big").await? {
            0 => Ok(()),
            n => Err(format!("{n} instances left")),
        }
    })
    .await;
}
