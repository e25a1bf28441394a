//! The `diego-builder` and `diego-launcher` executables, run as the containers run them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

const BUILDER: &str = env!("CARGO_BIN_EXE_diego-builder");
const LAUNCHER: &str = env!("CARGO_BIN_EXE_diego-launcher");

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `static` buildpack (index.html) in `root/buildpacks`.
fn buildpacks(root: &Path) -> std::path::PathBuf {
    let dir = root.join("buildpacks");
    script(&dir.join("static/bin/detect"), r#"test -f "$1/index.html""#);
    script(
        &dir.join("static/bin/finalize"),
        r#"echo 'export SERVED_BY=static' > "$5/static.sh""#,
    );
    script(
        &dir.join("static/bin/release"),
        "printf 'default_process_types:\\n  web: echo serving on $PORT as $SERVED_BY\\n'",
    );
    dir
}

fn build(root: &Path, app_files: &[(&str, &str)]) -> std::process::Output {
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for (name, text) in app_files {
        std::fs::write(app.join(name), text).unwrap();
    }
    Command::new(BUILDER)
        .arg("--build-dir")
        .arg(&app)
        .arg("--buildpacks-dir")
        .arg(buildpacks(root))
        .args(["--buildpack-order", "static"])
        .arg("--cache-dir")
        .arg(root.join("cache"))
        .arg("--work-dir")
        .arg(root.join("work"))
        .arg("--output-droplet")
        .arg(root.join("droplet.tgz"))
        .arg("--output-metadata")
        .arg(root.join("result.json"))
        .output()
        .unwrap()
}

#[test]
fn the_builder_writes_a_droplet_that_the_launcher_starts() {
    let root = tempfile::tempdir().unwrap();
    let out = build(root.path(), &[("index.html", "hi")]);
    assert!(out.status.success(), "{out:?}");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("result.json")).unwrap()).unwrap();
    assert_eq!(result["detected_buildpack"], "static");
    assert_eq!(result["start_command"], "echo serving on $PORT as $SERVED_BY");
    let droplet = root.path().join("droplet.tgz");
    let (sha, size) = diego_lifecycle::droplet::sha256_file(&droplet).unwrap();
    assert_eq!(result["droplet_sha256"], sha.as_str());
    assert_eq!(result["droplet_size"], size);
    assert_eq!(size, std::fs::metadata(&droplet).unwrap().len());

    // Unpack the droplet and launch it as a cell would: the rep's variables set.
    let unpacked = root.path().join("home");
    std::fs::create_dir_all(&unpacked).unwrap();
    let droplet = std::fs::File::open(root.path().join("droplet.tgz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(droplet))
        .unpack(&unpacked)
        .unwrap();
    let out = Command::new(LAUNCHER)
        .arg(&unpacked)
        .arg("echo serving on $PORT as $SERVED_BY; echo \"$VCAP_APPLICATION\"")
        .env("PORT", "8080")
        .env("VCAP_APPLICATION", r#"{"application_name":"site"}"#)
        .env("CF_INSTANCE_INDEX", "3")
        .env("CF_INSTANCE_GUID", "guid-3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("serving on 8080 as static"), "{stdout}");
    let vcap: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(vcap["application_name"], "site");
    assert_eq!(vcap["instance_index"], 3);
    assert_eq!(vcap["instance_id"], "guid-3");
}

#[test]
fn a_directory_no_buildpack_detects_fails_with_cloud_foundrys_status_and_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let out = build(root.path(), &[("README", "")]);
    assert_eq!(out.status.code(), Some(222), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no buildpack detected this app; tried, in order: static"),
        "{stderr}"
    );
    assert!(!root.path().join("droplet.tgz").exists(), "no droplet is left");
}

const HEALTHCHECK: &str = env!("CARGO_BIN_EXE_diego-healthcheck");

/// A loopback server answering every request with `status`, on its own thread.
fn answering(status: &'static str) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

fn healthcheck(args: &[&str]) -> std::process::Output {
    Command::new(HEALTHCHECK).args(args).output().unwrap()
}

#[test]
fn the_healthcheck_passes_on_a_listening_port_and_a_2xx_and_fails_otherwise() {
    let ok = answering("200 OK").to_string();
    let bad = answering("503 Service Unavailable").to_string();
    assert!(healthcheck(&["--port", &ok]).status.success());
    assert!(healthcheck(&["--port", &ok, "--uri", "/health"]).status.success());
    let out = healthcheck(&["--port", &bad, "--uri", "/health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GET /health answered 503"),
        "{out:?}"
    );
    // A port nobody listens on: take one and let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = healthcheck(&["--port", &closed.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to 127.0.0.1:"),
        "{out:?}"
    );
}
