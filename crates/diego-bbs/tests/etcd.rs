//! Two BBS processes' worth of BBS on one etcd: each sees the other's writes, in its reads
//! and through its event stream (the store's head watch follows the other's commits).

mod common;

use std::time::Duration;

use diego_bbs::StoreConfig;
use diego_model::DesireTaskRequest;
use diego_store::etcd::EtcdOptions;
use diego_testkit::{Etcd, TestBbs};
use futures_util::StreamExt as _;

const WAIT: Duration = Duration::from_secs(10);

fn task(guid: &str) -> DesireTaskRequest {
    serde_json::from_value(common::task_request(guid)).expect("the common task request")
}

async fn task_event(stream: &mut diego_client::EventStream, guid: &str) -> diego_client::SseEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = stream.next().await.expect("stream open").unwrap();
            if event.data.contains(guid) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event about {guid} within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bbs_on_one_etcd_see_each_others_writes_through_the_feed() {
    let Some(etcd) = Etcd::start("two_bbs_on_one_etcd_see_each_others_writes_through_the_feed").await else {
        return;
    };
    let options = EtcdOptions::from_url(&etcd.url()).unwrap();
    let a = TestBbs::start_with(TestBbs::config(StoreConfig::Etcd(options.clone())), None).await;
    let b = TestBbs::start_with(TestBbs::config(StoreConfig::Etcd(options)), None).await;
    let mut on_b = b.client.events_tasks(None).await.unwrap();
    let mut on_a = a.client.events_tasks(None).await.unwrap();

    a.client.desire_task(&task("from-a")).await.unwrap();
    let event = task_event(&mut on_b, "from-a").await;
    assert_eq!(event.event, "task_created", "{event:?}");
    assert_eq!(b.client.task("from-a").await.unwrap().task_guid, "from-a");

    b.client.desire_task(&task("from-b")).await.unwrap();
    task_event(&mut on_a, "from-b").await;
    let on_a_list: Vec<String> = a
        .client
        .tasks(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_guid)
        .collect();
    assert_eq!(on_a_list, ["from-a", "from-b"]);
}
