//! Every `BbsClient` method against a real BBS on loopback: the client and server agree on
//! paths, bodies and status codes.

use std::time::Duration;

use diego_client::{ActualLrpQuery, ClientError, DesiredLrpQuery, TaskQuery};
use diego_model::api::{CompleteTaskRequest, StartActualLrpRequest};
use diego_model::{
    Action, ActualLrpInstanceKey, ActualLrpNetInfo, ActualLrpState, DesireTaskRequest, DesiredLrp,
    DesiredLrpUpdate, ErrorType, Event, PortMapping, RunAction, TaskDefinition, TaskState,
};
use diego_testkit::{eventually, TestBbs};
use futures_util::StreamExt as _;

const WAIT: Duration = Duration::from_secs(10);

fn run(path: &str) -> Option<Action> {
    Some(Action::run(RunAction {
        path: path.into(),
        ..Default::default()
    }))
}

fn task(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "d".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: run("true"),
            ..Default::default()
        },
    }
}

fn lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        ports: vec![8080],
        action: run("sleep"),
        ..Default::default()
    }
}

#[tokio::test]
async fn task_lifecycle() {
    let bbs = TestBbs::start().await;
    let c = &bbs.client;
    assert!(c.ping().await.unwrap().available);

    let t = c.desire_task(&task("t1")).await.unwrap();
    assert_eq!(t.state, TaskState::Pending);
    let err = c.desire_task(&task("t1")).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceExists), "{err}");

    assert!(c.start_task("t1", "cell-a").await.unwrap());
    assert!(
        !c.start_task("t1", "cell-a").await.unwrap(),
        "a second start on the same cell is a no-op"
    );
    let running = c
        .tasks(&TaskQuery {
            cell_id: Some("cell-a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert!(c
        .tasks(&TaskQuery {
            state: Some(TaskState::Pending),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());

    let done = CompleteTaskRequest {
        cell_id: "cell-a".into(),
        result: "42".into(),
        ..Default::default()
    };
    let t = c.complete_task("t1", &done).await.unwrap();
    assert_eq!((t.state, t.result.as_str()), (TaskState::Completed, "42"));
    assert_eq!(c.resolving_task("t1").await.unwrap().state, TaskState::Resolving);
    c.delete_task("t1").await.unwrap();
    assert!(c.task("t1").await.unwrap_err().is_not_found());

    c.desire_task(&task("t2")).await.unwrap();
    let t = c.reject_task("t2", "no room", None).await.unwrap();
    assert_eq!(t.rejection_count, 1);
    let t = c.fail_task("t2", "gave up").await.unwrap();
    assert!(t.failed && t.state == TaskState::Completed);

    c.desire_task(&task("t3")).await.unwrap();
    let t = c.cancel_task("t3").await.unwrap();
    assert!(t.failed);
}

#[tokio::test]
async fn invalid_records_carry_field_errors() {
    let bbs = TestBbs::start().await;
    let mut bad = task("bad guid");
    bad.task_definition.action = None;
    match bbs.client.desire_task(&bad).await.unwrap_err() {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 400);
            assert_eq!(error.kind, ErrorType::InvalidRecord);
            let fields: Vec<&str> = error.field_errors.iter().map(|f| f.field.as_str()).collect();
            assert!(
                fields.contains(&"task_guid") && fields.contains(&"task_definition.action"),
                "{fields:?}"
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn lrp_lifecycle() {
    let bbs = TestBbs::start().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    let all = c.desired_lrps(&DesiredLrpQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    let q = DesiredLrpQuery {
        process_guid: Some("web".into()),
        ..Default::default()
    };
    assert_eq!(c.scheduling_infos(&q).await.unwrap()[0].instances, 2);
    assert_eq!(c.scheduling_info("web").await.unwrap().process_guid, "web");
    assert!(c
        .desired_lrps(&DesiredLrpQuery {
            domain: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());

    let key = ActualLrpInstanceKey::new("ig-0", "cell-a");
    let claimed = c.claim_actual_lrp("web", 0, &key).await.unwrap();
    assert_eq!(claimed.state, ActualLrpState::Claimed);
    let start = StartActualLrpRequest {
        instance_key: key.clone(),
        net_info: ActualLrpNetInfo {
            address: "10.0.0.5".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61001,
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    };
    let running = c.start_actual_lrp("web", 0, &start).await.unwrap();
    assert_eq!(running.state, ActualLrpState::Running);
    let q = ActualLrpQuery {
        cell_id: Some("cell-a".into()),
        state: Some(ActualLrpState::Running),
        ..Default::default()
    };
    assert_eq!(c.actual_lrps(&q).await.unwrap().len(), 1);
    assert_eq!(c.actual_lrp("web", 0).await.unwrap().len(), 1);

    let crashed = c.crash_actual_lrp("web", 0, &key, "exit 1").await.unwrap();
    assert_eq!(crashed.crash_count, 1);
    let failed = c.fail_actual_lrp("web", 1, "no cells", None).await.unwrap();
    assert_eq!(failed.placement_error, "no cells");

    let other = ActualLrpInstanceKey::new("ig-x", "cell-b");
    let err = c.claim_actual_lrp("web", 9, &other).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let updated = c
        .update_desired_lrp(
            "web",
            &DesiredLrpUpdate {
                instances: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.instances, 3);
    eventually(WAIT, || async {
        let q = ActualLrpQuery {
            process_guid: Some("web".into()),
            ..Default::default()
        };
        let n = c.actual_lrps(&q).await.map_err(|e| e.to_string())?.len();
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n} actual LRPs"))
        }
    })
    .await;

    c.remove_actual_lrp("web", 2, None).await.unwrap();
    c.retire_actual_lrp("web", 1).await.unwrap();
    c.remove_desired_lrp("web").await.unwrap();
    assert!(c.desired_lrp("web").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn cells_and_domains() {
    let bbs = TestBbs::start().await;
    let c = &bbs.client;
    let presence = diego_model::CellPresence {
        cell_id: "cell-a".into(),
        rep_url: "http://127.0.0.1:1801".into(),
        capacity: diego_model::CellCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 4,
        },
        ..Default::default()
    };
    c.register_cell(&diego_model::RegisterCellRequest {
        cell_presence: presence.clone(),
        ttl_seconds: 30,
    })
    .await
    .unwrap();
    let cells = c.cells().await.unwrap();
    assert_eq!(cells[0].cell_presence, presence);
    assert!(cells[0].expires_at > 0);
    c.remove_cell("cell-a").await.unwrap();
    assert!(c.cells().await.unwrap().is_empty());

    c.upsert_domain(&diego_model::UpsertDomainRequest {
        domain: "cf".into(),
        ttl_seconds: 60,
    })
    .await
    .unwrap();
    let domains = c.domains().await.unwrap();
    assert_eq!(domains[0].domain, "cf");
}

async fn next(s: &mut diego_client::EventStream) -> diego_client::SseEvent {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .unwrap()
}

#[tokio::test]
async fn event_streams_decode_and_resume() {
    let bbs = TestBbs::start().await;
    let c = &bbs.client;
    let mut tasks = c.events_tasks(Some(0)).await.unwrap();
    c.desire_task(&task("e1")).await.unwrap();
    c.desire_lrp(&lrp("e-web", 1)).await.unwrap();
    c.start_task("e1", "cell-a").await.unwrap();

    let created = next(&mut tasks).await;
    assert_eq!(created.event, "task_created");
    assert!(matches!(created.decode().unwrap(), Event::TaskCreated { task } if task.task_guid == "e1"));
    let changed = next(&mut tasks).await;
    assert_eq!(
        changed.event, "task_changed",
        "LRP events stay off the task stream"
    );
    let created_id = created.id.unwrap();
    assert!(changed.id.unwrap() > created_id);

    // Resuming after the first event replays exactly the rest.
    let mut resumed = c.events_tasks(Some(created_id)).await.unwrap();
    assert_eq!(next(&mut resumed).await, changed);

    let mut lrps = c.events_lrps(Some(0)).await.unwrap();
    let first = next(&mut lrps).await;
    assert!(
        matches!(first.decode().unwrap(), Event::DesiredLrpCreated { .. }),
        "{first:?}"
    );
}
