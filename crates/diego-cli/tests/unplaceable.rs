//! An LRP too big for any cell, at the largest count allowed (no root needed: `diego dev`
//! with the process backend). Every auction round fails all 100,000 instances; the user's
//! delete and scale must still win at once over the placement failures being recorded, and
//! rounds must back off rather than fail them all again each time.

use std::time::Duration;

use diego_client::{ActualLrpQuery, BbsClient};
use diego_model::{DesiredLrp, DesiredLrpUpdate};
use diego_testkit::eventually;

mod common;
use common::cluster::start_dev;

const WAIT: Duration = Duration::from_secs(120);
const INSTANCES: i32 = 100_000;

fn huge(guid: &str) -> DesiredLrp {
    diego_cli::bench::unplaceable::unplaceable_lrp(guid, INSTANCES)
}

/// Waits until the auction has recorded a placement failure on index 0 of `guid`.
async fn failing(client: &BbsClient, guid: &str) {
    eventually(WAIT, || async {
        let rows = client.actual_lrp(guid, 0).await.map_err(|e| e.to_string())?;
        rows.iter()
            .any(|a| !a.placement_error.is_empty())
            .then_some(())
            .ok_or(format!("no placement error yet: {rows:?}"))
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
    let (_dev, client) = start_dev(dir.path(), &["--backend", "process"], 1).await;

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
