//! The repository's buildpacks (`buildpacks/`) staging its example apps (`examples/`) with the
//! real `diego-builder` on this host, and, where the host has the runtime, the staged droplets
//! started with `diego-launcher` and answering HTTP.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUILDER: &str = env!("CARGO_BIN_EXE_diego-builder");
const LAUNCHER: &str = env!("CARGO_BIN_EXE_diego-launcher");
/// The detection order documented in docs/190-lifecycle.md.
const ORDER: &str = "binary,python,nodejs,static";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies `from` into `to` (files, directories and their modes).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A staging in a temporary directory: `app/` (the build dir), the droplet and the result.
struct Staged {
    root: tempfile::TempDir,
    out: Output,
}

impl Staged {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn result(&self) -> serde_json::Value {
        assert!(self.out.status.success(), "staging failed: {:?}", self.out);
        let json = std::fs::read(self.root.path().join("result.json")).unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    /// The droplet unpacked in `home/`, as a cell would.
    fn unpack(&self) -> PathBuf {
        let home = self.root.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let droplet = std::fs::File::open(self.root.path().join("droplet.tgz")).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(droplet))
            .unpack(&home)
            .unwrap();
        home
    }
}

/// Stages a copy of `app` (a directory) with the repository's buildpacks in [`ORDER`].
fn stage(app: &Path) -> Staged {
    let root = tempfile::tempdir().unwrap();
    copy_tree(app, &root.path().join("app"));
    stage_in(root)
}

/// Stages an app made of `files`.
fn stage_files(files: &[(&str, &str)]) -> Staged {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("app");
    for (name, text) in files {
        let path = app.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(&app).unwrap();
    stage_in(root)
}

fn stage_in(root: tempfile::TempDir) -> Staged {
    let r = root.path();
    let out = Command::new(BUILDER)
        .arg("--build-dir")
        .arg(r.join("app"))
        .arg("--buildpacks-dir")
        .arg(repo().join("buildpacks"))
        .args(["--buildpack-order", ORDER])
        .arg("--cache-dir")
        .arg(r.join("cache"))
        .arg("--work-dir")
        .arg(r.join("work"))
        .arg("--output-droplet")
        .arg(r.join("droplet.tgz"))
        .arg("--output-metadata")
        .arg(r.join("result.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Staged { root, out }
}

fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn each_example_is_detected_by_its_buildpack_with_its_start_command() {
    for (app, buildpack, start) in [
        (
            "static-site",
            "static",
            "exec busybox httpd -f -v -p 0.0.0.0:$PORT -h .",
        ),
        ("python-app", "python", "python3 app.py"),
        ("node-app", "nodejs", "node server.js"),
        ("binary-app", "binary", "./serve"),
    ] {
        let staged = stage(&example(app));
        let result = staged.result();
        assert_eq!(result["detected_buildpack"], buildpack, "{app}: {:?}", staged.out);
        assert_eq!(result["start_command"], start, "{app}");
    }
}

#[test]
fn a_public_directory_is_the_static_docroot_and_a_procfile_overrides_any_buildpack() {
    let staged = stage_files(&[("public/index.html", "hi")]);
    assert_eq!(
        staged.result()["start_command"],
        "exec busybox httpd -f -v -p 0.0.0.0:$PORT -h public"
    );

    // A Procfile with a *.py is python's; its web line wins over `python3 app.py`.
    let staged = stage_files(&[
        ("main.py", "print()"),
        (
            "Procfile",
            "web: python3 main.py\nworker: python3 main.py --work\n",
        ),
    ]);
    let result = staged.result();
    assert_eq!(result["detected_buildpack"], "python");
    assert_eq!(result["start_command"], "python3 main.py");
    assert_eq!(result["process_types"]["worker"], "python3 main.py --work");

    // Without scripts.start, node runs index.js; a Procfile still overrides the static one.
    let staged = stage_files(&[("package.json", r#"{"name": "x"}"#), ("index.js", "")]);
    assert_eq!(staged.result()["start_command"], "node index.js");
    let staged = stage_files(&[
        ("index.html", "hi"),
        ("Procfile", "web: busybox httpd -f -p $PORT\n"),
    ]);
    let result = staged.result();
    assert_eq!(result["detected_buildpack"], "static");
    assert_eq!(result["start_command"], "busybox httpd -f -p $PORT");
}

#[test]
fn an_app_no_buildpack_detects_fails_with_222_naming_all_four() {
    let staged = stage_files(&[("README.md", "nothing to run")]);
    assert_eq!(staged.out.status.code(), Some(222), "{:?}", staged.out);
    assert!(
        staged
            .stderr()
            .contains("no buildpack detected this app; tried, in order: binary, python, nodejs, static"),
        "{}",
        staged.stderr()
    );
}

/// Whether the host's `python3 -m pip` runs (else says the test is skipped).
fn host_pip() -> bool {
    let pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pip {
        eprintln!("skipped: `python3 -m pip` is not available on this host");
    }
    pip
}

#[test]
fn a_requirement_without_its_wheel_fails_with_223_naming_it() {
    if !host_pip() {
        return;
    }
    let staged = stage_files(&[
        ("app.py", "print()"),
        ("requirements.txt", "# from wheels/\nnosuchpackage-diego==1.0\n"),
    ]);
    assert_eq!(staged.out.status.code(), Some(223), "{:?}", staged.out);
    let stderr = staged.stderr();
    assert!(
        stderr.contains("nosuchpackage-diego") && stderr.contains("bin/supply"),
        "{stderr}"
    );
    assert!(!staged.root.path().join("droplet.tgz").exists());
}

#[test]
fn a_node_dependency_missing_from_node_modules_fails_with_223_naming_it() {
    let package = r#"{"name": "x", "dependencies": {"left-pad": "^1.3.0", "present": "1"}}"#;
    let staged = stage_files(&[
        ("package.json", package),
        ("server.js", ""),
        ("node_modules/present/package.json", "{}"),
    ]);
    assert_eq!(staged.out.status.code(), Some(223), "{:?}", staged.out);
    let stderr = staged.stderr();
    assert!(
        stderr.contains("missing from node_modules: left-pad;") && !stderr.contains(" present"),
        "{stderr}"
    );

    // Vendored, it stages.
    let staged = stage_files(&[
        ("package.json", package),
        ("server.js", ""),
        ("node_modules/present/package.json", "{}"),
        ("node_modules/left-pad/package.json", "{}"),
    ]);
    assert_eq!(staged.result()["start_command"], "node server.js");
}

/// A launched droplet, killed (by its PID) and reaped when dropped, the test passing or not.
struct Launched(Child);

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Launches the droplet unpacked at `home` as a cell would, with instance index 2.
fn launch(home: &Path, start: &str, port: u16) -> Launched {
    let child = Command::new(LAUNCHER)
        .arg(home)
        .arg(start)
        .env("PORT", port.to_string())
        .env("INSTANCE_INDEX", "2")
        .env("CF_INSTANCE_INDEX", "2")
        .env("CF_INSTANCE_GUID", "guid-2")
        .env("VCAP_APPLICATION", r#"{"application_name":"example"}"#)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Launched(child)
}

/// `GET /` on `port`, retried until the app answers (10 s at most): the response's body.
fn get(port: u16, app: &mut Launched) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = app.0.try_wait().unwrap() {
            panic!("the app exited before answering: {status}");
        }
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let request = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
            let mut response = String::new();
            if conn.write_all(request.as_bytes()).is_ok() && conn.read_to_string(&mut response).is_ok() {
                assert!(response.starts_with("HTTP/1."), "{response}");
                assert!(response.contains(" 200 "), "{response}");
                return response
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default();
            }
        }
        assert!(Instant::now() < deadline, "the app did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stages the example `name`, launches it and returns its answer to `GET /`.
fn stage_launch_get(name: &str) -> String {
    let staged = stage(&example(name));
    let start = staged.result()["start_command"].as_str().unwrap().to_string();
    let home = staged.unpack();
    let port = free_port();
    let mut app = launch(&home, &start, port);
    get(port, &mut app)
}

#[test]
fn the_staged_python_app_answers_with_its_instance_index() {
    if !on_path("python3") {
        eprintln!("skipped: no python3 on this host");
        return;
    }
    assert_eq!(
        stage_launch_get("python-app"),
        "Hello from python-app, instance 2\n"
    );
}

#[test]
fn the_staged_node_app_answers_with_its_instance_index() {
    if !on_path("node") {
        eprintln!("skipped: no node on this host");
        return;
    }
    assert_eq!(stage_launch_get("node-app"), "Hello from node-app, instance 2\n");
}

#[test]
fn the_staged_static_and_binary_apps_answer_through_busybox_httpd() {
    if !on_path("busybox") {
        eprintln!("skipped: no busybox on this host");
        return;
    }
    assert!(stage_launch_get("static-site").contains("Hello from static-site"));
    assert!(stage_launch_get("binary-app").contains("Hello from binary-app"));
}

#[test]
fn supplied_python_packages_are_on_the_launched_apps_pythonpath() {
    if !host_pip() {
        return;
    }
    // A wheel made here, by hand: one module and its metadata.
    let wheels = tempfile::tempdir().unwrap();
    let wheel = wheels.path().join("greeting-1.0-py3-none-any.whl");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   z.writestr('greeting.py', 'WORD = \"supplied\"\\n')\n\
             \x20   z.writestr('greeting-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: greeting\\nVersion: 1.0\\n')\n\
             \x20   z.writestr('greeting-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: hand\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
             \x20   z.writestr('greeting-1.0.dist-info/RECORD', '')\n",
        )
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(made.success());
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("app");
    std::fs::create_dir_all(app.join("wheels")).unwrap();
    std::fs::copy(&wheel, app.join("wheels/greeting-1.0-py3-none-any.whl")).unwrap();
    std::fs::write(app.join("requirements.txt"), "greeting==1.0\n").unwrap();
    std::fs::write(
        app.join("app.py"),
        "import os, greeting\nprint(greeting.WORD, os.environ['PYTHONUNBUFFERED'])\n",
    )
    .unwrap();
    let staged = stage_in(root);
    let start = staged.result()["start_command"].as_str().unwrap().to_string();
    let home = staged.unpack();
    assert!(
        home.join("deps/1/python/greeting.py").exists(),
        "{:?}",
        staged.out
    );
    let out = Command::new(LAUNCHER).arg(&home).arg(&start).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "supplied 1\n");
}

#[test]
fn every_buildpack_script_parses_under_busybox_sh() {
    if !on_path("busybox") {
        eprintln!("skipped: no busybox on this host");
        return;
    }
    let mut scripts = vec![repo().join("buildpacks/nodejs/lib.sh")];
    for pack in ["binary", "python", "nodejs", "static"] {
        for step in ["detect", "supply", "finalize", "release"] {
            let path = repo().join("buildpacks").join(pack).join("bin").join(step);
            if path.exists() {
                scripts.push(path);
            }
        }
    }
    for script in scripts {
        let out = Command::new("busybox")
            .arg("sh")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", script.display());
    }
}

/// An overlay over a rootfs tree (the tree is the read-only lower layer, so it is never
/// changed), unmounted when dropped.
struct Overlay {
    merged: PathBuf,
    _dir: tempfile::TempDir,
}

impl Overlay {
    fn mount(lower: &Path) -> Overlay {
        let dir = tempfile::tempdir().unwrap();
        let (upper, work, merged) = (dir.path().join("u"), dir.path().join("w"), dir.path().join("m"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success(), "mounting the overlay: {status}");
        Overlay { merged, _dir: dir }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

#[test]
fn every_example_stages_and_answers_in_the_debian_rootfs() {
    // The tree of `diego rootfs build debian` (docs/200-rootfs.md), entered with chroot as root.
    let cache = std::env::var_os("DIEGO_ROOTFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/diego/rootfs"));
    let tree = cache.join("debian");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|u| u.split_whitespace().next() == Some("0"))
    });
    if !root {
        eprintln!("skipped: entering the Debian rootfs needs root (chroot, an overlay mount)");
        return;
    }
    // As root the rootfs must be there: scripts/test builds it before the suite, so a missing
    // tree is a broken set-up, not a reason to skip.
    assert!(
        tree.join("etc/diego-rootfs").is_file() && on_path("chroot"),
        "no Debian rootfs at {} or no chroot: run `diego rootfs build debian` (scripts/test does)",
        tree.display()
    );
    let overlay = Overlay::mount(&tree);
    let inside = |p: &str| overlay.merged.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(inside("/staging")).unwrap();
    for exe in [BUILDER, LAUNCHER] {
        let name = Path::new(exe).file_name().unwrap();
        std::fs::copy(exe, inside("/staging").join(name)).unwrap();
    }
    copy_tree(&repo().join("buildpacks"), &inside("/staging/buildpacks"));
    for (app, buildpack, answer) in [
        ("static-site", "static", "Hello from static-site"),
        ("python-app", "python", "Hello from python-app, instance 2"),
        ("node-app", "nodejs", "Hello from node-app, instance 2"),
        ("binary-app", "binary", "Hello from binary-app"),
    ] {
        let at = format!("/staging/{app}");
        copy_tree(&example(app), &inside(&format!("{at}/app")));
        let out = Command::new("chroot")
            .arg(&overlay.merged)
            .arg("/staging/diego-builder")
            .args(["--build-dir", &format!("{at}/app")])
            .args([
                "--buildpacks-dir",
                "/staging/buildpacks",
                "--buildpack-order",
                ORDER,
            ])
            .args(["--cache-dir", &format!("{at}/cache")])
            .args(["--work-dir", &format!("{at}/work")])
            .args(["--output-droplet", &format!("{at}/droplet.tgz")])
            .args(["--output-metadata", &format!("{at}/result.json")])
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{app}: {out:?}");
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(inside(&format!("{at}/result.json"))).unwrap()).unwrap();
        assert_eq!(result["detected_buildpack"], buildpack, "{app}");
        let start = result["start_command"].as_str().unwrap();

        let home = inside(&format!("{at}/home"));
        std::fs::create_dir_all(&home).unwrap();
        let droplet = std::fs::File::open(inside(&format!("{at}/droplet.tgz"))).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(droplet))
            .unpack(&home)
            .unwrap();
        let port = free_port();
        let mut launched = Launched(
            Command::new("chroot")
                .arg(&overlay.merged)
                .arg("/staging/diego-launcher")
                .arg(format!("{at}/home"))
                .arg(start)
                .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                .env("PORT", port.to_string())
                .env("INSTANCE_INDEX", "2")
                .env("CF_INSTANCE_INDEX", "2")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let body = get(port, &mut launched);
        assert!(body.contains(answer), "{app}: {body}");
    }
}
