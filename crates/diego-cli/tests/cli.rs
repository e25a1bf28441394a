//! The real `diego` binary against a real BBS on loopback: output, JSON and exit codes.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use diego_client::BbsClient;
use diego_model::api::CompleteTaskRequest;
use diego_model::api::StartActualLrpRequest;
use diego_model::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, ActualLrpState, CellCapacity, CellPresence,
    DesireTaskRequest, DesiredLrp, RegisterCellRequest, Task, TaskState, UpsertDomainRequest,
};
use diego_testkit::{eventually, free_port, TestBbs};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_diego");
const WAIT: Duration = Duration::from_secs(15);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn diego_at(url: &str, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("--bbs")
        .arg(url)
        .args(args)
        .env_remove("DIEGO_BBS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running diego");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn diego(bbs: &TestBbs, args: &[&str]) -> Out {
    diego_at(&bbs.url, args).await
}

/// Runs and insists on exit 0.
async fn ok(bbs: &TestBbs, args: &[&str]) -> Out {
    let out = diego(bbs, args).await;
    assert_eq!(out.code, 0, "diego {args:?} failed: {out:?}");
    out
}

/// Reads `child`'s stdout until a line satisfies `pred`, within `WAIT`.
async fn wait_for_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    mut pred: impl FnMut(&str) -> bool,
) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("reading stdout") {
            if pred(&line) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("stdout ended before the expected line; saw:\n{}", seen.join("\n")),
        Err(_) => panic!("no expected line within {WAIT:?}; saw:\n{}", seen.join("\n")),
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning diego")
}

/// Sends SIGTERM and insists on a clean exit (status 0) within `WAIT`.
async fn stop_cleanly(mut child: Child) {
    let pid = child.id().expect("child still running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("running kill");
    assert!(status.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "{status:?}; stderr:\n{stderr}");
}

fn task_guid_line<'a>(stdout: &'a str, guid: &str) -> Option<&'a str> {
    stdout.lines().find(|l| l.split_whitespace().next() == Some(guid))
}

// ---- tasks ----

#[tokio::test]
async fn submitted_task_is_pending() {
    let bbs = TestBbs::start().await;
    let out = ok(
        &bbs,
        &[
            "task",
            "submit",
            "t1",
            "--memory",
            "64",
            "--env",
            "A=1",
            "--",
            "echo",
            "hello world",
        ],
    )
    .await;
    assert!(out.stdout.contains("submitted task t1"), "{out:?}");

    let out = ok(&bbs, &["task", "get", "t1"]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("state:") && l.ends_with("PENDING")),
        "{out:?}"
    );
    assert!(out.stdout.contains("echo 'hello world'"), "{out:?}");

    let out = ok(&bbs, &["task", "list"]).await;
    let row = task_guid_line(&out.stdout, "t1").unwrap_or_else(|| panic!("no t1 row: {out:?}"));
    assert!(row.contains("default") && row.contains("PENDING"), "{row}");

    let task = bbs.client.task("t1").await.unwrap();
    assert_eq!(task.task_definition.memory_mb, 64);
    assert_eq!(task.task_definition.rootfs, "preloaded:busybox");
}

#[tokio::test]
async fn missing_task_prints_the_server_error() {
    let bbs = TestBbs::start().await;
    let out = diego(&bbs, &["task", "get", "missing"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert!(
        out.stderr.contains("ResourceNotFound") && out.stderr.contains("missing"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test]
async fn invalid_guid_prints_each_field_error() {
    let bbs = TestBbs::start().await;
    let out = diego(
        &bbs,
        &["task", "submit", "bad guid!", "--memory", "-5", "--", "true"],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("InvalidRecord"), "{out:?}");
    let fields: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert!(fields.iter().any(|l| l.starts_with("task_guid:")), "{out:?}");
    assert!(
        fields.iter().any(|l| l.starts_with("task_definition.memory_mb:")),
        "{out:?}"
    );
}

#[tokio::test]
async fn json_output_is_the_api_object() {
    let bbs = TestBbs::start().await;
    let out = ok(&bbs, &["-o", "json", "task", "submit", "j1", "--", "true"]).await;
    let task: Task = serde_json::from_str(&out.stdout).expect("submit -o json is a Task");
    assert_eq!((task.task_guid.as_str(), task.state), ("j1", TaskState::Pending));

    let out = ok(&bbs, &["task", "get", "j1", "--output", "json"]).await;
    let got: Task = serde_json::from_str(&out.stdout).expect("get -o json is a Task");
    assert_eq!(got, bbs.client.task("j1").await.unwrap());

    let out = ok(&bbs, &["-o", "json", "task", "list", "--state", "pending"]).await;
    let tasks: Vec<Task> = serde_json::from_str(&out.stdout).expect("list -o json is [Task]");
    assert_eq!(tasks.len(), 1);
}

#[tokio::test]
async fn task_from_file_with_flag_overrides() {
    let bbs = TestBbs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.json");
    let req = serde_json::json!({
        "task_guid": "from-file",
        "domain": "file-domain",
        "task_definition": {"rootfs": "preloaded:busybox", "action": {"run": {"path": "true"}}}
    });
    std::fs::write(&path, req.to_string()).unwrap();
    ok(
        &bbs,
        &[
            "task",
            "submit",
            "-f",
            path.to_str().unwrap(),
            "--domain",
            "flag-domain",
        ],
    )
    .await;
    let task = bbs.client.task("from-file").await.unwrap();
    assert_eq!(task.domain, "flag-domain");
}

#[tokio::test]
async fn delete_needs_a_completed_task() {
    let bbs = TestBbs::start().await;
    ok(&bbs, &["task", "submit", "d1", "--", "true"]).await;
    let out = diego(&bbs, &["task", "delete", "d1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("only COMPLETED tasks can be deleted"),
        "{out:?}"
    );

    assert!(bbs.client.start_task("d1", "cell-a").await.unwrap());
    let done = CompleteTaskRequest {
        cell_id: "cell-a".into(),
        result: "ok".into(),
        ..Default::default()
    };
    bbs.client.complete_task("d1", &done).await.unwrap();
    let out = ok(&bbs, &["task", "get", "d1"]).await;
    assert!(out.stdout.contains("COMPLETED"), "{out:?}");

    let out = ok(&bbs, &["task", "delete", "d1"]).await;
    assert!(out.stdout.contains("deleted task d1"), "{out:?}");
    assert!(bbs.client.task("d1").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn cancel_completes_the_task_as_failed() {
    let bbs = TestBbs::start().await;
    ok(&bbs, &["task", "submit", "c1", "--", "sleep", "100"]).await;
    ok(&bbs, &["task", "cancel", "c1"]).await;
    let task = bbs.client.task("c1").await.unwrap();
    assert_eq!(task.state, TaskState::Completed);
    assert!(task.failed);
    let out = ok(&bbs, &["task", "list"]).await;
    assert!(
        task_guid_line(&out.stdout, "c1")
            .unwrap()
            .contains("failed: task was cancelled"),
        "{out:?}"
    );
}

// ---- LRPs ----

async fn actuals(bbs: &TestBbs, guid: &str) -> anyhow::Result<Vec<ActualLrp>> {
    let out = diego(bbs, &["-o", "json", "actual", "list", "--process-guid", guid]).await;
    ensure!(out.code == 0, "actual list failed: {out:?}");
    let mut v: Vec<ActualLrp> = serde_json::from_str(&out.stdout).context("parsing actual list")?;
    v.sort_by_key(|a| a.index);
    Ok(v)
}

#[tokio::test]
async fn lrp_create_scale_get_update_delete() {
    let bbs = TestBbs::start().await;
    let out = ok(
        &bbs,
        &[
            "lrp",
            "create",
            "web",
            "--instances",
            "3",
            "--port",
            "8080",
            "--route",
            "web.example.com",
            "--",
            "sleep",
            "3600",
        ],
    )
    .await;
    assert!(out.stdout.contains("created LRP web"), "{out:?}");

    let b = &bbs;
    eventually(WAIT, move || async move {
        let out = diego(b, &["actual", "list", "--process-guid", "web"]).await;
        ensure!(out.code == 0, "{out:?}");
        let rows: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect();
        let indices: Vec<&str> = rows.iter().map(|r| r[1]).collect();
        ensure!(indices == ["0", "1", "2"], "indices {indices:?} in {out:?}");
        ensure!(
            rows.iter().all(|r| r[0] == "web" && r[2] == "UNCLAIMED"),
            "{out:?}"
        );
        Ok(())
    })
    .await;

    let desired = bbs.client.desired_lrp("web").await.unwrap();
    assert_eq!(
        serde_json::to_value(&desired.routes).unwrap(),
        serde_json::json!({"cf-router": [{"hostnames": ["web.example.com"], "port": 8080}]})
    );

    let out = ok(&bbs, &["lrp", "scale", "web", "5"]).await;
    assert!(out.stdout.contains("scaled web to 5 instances"), "{out:?}");
    eventually(WAIT, move || async move {
        let v = actuals(b, "web").await?;
        let idx: Vec<i32> = v.iter().map(|a| a.index).collect();
        ensure!(idx == [0, 1, 2, 3, 4], "indices {idx:?}");
        ensure!(v.iter().all(|a| a.state == ActualLrpState::Unclaimed));
        Ok(())
    })
    .await;

    let out = ok(&bbs, &["lrp", "get", "web"]).await;
    assert!(out.stdout.contains("0 running of 5 desired"), "{out:?}");
    assert!(out.stdout.contains("web.example.com"), "{out:?}");
    let table: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("INDEX"))
        .collect();
    assert_eq!(table.len(), 6, "{out:?}");
    assert!(
        table[5].starts_with("4 ") && table[5].contains("UNCLAIMED"),
        "{out:?}"
    );

    let out = ok(&bbs, &["-o", "json", "lrp", "get", "web"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let d: DesiredLrp = serde_json::from_value(v["desired_lrp"].clone()).unwrap();
    assert_eq!(d.instances, 5);
    assert_eq!(v["actual_lrps"].as_array().unwrap().len(), 5);

    let out = ok(&bbs, &["lrp", "list"]).await;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(row.contains("0/5"), "{row}");

    ok(
        &bbs,
        &[
            "lrp",
            "update",
            "web",
            "--instances",
            "2",
            "--route",
            "new.example.com",
            "--annotation",
            "v2",
        ],
    )
    .await;
    let d = bbs.client.desired_lrp("web").await.unwrap();
    assert_eq!((d.instances, d.annotation.as_str()), (2, "v2"));
    assert_eq!(
        d.routes["cf-router"][0]["hostnames"],
        serde_json::json!(["new.example.com"])
    );

    let out = diego(&bbs, &["lrp", "update", "web"]).await;
    assert_eq!(out.code, 2, "nothing to update is a usage error: {out:?}");

    ok(&bbs, &["lrp", "delete", "web"]).await;
    assert!(bbs.client.desired_lrp("web").await.unwrap_err().is_not_found());
    let out = diego(&bbs, &["lrp", "get", "web"]).await;
    assert_eq!(out.code, 1, "{out:?}");
}

#[tokio::test]
async fn lrp_crash_policy_is_set_shown_and_changed() {
    let bbs = TestBbs::start().await;
    let out = diego(
        &bbs,
        &["lrp", "create", "bad", "--max-backoff-ms", "100", "--", "true"],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("crash_policy.max_backoff_ms"),
        "the refusal names the field: {out:?}"
    );
    assert!(bbs.client.desired_lrp("bad").await.unwrap_err().is_not_found());

    ok(
        &bbs,
        &[
            "lrp",
            "create",
            "strict",
            "--immediate-restarts",
            "0",
            "--max-backoff-ms",
            "60000",
            "--max-restarts",
            "2",
            "--",
            "false",
        ],
    )
    .await;
    // A crash, as a cell reports it: with no immediate restarts #1 waits 30 s.
    let key = ActualLrpInstanceKey {
        instance_guid: "ig-1".into(),
        cell_id: "cell-a".into(),
    };
    let start = StartActualLrpRequest {
        instance_key: key.clone(),
        net_info: ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    bbs.client.start_actual_lrp("strict", 0, &start).await.unwrap();
    let a = bbs
        .client
        .crash_actual_lrp("strict", 0, &key, "exit 1")
        .await
        .unwrap();
    assert_eq!((a.state, a.crash_count), (ActualLrpState::Crashed, 1));
    let out = ok(&bbs, &["lrp", "get", "strict"]).await;
    assert!(
        out.stdout.contains(
            "0 immediate restarts, then 30s backoff doubling to 1m0s; gives up at crash #2 (crash_policy)"
        ),
        "{out:?}"
    );
    let header = out.stdout.lines().find(|l| l.starts_with("INDEX")).unwrap();
    assert!(
        header.contains("NEXT_RESTART") && header.contains("PRESENCE"),
        "{out:?}"
    );
    let row = out.stdout.lines().find(|l| l.starts_with("0 ")).unwrap();
    assert!(
        row.contains("CRASHED") && row.contains(" in "),
        "restart due in ~30s: {row}"
    );

    // An update changes only the parts of the policy it names.
    let out = ok(&bbs, &["lrp", "update", "strict", "--max-restarts", "10"]).await;
    assert!(out.stdout.contains("updated LRP strict"), "{out:?}");
    let d = bbs.client.desired_lrp("strict").await.unwrap();
    let p = d.crash_policy.unwrap();
    assert_eq!(
        (p.immediate_restarts, p.max_backoff_ms, p.max_restarts),
        (Some(0), Some(60_000), Some(10)),
        "the flag given changed only its part"
    );
    let out = diego(&bbs, &["lrp", "update", "strict", "--max-restarts", "0"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("crash_policy.max_restarts"), "{out:?}");
}

#[tokio::test]
async fn invalid_instances_are_explained() {
    let bbs = TestBbs::start().await;
    let out = diego(&bbs, &["lrp", "create", "neg", "--instances", "-1", "--", "true"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("instances:")),
        "{out:?}"
    );
}

// ---- cells, domains ----

#[tokio::test]
async fn cells_and_domains_are_listed() {
    let bbs = TestBbs::start().await;
    let out = ok(&bbs, &["cells"]).await;
    assert_eq!(out.stdout.trim(), "no cells");

    let presence = CellPresence {
        cell_id: "cell-a".into(),
        rep_url: "http://127.0.0.1:1801".into(),
        zone: "z1".into(),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 2048,
            containers: 10,
        },
        ..Default::default()
    };
    bbs.client
        .register_cell(&RegisterCellRequest {
            cell_presence: presence,
            ttl_seconds: 30,
        })
        .await
        .unwrap();
    bbs.client
        .upsert_domain(&UpsertDomainRequest {
            domain: "cf-apps".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap();

    let out = ok(&bbs, &["cells"]).await;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cell-a "))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        row.contains("http://127.0.0.1:1801") && row.contains("1024") && row.contains("in "),
        "{row}"
    );
    let out = ok(&bbs, &["-o", "json", "cells"]).await;
    let cells: Vec<diego_client::CellPresenceWithExpiry> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cells[0].cell_presence.cell_id, "cell-a");

    let out = ok(&bbs, &["domains"]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("cf-apps ") && l.ends_with("never")),
        "{out:?}"
    );
    let out = ok(&bbs, &["-o", "json", "domains"]).await;
    let domains: Vec<diego_model::Domain> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(domains[0].domain, "cf-apps");
}

// ---- events ----

#[tokio::test]
async fn events_are_printed_live() {
    let bbs = TestBbs::start().await;
    // --since 0 replays from the start, so the test does not race the subscription.
    let mut child = spawn(&["--bbs", &bbs.url, "events", "--since", "0"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let req = task_request("ev1");
    bbs.client.desire_task(&req).await.unwrap();
    let line = wait_for_line(&mut lines, |l| l.contains("task_created")).await;
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words[0].parse::<u64>().is_ok(),
        "line starts with the event id: {line}"
    );
    assert_eq!(&words[1..4], ["task_created", "ev1", "PENDING"], "{line}");

    ok(
        &bbs,
        &["lrp", "create", "ev-web", "--instances", "1", "--", "sleep", "10"],
    )
    .await;
    wait_for_line(&mut lines, |l| l.contains("desired_lrp_created ev-web")).await;
    wait_for_line(&mut lines, |l| {
        l.contains("actual_lrp_created ev-web/0 UNCLAIMED")
    })
    .await;

    bbs.client.start_task("ev1", "cell-a").await.unwrap();
    wait_for_line(&mut lines, |l| {
        l.contains("task_changed ev1 PENDING -> RUNNING cell-a")
    })
    .await;

    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn events_json_is_one_object_per_line() {
    let bbs = TestBbs::start().await;
    let mut child = spawn(&[
        "--bbs", &bbs.url, "-o", "json", "events", "--tasks", "--since", "0",
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    ok(&bbs, &["task", "submit", "evj", "--", "true"]).await;
    let line = wait_for_line(&mut lines, |l| l.contains("evj")).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "task_created");
    assert!(v["id"].is_u64(), "{line}");
    assert_eq!(v["data"]["task"]["task_guid"], "evj");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn events_resume_after_the_bbs_restarts() {
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = TestBbs::config(diego_bbs::StoreConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        });
        c.listen = listen;
        c
    };
    let bbs = TestBbs::start_with(config(), None).await;
    let mut child = spawn(&["--bbs", &bbs.url, "events", "--tasks"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The stream starts "from now": keep submitting until the follower prints one, then
    // read up to the last one submitted.
    let mut n = 0;
    let mut seen = String::new();
    while seen.is_empty() {
        n += 1;
        assert!(n < 30, "diego events printed nothing");
        bbs.client
            .desire_task(&task_request(&format!("before-{n}")))
            .await
            .unwrap();
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await {
            seen = line.unwrap().expect("diego events exited");
        }
    }
    let last = format!("task_created before-{n} ");
    if !seen.contains(&last) {
        wait_for_line(&mut lines, |l| l.contains(&last)).await;
    }

    tokio::time::timeout(WAIT, bbs.stop())
        .await
        .expect("the BBS should stop while an event stream is open (its streams must end on shutdown)");
    let bbs = TestBbs::start_with(config(), None).await;
    bbs.client.desire_task(&task_request("after")).await.unwrap();
    // Nothing from before the restart is printed again: the follower resumed after its last id.
    let line = wait_for_line(&mut lines, |l| l.contains("task_created")).await;
    assert!(line.contains("task_created after "), "{line}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// A one-route SSE server: the i-th connection gets `bodies[i]` and is then closed (the
/// last one is held open). Returns its URL and the `Last-Event-ID` of each connection.
async fn fake_event_server(
    bodies: Vec<String>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let n = bodies.len();
        for (i, body) in bodies.into_iter().enumerate() {
            let (sock, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(sock);
            let mut last_id = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("last-event-id") {
                        last_id = Some(v.trim().to_string());
                    }
                }
            }
            tx.send(last_id).unwrap();
            let mut sock = reader.into_inner();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(body.as_bytes()).await.unwrap();
            sock.flush().await.unwrap();
            if i + 1 == n {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    });
    (url, rx)
}

fn sse_frame(id: Option<u64>, event: &diego_model::Event) -> String {
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    format!(
        "{id}event: {}\ndata: {}\n\n",
        event.name(),
        serde_json::to_string(event).unwrap()
    )
}

fn created(guid: &str) -> diego_model::Event {
    diego_model::Event::TaskCreated {
        task: Box::new(Task::desired(task_request(guid), 1, "e".into())),
    }
}

#[tokio::test]
async fn events_resubscribe_with_last_event_id() {
    let resync = diego_model::Event::Resync {
        reason: "history pruned".into(),
    };
    let (url, mut last_ids) = fake_event_server(vec![
        format!(
            ": keep-alive\n\n{}{}",
            sse_frame(Some(1), &created("a")),
            sse_frame(Some(2), &created("b"))
        ),
        format!(
            "{}{}",
            sse_frame(Some(3), &resync),
            sse_frame(Some(4), &created("c"))
        ),
    ])
    .await;
    let mut child = spawn(&["--bbs", &url, "events", "--tasks"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(wait_for_line(&mut lines, |_| true).await);
    }
    assert_eq!(got[0], "1 task_created a PENDING domain=d");
    assert_eq!(got[1], "2 task_created b PENDING domain=d");
    assert!(
        got[2].starts_with("3 resync: EVENTS WERE MISSED (history pruned)"),
        "{got:?}"
    );
    assert_eq!(got[3], "4 task_created c PENDING domain=d");
    assert_eq!(last_ids.recv().await.unwrap(), None);
    assert_eq!(last_ids.recv().await.unwrap().as_deref(), Some("2"));
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

fn task_request(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "d".into(),
        task_definition: diego_model::TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            action: Some(diego_model::Action::run(diego_model::RunAction {
                path: "true".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
    }
}

// ---- no BBS ----

#[tokio::test]
async fn unreachable_bbs_suggests_diego_dev() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = diego_at(&url, &["task", "list"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&url), "{out:?}");
    assert!(out.stderr.contains("diego dev"), "{out:?}");

    let out = diego_at(&url, &["events"]).await;
    assert_eq!(out.code, 1, "events fails fast when nothing listens: {out:?}");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let url = "http://127.0.0.1:1";
    let out = diego_at(url, &["task", "submit", "no-command"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("nothing to run"), "{out:?}");
    let out = diego_at(url, &["task", "frobnicate"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = diego_at(url, &["lrp", "create", "x", "--route", "h", "--", "true"]).await;
    assert_eq!(out.code, 2, "{out:?}");
}

/// A small run of the BBS benchmark: its last stdout line is one JSON object with every
/// figure the issue names, each a real (positive) measurement. No timing is asserted.
#[tokio::test]
async fn bench_bbs_prints_its_figures_as_json() {
    let args = [
        "bench",
        "bbs",
        "--json",
        "--clients",
        "4",
        "--task-seconds",
        "0.3",
        "--lrps",
        "20",
        "--instances-per-lrp",
        "5",
        "--claim-start-instances",
        "20",
    ];
    let out = diego_at("http://127.0.0.1:1", &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let last = out.stdout.lines().last().expect("some output");
    let v: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "task_transitions_per_sec",
        "desired_lrp_creates_per_sec",
        "actual_lrp_claim_start_per_sec",
        "list_100k_actual_lrps_ms",
        "rss_mb_at_100k_actual_lrps",
        "fsync_per_sec",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["actual_lrps_listed"], 100, "{v}");
}

// ---- server roles ----

#[tokio::test]
async fn bbs_role_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = spawn(&[
        "bbs",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    let client = BbsClient::new(format!("http://{listen}"));
    eventually(WAIT, || client.ping()).await;
    stop_cleanly(child).await;
}

/// Reads `diego dev`'s banner and returns the BBS URL it prints.
async fn dev_bbs_url(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    let line = wait_for_line(lines, |l| l.trim_start().starts_with("bbs:")).await;
    line.split_whitespace().nth(1).expect("bbs: URL").to_string()
}

#[tokio::test]
async fn dev_restart_resumes_state() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let args = [
        "dev",
        "--data-dir",
        data_dir.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--logs-listen",
        "127.0.0.1:0",
    ];

    let mut child = spawn(&args);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = dev_bbs_url(&mut lines).await;
    let banner = wait_for_line(&mut lines, |l| l.contains("data dir:")).await;
    assert!(banner.contains(&data_dir), "{banner}");
    let out = diego_at(&url, &["task", "submit", "survivor", "--", "true"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // dev's cell runs it: wait for the end state, so the restart has a settled state to keep.
    eventually(WAIT, || async {
        let out = diego_at(&url, &["task", "get", "survivor"]).await;
        out.stdout.contains("COMPLETED").then_some(()).ok_or(out.stdout)
    })
    .await;
    stop_cleanly(child).await;

    let mut child = spawn(&args);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = dev_bbs_url(&mut lines).await;
    let out = diego_at(&url, &["task", "get", "survivor"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("COMPLETED"), "{out:?}");
    stop_cleanly(child).await;
}
