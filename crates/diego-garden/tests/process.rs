//! The process backend over real host processes, in a temporary depot.
//!
//! Cleanup: every test destroys its containers; if a test fails first, dropping the backend
//! kills its containers' process groups and the depot's `TempDir` removes the directories
//! (the crash test, which forgets its backend, kills its processes itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use diego_garden::process::ProcessBackend;
use diego_garden::{
    Capacity, ContainerBackend, ContainerSpec, ContainerState, ExitStatus, GardenError, NetIn, PortMapping,
    ProcessEvent, ProcessLimits, ProcessSpec, Signal, TarStream,
};
use futures_util::StreamExt;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    g: ProcessBackend,
    depot: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let depot = tempfile::tempdir().expect("temp depot");
        let g = ProcessBackend::new(
            depot.path().to_path_buf(),
            Capacity {
                memory_bytes: 1 << 30,
                disk_bytes: 1 << 30,
                max_containers: 10,
            },
        )
        .expect("process backend")
        .with_grace(Duration::from_millis(200));
        Self { g, depot }
    }

    async fn create(&self, handle: &str) -> String {
        self.g.create(spec(handle)).await.expect("create").handle
    }

    fn dir(&self, handle: &str) -> PathBuf {
        self.depot.path().join(handle)
    }
}

fn spec(handle: &str) -> ContainerSpec {
    ContainerSpec {
        handle: handle.into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        ..Default::default()
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: ExitStatus,
}

async fn collect(events: futures_util::stream::BoxStream<'static, ProcessEvent>) -> Output {
    let events: Vec<_> = tokio::time::timeout(WAIT, events.collect())
        .await
        .expect("process ends in time");
    let mut out = Output {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit: ExitStatus {
            code: -999,
            ..Default::default()
        },
    };
    let n = events.len();
    for (i, e) in events.into_iter().enumerate() {
        match e {
            ProcessEvent::Stdout(b) => out.stdout.extend_from_slice(&b),
            ProcessEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
            ProcessEvent::Exited(s) => {
                assert_eq!(i, n - 1, "Exited is the last event");
                out.exit = s;
            }
        }
    }
    out
}

async fn run(f: &Fixture, handle: &str, spec: ProcessSpec) -> Output {
    collect(f.g.run(handle, spec).await.expect("run").events).await
}

fn code(code: i32) -> ExitStatus {
    ExitStatus {
        code,
        ..Default::default()
    }
}

fn killed(signal: i32) -> ExitStatus {
    ExitStatus {
        code: 128 + signal,
        signal: Some(signal),
        oom_killed: false,
    }
}

/// `tar -c` of `dir`'s contents, as a stream of two chunks (to exercise reassembly).
fn tar_of(dir: &Path) -> TarStream {
    let out = std::process::Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(dir)
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = out.stdout.split_at(out.stdout.len() / 2);
    let chunks = vec![Ok(Bytes::copy_from_slice(a)), Ok(Bytes::copy_from_slice(b))];
    Box::pin(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn output_and_exit_code_are_exact_and_recorded_on_disk() {
    let f = Fixture::new();
    let h = f.create("out").await;
    let mut p = sh("echo out; echo err >&2; exit 3");
    p.id = "p1".into();
    let o = run(&f, &h, p).await;
    assert_eq!(o.stdout, b"out\n");
    assert_eq!(o.stderr, b"err\n");
    assert_eq!(o.exit, code(3));

    let pdir = f.dir(&h).join("processes/p1");
    assert_eq!(std::fs::read(pdir.join("stdout")).unwrap(), b"out\n");
    assert_eq!(std::fs::read(pdir.join("stderr")).unwrap(), b"err\n");
    let exit: ExitStatus = serde_json::from_slice(&std::fs::read(pdir.join("exit")).unwrap()).unwrap();
    assert_eq!(exit, code(3));

    // attach after the exit replays everything.
    let again = collect(f.g.attach(&h, "p1").await.unwrap().events).await;
    assert_eq!(
        (again.stdout, again.stderr, again.exit),
        (o.stdout, o.stderr, o.exit)
    );
    assert!(matches!(
        f.g.attach(&h, "nope").await,
        Err(GardenError::NotFound(_))
    ));
    assert_eq!(f.g.info(&h).await.unwrap().process_ids, ["p1"]);
    assert!(matches!(
        f.g.run(&h, {
            let mut p = sh("true");
            p.id = "p1".into();
            p
        })
        .await,
        Err(GardenError::Exists(_))
    ));
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn env_home_and_working_dir_are_honoured() {
    let f = Fixture::new();
    let mut s = spec("env");
    s.env = vec!["FOO=container".into(), "BAR=kept".into()];
    let h = f.g.create(s).await.unwrap().handle;
    assert_eq!(run(&f, &h, sh("mkdir sub")).await.exit, code(0));

    let mut p = sh("echo $FOO $BAR; pwd; echo $HOME; echo $TMPDIR; echo $PATH");
    p.env = vec!["FOO=process".into()];
    p.dir = "sub".into();
    let o = run(&f, &h, p).await;
    assert_eq!(o.exit, code(0), "{}", String::from_utf8_lossy(&o.stderr));
    let root = f.dir(&h).canonicalize().unwrap().join("root");
    let home = root.join("home/vcap");
    let want = format!(
        "process kept\n{}\n{}\n{}\n/usr/local/bin:/usr/bin:/bin\n",
        home.join("sub").display(),
        home.display(),
        root.join("tmp").display()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);

    // An absolute dir is a host path.
    let mut p = sh("pwd");
    p.dir = "/".into();
    assert_eq!(run(&f, &h, p).await.stdout, b"/\n");
    let mut p = sh("pwd");
    p.dir = "missing".into();
    assert!(matches!(f.g.run(&h, p).await, Err(GardenError::Invalid(_))));
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn signals_end_processes_and_are_harmless_after_exit() {
    let f = Fixture::new();
    let h = f.create("sig").await;
    let p =
        f.g.run(
            &h,
            ProcessSpec {
                id: "sleeper".into(),
                path: "sleep".into(),
                args: vec!["30".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    f.g.signal(&h, "sleeper", Signal::Term).await.unwrap();
    let o = collect(p.events).await;
    assert_eq!(o.exit, killed(15));
    f.g.signal(&h, "sleeper", Signal::Kill)
        .await
        .expect("signalling an exited process is fine");
    assert!(matches!(
        f.g.signal(&h, "nope", Signal::Term).await,
        Err(GardenError::NotFound(_))
    ));
    assert_eq!(
        collect(f.g.attach(&h, "sleeper").await.unwrap().events)
            .await
            .exit,
        killed(15)
    );
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_term_after_the_grace_and_refuses_new_ones() {
    let f = Fixture::new();
    let h = f.create("stop").await;
    let mut p =
        f.g.run(&h, sh("trap '' TERM; echo ready; sleep 30"))
            .await
            .unwrap();
    // Wait until the trap is installed.
    let first = tokio::time::timeout(WAIT, p.events.next()).await.unwrap();
    assert_eq!(first, Some(ProcessEvent::Stdout("ready\n".into())));
    f.g.stop(&h, false).await.unwrap();
    assert_eq!(collect(p.events).await.exit, killed(9));
    assert_eq!(f.g.info(&h).await.unwrap().state, ContainerState::Stopped);
    assert!(matches!(
        f.g.run(&h, sh("true")).await,
        Err(GardenError::Invalid(_))
    ));
    f.g.destroy(&h).await.unwrap();

    // kill = true does not wait for TERM.
    let h = f.create("stop-kill").await;
    let p = f.g.run(&h, sh("exec sleep 30")).await.unwrap();
    f.g.stop(&h, true).await.unwrap();
    assert_eq!(collect(p.events).await.exit, killed(9));
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn nofile_rlimit_is_applied() {
    let f = Fixture::new();
    let h = f.create("rlimit").await;
    let mut p = sh("ulimit -n");
    p.limits = ProcessLimits { nofile: Some(321) };
    let o = run(&f, &h, p).await;
    assert_eq!(o.exit, code(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"321\n");
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn container_ports_are_host_ports_and_cannot_be_shared() {
    let f = Fixture::new();
    let port = |host_port, container_port| NetIn {
        host_port,
        container_port,
    };
    let mut a = spec("a");
    a.net_in = vec![port(0, 18080), port(18081, 18081)];
    let info = f.g.create(a).await.unwrap();
    assert_eq!(
        info.mapped_ports,
        [
            PortMapping {
                host_port: 18080,
                container_port: 18080
            },
            PortMapping {
                host_port: 18081,
                container_port: 18081
            }
        ]
    );
    let mut b = spec("b");
    b.net_in = vec![port(0, 18080)];
    let err = f.g.create(b.clone()).await.unwrap_err();
    assert!(
        matches!(&err, GardenError::Invalid(m) if m.contains("18080")),
        "{err:?}"
    );
    let mut c = spec("c");
    c.net_in = vec![port(9000, 9001)];
    assert!(matches!(f.g.create(c).await, Err(GardenError::Invalid(_))));
    assert!(
        matches!(f.g.info("b").await, Err(GardenError::NotFound(_))),
        "no half-created container"
    );

    f.g.destroy("a").await.unwrap();
    f.g.create(b)
        .await
        .expect("the port is free once its container is gone");
    f.g.destroy("b").await.unwrap();
}

#[tokio::test]
async fn create_validates_rootfs_handles_and_capacity() {
    let depot = tempfile::tempdir().unwrap();
    let g = ProcessBackend::new(
        depot.path().to_path_buf(),
        Capacity {
            max_containers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    g.ping().await.unwrap();
    assert_eq!(g.capacity().await.unwrap().max_containers, 1);
    let mut oci = spec("x");
    oci.rootfs = "oci:///images/busybox".into();
    assert!(matches!(g.create(oci).await, Err(GardenError::Invalid(m)) if m.contains("preloaded")));
    let mut no_rootfs = spec("x");
    no_rootfs.rootfs.clear();
    assert!(matches!(g.create(no_rootfs).await, Err(GardenError::Invalid(_))));
    assert!(matches!(
        g.create(spec("../evil")).await,
        Err(GardenError::Invalid(_))
    ));

    let info = g.create(spec("")).await.unwrap();
    assert!(!info.handle.is_empty(), "a handle is generated");
    assert!(depot.path().join(&info.handle).join("root/home/vcap").is_dir());
    assert!(matches!(
        g.create(spec(&info.handle)).await,
        Err(GardenError::Exists(_))
    ));
    assert!(
        matches!(g.create(spec("second")).await, Err(GardenError::Invalid(_))),
        "over capacity"
    );
    g.destroy(&info.handle).await.unwrap();
}

#[tokio::test]
async fn files_stream_in_and_out_as_tar() {
    let f = Fixture::new();
    let h = f.create("files").await;
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("app")).unwrap();
    std::fs::write(src.path().join("app/hello.txt"), "hello from tar\n").unwrap();

    // Relative container paths are under home; absolute ones under the container's root.
    f.g.stream_in(&h, "droplet", tar_of(src.path())).await.unwrap();
    let o = run(&f, &h, sh("cat droplet/app/hello.txt")).await;
    assert_eq!(
        o.stdout,
        b"hello from tar\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    f.g.stream_in(&h, "/opt/x", tar_of(src.path())).await.unwrap();
    assert!(f.dir(&h).join("root/opt/x/app/hello.txt").is_file());

    let mut out = f.g.stream_out(&h, "/home/vcap/droplet/app").await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = out.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let dst = tempfile::tempdir().unwrap();
    let archive = dst.path().join("out.tar");
    std::fs::write(&archive, &bytes).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-x", "-f"])
        .arg(&archive)
        .arg("-C")
        .arg(dst.path())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(dst.path().join("app/hello.txt")).unwrap(),
        "hello from tar\n"
    );

    assert!(matches!(
        f.g.stream_in(&h, "/../outside", tar_of(src.path())).await,
        Err(GardenError::Invalid(_))
    ));
    assert!(matches!(
        f.g.stream_out(&h, "/no/such").await,
        Err(GardenError::NotFound(_))
    ));
    let garbage: TarStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(
        b"this is not a tar archive",
    ))]));
    assert!(matches!(
        f.g.stream_in(&h, "g", garbage).await,
        Err(GardenError::Invalid(_))
    ));
    f.g.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn destroy_kills_processes_and_removes_the_directory() {
    let f = Fixture::new();
    let h = f.create("doomed").await;
    let p = f.g.run(&h, sh("echo started; exec sleep 30")).await.unwrap();
    let m = f.g.bulk_metrics(&[h.clone(), "nope".into()]).await.unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), [&h]);
    assert_eq!(m[&h].pids, 1);
    assert!(m[&h].memory_bytes > 0, "{:?}", m[&h]);
    assert!(f.dir(&h).is_dir());

    f.g.destroy(&h).await.unwrap();
    assert_eq!(collect(p.events).await.exit, killed(9));
    assert!(!f.dir(&h).exists());
    assert!(matches!(f.g.info(&h).await, Err(GardenError::NotFound(_))));
    assert!(matches!(f.g.destroy(&h).await, Err(GardenError::NotFound(_))));
    assert!(f
        .g
        .bulk_metrics(std::slice::from_ref(&h))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn processes_run_as_the_current_user_only() {
    let f = Fixture::new();
    let h = f.create("user").await;
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut p = sh("id -un");
    p.user = me.trim().into();
    assert_eq!(run(&f, &h, p).await.stdout, me.as_bytes());

    let mut p = sh("true");
    p.user = "someone-else-entirely".into();
    let Err(err) = f.g.run(&h, p).await else {
        panic!("running as another user must fail")
    };
    assert!(
        matches!(&err, GardenError::Invalid(m) if m.contains("cannot switch users")),
        "{err:?}"
    );
    f.g.destroy(&h).await.unwrap();
}

/// The live `sleep 1000` processes working in `dir`, each with its start time.
fn sleeps_in(dir: &Path) -> Vec<(u32, u64)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00")
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .filter_map(|pid| Some((pid, diego_garden::procfs::live_start_time(pid)?)))
        .collect()
}

/// Whether the process `pid` that started at `start` still runs (a zombie does not; a
/// reused pid is another process).
fn still_alive(pid: u32, start: u64) -> bool {
    diego_garden::procfs::live_start_time(pid) == Some(start)
}

/// Kills, on drop, those of the processes still running (so a failing test leaves none).
struct KillOnDrop(Vec<(u32, u64)>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, start) in &self.0 {
            if still_alive(pid, start) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

async fn sleeps_appear(dir: &Path, n: usize) -> Vec<(u32, u64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = sleeps_in(dir);
        if found.len() == n {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} sleeps: {found:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backend_opened_on_a_crashed_ones_depot_ends_its_process_groups_and_containers() {
    let f = Fixture::new();
    let h = f.create("left").await;
    let p = f.g.run(&h, sh("sleep 1000 & sleep 1000")).await.unwrap();
    let sleeps = sleeps_appear(&f.dir(&h), 2).await;
    let _cleanup = KillOnDrop(sleeps.clone());
    // The server "crashes": its table is gone, nothing is destroyed.
    let Fixture { g, depot } = f;
    std::mem::forget(g);

    let capacity = Capacity {
        max_containers: 1,
        ..Default::default()
    };
    let again = ProcessBackend::new(depot.path().to_path_buf(), capacity).expect("reopening");
    for &(pid, start) in &sleeps {
        assert!(
            !still_alive(pid, start),
            "sleep {pid} outlived the crashed server"
        );
    }
    assert!(
        !depot.path().join(&h).exists(),
        "the leftover container is removed"
    );
    assert!(again.list(&Default::default()).await.unwrap().is_empty());
    // The old server's supervisor sees its leader killed.
    assert_eq!(collect(p.events).await.exit, killed(9));
    again.create(spec(&h)).await.expect("the handle is free again");
    again.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn destroy_kills_an_apps_children_even_after_the_app_exited() {
    let f = Fixture::new();
    let h = f.create("kids").await;
    let waiting = f.g.run(&h, sh("sleep 1000 & wait")).await.unwrap();
    // Exits at once, leaving its child behind in its group.
    let o = run(&f, &h, sh("sleep 1000 & echo $!")).await;
    assert_eq!(o.exit, code(0));
    let sleeps = sleeps_appear(&f.dir(&h), 2).await;
    let _cleanup = KillOnDrop(sleeps.clone());

    f.g.destroy(&h).await.unwrap();
    for &(pid, start) in &sleeps {
        assert!(!still_alive(pid, start), "sleep {pid} outlived its container");
    }
    assert_eq!(collect(waiting.events).await.exit, killed(9));
    assert!(!f.dir(&h).exists());
}
