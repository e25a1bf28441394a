//! Logs end to end on real runc containers (root; needs runc and busybox-static): an LRP's
//! lines from every instance, with the cell's and the health checks' lines, read with `diego
//! logs` after the LRP is gone and followed while it runs; and a log server stopped and
//! started again under an app that writes all along, which is never held up and whose lost
//! lines are reported.

use std::process::Stdio;
use std::time::Duration;

use diego_model::{Action, Check, CheckDefinition, DesiredLrp, RunAction};
use diego_testkit::{eventually, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;
use common::cluster::{no_instances, start_dev, Cluster, Proc};
use common::{diego, RuncLeftovers, BIN};

const WAIT: Duration = Duration::from_secs(90);

fn lrp(guid: &str, instances: i32, script: &str, checks: Option<CheckDefinition>) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 60_000,
        check_definition: checks,
        action: Some(Action::run(RunAction {
            path: "sh".into(),
            args: vec!["-c".into(), script.into()],
            log_source: "APP/PROC/WEB".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `diego --logs URL logs ARGS` to completion: (success, stdout, stderr).
async fn logs(bbs: &str, logs_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--logs")
        .arg(logs_url)
        .arg("logs")
        .args(args)
        .env("DIEGO_BBS_URL", bbs)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lrps_lines_outlive_it_and_can_be_followed() {
    if !common::runc_usable("an_lrps_lines_outlive_it_and_can_be_followed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = RuncLeftovers::for_depot(&dir.path().join("dev/cell-0/depot"));
    let logs_url = format!("http://127.0.0.1:{}", free_port());
    let listen = logs_url.trim_start_matches("http://").to_string();
    let (_dev, client) = start_dev(dir.path(), &["--backend", "runc", "--logs-listen", &listen], 1).await;
    let bbs = client.base_url().to_string();

    let script = "httpd -p 8080; i=0; while true; do echo \"line $i from instance $INSTANCE_INDEX\"; i=$((i+1)); sleep 0.2; done";
    let checks = CheckDefinition {
        checks: vec![Check::tcp(8080)],
        readiness_checks: vec![Check::tcp(8080)],
        ..Default::default()
    };
    client
        .desire_lrp(&lrp("talker", 3, script, Some(checks)))
        .await
        .unwrap();

    // Following while it runs: a line arrives.
    let mut follow = Command::new(BIN)
        .args(["--logs", &logs_url, "logs", "talker", "-f", "--source", "APP"])
        .env("DIEGO_BBS_URL", &bbs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.contains(" from instance ") => return l,
                Some(_) => continue,
                None => panic!("diego logs -f ended"),
            }
        }
    })
    .await
    .expect("no line followed");
    assert!(
        first.contains("[APP/PROC/WEB/") && first.contains("] OUT line "),
        "{first}"
    );
    let _ = follow.start_kill();

    // Every instance has written a few lines.
    eventually(WAIT, || async {
        let (ok, out, err) = logs(&bbs, &logs_url, &["talker", "--recent", "--source", "APP"]).await;
        if !ok {
            return Err(err);
        }
        let missing: Vec<u32> = (0..3)
            .filter(|i| !out.contains(&format!("line 2 from instance {i}")))
            .collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("instances {missing:?} not yet"))
    })
    .await;
    client.remove_desired_lrp("talker").await.unwrap();
    no_instances(&client).await;

    let (ok, out, err) = logs(&bbs, &logs_url, &["talker", "--recent"]).await;
    assert!(ok, "{err}");
    for i in 0..3 {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("[APP/PROC/WEB/{i}] OUT line 0 from instance {i}"))),
            "no line of instance {i} after the delete:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("[CELL/{i}] OUT Container became healthy"))),
            "no CELL line of instance {i}:\n{out}"
        );
        assert!(
            out.lines().any(|l| l.contains(&format!(
                "[HEALTH/{i}] OUT Container passed the readiness health check"
            ))),
            "no HEALTH line of instance {i}:\n{out}"
        );
    }
    // Each line as documented: a millisecond UTC time, then the source and stream.
    let sample = out.lines().next().unwrap();
    let (time, rest) = sample.split_once(' ').unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "{sample}"
    );
    assert!(rest.starts_with('['), "{sample}");

    // Filters and JSON output.
    let (ok, out, err) = logs(
        &bbs,
        &logs_url,
        &[
            "talker", "--recent", "--index", "1", "--source", "CELL", "--since", "1h",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        !out.is_empty() && out.lines().all(|l| l.contains("[CELL/1]")),
        "{out}"
    );
    let (ok, out) = diego(
        &bbs,
        &[
            "--logs", &logs_url, "-o", "json", "logs", "talker", "--recent", "--index", "2",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["log_guid"], "talker");
    assert_eq!(first["instance_index"], 2);
    assert!(first["timestamp_ns"].as_u64().unwrap() > 0);
    let (ok, out) = diego(&bbs, &["--logs", &logs_url, "logs", "talker", "--since", "5y"]).await;
    assert!(
        !ok && out.contains("--since") && out.contains("unknown unit"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_server_restart_never_holds_an_app_up_and_its_drops_are_reported() {
    if !common::runc_usable("a_log_server_restart_never_holds_an_app_up_and_its_drops_are_reported") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let logs_port = free_port();
    let logs_url = format!("http://127.0.0.1:{logs_port}");
    let logs_args: Vec<String> = [
        "logs-server",
        "--listen",
        &format!("127.0.0.1:{logs_port}"),
        "--data-dir",
        &root.path().join("logs").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut server = Proc::spawn("logs-server", root.path(), &logs_args, None);
    let http = reqwest::Client::new();
    eventually(WAIT, || async {
        http.get(format!("{logs_url}/health"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let cluster = Cluster::start(root.path(), &[("cell-a", "z1")], &["--logs-url", &logs_url]).await;

    // Lines of 400-odd bytes, 200 a second: a writer held up by its reader would fill a pipe
    // within a second or so. Each line carries the longest gap (in centiseconds) the loop saw
    // between two of its iterations so far.
    let script = "pad=$(printf '%0400d' 0); read u _ < /proc/uptime; prev=${u%.*}${u#*.}; max=0; i=0; \
        while true; do read u _ < /proc/uptime; t=${u%.*}${u#*.}; g=$((t-prev)); \
        if [ $g -gt $max ]; then max=$g; fi; prev=$t; i=$((i+1)); \
        echo \"tick $i max_gap_cs=$max $pad\"; usleep 5000; done";
    cluster
        .client
        .desire_lrp(&lrp("ticker", 1, script, None))
        .await
        .unwrap();
    let ticks = |out: &str| -> Vec<(u64, u64)> {
        out.lines()
            .filter_map(|l| {
                let rest = l.split(" OUT tick ").nth(1)?;
                let mut parts = rest.split_whitespace();
                let i = parts.next()?.parse().ok()?;
                let gap = parts.next()?.strip_prefix("max_gap_cs=")?.parse().ok()?;
                Some((i, gap))
            })
            .collect()
    };
    let before = eventually(WAIT, || async {
        let (ok, out, err) = logs(&cluster.bbs, &logs_url, &["ticker", "--recent"]).await;
        let t = ticks(&out);
        (ok && t.len() >= 100)
            .then_some(t)
            .ok_or(format!("{} ticks {err}", ticks(&out).len()))
    })
    .await;

    // Away for 3 s, then back on the same address and data dir.
    server.child.start_kill().unwrap();
    server.exited(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(server);
    let _server = Proc::spawn("logs-server", root.path(), &logs_args, None);

    let notice = "log lines dropped while the log server was unreachable";
    let (out, after) = eventually(WAIT, || async {
        let (_, out, err) = logs(&cluster.bbs, &logs_url, &["ticker", "--recent"]).await;
        let t = ticks(&out);
        let past_notice = out
            .lines()
            .skip_while(|l| !l.contains(notice))
            .filter(|l| l.contains(" OUT tick "))
            .count();
        (past_notice >= 100)
            .then(|| (out.clone(), t.clone()))
            .ok_or(format!("{past_notice} ticks after a notice {err}"))
    })
    .await;
    let notice_line = out.lines().find(|l| l.contains(notice)).unwrap();
    assert!(notice_line.contains("[CELL] ERR "), "{notice_line}");
    let dropped: u64 = notice_line
        .split(" ERR ")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(dropped > 0, "{notice_line}");

    // The history from before the restart is still there (the journal), and the lines after
    // it take up the count with a gap of about what was dropped.
    let last_before = before.last().unwrap().0;
    assert!(
        after.iter().any(|&(i, _)| i == last_before),
        "tick {last_before}, read before the restart, is gone after it"
    );
    let missing: u64 = after.windows(2).map(|w| w[1].0.saturating_sub(w[0].0 + 1)).sum();
    assert!(
        missing >= dropped,
        "{dropped} reported dropped, {missing} missing in the sequence"
    );
    // The app never waited on the log server: its longest pause stayed well under the outage.
    let (_, max_gap_cs) = *after.last().unwrap();
    assert!(
        max_gap_cs < 200,
        "the app paused {max_gap_cs} cs while the log server was away"
    );

    cluster.client.remove_desired_lrp("ticker").await.unwrap();
    no_instances(&cluster.client).await;
}
