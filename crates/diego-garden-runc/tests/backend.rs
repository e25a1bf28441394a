//! `RuncBackend` end to end: real runc containers over `preloaded:busybox` (root; needs runc
//! and busybox-static). Every test's [`Env`] removes whatever it made, even on failure.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use diego_garden::{
    ContainerBackend, ContainerSpec, ContainerState, ExitStatus, GardenError, Limits, NetIn, ProcessEvent,
    ProcessLimits, ProcessSpec, Signal,
};
use diego_garden_runc::cgroup;
use futures_util::StreamExt;

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount", "tar", "kill"];

/// A [`common::Sandbox`] with this file's helpers.
struct Env(common::Sandbox);

impl std::ops::Deref for Env {
    type Target = common::Sandbox;

    fn deref(&self) -> &common::Sandbox {
        &self.0
    }
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        common::Sandbox::new(test, TOOLS, 3).map(Env)
    }

    async fn create(&self, handle: &str, limits: Limits) -> String {
        let handle = common::unique(handle);
        self.backend
            .create(ContainerSpec {
                handle: handle.clone(),
                rootfs: "preloaded:busybox".into(),
                env: vec!["FOO=container".into()],
                limits,
                ..Default::default()
            })
            .await
            .unwrap();
        handle
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

use common::collect;

async fn run(env: &Env, handle: &str, spec: ProcessSpec) -> (String, String, ExitStatus) {
    collect(env.backend.run(handle, spec).await.unwrap().events).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_processes_with_output_exit_code_env_dir_and_user() {
    let Some(env) = Env::new("backend_run") else {
        return;
    };
    let h = env.create("run", Limits::default()).await;

    let (out, err, exit) = run(&env, &h, sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(
        exit,
        ExitStatus {
            code: 3,
            signal: None,
            oom_killed: false
        }
    );

    let (out, err, exit) = run(&env, &h, sh("id -u; pwd; echo $FOO; ulimit -n")).await;
    assert_eq!(exit.code, 0, "stderr: {err}");
    assert_eq!(out, "2000\n/home/vcap\ncontainer\n1024\n");

    let mut spec = sh("id -u; pwd; echo $FOO; ulimit -n");
    spec.user = "root".into();
    spec.dir = "/tmp".into();
    spec.env = vec!["FOO=process".into()];
    spec.limits = ProcessLimits { nofile: Some(4096) };
    spec.id = "as-root".into();
    let (out, err, _) = run(&env, &h, spec.clone()).await;
    assert_eq!(out, "0\n/tmp\nprocess\n4096\n", "stderr: {err}");
    assert!(matches!(
        env.backend.run(&h, spec).await,
        Err(GardenError::Exists(_))
    ));
    let mut ghost = sh("true");
    ghost.user = "ghost".into();
    assert!(matches!(
        env.backend.run(&h, ghost).await,
        Err(GardenError::Invalid(_))
    ));

    let info = env.backend.info(&h).await.unwrap();
    assert_eq!(info.state, ContainerState::Active);
    assert!(info.process_ids.contains(&"as-root".to_string()));
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kills_and_reports_it() {
    let Some(env) = Env::new("backend_oom") else {
        return;
    };
    let h = env
        .create(
            "oom",
            Limits {
                memory_bytes: 32 << 20,
                ..Default::default()
            },
        )
        .await;
    let spec = ProcessSpec {
        path: "dd".into(),
        args: ["if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let (_, err, exit) = run(&env, &h, spec).await;
    assert_eq!(
        exit,
        ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: true
        },
        "stderr: {err}"
    );
    assert!(env
        .backend
        .info(&h)
        .await
        .unwrap()
        .events
        .contains(&"out of memory".to_string()));

    // A plain SIGKILL is not an OOM.
    let (_, _, exit) = run(&env, &h, sh("kill -9 $$")).await;
    assert_eq!((exit.code, exit.oom_killed), (137, false));
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_contains_a_fork_loop() {
    let Some(env) = Env::new("backend_pids") else {
        return;
    };
    let h = env
        .create(
            "pids",
            Limits {
                pids: 20,
                ..Default::default()
            },
        )
        .await;
    // busybox sh aborts a script whose fork fails, so fork from a subshell; `echo` is a builtin.
    // The sleeps must not hold the output pipes: runc exec copies them and exits only at EOF.
    let (out, err, exit) = run(
        &env,
        &h,
        sh("(while :; do sleep 30 & done) >/dev/null 2>&1; echo survived"),
    )
    .await;
    assert_eq!((out.as_str(), exit.code), ("survived\n", 0), "stderr: {err}");
    let metrics = env
        .backend
        .bulk_metrics(&[h.clone(), "missing".into()])
        .await
        .unwrap();
    assert_eq!(metrics.keys().collect::<Vec<_>>(), [&h]);
    let pids = metrics[&h].pids;
    assert!((15..=20).contains(&pids), "pids.current = {pids}");
    assert!(metrics[&h].memory_bytes > 0 && metrics[&h].cpu_usage_ns > 0);
    // The host can still fork.
    assert!(Command::new("true").status().unwrap().success());
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_stop_and_attach_after_exit() {
    let Some(env) = Env::new("backend_signal") else {
        return;
    };
    let h = env.create("sig", Limits::default()).await;
    let stream = env
        .backend
        .run(
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
    env.backend.signal(&h, "sleeper", Signal::Term).await.unwrap();
    let (_, _, exit) = collect(stream.events).await;
    assert_eq!((exit.code, exit.signal), (143, Some(15)));
    let (_, _, replayed) = collect(env.backend.attach(&h, "sleeper").await.unwrap().events).await;
    assert_eq!(replayed, exit);
    // Signalling an exited process is fine; an unknown one is not.
    env.backend.signal(&h, "sleeper", Signal::Kill).await.unwrap();
    assert!(matches!(
        env.backend.signal(&h, "nope", Signal::Kill).await,
        Err(GardenError::NotFound(_))
    ));

    // stop: TERM, then KILL after the grace period for a process that ignores TERM.
    let stubborn = env
        .backend
        .run(&h, sh("trap '' TERM; echo ready; while :; do sleep 1; done"))
        .await
        .unwrap();
    let mut events = stubborn.events;
    assert_eq!(events.next().await, Some(ProcessEvent::Stdout("ready\n".into())));
    env.backend.stop(&h, false).await.unwrap();
    let (_, _, exit) = collect(events).await;
    assert_eq!(exit.code, 137);
    assert_eq!(env.backend.info(&h).await.unwrap().state, ContainerState::Stopped);
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_write_to_their_own_layer_only() {
    let Some(env) = Env::new("backend_isolation") else {
        return;
    };
    let a = env.create("a", Limits::default()).await;
    let b = env.create("b", Limits::default()).await;
    let (_, err, exit) = run(&env, &a, sh("echo mine > /home/vcap/f && cat /home/vcap/f")).await;
    assert_eq!(exit.code, 0, "stderr: {err}");
    let (_, _, exit) = run(&env, &b, sh("test -e /home/vcap/f")).await;
    assert_eq!(exit.code, 1, "b sees a's file");
    let base = env.root.join("store/preloaded/busybox");
    assert!(base.join("bin/sh").exists());
    assert!(!base.join("home/vcap/f").exists(), "the base rootfs was written");
    let metrics = env.backend.bulk_metrics(std::slice::from_ref(&a)).await.unwrap();
    assert!(metrics[&a].disk_bytes >= 5, "{:?}", metrics[&a]);
    env.backend.destroy(&a).await.unwrap();
    env.backend.destroy(&b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rules_and_destroy_leaves_nothing() {
    let Some(env) = Env::new("backend_destroy") else {
        return;
    };
    env.backend.ping().await.unwrap();
    let mut props = BTreeMap::new();
    props.insert("owner".to_string(), "test".to_string());
    let h = common::unique("d");
    let spec = ContainerSpec {
        handle: h.clone(),
        rootfs: "preloaded:busybox".into(),
        properties: props.clone(),
        limits: Limits {
            memory_bytes: 64 << 20,
            pids: 50,
            cpu_shares: 512,
            disk_bytes: 0,
        },
        ..Default::default()
    };
    env.backend.create(spec.clone()).await.unwrap();
    assert!(matches!(
        env.backend.create(spec.clone()).await,
        Err(GardenError::Exists(_))
    ));
    let mut bad = spec.clone();
    bad.handle = "../x".into();
    assert!(matches!(
        env.backend.create(bad).await,
        Err(GardenError::Invalid(_))
    ));
    let mut ports = spec.clone();
    ports.handle = common::unique("p");
    ports.net_in = vec![NetIn {
        host_port: 70000,
        container_port: 8080,
    }];
    let err = env.backend.create(ports).await.unwrap_err();
    assert!(matches!(err, GardenError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("70000"), "{err}");
    let mut missing_rootfs = spec.clone();
    missing_rootfs.handle = common::unique("r");
    missing_rootfs.rootfs = "preloaded:nope".into();
    assert!(matches!(
        env.backend.create(missing_rootfs).await,
        Err(GardenError::Invalid(_))
    ));
    assert_eq!(env.backend.list(&props).await.unwrap(), std::slice::from_ref(&h));
    // Capacity is 3.
    let h2 = env.create("c2", Limits::default()).await;
    let h3 = env.create("c3", Limits::default()).await;
    let mut over = spec.clone();
    over.handle = common::unique("c4");
    assert!(matches!(
        env.backend.create(over).await,
        Err(GardenError::Invalid(_))
    ));

    // A process still running when the container is destroyed.
    let mut sleeper = sh("sleep 30");
    sleeper.id = "sleeper".into();
    let running = env.backend.run(&h, sleeper).await.unwrap();
    let dir = env.depot.join(&h);
    assert!(common::mounted(&dir.join("merged")) > 0);
    let pid_in = |file: &str| -> u32 {
        let path = dir.join(file);
        for _ in 0..500 {
            if let Some(pid) = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no pid in {}", path.display());
    };
    let pids = [
        pid_in("init.pid"),
        pid_in("processes/sleeper/pid"),
        pid_in("processes/sleeper/shim.pid"),
    ];
    let init = pids[0];
    let namespaces: Vec<(&str, PathBuf)> = ["net", "pid", "mnt", "ipc", "uts"]
        .into_iter()
        .map(|ns| (ns, fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap()))
        .collect();
    for (ns, link) in &namespaces {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(&host, link, "the container shares the host's {ns} namespace");
    }
    env.backend.destroy(&h).await.unwrap();
    let (_, _, exit) = collect(running.events).await;
    assert_ne!(exit.code, 0, "killed by the destroy");

    // No process: the init, the process and its shim are gone (at most a zombie is left for
    // a parent to reap, holding nothing but its pid)…
    // (The backend reaps its own: no zombie of this process either.)
    for pid in pids {
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            assert!(status.contains("State:\tZ"), "process {pid} still runs: {status}");
            let ours = format!("PPid:\t{}\n", std::process::id());
            assert!(
                !status.contains(&ours),
                "process {pid} is a zombie we never reaped"
            );
        }
    }
    // …and no process anywhere is in any of the container's namespaces.
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for (ns, link) in &namespaces {
            if let Ok(theirs) = fs::read_link(entry.path().join("ns").join(ns)) {
                assert_ne!(
                    &theirs, link,
                    "process {name:?} is still in the container's {ns} namespace"
                );
            }
        }
    }

    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let depot_mounts: Vec<_> = diego_garden_runc::overlay::mount_points(&mountinfo)
        .filter(|p| p.starts_with(&env.depot))
        .filter(|p| p.starts_with(&dir))
        .collect();
    assert!(depot_mounts.is_empty(), "mounts left: {depot_mounts:?}");
    let cgroups: Vec<PathBuf> = fs::read_dir(cgroup::CGROUP_ROOT)
        .unwrap()
        .map(|e| e.unwrap().path().join("diego").join(&h))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    assert!(!env.runc.list().unwrap().contains(&h));
    assert!(!dir.exists());
    assert!(matches!(
        env.backend.destroy(&h).await,
        Err(GardenError::NotFound(_))
    ));
    assert!(matches!(
        env.backend.info(&h).await,
        Err(GardenError::NotFound(_))
    ));

    env.backend.destroy(&h2).await.unwrap();
    env.backend.destroy(&h3).await.unwrap();
    assert!(env.runc.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(&env.depot).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_in_and_out_round_trip() {
    let Some(env) = Env::new("backend_stream") else {
        return;
    };
    let h = env.create("s", Limits::default()).await;
    let src = env.root.join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/hello.txt"), "hello from the host\n").unwrap();
    let tar = Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(&src)
        .arg("dir")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let stream = futures_util::stream::iter(vec![Ok(bytes::Bytes::from(tar.stdout))]).boxed();
    env.backend.stream_in(&h, "/tmp/in", stream).await.unwrap();
    let (out, err, exit) = run(&env, &h, sh("cat /tmp/in/dir/hello.txt")).await;
    assert_eq!(
        (out.as_str(), exit.code),
        ("hello from the host\n", 0),
        "stderr: {err}"
    );

    let mut out_stream = env.backend.stream_out(&h, "/tmp/in/dir").await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = out_stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let dst = env.root.join("dst");
    fs::create_dir_all(&dst).unwrap();
    let archive = env.root.join("out.tar");
    fs::write(&archive, bytes).unwrap();
    let status = Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg(&archive)
        .arg("-C")
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(dst.join("dir/hello.txt")).unwrap(),
        "hello from the host\n"
    );

    for bad in ["relative", "/tmp/../../etc"] {
        assert!(matches!(
            env.backend.stream_out(&h, bad).await,
            Err(GardenError::Invalid(_))
        ));
    }
    assert!(matches!(
        env.backend.stream_out(&h, "/nope").await,
        Err(GardenError::NotFound(_))
    ));
    env.backend.destroy(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_processes_are_invisible_inside_a_container() {
    let Some(env) = Env::new("backend_pidns") else {
        return;
    };
    let h = env.create("pidns", Limits::default()).await;
    let (out, err, exit) = run(
        &env,
        &h,
        sh("ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '"),
    )
    .await;
    assert_eq!(exit.code, 0, "stderr: {err}");
    let mut lines = out.lines();
    let inside: usize = lines.next().unwrap().trim().parse().unwrap();
    let host = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count();
    // The idle init, the shell, ls and grep: a handful, against the host's many.
    assert!(inside < 10, "{inside} processes visible inside");
    assert!(
        host > inside + 10,
        "host has {host} processes, container sees {inside}"
    );
    let pid1 = lines.next().unwrap_or_default();
    assert!(
        pid1.starts_with("/bin/sh") || pid1.starts_with("sh"),
        "pid 1 is the container's init, not the host's: {pid1:?}"
    );
    env.backend.destroy(&h).await.unwrap();
}

/// Two busy containers with Diego CPU weights 1 and 3 get CPU time in roughly that ratio. Each
/// runs two busy loops for a bounded 3 s so both compete for both cores; the assertion is on
/// the ratio of CPU time used (cgroup cpuacct), with a wide tolerance for a shared machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_weights_share_cpu_in_proportion() {
    let Some(env) = Env::new("backend_cpu") else {
        return;
    };
    let light = env
        .create(
            "cpu1",
            Limits {
                cpu_shares: Limits::cpu_shares_for_weight(1),
                ..Default::default()
            },
        )
        .await;
    let heavy = env
        .create(
            "cpu3",
            Limits {
                cpu_shares: Limits::cpu_shares_for_weight(3),
                ..Default::default()
            },
        )
        .await;
    // Two busy threads per container: four on two CPUs, so the weights decide who runs.
    let busy = || sh("for i in 1 2; do timeout -s KILL 5 sh -c 'while :; do :; done' & done; wait; true");
    let a = env.backend.run(&light, busy()).await.unwrap();
    let b = env.backend.run(&heavy, busy()).await.unwrap();
    // Measure a window in which both are surely busy (not the head start of the first, which
    // a loaded machine can stretch): CPU time used between two samples.
    let usage = || async {
        let m = env
            .backend
            .bulk_metrics(&[light.clone(), heavy.clone()])
            .await
            .unwrap();
        (m[&light].cpu_usage_ns as f64, m[&heavy].cpu_usage_ns as f64)
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (a0, b0) = usage().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (a1, b1) = usage().await;
    let (ra, rb) = tokio::join!(collect(a.events), collect(b.events));
    assert_eq!((ra.2.code, rb.2.code), (0, 0), "{ra:?} {rb:?}");
    let (cpu_a, cpu_b) = (a1 - a0, b1 - b0);
    assert!(cpu_a > 0.0 && cpu_b > 0.0, "{cpu_a} {cpu_b}");
    let ratio = cpu_b / cpu_a;
    println!("CPU time weight 3 : weight 1 = {ratio:.2}");
    assert!(
        (1.5..=6.0).contains(&ratio),
        "weight 3 : weight 1 got CPU ratio {ratio:.2} ({cpu_b} ns vs {cpu_a} ns)"
    );
    env.backend.destroy(&light).await.unwrap();
    env.backend.destroy(&heavy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_and_other_dangerous_calls_are_refused_even_to_root() {
    let Some(env) = Env::new("backend_dangerous") else {
        return;
    };
    let h = env.create("x", Limits::default()).await;
    // Each line: what was tried, and whether the kernel let it happen. `root` inside the
    // container is the most a process there can be. (Setting the clock is refused too, but
    // it is not probed: busybox `date -s` reports success either way, and a regression would
    // change the host's clock.)
    let script = "mkdir -p /tmp/m; \
        for try in 'mount -t tmpfs none /tmp/m' 'mount --bind /tmp /tmp/m' 'umount /proc' \
                   'unshare -m true' 'unshare -U true' 'unshare -n true' 'hostname other' \
                   'ip link add d0 type dummy' 'mknod /tmp/sda b 8 0' 'swapoff -a' \
                   'chroot / true' 'nsenter -t 1 -m true'; do \
          if $try 2>/dev/null; then echo \"ALLOWED: $try\"; else echo \"refused: $try\"; fi; \
        done; id -u";
    let mut spec = sh(script);
    spec.user = "root".into();
    let (out, err, exit) = run(&env, &h, spec).await;
    assert_eq!(exit.code, 0, "stderr: {err}");
    let allowed: Vec<&str> = out.lines().filter(|l| l.starts_with("ALLOWED")).collect();
    assert!(allowed.is_empty(), "allowed in a container: {allowed:?}\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("refused")).count(),
        12,
        "{out}"
    );
    assert!(out.ends_with("0\n"), "ran as root inside: {out}");
    // And the container's default user is not root.
    let (out, _, _) = run(&env, &h, sh("id -u; id -g")).await;
    assert_eq!(out, "2000\n2000\n");
    env.backend.destroy(&h).await.unwrap();
}
