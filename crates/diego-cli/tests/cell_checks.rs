//! Health checks of instances in real runc containers under `diego dev` (root; needs runc and
//! busybox-static): readiness flips `routable` both ways without crashing the instance, and a
//! liveness check that starts failing crashes it with Diego's "Instance became unhealthy: …",
//! after which it is restarted at once.

use std::time::Duration;

use diego_client::BbsClient;
use diego_model::{Action, ActualLrp, ActualLrpState, Check, CheckDefinition, DesiredLrp, RunAction};
use diego_testkit::{eventually, free_port};

mod common;
use common::spawn;
const WAIT: Duration = Duration::from_secs(60);

/// `diego dev` killed on drop, then the containers its cell kept removed (fields drop in order).
struct Dev {
    _child: tokio::process::Child,
    _leftovers: common::RuncLeftovers,
}

fn lrp(guid: &str, script: &str, checks: CheckDefinition) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 1,
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 30_000,
        check_definition: Some(checks),
        action: Some(Action::run(RunAction {
            path: "sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn instance(client: &BbsClient, guid: &str) -> Result<ActualLrp, String> {
    client
        .actual_lrp(guid, 0)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "no instance".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_liveness_checks_in_runc_containers() {
    if !common::runc_usable("readiness_and_liveness_checks_in_runc_containers") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let bbs = format!("http://127.0.0.1:{port}");
    let _dev = Dev {
        _child: spawn(&[
            "dev",
            "--backend",
            "runc",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--logs-listen",
            "127.0.0.1:0",
        ]),
        _leftovers: common::RuncLeftovers::for_depot(&data.path().join("cell-0").join("depot")),
    };
    let client = BbsClient::new(bbs.clone());
    eventually(WAIT, || async {
        let n = client.cells().await.map_err(|e| e.to_string())?.len();
        (n == 1).then_some(()).ok_or(format!("{n} cells"))
    })
    .await;

    // Readiness: ready while /www/ready exists — not yet, then for a while, then no more.
    let ready_script = "mkdir -p /tmp/www; httpd -p 8080 -h /tmp/www; sleep 2; \
                        echo ok > /tmp/www/ready; sleep 3; rm /tmp/www/ready; exec sleep 1000";
    let mut readiness = Check::http(8080, "/ready");
    if let Some(h) = readiness.http_check.as_mut() {
        h.interval_ms = 100;
    }
    let ready_checks = CheckDefinition {
        checks: vec![Check::tcp(8080)],
        readiness_checks: vec![readiness],
        ..Default::default()
    };
    client
        .desire_lrp(&lrp("ready", ready_script, ready_checks))
        .await
        .unwrap();
    let not_yet = eventually(WAIT, || async {
        let a = instance(&client, "ready").await?;
        (a.state == ActualLrpState::Running)
            .then_some(a.clone())
            .ok_or(format!("{:?}", a.state))
    })
    .await;
    assert_ne!(
        not_yet.routable,
        Some(true),
        "routable before its readiness check passed"
    );
    let ready = eventually(WAIT, || async {
        let a = instance(&client, "ready").await?;
        (a.routable == Some(true))
            .then_some(a.clone())
            .ok_or(format!("{a:?}"))
    })
    .await;
    eventually(WAIT, || async {
        let a = instance(&client, "ready").await?;
        (a.routable == Some(false)).then_some(()).ok_or(format!("{a:?}"))
    })
    .await;
    let a = instance(&client, "ready").await.unwrap();
    assert_eq!(a.state, ActualLrpState::Running, "readiness never crashes: {a:?}");
    assert_eq!((a.instance_guid, a.crash_count), (ready.instance_guid, 0));

    // Liveness: the app stops listening after a while: the instance crashes as Diego says and
    // is restarted at once (a first crash restarts immediately).
    let live_script = "httpd -p 8080 -h /tmp; sleep 2; killall httpd; exec sleep 1000";
    let mut liveness = Check::tcp(8080);
    if let Some(t) = liveness.tcp_check.as_mut() {
        t.interval_ms = 100;
    }
    let live_checks = CheckDefinition {
        checks: vec![liveness],
        ..Default::default()
    };
    client
        .desire_lrp(&lrp("live", live_script, live_checks))
        .await
        .unwrap();
    let first = eventually(WAIT, || async {
        let a = instance(&client, "live").await?;
        (a.state == ActualLrpState::Running)
            .then_some(a.clone())
            .ok_or(format!("{:?}", a.state))
    })
    .await;
    let crashed = eventually(WAIT, || async {
        let a = instance(&client, "live").await?;
        (a.crash_count >= 1).then_some(a.clone()).ok_or(format!("{a:?}"))
    })
    .await;
    assert!(
        crashed.crash_reason.starts_with("Instance became unhealthy: "),
        "{}",
        crashed.crash_reason
    );
    let again = eventually(WAIT, || async {
        let a = instance(&client, "live").await?;
        (a.state == ActualLrpState::Running && a.instance_guid != first.instance_guid)
            .then_some(a.clone())
            .ok_or(format!("{a:?}"))
    })
    .await;
    assert!(again.crash_count >= 1);

    for guid in ["ready", "live"] {
        client.remove_desired_lrp(guid).await.unwrap();
    }
    let depot = data.path().join("cell-0").join("depot");
    eventually(WAIT, || async {
        let n = std::fs::read_dir(&depot).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(()).ok_or(format!("{n} containers left"))
    })
    .await;
}
