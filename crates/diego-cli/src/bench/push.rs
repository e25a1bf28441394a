//! `diego bench push`: how long `diego app push` takes, from the command to the app answering
//! through the router, in a fresh `diego dev` of its own (a child process, runc, free loopback
//! ports, a temporary data dir).
//!
//! - `static_push_to_routed_ms`: a one-page static site (static buildpack, busybox httpd, on
//!   the busybox stack), a new app each trial.
//! - `python_push_to_routed_ms`: a stdlib Python web app reading `PORT` (python buildpack, on
//!   the debian stack: `diego rootfs build debian` must have run), a new app each trial.
//! - `repush_unchanged_ms`: the static site pushed again unchanged (nothing uploaded, nothing
//!   staged, the instance already running).
//! - Baseline in the same run, `lrp_create_to_routed_ms`: an LRP of busybox httpd desired
//!   straight in the BBS with a route, until it answers through the router — no staging, no
//!   downloads: the floor a push stands on.
//!
//! Each figure is the median of `--trials` runs; every run is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diego_client::BbsClient;
use diego_model::{Action, Check, CheckDefinition, DesiredLrp, RunAction, CF_ROUTER};
use serde_json::json;

use super::procs::{self, until, Role};

pub struct Options {
    pub json: bool,
    pub trials: usize,
}

const ROUTED_TIMEOUT: Duration = Duration::from_secs(120);

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

struct Bench {
    dev: Role,
    bbs: BbsClient,
    apps_url: String,
    router: String,
    http: reqwest::Client,
    exe: PathBuf,
}

impl Bench {
    /// Runs `diego app push DIR --name NAME --stack STACK` to completion.
    async fn push(&self, dir: &Path, name: &str, stack: &str) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&self.exe)
            .args(["app", "push"])
            .arg(dir)
            .args(["--name", name, "--stack", stack, "-o", "json"])
            .env("DIEGO_APPS_URL", &self.apps_url)
            .env("DIEGO_BBS_URL", self.bbs.base_url())
            .output()
            .await
            .context("running diego app push")?;
        if !out.status.success() {
            bail!(
                "diego app push {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Waits until `GET /` for `host` through the router answers 200 with `text` in it.
    async fn routed(&self, host: &str, text: &str) -> anyhow::Result<()> {
        until(
            &format!("{host} answering through the router"),
            ROUTED_TIMEOUT,
            || async {
                let r = self
                    .http
                    .get(format!("{}/", self.router))
                    .header("host", host)
                    .send()
                    .await?;
                Ok(r.status().is_success() && r.text().await?.contains(text))
            },
        )
        .await
    }

    /// Milliseconds from now until `push` of `dir` as `name` answers at its route.
    async fn timed_push(&self, dir: &Path, name: &str, stack: &str, text: &str) -> anyhow::Result<u64> {
        let started = Instant::now();
        self.push(dir, name, stack).await?;
        self.routed(&format!("{name}.diego.localhost"), text).await?;
        Ok(started.elapsed().as_millis() as u64)
    }

    /// The baseline: busybox httpd desired straight in the BBS, until routed.
    async fn lrp_create(&self, name: &str) -> anyhow::Result<u64> {
        let host = format!("{name}.diego.localhost");
        let lrp = DesiredLrp {
            process_guid: name.into(),
            domain: "bench".into(),
            rootfs: "preloaded:busybox".into(),
            instances: 1,
            memory_mb: 64,
            disk_mb: 64,
            ports: vec![8080],
            routes: [(
                CF_ROUTER.to_string(),
                json!([{"hostnames": [host], "port": 8080}]),
            )]
            .into(),
            action: Some(Action::run(RunAction {
                path: "sh".into(),
                args: vec![
                    "-c".into(),
                    "echo baseline > /tmp/index.html && exec httpd -f -p 8080 -h /tmp".into(),
                ],
                ..Default::default()
            })),
            check_definition: Some(CheckDefinition {
                checks: vec![Check::tcp(8080)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        self.bbs
            .desire_lrp(&lrp)
            .await
            .context("desiring the baseline LRP")?;
        self.routed(&host, "baseline").await?;
        Ok(started.elapsed().as_millis() as u64)
    }
}

fn write_apps(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let site = root.join("site");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("index.html"), "<h1>bench static site</h1>\n")?;
    let py = root.join("py");
    std::fs::create_dir_all(&py)?;
    std::fs::write(
        py.join("app.py"),
        "import http.server, os\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       body = b'bench python app\\n'\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('Content-Length', str(len(body)))\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(body)\n\
         http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n",
    )?;
    std::fs::write(py.join("requirements.txt"), "")?;
    Ok((site, py))
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if !crate::commands::garden::runc_usable() {
        bail!("diego bench push stages and runs apps in runc containers: it needs root and runc (scripts/install-packages)");
    }
    let trials = o.trials.max(1);
    let say = |line: &str| super::say(o.json, line);
    let root = tempfile::tempdir()?;
    let (site, py) = write_apps(root.path())?;
    let ports: Vec<u16> = (0..5).map(|_| procs::free_port()).collect::<Result<_, _>>()?;
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let data = root.path().join("dev").display().to_string();
    let (bbs, logs, router, files, apps) = (
        addr(ports[0]),
        addr(ports[1]),
        addr(ports[2]),
        addr(ports[3]),
        addr(ports[4]),
    );
    let mut args = vec![
        "dev",
        "--data-dir",
        &data,
        "--listen",
        &bbs,
        "--logs-listen",
        &logs,
        "--router-listen",
        &router,
        "--file-server-listen",
        &files,
        "--apps-listen",
        &apps,
    ];
    let lifecycle = std::env::var("DIEGO_LIFECYCLE_DIR").ok();
    if let Some(l) = &lifecycle {
        args.extend(["--lifecycle-dir", l]);
    }
    let http = diego_runtime::http_client(None)
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut dev = procs::spawn(&args, format!("http://{bbs}"))?;
    procs::wait_ready(&http, &mut dev, "/v1/ping").await?;
    let apps_client = diego_apps::AppsClient::new(format!("http://{apps}"), None)?;
    let mut bench = Bench {
        bbs: BbsClient::with_http(dev.url.clone(), http.clone()),
        dev,
        apps_url: format!("http://{apps}"),
        router: format!("http://{router}"),
        http,
        exe: std::env::current_exe()?,
    };
    until("a cell and the apps service", Duration::from_secs(60), || async {
        let cells = bench.bbs.cells().await?.len();
        Ok(cells == 1 && apps_client.info().await.is_ok())
    })
    .await?;
    let bundles = diego_fileserver::FileServerClient::new(format!("http://{files}"))?
        .lifecycle()
        .await?;
    if bundles.is_empty() {
        bail!("the file server has no lifecycle bundles: run scripts/build-lifecycle (or set DIEGO_LIFECYCLE_DIR)");
    }
    let outcome = measure(&bench, &say, trials, &site, &py).await;
    cleanup(&bench, &apps_client).await;
    if let Ok(Some(status)) = bench.dev.child.try_wait() {
        bail!("diego dev exited with {status} during the benchmark");
    }
    let (baseline, statics, pythons, repushes) = outcome?;
    let result = json!({
        "trials": trials,
        "static_push_to_routed_ms": median(&statics),
        "python_push_to_routed_ms": median(&pythons),
        "repush_unchanged_ms": median(&repushes),
        "lrp_create_to_routed_ms": median(&baseline),
        "static_push_to_routed_all_ms": statics,
        "python_push_to_routed_all_ms": pythons,
        "repush_unchanged_all_ms": repushes,
        "lrp_create_to_routed_all_ms": baseline,
        "static_push_vs_lrp_create": median(&statics) as f64 / median(&baseline).max(1) as f64,
    });
    if o.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

type Figures = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>);

async fn measure(
    bench: &Bench,
    say: &dyn Fn(&str),
    trials: usize,
    site: &Path,
    py: &Path,
) -> anyhow::Result<Figures> {
    let (mut baseline, mut statics, mut pythons, mut repushes) = (vec![], vec![], vec![], vec![]);
    for t in 0..trials {
        let ms = bench.lrp_create(&format!("baseline-{t}")).await?;
        say(&format!("trial {t}: lrp create → routed {ms} ms"));
        baseline.push(ms);
        let ms = bench
            .timed_push(site, &format!("static-{t}"), "busybox", "bench static site")
            .await?;
        say(&format!("trial {t}: static push → routed {ms} ms"));
        statics.push(ms);
        let ms = bench
            .timed_push(site, &format!("static-{t}"), "busybox", "bench static site")
            .await?;
        say(&format!("trial {t}: unchanged re-push → routed {ms} ms"));
        repushes.push(ms);
        let ms = bench
            .timed_push(py, &format!("python-{t}"), "debian", "bench python app")
            .await
            .context("the python app needs the debian stack: `diego rootfs build debian` first")?;
        say(&format!("trial {t}: python push → routed {ms} ms"));
        pythons.push(ms);
    }
    Ok((baseline, statics, pythons, repushes))
}

/// Deletes what the benchmark made and waits for its containers to go, so none outlives it.
async fn cleanup(bench: &Bench, apps: &diego_apps::AppsClient) {
    for v in apps.list().await.unwrap_or_default() {
        let _ = apps.delete(&v.app.name).await;
    }
    for lrp in bench
        .bbs
        .desired_lrps(&Default::default())
        .await
        .unwrap_or_default()
    {
        let _ = bench.bbs.remove_desired_lrp(&lrp.process_guid).await;
    }
    let _ = until("every instance stopped", Duration::from_secs(60), || async {
        Ok(bench.bbs.actual_lrps(&Default::default()).await?.is_empty())
    })
    .await;
    // The cell destroys a container just after its instance's record goes.
    tokio::time::sleep(Duration::from_secs(2)).await;
}
