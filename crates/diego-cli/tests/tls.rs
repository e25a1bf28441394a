//! Small clusters on mutual TLS, from certificates made by `diego certs`: `diego bbs`,
//! `diego auctioneer` (its TLS keys from its config file) and `diego sim-cells` with
//! `--tls-*` flags, where the CLI with `DIEGO_TLS_*` runs a task to completion, and the CLI
//! with part of the TLS settings, with none, or with a certificate of another CA gets nowhere
//! and says why; and a process-backend `diego cell` shipping its task's output to a
//! `diego logs-server`, all on TLS, read back with `diego logs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::Proc;
use common::{ProcessLeftovers, BIN};
use diego_testkit::{eventually, free_port};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

/// `diego ARGS` with `env` set (and no TLS or BBS variables of the test's own), to
/// completion: (success, stdout then stderr).
async fn run(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for var in ["DIEGO_BBS_URL", "DIEGO_TLS_CA", "DIEGO_TLS_CERT", "DIEGO_TLS_KEY"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn ok(args: &[&str], env: &[(&str, String)]) -> String {
    let (success, out) = run(args, env).await;
    assert!(success, "diego {args:?} failed: {out}");
    out
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// `--tls-ca D/ca.pem --tls-cert D/ROLE.pem --tls-key D/ROLE-key.pem`.
fn tls_flags(dir: &Path, role: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        shown(&dir.join("ca.pem")),
        "--tls-cert".into(),
        shown(&dir.join(format!("{role}.pem"))),
        "--tls-key".into(),
        shown(&dir.join(format!("{role}-key.pem"))),
    ]
}

/// The `DIEGO_TLS_*` variables of `role`'s files in `dir`, and the BBS URL.
fn tls_env(dir: &Path, role: &str, bbs: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DIEGO_BBS_URL", bbs.to_string()),
        ("DIEGO_TLS_CA", shown(&dir.join("ca.pem"))),
        ("DIEGO_TLS_CERT", shown(&dir.join(format!("{role}.pem")))),
        ("DIEGO_TLS_KEY", shown(&dir.join(format!("{role}-key.pem")))),
    ]
}

#[tokio::test]
async fn a_cluster_on_mutual_tls_runs_a_task_and_refuses_clients_without_a_certificate_of_its_ca() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let d = shown(&certs);

    // Issuing needs a CA, and says where it looked.
    let (success, out) = run(&["certs", "issue", "bbs", "--dir", &d], &[]).await;
    assert!(!success && out.contains("ca.pem does not exist"), "{out}");
    ok(&["certs", "init", "--dir", &d], &[]).await;
    let (success, out) = run(&["certs", "init", "--dir", &d], &[]).await;
    assert!(
        !success && out.contains("already exists") && out.contains("--force"),
        "{out}"
    );
    for role in ["bbs", "auctioneer", "cells", "cli"] {
        let out = ok(&["certs", "issue", role, "--dir", &d], &[]).await;
        assert!(out.contains("localhost, 127.0.0.1"), "{out}");
    }

    let bbs_port = free_port();
    let bbs_url = format!("https://127.0.0.1:{bbs_port}");
    let mut args: Vec<String> = ["bbs", "--memory", "--listen", &format!("127.0.0.1:{bbs_port}")]
        .map(String::from)
        .to_vec();
    args.extend(tls_flags(&certs, "bbs"));
    let _bbs = Proc::spawn("bbs", root.path(), &args, None);

    // The auctioneer's TLS settings (and its BBS) are keys of its config file.
    let config = root.path().join("auctioneer.toml");
    std::fs::write(
        &config,
        format!(
            "bbs = {bbs_url:?}\nlisten = \"127.0.0.1:{}\"\ntls-ca = {:?}\ntls-cert = {:?}\ntls-key = {:?}\n",
            free_port(),
            shown(&certs.join("ca.pem")),
            shown(&certs.join("auctioneer.pem")),
            shown(&certs.join("auctioneer-key.pem")),
        ),
    )
    .unwrap();
    let _auctioneer = Proc::spawn(
        "auctioneer",
        root.path(),
        &["auctioneer".into(), "--config".into(), shown(&config)],
        None,
    );
    let mut args: Vec<String> = ["sim-cells", "--count", "1", "--bbs", &bbs_url]
        .map(String::from)
        .to_vec();
    args.extend(tls_flags(&certs, "cells"));
    let _cells = Proc::spawn("sim-cells", root.path(), &args, None);

    let cli = tls_env(&certs, "cli", &bbs_url);
    eventually(WAIT, || async {
        let (success, out) = run(&["-o", "json", "cells"], &cli).await;
        (success && out.contains("sim-0000")).then_some(()).ok_or(out)
    })
    .await;
    ok(&["task", "submit", "t1", "--", "true"], &cli).await;
    eventually(WAIT, || async {
        let (success, out) = run(&["-o", "json", "task", "get", "t1"], &cli).await;
        (success && out.contains("\"COMPLETED\""))
            .then_some(())
            .ok_or(out)
    })
    .await;

    // Part of the settings: refused before connecting, naming what is missing.
    let partial: Vec<_> = cli
        .iter()
        .filter(|(k, _)| *k != "DIEGO_TLS_CERT")
        .cloned()
        .collect();
    let (success, out) = run(&["cells"], &partial).await;
    assert!(!success, "{out}");
    assert!(out.contains("missing --tls-cert (or DIEGO_TLS_CERT)"), "{out}");

    // None: an https:// BBS needs them; an http:// one is the TLS port answering in plain.
    let none = [("DIEGO_BBS_URL", bbs_url.clone())];
    let (success, out) = run(&["cells"], &none).await;
    assert!(!success && out.contains("no TLS is configured"), "{out}");
    let plain = [("DIEGO_BBS_URL", format!("http://127.0.0.1:{bbs_port}"))];
    let (success, out) = run(&["cells"], &plain).await;
    assert!(!success && out.contains("HTTPS only"), "{out}");

    // A certificate of another CA (trusting ours): refused at the handshake.
    let other = root.path().join("other");
    ok(&["certs", "init", "--dir", &shown(&other)], &[]).await;
    ok(&["certs", "issue", "cli", "--dir", &shown(&other)], &[]).await;
    let mut stranger = tls_env(&other, "cli", &bbs_url);
    stranger[1].1 = shown(&certs.join("ca.pem"));
    let (success, out) = run(&["cells"], &stranger).await;
    assert!(!success, "{out}");
    assert!(out.contains("refuses a client certificate"), "{out}");
    assert!(!out.contains("sim-0000"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_on_tls_runs_a_task_and_ships_its_output_to_a_log_server_on_tls() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let d = shown(&certs);
    ok(&["certs", "init", "--dir", &d], &[]).await;
    for role in ["bbs", "auctioneer", "cell", "logs", "cli"] {
        ok(&["certs", "issue", role, "--dir", &d], &[]).await;
    }
    let data = root.path().join("cell");
    let _leftovers = ProcessLeftovers(data.join("depot"));

    let bbs_port = free_port();
    let bbs_url = format!("https://127.0.0.1:{bbs_port}");
    let logs_port = free_port();
    let logs_url = format!("https://127.0.0.1:{logs_port}");
    let role = |name: &str, args: &[&str], certs_of: &str| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(tls_flags(&certs, certs_of));
        Proc::spawn(name, root.path(), &args, None)
    };
    let _bbs = role(
        "bbs",
        &["bbs", "--memory", "--listen", &format!("127.0.0.1:{bbs_port}")],
        "bbs",
    );
    let _logs = role(
        "logs-server",
        &["logs-server", "--listen", &format!("127.0.0.1:{logs_port}")],
        "logs",
    );
    let _auctioneer = role(
        "auctioneer",
        &[
            "auctioneer",
            "--bbs",
            &bbs_url,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        "auctioneer",
    );
    let _cell = role(
        "cell",
        &[
            "cell",
            "--backend",
            "process",
            "--bbs",
            &bbs_url,
            "--memory-mb",
            "1024",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            &shown(&data),
            "--logs-url",
            &logs_url,
        ],
        "cell",
    );

    let mut cli = tls_env(&certs, "cli", &bbs_url);
    cli.push(("DIEGO_LOGS_URL", logs_url.clone()));
    eventually(WAIT, || async {
        let (success, out) = run(&["-o", "json", "cells"], &cli).await;
        (success && out.contains("https://127.0.0.1:"))
            .then_some(())
            .ok_or(out)
    })
    .await;
    ok(
        &[
            "task",
            "submit",
            "echo",
            "--",
            "sh",
            "-c",
            "echo hello over mutual tls",
        ],
        &cli,
    )
    .await;
    let task = eventually(WAIT, || async {
        let (success, out) = run(&["-o", "json", "task", "get", "echo"], &cli).await;
        let task: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        (success && task["state"] == "COMPLETED")
            .then_some(task)
            .ok_or(out)
    })
    .await;
    assert_eq!(task["failed"], false, "{task}");
    eventually(WAIT, || async {
        let (success, out) = run(&["logs", "echo", "--recent"], &cli).await;
        (success && out.contains("hello over mutual tls"))
            .then_some(())
            .ok_or(out)
    })
    .await;
}
