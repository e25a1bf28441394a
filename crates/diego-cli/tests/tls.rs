//! Small clusters on mutual TLS, from certificates made by `diego certs`: `diego bbs`,
//! `diego auctioneer` (its TLS keys from its config file) and `diego sim-cells` with
//! `--tls-*` flags, where the CLI with `DIEGO_TLS_*` runs a task to completion, and the CLI
//! with part of the TLS settings, with none, or with a certificate of another CA gets nowhere
//! and says why; and a process-backend `diego cell` shipping its task's output to a
//! `diego logs-server`, all on TLS, read back with `diego logs`; and a `diego router` and a
//! `diego route-emitter` (with a real `nats-server`) following a TLS BBS, their own listeners
//! serving clients of the CA and refusing the rest at the handshake.

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

/// A client of a role's TLS listener that trusts `ca` and presents no certificate: the
/// one client builder, given the CA as its only root.
fn without_a_certificate(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    diego_runtime::http_client(None)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client presenting `role`'s certificate of `dir` and trusting the CA `ca`.
fn with_certificate(dir: &Path, role: &str, ca: &Path) -> reqwest::Client {
    let tls = diego_runtime::tls::Tls::load(diego_runtime::tls::TlsFiles {
        ca: ca.to_path_buf(),
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}-key.pem")),
    })
    .unwrap();
    diego_runtime::http_client(Some(&tls))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET url`: (status, body), or the error with its causes.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = http.get(url).send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    })?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.unwrap_or_default()))
}

/// A process-backend `diego cell`, a `diego router` and a `diego route-emitter` whose only
/// BBS is the TLS one: an LRP's route is learnt by the router (so its BBS client speaks
/// mutual TLS), which proxies to it on its plain listener, and is published on NATS by the
/// route-emitter (so its BBS client does too). Their own listeners (the router's admin, the
/// route-emitter's `/health`) answer a client of the CA, and refuse one without a certificate
/// and one with a certificate of another CA at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_and_a_route_emitter_on_tls_follow_the_bbs_and_refuse_clients_outside_its_ca() {
    use futures_util::StreamExt as _;

    const TEST: &str = "a_router_and_a_route_emitter_on_tls_follow_the_bbs_and_refuse_clients_outside_its_ca";
    const HOST: &str = "web.diego.localhost";
    if !diego_testkit::host::tool_for(
        TEST,
        "busybox",
        "scripts/install-packages installs busybox-static",
    ) {
        return;
    }
    let Some(nats) = diego_testkit::NatsServer::start(TEST).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let d = shown(&certs);
    ok(&["certs", "init", "--dir", &d], &[]).await;
    for role in ["bbs", "auctioneer", "cell", "router", "route-emitter", "cli"] {
        ok(&["certs", "issue", role, "--dir", &d], &[]).await;
    }
    let other = root.path().join("other");
    ok(&["certs", "init", "--dir", &shown(&other)], &[]).await;
    ok(&["certs", "issue", "cli", "--dir", &shown(&other)], &[]).await;
    let data = root.path().join("cell");
    let _leftovers = ProcessLeftovers(data.join("depot"));

    let bbs_port = free_port();
    let bbs_url = format!("https://127.0.0.1:{bbs_port}");
    let proxy = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let emitter = format!("127.0.0.1:{}", free_port());
    let role = |name: &str, args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(tls_flags(&certs, name));
        Proc::spawn(name, root.path(), &args, None)
    };
    let _bbs = role(
        "bbs",
        &["bbs", "--memory", "--listen", &format!("127.0.0.1:{bbs_port}")],
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
        ],
    );
    let router = role(
        "router",
        &["router", "--bbs", &bbs_url, "--listen", &proxy, "--admin", &admin],
    );
    let route_emitter = role(
        "route-emitter",
        &[
            "route-emitter",
            "--bbs",
            &bbs_url,
            "--nats",
            &nats.url,
            "--listen",
            &emitter,
        ],
    );

    // Subscribed before the LRP exists: its first registration is among what arrives.
    let nats_client = async_nats::connect(&nats.url).await.unwrap();
    let mut registrations = nats_client.subscribe("router.register").await.unwrap();
    nats_client.flush().await.unwrap();

    // The process backend has no network namespace: the container port is a host port.
    let www = root.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "routed over mutual tls\n").unwrap();
    let app_port = free_port();
    let cli = tls_env(&certs, "cli", &bbs_url);
    eventually(WAIT, || async {
        let (success, out) = run(&["-o", "json", "cells"], &cli).await;
        (success && out.contains("https://127.0.0.1:"))
            .then_some(())
            .ok_or(out)
    })
    .await;
    ok(
        &[
            "lrp",
            "create",
            "web",
            "--port",
            &app_port.to_string(),
            "--route",
            HOST,
            "--",
            "busybox",
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{app_port}"),
            "-h",
            &shown(&www),
        ],
        &cli,
    )
    .await;

    // The router learnt the route from the TLS BBS and proxies to the instance in plain HTTP.
    let plain = diego_runtime::http_client(None)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    eventually(WAIT, || async {
        let r = plain
            .get(format!("http://{proxy}/"))
            .header("host", HOST)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        (status == 200 && body == "routed over mutual tls\n")
            .then_some(())
            .ok_or(format!("{status} {body:?}"))
    })
    .await;

    // The route-emitter learnt it from the TLS BBS too, and registers it on NATS.
    let registered = tokio::time::timeout(WAIT, async {
        while let Some(msg) = registrations.next().await {
            let m: diego_routing::emitter::message::RegistryMessage =
                serde_json::from_slice(&msg.payload).unwrap();
            if m.uris.iter().any(|u| u == HOST) {
                return m;
            }
        }
        panic!("the NATS subscription ended");
    })
    .await
    .expect("a router.register for the route");
    assert_eq!(
        (registered.host.as_str(), registered.port),
        ("127.0.0.1", u32::from(app_port)),
        "{registered:?}"
    );

    // The roles' own listeners: served to a client of the CA …
    let ca = certs.join("ca.pem");
    let member = with_certificate(&certs, "cli", &ca);
    let router_health = format!("https://{admin}/health");
    let emitter_health = format!("https://{emitter}/health");
    for url in [&router_health, &emitter_health] {
        eventually(WAIT, || async {
            let (status, body) = get(&member, url).await?;
            (status == 200).then_some(()).ok_or(format!("{status} {body}"))
        })
        .await;
    }
    let (status, routes) = get(&member, &format!("https://{admin}/routes")).await.unwrap();
    assert_eq!(status, 200, "{routes}");
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(
        routes[HOST][0]["address"],
        format!("127.0.0.1:{app_port}"),
        "{routes}"
    );
    // … not in plain HTTP …
    for url in [&router_health, &emitter_health] {
        let url = url.replacen("https://", "http://", 1);
        let (status, body) = get(&plain, &url).await.unwrap();
        assert!(
            status == 400 && body.contains("HTTPS only"),
            "{url}: {status} {body}"
        );
    }
    // … and refused at the handshake to a client without a certificate, or with one of
    // another CA (trusting ours, so it gets as far as presenting it); each role logs why.
    let anonymous = without_a_certificate(&ca);
    let stranger = with_certificate(&other, "cli", &ca);
    for (client, who) in [(&anonymous, "no certificate"), (&stranger, "another CA")] {
        for url in [&router_health, &emitter_health] {
            let refused = get(client, url).await;
            assert!(refused.is_err(), "{who}, {url}: {refused:?}");
            println!("{who}, {url}: {}", refused.unwrap_err());
        }
    }
    for proc in [&router, &route_emitter] {
        eventually(WAIT, || async {
            let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
            let refusals: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("TLS handshake failed"))
                .collect();
            let why = |reason: &str| refusals.iter().any(|l| l.contains(reason));
            (why("peer sent no certificates") && why("UnknownIssuer"))
                .then_some(())
                .ok_or(format!("{}: {refusals:?}", proc.name))
        })
        .await;
    }
}
