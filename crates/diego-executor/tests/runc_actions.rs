//! Every action type run by the executor's steps in real runc containers over
//! `preloaded:busybox` (root; needs runc and busybox-static): run (env, dir, user, nofile,
//! exit status, log source), download from an HTTP server on 127.0.0.1 (tar, tgz, zip; md5,
//! sha1, sha256; wrong checksums; the cache's 304 path; malicious archives), upload, timeout,
//! try, serial, parallel, codependent and emit_progress.
//!
//! A custom harness (libtest-mimic, which nextest understands): the runc backend supervises
//! each process with a shim binary, and `diego-garden-shim` is not built for this crate's
//! tests, so this binary is its own shim — started as `runc_actions garden-shim …` it runs the
//! shim instead of the tests (and `runc_actions garden-netin …` the net-in proxy).

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_executor::checksum::{digest_hex, Algorithm};
use diego_executor::download_cache::DownloadCache;
use diego_executor::{step_for, StepContext, StepError};
use diego_garden::{ContainerSpec, DynBackend};
use diego_garden_runc::{cgroup, Overlay, Runc, RuncBackend, RuncConfig, ShimCommand};
use diego_logs::{LogStreamer, MemorySink};
use diego_model::action::{DownloadAction, EmitProgressAction, ResourceLimits, RunAction, UploadAction};
use diego_model::{Action, EnvironmentVariable};
use libtest_mimic::{Arguments, Failed, Trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount", "tar"];

fn main() {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(a) if a == "garden-shim" => std::process::exit(diego_garden_runc::shim::main(args)),
        Some(a) if a == "garden-netin" => std::process::exit(diego_garden_runc::netin::proxy::main(args)),
        _ => {}
    }
    let tests: Vec<(&'static str, TestFn)> = vec![
        ("run_step_env_dir_user_nofile_exit_status_and_log_source", |e| {
            Box::pin(run_step(e))
        }),
        ("download_tar_tgz_and_zip_with_md5_sha1_and_sha256", |e| {
            Box::pin(download_formats_and_checksums(e))
        }),
        ("download_with_a_wrong_checksum_fails_and_extracts_nothing", |e| {
            Box::pin(wrong_checksum(e))
        }),
        (
            "download_cache_hit_revalidates_with_304_and_skips_the_body",
            |e| Box::pin(cache_hit(e)),
        ),
        ("malicious_archives_write_nothing_outside_the_destination", |e| {
            Box::pin(malicious_archives(e))
        }),
        ("symlinks_made_in_the_container_do_not_lead_downloads_out", |e| {
            Box::pin(container_symlinks(e))
        }),
        ("upload_posts_a_file_a_run_step_wrote_byte_exact", |e| {
            Box::pin(upload(e))
        }),
        ("timeout_and_try_in_a_container", |e| Box::pin(timeout_and_try(e))),
        ("serial_parallel_and_codependent_in_a_container", |e| {
            Box::pin(combinators(e))
        }),
        ("emit_progress_messages_reach_the_log_sink", |e| {
            Box::pin(emit_progress(e))
        }),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, move || run_trial(name, f)))
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

type TestFn = fn(Arc<Env>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn run_trial(name: &str, f: TestFn) -> Result<(), Failed> {
    let Some(env) = Env::new(name) else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    let env = Arc::new(env);
    let result = rt.block_on(async {
        let test = tokio::spawn(f(env.clone()));
        tokio::time::timeout(Duration::from_secs(120), test).await
    });
    // `env` (and with it every container) is cleaned up when the last reference goes, also
    // after a failed assertion.
    drop(rt);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(panic)) => Err(Failed::from(panic_message(panic))),
        Err(_) => Err(Failed::from("timed out after 120 s")),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// A runc backend in a temporary directory for one test. Dropping it force-deletes every
/// container runc knows in its private state dir, unmounts every overlay in the depot and
/// removes the containers' cgroups, so a failing test leaves nothing behind.
struct Env {
    backend: DynBackend,
    runc: Runc,
    depot: PathBuf,
    /// A directory on the host, outside every container: nothing may ever appear in it.
    marker: PathBuf,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        if !diego_testkit::host::root_with(test, TOOLS) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let exe = std::env::current_exe().unwrap();
        let config = RuncConfig {
            depot: root.join("depot"),
            store: root.join("store"),
            preloaded_dir: None,
            runc_root: root.join("runc"),
            capacity: diego_garden::Capacity {
                memory_bytes: 1 << 30,
                disk_bytes: 1 << 30,
                max_containers: 3,
            },
            host_ip: "127.0.0.1".into(),
            shim: ShimCommand::new(&exe, ["garden-shim"]),
            netin_proxy: ShimCommand::new(exe, ["garden-netin"]),
        };
        let backend = RuncBackend::new(config)
            .unwrap()
            .with_stop_grace(Duration::from_millis(500));
        let marker = root.join("host-marker");
        std::fs::create_dir_all(&marker).unwrap();
        Some(Env {
            backend: Arc::new(backend),
            runc: Runc::new("runc", root.join("runc")),
            depot: root.join("depot"),
            marker,
            root,
            _tmp: tmp,
        })
    }

    async fn container(&self) -> Container {
        let handle = format!(
            "act-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        self.backend
            .create(ContainerSpec {
                handle: handle.clone(),
                rootfs: "preloaded:busybox".into(),
                env: vec!["FROM_CONTAINER=yes".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let sink = MemorySink::new();
        let streamer = LogStreamer::new(sink.clone(), "guid", "", Some(0));
        let mut ctx = StepContext::new(self.backend.clone(), handle.clone(), streamer);
        ctx.graceful_shutdown = Duration::from_secs(2);
        let merged = Overlay::new(self.depot.join(&handle)).merged();
        assert!(
            merged.join("bin").exists(),
            "{} is not the rootfs",
            merged.display()
        );
        Container {
            handle,
            ctx,
            sink,
            merged,
        }
    }

    /// Nothing was written into the host marker directory.
    fn assert_marker_empty(&self) {
        let found: Vec<_> = std::fs::read_dir(&self.marker)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(found.is_empty(), "written outside the container: {found:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.runc.list().unwrap_or_default() {
            if let Err(e) = self.runc.delete_force(&id) {
                eprintln!("runc delete -f {id}: {e}");
            }
        }
        for entry in std::fs::read_dir(&self.depot).into_iter().flatten().flatten() {
            if let Err(e) = Overlay::new(entry.path()).destroy() {
                eprintln!("overlay destroy: {e}");
            }
            let handle = entry.file_name().to_string_lossy().into_owned();
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = cgroup::remove_leftovers(Path::new(cgroup::CGROUP_ROOT), &handle);
        }
    }
}

struct Container {
    handle: String,
    ctx: StepContext,
    sink: Arc<MemorySink>,
    /// The container's root filesystem as the host sees it.
    merged: PathBuf,
}

impl Container {
    async fn perform(&self, action: &Action) -> Result<(), StepError> {
        step_for(action, &self.ctx)
            .perform(CancellationToken::new())
            .await
    }

    /// Runs `script` with `sh -c` in the container; its stdout lines.
    async fn sh(&self, script: &str) -> Vec<String> {
        let before = self.sink.lines().len();
        self.perform(&sh(script))
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        self.sink.lines()[before..]
            .iter()
            .filter(|l| l.message != "Exit status 0")
            .map(|l| l.message.clone())
            .collect()
    }

    async fn destroy(&self, env: &Env) {
        env.backend.destroy(&self.handle).await.unwrap();
        assert!(!self.merged.exists(), "destroy left the rootfs behind");
    }
}

fn sh(script: &str) -> Action {
    Action::run(RunAction {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    })
}

fn download(url: String, to: &str, artifact: &str) -> DownloadAction {
    DownloadAction {
        artifact: artifact.into(),
        from: url,
        to: to.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// An HTTP server on 127.0.0.1 for downloads and uploads.

#[derive(Default)]
struct Served {
    /// path → (body, etag)
    files: HashMap<String, (Vec<u8>, String)>,
    /// GETs answered with a body, per path.
    bodies: HashMap<String, usize>,
    /// GETs answered 304.
    not_modified: usize,
    /// POST bodies, per path.
    posted: HashMap<String, Vec<u8>>,
}

#[derive(Clone)]
struct Server {
    base: String,
    state: Arc<Mutex<Served>>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Served::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_one(conn, shared.clone()));
            }
        });
        Server { base, state }
    }

    fn put(&self, path: &str, body: Vec<u8>) -> String {
        let etag = format!("\"{}\"", digest_hex(Algorithm::Sha1, &body));
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), (body, etag));
        format!("{}{path}", self.base)
    }

    fn bodies(&self, path: &str) -> usize {
        self.state.lock().unwrap().bodies.get(path).copied().unwrap_or(0)
    }
}

async fn serve_one(mut conn: tokio::net::TcpStream, state: Arc<Mutex<Served>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (status, body, etag) = match method {
        "POST" => {
            let len: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            while req.len() < head_end + len {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            state
                .lock()
                .unwrap()
                .posted
                .insert(path.to_string(), req[head_end..head_end + len].to_vec());
            ("201 Created", Vec::new(), String::new())
        }
        _ => {
            let mut st = state.lock().unwrap();
            match st.files.get(path).cloned() {
                Some((body, etag)) => {
                    if headers.get("if-none-match") == Some(&etag) {
                        st.not_modified += 1;
                        ("304 Not Modified", Vec::new(), etag)
                    } else {
                        *st.bodies.entry(path.to_string()).or_default() += 1;
                        ("200 OK", body, etag)
                    }
                }
                None => ("404 Not Found", b"not found".to_vec(), String::new()),
            }
        }
    };
    let etag = if etag.is_empty() {
        String::new()
    } else {
        format!("etag: {etag}\r\n")
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{etag}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(&body).await;
}

// ---------------------------------------------------------------------------------------------
// Archives.

enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// A ustar archive with names and link targets written verbatim (the tar crate's builder
/// refuses the malicious ones these tests need).
fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, kind, link, data): (&str, u8, &str, &[u8]) = match e {
            Raw::File(n, d) => (n, b'0', "", d),
            Raw::Dir(n) => (n, b'5', "", b""),
            Raw::Symlink(n, t) => (n, b'2', t, b""),
        };
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A zip of `(name, content)`; names ending in `/` are directories.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        if name.ends_with('/') {
            w.add_directory(*name, opts.unix_permissions(0o755)).unwrap();
        } else {
            w.start_file(*name, opts.unix_permissions(0o644)).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

// ---------------------------------------------------------------------------------------------
// The tests.

async fn run_step(env: Arc<Env>) {
    let c = env.container().await;
    let action = Action::run(RunAction {
        path: "sh".into(),
        args: vec![
            "-c".into(),
            "echo env=$GREETING/$FROM_CONTAINER; pwd; id -un; ulimit -n; ulimit -Hn; exit 3".into(),
        ],
        env: vec![EnvironmentVariable::new("GREETING", "hi")],
        dir: "/tmp".into(),
        user: "root".into(),
        resource_limits: Some(ResourceLimits { nofile: Some(1234) }),
        log_source: "APP/PROC/WEB".into(),
        ..Default::default()
    });
    let err = c.perform(&action).await.unwrap_err();
    assert_eq!(err, StepError::Emittable("Exit status 3".into()));
    let lines = c.sink.lines();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.source_type.as_str(), l.message.as_str()))
        .collect();
    let web = "APP/PROC/WEB";
    assert_eq!(
        got,
        [
            (web, "env=hi/yes"),
            (web, "/tmp"),
            (web, "root"),
            (web, "1234"),
            (web, "1234"),
            (web, "Exit status 3")
        ]
    );

    // The default user, its home as the directory, the default nofile; source inherited.
    let before = c.sink.lines().len();
    let tree = Action::serial(vec![Action::run(RunAction {
        path: "sh".into(),
        args: vec!["-c".into(), "pwd; id -un; ulimit -n".into()],
        ..Default::default()
    })]);
    let mut tree = tree;
    tree.serial.as_mut().unwrap().log_source = "STG".into();
    c.perform(&tree).await.unwrap();
    let lines = c.sink.lines()[before..].to_vec();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.source_type.as_str(), l.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("STG", "/home/vcap"),
            ("STG", "vcap"),
            ("STG", "1024"),
            ("STG", "Exit status 0")
        ]
    );
    c.destroy(&env).await;
}

async fn download_formats_and_checksums(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    let tar = raw_tar(&[
        Raw::Dir("./app/"),
        Raw::File("./app/hello.txt", b"hello from tar\n"),
        Raw::Symlink("./app/link", "hello.txt"),
    ]);
    let archives = [
        ("tar", server.put("/a.tar", tar.clone()), tar.clone()),
        ("tgz", server.put("/a.tgz", gzip(&tar)), gzip(&tar)),
        (
            "zip",
            server.put(
                "/a.zip",
                zip(&[("app/", b""), ("app/hello.txt", b"hello from tar\n")]),
            ),
            zip(&[("app/", b""), ("app/hello.txt", b"hello from tar\n")]),
        ),
    ];
    for (format, url, body) in &archives {
        for alg in [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256] {
            let to = format!("/home/vcap/{format}-{}", alg.name());
            let mut a = download(url.clone(), &to, "app");
            a.checksum_algorithm = alg.name().into();
            a.checksum_value = digest_hex(alg, body);
            let before = c.sink.lines().len();
            c.perform(&Action {
                download: Some(a),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{format} {}: {e}", alg.name()));
            let size = diego_executor::steps::byte_size(body.len() as u64);
            let messages: Vec<String> = c.sink.lines()[before..]
                .iter()
                .map(|l| l.message.clone())
                .collect();
            assert_eq!(
                messages,
                [
                    "Downloading app...".to_string(),
                    format!("Downloaded app ({size})")
                ]
            );
            // Seen from inside the container, and on the host in its rootfs.
            let out = c.sh(&format!("cat {to}/app/hello.txt")).await;
            assert_eq!(out, ["hello from tar"], "{format} {}", alg.name());
            let host = c.merged.join(to.trim_start_matches('/')).join("app/hello.txt");
            assert_eq!(std::fs::read_to_string(host).unwrap(), "hello from tar\n");
        }
    }
    let out = c
        .sh("readlink /home/vcap/tgz-md5/app/link; cat /home/vcap/tar-sha1/app/link")
        .await;
    assert_eq!(out, ["hello.txt", "hello from tar"]);
    c.destroy(&env).await;
}

async fn wrong_checksum(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    let body = gzip(&raw_tar(&[Raw::File("bad.txt", b"must not arrive")]));
    let url = server.put("/bad.tgz", body.clone());
    for alg in [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256] {
        let before = c.sink.lines().len();
        let mut a = download(url.clone(), "/home/vcap/bad", "droplet");
        a.checksum_algorithm = alg.name().into();
        a.checksum_value = digest_hex(alg, b"something else");
        let err = c
            .perform(&Action {
                download: Some(a),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Downloading droplet failed".into()));
        let lines = c.sink.lines()[before..].to_vec();
        assert_eq!(lines[0].message, "Downloading droplet...");
        assert_eq!(lines[1].message, "Downloading droplet failed");
        assert_eq!(lines[1].stream, diego_logs::LogStream::Stderr);
        assert!(
            lines[2]
                .message
                .starts_with(&format!("checksum mismatch: {}", alg.name())),
            "{lines:?}"
        );
    }
    assert!(
        !c.merged.join("home/vcap/bad").exists(),
        "something was extracted"
    );
    assert_eq!(c.sh("ls -A /home/vcap").await, Vec::<String>::new());

    // Unknown algorithm; value without algorithm: refused before fetching.
    let fetched = server.bodies("/bad.tgz");
    for (alg, value) in [("crc32", "abc"), ("", "abc")] {
        let mut a = download(url.clone(), "/home/vcap/bad", "droplet");
        a.checksum_algorithm = alg.into();
        a.checksum_value = value.into();
        let err = c
            .perform(&Action {
                download: Some(a),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::Invalid(_)), "{err}");
    }
    assert_eq!(server.bodies("/bad.tgz"), fetched);
    c.destroy(&env).await;
}

async fn cache_hit(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    let body = gzip(&raw_tar(&[Raw::File("bp/detect", b"#!/bin/sh\necho cached\n")]));
    let url = server.put("/buildpack.tgz", body.clone());
    let cache = DownloadCache::open(env.root.join("cache"), 1 << 30).unwrap();
    let mut ctx = c.ctx.clone();
    ctx.download_cache = Some(cache.clone());
    for (round, to) in ["/home/vcap/one", "/home/vcap/two"].into_iter().enumerate() {
        let mut a = download(url.clone(), to, "buildpack");
        a.cache_key = "buildpack-ruby".into();
        a.checksum_algorithm = "sha256".into();
        a.checksum_value = digest_hex(Algorithm::Sha256, &body);
        let before = c.sink.lines().len();
        step_for(
            &Action {
                download: Some(a),
                ..Default::default()
            },
            &ctx,
        )
        .perform(CancellationToken::new())
        .await
        .unwrap();
        let last = c.sink.lines()[before..].last().unwrap().message.clone();
        if round == 0 {
            assert!(last.starts_with("Downloaded buildpack ("), "{last}");
        } else {
            assert_eq!(last, "Downloaded buildpack", "the cached copy was used");
        }
        let out = c.sh(&format!("sh {to}/bp/detect")).await;
        assert_eq!(out, ["cached"], "round {round}");
    }
    assert_eq!(server.bodies("/buildpack.tgz"), 1, "the body was fetched once");
    assert_eq!(
        server.state.lock().unwrap().not_modified,
        1,
        "the second fetch was a 304"
    );
    assert_eq!(cache.usage().0, ["buildpack-ruby"]);

    // A new version on the server: the ETag no longer matches, the body is fetched again.
    let body2 = gzip(&raw_tar(&[Raw::File("bp/detect", b"echo v2\n")]));
    server.put("/buildpack.tgz", body2);
    let mut a = download(url.clone(), "/home/vcap/three", "buildpack");
    a.cache_key = "buildpack-ruby".into();
    step_for(
        &Action {
            download: Some(a),
            ..Default::default()
        },
        &ctx,
    )
    .perform(CancellationToken::new())
    .await
    .unwrap();
    assert_eq!(server.bodies("/buildpack.tgz"), 2);
    assert_eq!(c.sh("sh /home/vcap/three/bp/detect").await, ["v2"]);
    c.destroy(&env).await;
}

async fn malicious_archives(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    let marker = env.marker.to_str().unwrap().to_string();
    let passwd_before = std::fs::read(c.merged.join("etc/passwd")).unwrap();
    let host_passwd_before = std::fs::read("/etc/passwd").unwrap();
    let deep_escape = format!("../../../../../../../../../..{marker}/deep");
    let absolute = format!("{marker}/abs");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[Raw::File("ok.txt", b"fine"), Raw::File("../escape", b"x")]),
            "archive entry \"../escape\" has a '..' path component",
        ),
        (
            "deep",
            gzip(&raw_tar(&[Raw::File(&deep_escape, b"x")])),
            "has a '..' path component",
        ),
        (
            "absolute",
            raw_tar(&[Raw::File(&absolute, b"x")]),
            "has an absolute path",
        ),
        (
            "symlink-host",
            raw_tar(&[Raw::Symlink("a", &marker), Raw::File("a/through", b"x")]),
            "would be written through the symlink \"a\"",
        ),
        (
            "symlink-etc",
            // A new file name, not `a/passwd`: should both layers ever regress, nothing of the
            // host's is overwritten, and the assertions below still notice.
            raw_tar(&[
                Raw::Symlink("a", "/etc"),
                Raw::File("a/diego-archive-test", b"pwned"),
            ]),
            "would be written through the symlink \"a\"",
        ),
        (
            "symlink-up",
            raw_tar(&[Raw::Symlink("up", "../.."), Raw::File("up/escape", b"x")]),
            "would be written through the symlink \"up\"",
        ),
        (
            "zip-slip",
            zip(&[("fine.txt", b"fine"), ("../../zip-slip", b"x")]),
            "archive entry \"../../zip-slip\" has a '..' path component",
        ),
    ];
    for (name, body, want) in cases {
        let url = server.put(&format!("/{name}"), body);
        let to = format!("/home/vcap/evil/{name}");
        let err = c
            .perform(&Action {
                download: Some(download(url, &to, "evil")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let text = err.emittable().unwrap_or_default();
        assert!(
            text.starts_with("Copying evil into the container failed: ") && text.contains(want),
            "{name}: {text}"
        );
        // Nothing of it anywhere: not in the destination, not beside it, not on the host.
        assert!(
            !c.merged.join(to.trim_start_matches('/')).exists(),
            "{name} extracted something"
        );
        env.assert_marker_empty();
    }
    for p in [
        "escape",
        "zip-slip",
        "home/escape",
        "home/vcap/escape",
        "home/zip-slip",
    ] {
        assert!(!c.merged.join(p).exists(), "{p} appeared in the container");
    }
    assert!(!env.root.join("escape").exists());
    assert_eq!(std::fs::read(c.merged.join("etc/passwd")).unwrap(), passwd_before);
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd_before);
    assert!(
        !Path::new("/etc/diego-archive-test").exists(),
        "written to the host's /etc"
    );
    assert!(!c.merged.join("etc/diego-archive-test").exists());

    // Links that would lead out are left out; the rest of the archive arrives.
    let url = server.put(
        "/links",
        raw_tar(&[
            Raw::Symlink("etc-link", "/etc"),
            Raw::Symlink("host-link", &marker),
            Raw::Symlink("up-link", "../../.."),
            Raw::Symlink("ok-link", "kept.txt"),
            Raw::File("kept.txt", b"kept"),
        ]),
    );
    let before = c.sink.lines().len();
    c.perform(&Action {
        download: Some(download(url, "/home/vcap/links", "links")),
        ..Default::default()
    })
    .await
    .unwrap();
    let skipped: Vec<String> = c.sink.lines()[before..]
        .iter()
        .filter(|l| l.message.starts_with("Skipped archive entry"))
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert_eq!(
        c.sh("ls /home/vcap/links; cat /home/vcap/links/ok-link").await,
        ["kept.txt", "ok-link", "kept"]
    );
    env.assert_marker_empty();
    c.destroy(&env).await;
}

async fn container_symlinks(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    let marker = env.marker.to_str().unwrap().to_string();
    // A process in the container makes symlinks that, followed on the host, lead out of it.
    c.sh(&format!(
        "ln -s {marker} /home/vcap/host-link; ln -s ../../../../../../../../..{marker} /home/vcap/up-link; ln -s / /home/vcap/root-link"
    ))
    .await;
    let evil_passwd_before = std::fs::read(c.merged.join("etc/passwd")).unwrap();
    for (link, entry) in [
        ("host-link", "host-link/pwned".to_string()),
        ("up-link", "up-link/pwned".to_string()),
        // Should this ever regress, the write lands in the marker directory, not in the host's
        // /etc.
        ("root-link", format!("root-link{marker}/pwned")),
    ] {
        let url = server.put(&format!("/{link}"), raw_tar(&[Raw::File(&entry, b"pwned")]));
        let err = c
            .perform(&Action {
                download: Some(download(url, "/home/vcap", "app")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let text = err.emittable().unwrap_or_default();
        assert!(
            text.starts_with("Copying app into the container failed: ")
                && text.contains("leads outside the destination"),
            "{link}: {text}"
        );
        env.assert_marker_empty();
    }
    assert_eq!(
        std::fs::read(c.merged.join("etc/passwd")).unwrap(),
        evil_passwd_before
    );

    // The destination itself through a symlink in the container resolves inside it.
    c.sh("mkdir -p /home/vcap/real && ln -s /home/vcap/real /home/vcap/alias")
        .await;
    let url = server.put("/alias", raw_tar(&[Raw::File("f.txt", b"through alias")]));
    c.perform(&Action {
        download: Some(download(url, "/home/vcap/alias", "")),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(c.sh("cat /home/vcap/real/f.txt").await, ["through alias"]);
    env.assert_marker_empty();
    c.destroy(&env).await;
}

async fn upload(env: Arc<Env>) {
    let c = env.container().await;
    let server = Server::start().await;
    c.sh("head -c 300000 /dev/urandom > /home/vcap/droplet.tgz").await;
    let written = std::fs::read(c.merged.join("home/vcap/droplet.tgz")).unwrap();
    assert_eq!(written.len(), 300_000);
    let tree = Action::serial(vec![
        Action {
            upload: Some(UploadAction {
                artifact: "droplet".into(),
                from: "droplet.tgz".into(),
                to: format!("{}/droplets/relative", server.base),
                ..Default::default()
            }),
            ..Default::default()
        },
        Action {
            upload: Some(UploadAction {
                from: "/home/vcap/droplet.tgz".into(),
                to: format!("{}/droplets/absolute", server.base),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    let before = c.sink.lines().len();
    c.perform(&tree).await.unwrap();
    {
        let st = server.state.lock().unwrap();
        for path in ["/droplets/relative", "/droplets/absolute"] {
            let got = st
                .posted
                .get(path)
                .unwrap_or_else(|| panic!("nothing posted to {path}"));
            assert!(
                got == &written,
                "{path}: {} bytes differ from the file",
                got.len()
            );
        }
    }
    assert_eq!(
        c.sink.messages()[before..],
        ["Uploading droplet...", "Uploaded droplet (293K)"]
    );

    let err = c
        .perform(&Action {
            upload: Some(UploadAction {
                artifact: "result".into(),
                from: "/home/vcap/missing".into(),
                to: format!("{}/x", server.base),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, StepError::Emittable("Uploading result failed".into()));
    c.destroy(&env).await;
}

async fn timeout_and_try(env: Arc<Env>) {
    let c = env.container().await;
    let started = tokio::time::Instant::now();
    let err = c
        .perform(&Action::timeout(sh("exec sleep 60"), 500))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("exceeded 500ms timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the process was not stopped"
    );
    assert!(
        c.sink.messages().iter().any(|m| m == "Exit status 143"),
        "sleep got SIGTERM: {:?}",
        c.sink.messages()
    );
    c.perform(&Action::timeout(sh("exit 0"), 30_000)).await.unwrap();

    c.perform(&Action::try_(sh("echo trying; exit 7"))).await.unwrap();
    let messages = c.sink.messages();
    assert!(
        messages.ends_with(&["trying".to_string(), "Exit status 7".to_string()]),
        "{messages:?}"
    );
    c.destroy(&env).await;
}

async fn combinators(env: Arc<Env>) {
    let c = env.container().await;
    // Serial stops at the first failure.
    let err = c
        .perform(&Action::serial(vec![
            sh("echo one > /tmp/serial"),
            sh("echo two >> /tmp/serial; exit 2"),
            sh("echo never >> /tmp/serial"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.emittable().unwrap(), "Exit status 2");
    assert_eq!(c.sh("cat /tmp/serial").await, ["one", "two"]);

    // Parallel runs all (both write) and fails when one fails.
    let err = c
        .perform(&Action::parallel(vec![
            sh("sleep 1; echo a > /tmp/pa"),
            sh("echo b > /tmp/pb; exit 4"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.emittable().unwrap(), "Exit status 4");
    assert_eq!(c.sh("cat /tmp/pa /tmp/pb").await, ["a", "b"]);
    c.perform(&Action::parallel(vec![sh("true"), sh("true")]))
        .await
        .unwrap();

    // Codependent: one child exiting stops the others.
    let started = tokio::time::Instant::now();
    let err = c
        .perform(&Action::codependent(vec![sh("exec sleep 60"), sh("exit 0")]))
        .await
        .unwrap_err();
    assert_eq!(err, StepError::CodependentStepExited);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sleeper was not stopped"
    );
    let err = c
        .perform(&Action::codependent(vec![sh("exec sleep 60"), sh("exit 9")]))
        .await
        .unwrap_err();
    assert_eq!(err.emittable().as_deref(), Some("Exit status 9"));
    c.destroy(&env).await;
}

async fn emit_progress(env: Arc<Env>) {
    let c = env.container().await;
    let wrap = |child: Action| Action {
        emit_progress: Some(EmitProgressAction {
            action: Some(Box::new(child)),
            start_message: "Staging...".into(),
            success_message: "Staging complete".into(),
            failure_message_prefix: "Staging failed".into(),
            log_source: "STG".into(),
        }),
        ..Default::default()
    };
    c.perform(&wrap(sh("echo compiling"))).await.unwrap();
    let before = c.sink.lines().len();
    let err = c.perform(&wrap(sh("echo broken >&2; exit 5"))).await.unwrap_err();
    assert_eq!(err.emittable().unwrap(), "Exit status 5");
    let lines = c.sink.lines();
    let got: Vec<(&str, &str, diego_logs::LogStream)> = lines
        .iter()
        .map(|l| (l.source_type.as_str(), l.message.as_str(), l.stream))
        .collect();
    use diego_logs::LogStream::{Stderr, Stdout};
    assert_eq!(
        got[..before],
        [
            ("STG", "Staging...", Stdout),
            ("STG", "compiling", Stdout),
            ("STG", "Exit status 0", Stdout),
            ("STG", "Staging complete", Stdout),
        ]
    );
    assert_eq!(
        got[before..],
        [
            ("STG", "Staging...", Stdout),
            ("STG", "broken", Stderr),
            ("STG", "Exit status 5", Stdout),
            ("STG", "Staging failed: Exit status 5", Stderr),
        ]
    );
    c.destroy(&env).await;
}
