//! The log server, the shipper and the client over real HTTP on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diego_logs::server::{self, RunningServer, ServerConfig};
use diego_logs::{
    FollowEvent, LogLine, LogQuery, LogSink, LogStream, LogStreamer, LogsClient, Shipper, ShipperConfig,
};
use diego_testkit::{eventually, free_port};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn start(addr: SocketAddr, dir: Option<&Path>, retention: usize) -> (RunningServer, CancellationToken) {
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new(addr);
    config.retention_lines = retention;
    config.data_dir = dir.map(Path::to_path_buf);
    (server::start(config, stop.clone()).await.unwrap(), stop)
}

async fn stop(server: RunningServer, token: CancellationToken) {
    token.cancel();
    server.task.await.unwrap().unwrap();
}

fn shipper(url: &str, lines_per_second: u32) -> (Arc<Shipper>, CancellationToken) {
    let stop = CancellationToken::new();
    let mut config = ShipperConfig::new(url);
    config.lines_per_second = lines_per_second;
    config.retry_interval = Duration::from_millis(100);
    let (s, _task) = Shipper::start(config, stop.clone()).unwrap();
    (s, stop)
}

fn messages(lines: &[LogLine]) -> Vec<String> {
    lines.iter().map(|l| l.message.clone()).collect()
}

async fn recent_until(client: &LogsClient, guid: &str, q: &LogQuery, want: usize) -> Vec<LogLine> {
    eventually(WAIT, || async {
        let lines = client.recent(guid, q).await.map_err(|e| e.to_string())?;
        (lines.len() >= want)
            .then_some(lines.clone())
            .ok_or(format!("{} of {want} lines", lines.len()))
    })
    .await
}

#[tokio::test]
async fn shipped_lines_are_read_filtered_followed_and_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, token) = start(addr, Some(dir.path()), 100).await;
    let (ship, ship_stop) = shipper(&server.url, 0);
    let web0 = LogStreamer::new(ship.clone(), "app", "APP/PROC/WEB", Some(0));
    let web1 = LogStreamer::new(ship.clone(), "app", "APP/PROC/WEB", Some(1));
    let task = LogStreamer::new(ship.clone(), "task-guid", "APP/TASK/x", None);
    for i in 0..5 {
        web0.stdout(&format!("zero {i}"));
        web1.stderr(&format!("one {i}"));
    }
    web0.with_source("CELL").stdout("container created");
    task.stdout("task output");

    let client = LogsClient::new(&server.url).unwrap();
    let all = recent_until(&client, "app", &LogQuery::default(), 11).await;
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|l| l.log_guid == "app"));
    let task_lines = recent_until(&client, "task-guid", &LogQuery::default(), 1).await;
    assert_eq!(task_lines[0].instance_index, None);
    assert_eq!(task_lines[0].message, "task output");

    let one = client
        .recent(
            "app",
            &LogQuery {
                index: Some(1),
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(messages(&one), ["one 3", "one 4"]);
    assert!(one
        .iter()
        .all(|l| l.stream == LogStream::Stderr && l.source_type == "APP/PROC/WEB"));
    let cell = client
        .recent(
            "app",
            &LogQuery {
                source: Some("CELL".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(messages(&cell), ["container created"]);
    let app = client
        .recent(
            "app",
            &LogQuery {
                source: Some("app".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(app.len(), 10, "APP matches APP/PROC/WEB");
    let since = all[6].timestamp_ns;
    let late = client
        .recent(
            "app",
            &LogQuery {
                since_ns: Some(since),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(late.iter().all(|l| l.timestamp_ns >= since) && !late.is_empty());

    // Follow: two recent lines first, then new ones, filtered.
    let mut follow = client
        .follow(
            "app",
            &LogQuery {
                index: Some(0),
                recent: Some(2),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let Some(FollowEvent::Lines(first)) = follow.next().await.unwrap() else {
        panic!("no recent lines")
    };
    assert_eq!(messages(&first), ["zero 4", "container created"]);
    web1.stdout("filtered out");
    web0.stdout("new line");
    let next = tokio::time::timeout(WAIT, follow.next()).await.unwrap().unwrap();
    assert_eq!(
        next,
        Some(FollowEvent::Lines(vec![recent_until(
            &client,
            "app",
            &LogQuery::default(),
            13
        )
        .await[12]
            .clone()]))
    );
    let resume_from = follow.last_event_id().unwrap();
    drop(follow);

    // A follower resuming after a line gets what came after it.
    web0.stdout("after the reconnect");
    let mut resumed = client
        .follow("app", &LogQuery::default(), Some(resume_from))
        .await
        .unwrap();
    let Some(FollowEvent::Lines(after)) = tokio::time::timeout(WAIT, resumed.next()).await.unwrap().unwrap()
    else {
        panic!("nothing after the resume point")
    };
    assert_eq!(messages(&after), ["after the reconnect"]);
    drop(resumed);

    ship_stop.cancel();
    let before = client.recent("app", &LogQuery::default()).await.unwrap();
    stop(server, token).await;
    assert!(
        client.recent("app", &LogQuery::default()).await.is_err(),
        "the server is down"
    );

    let (server, token) = start(addr, Some(dir.path()), 100).await;
    assert_eq!(server.loaded.unwrap().records, 15, "14 app lines and a task line");
    let after = client.recent("app", &LogQuery::default()).await.unwrap();
    assert_eq!(after, before, "the same history after a restart");
    stop(server, token).await;
}

#[tokio::test]
async fn lines_written_while_the_server_is_away_are_dropped_and_reported() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let url = format!("http://{addr}");
    let (ship, _stop) = shipper(&url, 0);
    let app = LogStreamer::new(ship.clone(), "app", "APP/PROC/WEB", Some(0));
    let other = LogStreamer::new(ship.clone(), "other", "APP/PROC/WEB", Some(0));
    app.stdout("lost 1");
    // The first send fails; everything after it is dropped at once.
    eventually(WAIT, || async {
        (ship.counts().unreachable >= 1)
            .then_some(())
            .ok_or("not failed yet")
    })
    .await;
    for i in 2..=5 {
        app.stdout(&format!("lost {i}"));
    }
    other.stdout("lost too");
    let counts = ship.counts();
    assert_eq!(counts.unreachable, 6, "{counts:?}");

    let (server, token) = start(addr, None, 100).await;
    let client = LogsClient::new(&url).unwrap();
    let notice = recent_until(&client, "app", &LogQuery::default(), 1).await;
    assert_eq!(
        messages(&notice),
        ["5 log lines dropped while the log server was unreachable"]
    );
    assert_eq!(
        (notice[0].source_type.as_str(), notice[0].instance_index),
        ("CELL", None)
    );
    let other_notice = recent_until(&client, "other", &LogQuery::default(), 1).await;
    assert_eq!(
        messages(&other_notice),
        ["1 log line dropped while the log server was unreachable"]
    );
    app.stdout("back");
    let lines = recent_until(&client, "app", &LogQuery::default(), 2).await;
    assert_eq!(lines[1].message, "back");
    stop(server, token).await;
}

#[tokio::test]
async fn the_rate_limit_drops_excess_lines_with_a_notice() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, token) = start(addr, None, 1000).await;
    let (ship, _stop) = shipper(&server.url, 10);
    let app = LogStreamer::new(ship.clone(), "app", "APP/PROC/WEB", Some(0));
    for i in 0..50 {
        app.stdout(&format!("line {i}"));
    }
    let client = LogsClient::new(&server.url).unwrap();
    let lines = recent_until(&client, "app", &LogQuery::default(), 11).await;
    let app_lines: Vec<_> = lines.iter().filter(|l| l.source_type == "APP/PROC/WEB").collect();
    let notices: Vec<_> = lines.iter().filter(|l| l.source_type == "CELL").collect();
    // 50 lines in well under a second: 10 pass (a second window could open on a slow machine).
    assert!(
        app_lines.len() >= 10 && app_lines.len() < 50,
        "{} passed",
        app_lines.len()
    );
    assert_eq!(notices.len(), 1, "{lines:?}");
    let dropped = 50 - app_lines.len();
    assert_eq!(
        notices[0].message,
        format!("{dropped} log lines dropped: over the rate limit of 10 lines per second")
    );
    assert_eq!(ship.counts().rate_limited, dropped as u64);
    stop(server, token).await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem_and_metrics_count() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, token) = start(addr, None, 2).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/lines", server.url))
        .body("{\"log_guid\":\"g\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "InvalidRequest");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("batch line 1: missing field"),
        "{body}"
    );

    let client = LogsClient::new(&server.url).unwrap();
    assert!(client.recent("g", &LogQuery::default()).await.unwrap().is_empty());
    let resp = http
        .get(format!("{}/v1/logs/g?index=minus-one", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("index"), "{body}");
    let resp = http
        .get(format!("{}/v1/logs/g?lmit=3", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "unknown parameters are refused");

    let (ship, _stop) = shipper(&server.url, 0);
    for i in 0..5 {
        ship.emit(LogLine::now(
            "g",
            "APP",
            Some(0),
            LogStream::Stdout,
            format!("m{i}"),
        ));
    }
    recent_until(&client, "g", &LogQuery::default(), 2).await;
    let text = eventually(WAIT, || async {
        let text = http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.lines()
            .any(|l| l == "logs_lines_in_total 5")
            .then_some(text.clone())
            .ok_or(text)
    })
    .await;
    for want in [
        "logs_lines_evicted_total 3",
        "logs_log_guids 1",
        "logs_lines_held 2",
        "logs_followers 0",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
    }
    let health: serde_json::Value = http
        .get(format!("{}/health", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    stop(server, token).await;
}
