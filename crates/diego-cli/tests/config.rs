//! Role configuration files (`--config FILE`) through the real `diego` binary: a role runs
//! with the file's values, a flag or an environment variable beats the file, and a bad file
//! stops the role before it starts, naming file, line and key.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use diego_client::BbsClient;
use diego_testkit::{eventually, free_port, TestBbs};
use tokio::process::{Child, Command};

use common::BIN;

const WAIT: Duration = Duration::from_secs(15);

/// A role started as `diego ARGS` in the test environment, killed when dropped.
fn start(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::from(diego_testkit::diego_command(Path::new(BIN), args));
    cmd.envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().expect("spawning diego")
}

/// `diego ARGS` to completion: (exit code, stdout, stderr).
async fn finish(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::from(diego_testkit::diego_command(Path::new(BIN), args))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("diego exits by itself")
    .expect("running diego");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

async fn answers_ping(port: u16) -> Result<(), String> {
    let client = BbsClient::new(format!("http://127.0.0.1:{port}"));
    match client.ping().await {
        Ok(p) if p.available => Ok(()),
        Ok(_) => Err(format!("BBS on {port} answers but is not available yet")),
        Err(e) => Err(format!("no BBS on {port}: {e}")),
    }
}

fn nothing_listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[tokio::test]
async fn a_bbs_listens_where_its_config_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write(
        dir.path(),
        "bbs.toml",
        &format!("# the BBS\nlisten = \"127.0.0.1:{port}\"\nmemory = true\nevent-retention = 10\n"),
    );
    let mut bbs = start(&["bbs", "--config", &file], &[]);
    eventually(WAIT, || answers_ping(port)).await;
    bbs.kill().await.unwrap();
}

#[tokio::test]
async fn a_flag_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, flag_port) = (free_port(), free_port());
    let file = write(
        dir.path(),
        "bbs.toml",
        &format!("listen = \"127.0.0.1:{file_port}\"\nmemory = true\n"),
    );
    let listen = format!("127.0.0.1:{flag_port}");
    let mut bbs = start(&["bbs", "--config", &file, "--listen", &listen], &[]);
    eventually(WAIT, || answers_ping(flag_port)).await;
    assert!(
        nothing_listens(file_port),
        "the file's port {file_port} is in use too"
    );
    bbs.kill().await.unwrap();
}

#[tokio::test]
async fn an_environment_variable_beats_the_config_file() {
    // The file names a BBS nothing serves; DIEGO_BBS_URL names the real one, where the
    // simulated cells (their count given only by the file) register.
    let bbs = TestBbs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "sim.toml",
        &format!(
            "bbs = \"http://127.0.0.1:{}\"\ncount = 2\ncell-id-prefix = \"cfg\"\n",
            free_port()
        ),
    );
    let mut sim = start(&["sim-cells", "--config", &file], &[("DIEGO_BBS_URL", &bbs.url)]);
    let cells = eventually(WAIT, || async {
        let cells = bbs.client.cells().await.map_err(|e| e.to_string())?;
        if cells.len() == 2 {
            Ok(cells)
        } else {
            Err(format!("{} cells registered", cells.len()))
        }
    })
    .await;
    assert!(
        cells.iter().all(|c| c.cell_presence.cell_id.starts_with("cfg")),
        "cell ids: {:?}",
        cells.iter().map(|c| &c.cell_presence.cell_id).collect::<Vec<_>>()
    );
    sim.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_config_file_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("listen = \"127.0.0.1:{port}\"\nmemory = true\n");
    let cases = [
        (
            "unknown.toml",
            format!("{listen}listne = \"x\"\n"),
            ":3:1: key \"listne\": unknown key",
        ),
        (
            "value.toml",
            format!("{listen}\nevent-retention = \"ten\"\n"),
            ":4:1: key \"event-retention\": expected a number",
        ),
        (
            "parser.toml",
            format!("{listen}max-task-retries = -3\n"),
            ":3:1: key \"max-task-retries\": invalid value \"-3\"",
        ),
        (
            "syntax.toml",
            format!("{listen}lock-ttl = = 3\n"),
            ":3:12: not valid TOML",
        ),
    ];
    for (name, text, expected) in cases {
        let file = write(dir.path(), name, &text);
        let (code, _, stderr) = finish(&["bbs", "--config", &file]).await;
        assert_eq!(code, Some(2), "{name}: {stderr}");
        let want = format!("error: {file}{expected}");
        assert!(stderr.contains(&want), "{name}: stderr\n{stderr}\nwants {want:?}");
        assert!(nothing_listens(port), "{name}: something listens on {port}");
    }
}

#[tokio::test]
async fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let missing = missing.to_str().unwrap();
    let (code, _, stderr) = finish(&["bbs", "--config", missing]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {missing}: cannot read the config file")),
        "{stderr}"
    );
}

#[tokio::test]
async fn print_config_lists_every_key_of_each_role_and_the_bbs_example_runs() {
    for role in [
        "bbs",
        "auctioneer",
        "cell",
        "router",
        "route-emitter",
        "logs-server",
        "file-server",
        "sim-cells",
        "dev",
        "garden",
    ] {
        let (code, stdout, stderr) = finish(&[role, "--print-config"]).await;
        assert_eq!(code, Some(0), "{role}: {stderr}");
        assert!(stdout.contains("# listen = "), "{role}:\n{stdout}");
        assert!(!stdout.contains("# config = "), "{role}:\n{stdout}");
    }
    // The example, its defaulted keys uncommented and a free port, is a file the BBS runs with.
    let (_, example, _) = finish(&["bbs", "--print-config"]).await;
    let port = free_port();
    let mut text: String = example
        .lines()
        .filter(|l| l.starts_with("# ") && l.contains(" = ") && !l.contains("(no default)"))
        .filter(|l| !l.starts_with("# listen = ") && !l.starts_with("# memory = "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    text.push_str(&format!("listen = \"127.0.0.1:{port}\"\nmemory = true\n"));
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "example.toml", &text);
    let mut bbs = start(&["bbs", "--config", &file], &[]);
    eventually(WAIT, || answers_ping(port)).await;
    bbs.kill().await.unwrap();
}

#[tokio::test]
async fn a_cell_takes_its_required_data_dir_from_the_file() {
    // `diego cell` runs only with its group of flags (`--data-dir`); from a file is enough.
    let bbs = TestBbs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cell.toml",
        &format!(
            "bbs = \"{}\"\nlisten = \"127.0.0.1:{}\"\ndata-dir = {:?}\nbackend = \"process\"\ncell-id = \"from-file\"\n",
            bbs.url,
            free_port(),
            dir.path().join("cell").to_str().unwrap()
        ),
    );
    let mut cell = start(&["cell", "--config", &file], &[]);
    eventually(WAIT, || async {
        let cells = bbs.client.cells().await.map_err(|e| e.to_string())?;
        if cells.iter().any(|c| c.cell_presence.cell_id == "from-file") {
            Ok(())
        } else {
            Err(format!("{} cells, none from-file", cells.len()))
        }
    })
    .await;
    cell.kill().await.unwrap();
}

#[tokio::test]
async fn a_file_server_from_its_file_keeps_an_acknowledged_blob_through_kill_9() {
    use diego_fileserver::{Digest, FileServerClient, FileServerError};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write(
        dir.path(),
        "files.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata-dir = {:?}\nmax-upload-bytes = 1000\n",
            dir.path().join("blobs").to_str().unwrap()
        ),
    );
    let client = FileServerClient::new(format!("http://127.0.0.1:{port}")).unwrap();
    let up = || async {
        client
            .has(&Digest::of(b""))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let mut server = start(&["file-server", "--config", &file], &[]);
    eventually(WAIT, up).await;
    let stored = client
        .upload(bytes::Bytes::from_static(b"an app package"))
        .await
        .unwrap();
    assert!(stored.created);
    match client.upload(bytes::Bytes::from(vec![0u8; 1001])).await {
        Err(FileServerError::Refused { status: 413, message }) => {
            assert!(
                message.contains("1000 bytes"),
                "the file's limit applies: {message}"
            )
        }
        other => panic!("{other:?}"),
    }
    server.kill().await.unwrap();

    let mut server = start(&["file-server", "--config", &file], &[]);
    eventually(WAIT, up).await;
    assert_eq!(
        client.download(&stored.digest).await.unwrap(),
        &b"an app package"[..]
    );
    server.kill().await.unwrap();
}
