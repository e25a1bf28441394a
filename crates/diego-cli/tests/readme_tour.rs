//! The README's tour, run as written (root, runc and busybox-static): every command of its
//! `sh` blocks, in order, against `diego dev --cells 2` (the set-up the tour's drain step
//! asks for), through a shell where `diego` is the binary under test. Each must exit 0, and
//! the outputs the README promises are checked: the task's result, the page that names its
//! instance, the scale, the drain.
//!
//! `HOST_PORT` and `CELL_ID` are the README's placeholders for what the reader copies from an
//! earlier command's output; the test fills them in the same way, from the BBS. The router
//! listens on a port of the test's own rather than 8080 (tests run side by side), and the
//! tour's `kill -9 $(pgrep -n httpd)` is aimed at an instance of this dev's `web` (the newest
//! httpd on the machine may be another test's).

use std::path::Path;
use std::time::Duration;

use diego_client::ActualLrpQuery;
use diego_model::{ActualLrpState, TaskState};
use diego_testkit::eventually;

mod common;
use common::cluster::{no_instances, running_rows, start_dev};
use common::{RuncLeftovers, BIN};

const WAIT: Duration = Duration::from_secs(90);

/// The commands of the tour: every line of the `sh` blocks after "## A short tour" (up to
/// the next section), with `\` continuations joined and trailing `#` comments dropped.
fn tour_commands(readme: &str) -> Vec<String> {
    let tour = readme
        .split("## A short tour")
        .nth(1)
        .expect("the README has a tour")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in tour.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let code = strip_comment(line);
        if code.trim().is_empty() {
            continue;
        }
        match code.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(code.trim_end());
                commands.push(pending.trim().to_string());
                pending.clear();
            }
        }
    }
    commands
}

/// The instance guid of `web`'s RUNNING instance `index` and the pid of its container's first
/// process (the app), on whichever of the two cells runs it.
async fn web_process(root: &Path, client: &diego_client::BbsClient, index: i32) -> (String, u32) {
    eventually(WAIT, || async {
        let rows = client.actual_lrp("web", index).await.map_err(|e| e.to_string())?;
        let guid = rows
            .iter()
            .find(|a| a.state == ActualLrpState::Running)
            .map(|a| a.instance_guid.clone())
            .ok_or(format!("web/{index} not running"))?;
        for i in 0..2 {
            let runc = diego_garden_runc::Runc::new("runc", root.join(format!("dev/cell-{i}/depot.runc")));
            let pids = runc.running_init_pids().map_err(|e| e.to_string())?;
            if let Some((_, pid)) = pids.into_iter().find(|(id, _)| id.contains(&guid)) {
                return Ok((guid, pid));
            }
        }
        Err(format!("no container runs instance {guid}"))
    })
    .await
}

/// `line` without a `#` comment that starts outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(char::is_whitespace)) => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

/// Runs `command` in bash with `diego` being the binary under test (and `curl` falling back
/// to busybox's wget where curl is not installed); (exit code, stdout and stderr).
async fn sh(bbs: &str, apps: &str, command: &str) -> (i32, String) {
    let script = format!(
        "diego() {{ '{BIN}' \"$@\"; }}\n\
         command -v curl >/dev/null || curl() {{ busybox wget -qO- \"${{@: -1}}\"; }}\n\
         {command}"
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("DIEGO_BBS_URL", bbs)
        .env("DIEGO_APPS_URL", apps)
        // "at the top of the checkout"
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .await
        .expect("running bash");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_tour_parses_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let commands = tour_commands(&readme);
    assert!(
        commands.iter().any(|c| c.starts_with("diego lrp create web")),
        "{commands:#?}"
    );
    let create = commands
        .iter()
        .find(|c| c.starts_with("diego lrp create web"))
        .unwrap();
    assert!(create.ends_with("-h /tmp'"), "continuation joined: {create}");
    assert!(
        commands.iter().all(|c| !c.contains("# ")),
        "comments dropped: {commands:#?}"
    );
    assert_eq!(
        strip_comment("echo '# not a comment' # one"),
        "echo '# not a comment' "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_documented() {
    if !common::runc_usable("the_readme_tour_runs_as_documented") {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let commands = tour_commands(&readme);
    let dir = tempfile::tempdir().unwrap();
    let _leftovers: Vec<RuncLeftovers> = (0..2)
        .map(|i| RuncLeftovers::for_depot(&dir.path().join(format!("dev/cell-{i}/depot"))))
        .collect();
    let router_port = diego_testkit::free_port();
    let router_listen = format!("127.0.0.1:{router_port}");
    let logs_listen = format!("127.0.0.1:{}", diego_testkit::free_port());
    let logs = format!("http://{logs_listen}");
    let apps_listen = format!("127.0.0.1:{}", diego_testkit::free_port());
    let apps = format!("http://{apps_listen}");
    let lifecycle = common::lifecycle_dir().display().to_string();
    let (mut dev, client) = start_dev(
        dir.path(),
        &[
            "--cells",
            "2",
            "--router-listen",
            &router_listen,
            "--logs-listen",
            &logs_listen,
            "--apps-listen",
            &apps_listen,
            "--lifecycle-dir",
            &lifecycle,
        ],
        2,
    )
    .await;
    let bbs = client.base_url().to_string();
    let mut killed: Option<String> = None;

    for command in commands {
        if command.starts_with("alias ") {
            continue; // the test's shell has `diego` already
        }
        let mut command = command.replace(
            ".diego.localhost:8080/",
            &format!(".diego.localhost:{router_port}/"),
        );
        if command.starts_with("for i in") {
            // The scale to 5 has been asked for: the loop's five answers come from five instances
            // once all of them run and are routed.
            eventually(WAIT, || async {
                let n = running_rows(&client).await?.len();
                (n == 5).then_some(()).ok_or(format!("{n} of 5 running"))
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if command.starts_with("kill -9") {
            let (guid, pid) = web_process(dir.path(), &client, 0).await;
            command = format!("kill -9 {pid}");
            killed = Some(guid);
        }
        if command.contains("HOST_PORT") {
            let port = eventually(WAIT, || async {
                let rows = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
                rows.iter()
                    .find(|a| a.state == ActualLrpState::Running)
                    .and_then(|a| a.ports.first())
                    .map(|p| p.host_port)
                    .ok_or(format!("web/0 not running: {rows:?}"))
            })
            .await;
            command = command.replace("HOST_PORT", &port.to_string());
        }
        if command.contains("CELL_ID") {
            // Once every instance runs, a cell that holds some.
            let cell = eventually(WAIT, || async {
                let rows = client
                    .actual_lrps(&ActualLrpQuery {
                        process_guid: Some("web".into()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let running: Vec<_> = rows
                    .iter()
                    .filter(|a| a.state == ActualLrpState::Running)
                    .collect();
                (running.len() == 5)
                    .then(|| running[0].cell_id.clone())
                    .ok_or(format!("{} of 5 running", running.len()))
            })
            .await;
            command = command.replace("CELL_ID", &cell);
        }
        if command == "diego logs web -f" {
            // It follows until stopped, like `diego events`.
            let (code, out) = sh(
                &bbs,
                &apps,
                &format!("timeout 2 '{BIN}' --logs {logs} logs web -f"),
            )
            .await;
            assert_eq!(code, 124, "diego logs -f stopped by itself: {out}");
            continue;
        }
        if command.starts_with("diego logs web --recent --source CELL") {
            // The crash has been reported and the container destroyed.
            let victim = killed.clone().expect("the kill ran first");
            eventually(WAIT, || async {
                let rows = client.actual_lrp("web", 0).await.map_err(|e| e.to_string())?;
                rows.iter()
                    .any(|a| a.crash_count >= 1 && a.instance_guid != victim)
                    .then_some(())
                    .ok_or(format!("web/0 not restarted yet: {rows:?}"))
            })
            .await;
        }
        if command == "diego events" {
            // It streams until stopped: still running after 2 s is the documented behaviour.
            let (code, out) = sh(&bbs, &apps, &format!("timeout 2 '{BIN}' events")).await;
            assert_eq!(code, 124, "diego events stopped by itself: {out}");
            continue;
        }
        if command.starts_with("diego task get t1") {
            eventually(WAIT, || async {
                let t = client.task("t1").await.map_err(|e| e.to_string())?;
                (t.state == TaskState::Completed)
                    .then_some(())
                    .ok_or(format!("{:?}", t.state))
            })
            .await;
        }
        let command = if command.starts_with("diego logs") || command.starts_with("diego app logs") {
            format!("diego --logs {logs} {}", &command["diego ".len()..])
        } else {
            command
        };
        let (code, out) = sh(&bbs, &apps, &command).await;
        eprintln!("$ {command}\n{out}");
        assert_eq!(code, 0, "`{command}` failed:\n{out}");
        if command.starts_with("for i in") {
            let answers: std::collections::BTreeSet<&str> = out.lines().collect();
            assert_eq!(
                answers.len(),
                5,
                "the router spreads over the 5 instances:\n{out}"
            );
        }
        if command.contains("--source CELL") {
            let victim = killed.as_deref().unwrap();
            let destroyed = format!("destroying container for instance {victim}");
            assert!(out.contains(&destroyed), "no {destroyed:?} in:\n{out}");
        }
        let promised = match command.as_str() {
            c if c.starts_with("diego task get t1") => Some("\"result\": \"42\\n\""),
            c if c.starts_with("curl -s http://127.0.0.1") => Some("hello from web instance 0"),
            c if c.starts_with("curl -s http://nope.") => {
                Some("no app is routed at \"nope.diego.localhost\"")
            }
            c if c.starts_with("curl -s http://web.") => Some("hello from web instance"),
            c if c.starts_with("diego --logs") && c.ends_with("logs web --recent") => Some("[RTR/"),
            c if c.starts_with("diego lrp scale web 5") => Some("scaled web to 5 instances"),
            c if c.starts_with("diego cell drain") => Some("drained"),
            c if c.starts_with("diego lrp create web") => Some("created LRP web"),
            c if c.starts_with("diego app push examples/static-site") => {
                Some("static-site is at http://static-site.diego.localhost:")
            }
            c if c.starts_with("curl -s http://static-site.") => Some("Hello from static-site"),
            c if c.starts_with("diego --logs") && c.ends_with("app logs static-site") => Some("[STG]"),
            c if c.starts_with("diego app list") => Some("static-site"),
            _ => None,
        };
        if let Some(text) = promised {
            assert!(out.contains(text), "`{command}` did not say {text:?}:\n{out}");
        }
    }

    // What the README says of the file system: the app may write /tmp, not the container's /.
    for (guid, path, fails) in [("root-ro", "/probe", true), ("tmp-rw", "/tmp/probe", false)] {
        let (code, out) = sh(&bbs, &apps, &format!("diego task submit {guid} -- touch {path}")).await;
        assert_eq!(code, 0, "{out}");
        let task = eventually(WAIT, || async {
            let t = client.task(guid).await.map_err(|e| e.to_string())?;
            (t.state == TaskState::Completed)
                .then_some(t.clone())
                .ok_or(format!("{:?}", t.state))
        })
        .await;
        assert_eq!(task.failed, fails, "touch {path}: {task:?}");
    }
    client.remove_desired_lrp("web").await.unwrap();
    let (code, out) = sh(&bbs, &apps, "diego app delete static-site").await;
    assert_eq!(code, 0, "{out}");
    no_instances(&client).await;
    assert!(
        matches!(dev.child.try_wait(), Ok(None)),
        "diego dev stopped during the tour"
    );
}
