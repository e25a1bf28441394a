//! `diego app …`: push a directory and manage the apps of the apps service (`--apps`), like
//! `cf push`, `cf apps`, `cf app`, `cf scale`, `cf restart`, `cf logs` and `cf delete`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diego_apps::model::{AppSpec, BuildState, HealthCheck, HealthCheckType};
use diego_apps::service::AppView;
use diego_apps::AppsClient;
use diego_fileserver::{Digest, FileServerClient};
use diego_logs::{FollowEvent, LogQuery, LogsClient};

use crate::commands::Ctx;
use crate::output::{self, Table};

/// Where the CLI looks for the apps service unless told otherwise (`diego dev` runs one here).
pub const DEFAULT_APPS_URL: &str = "http://127.0.0.1:8893";

#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Stage a directory and run it: uploads the bits (only when changed), shows the staging
    /// log, waits for the instances, prints the app's URL.
    Push(PushArgs),
    /// Every app with its state and instances.
    List,
    /// One app: its settings, droplet and instances.
    Get { name: String },
    /// Change the number of instances (and memory or disk, which replaces the instances).
    Scale(ScaleArgs),
    /// Replace every instance with a new one.
    Restart(WaitArgs),
    /// The app's log lines: staging (STG), its instances, the router, the cells.
    Logs(AppLogsArgs),
    /// Delete the app: its instances and routes go at once, its blobs at the next collection.
    Delete { name: String },
    /// Delete the file server's blobs no app refers to.
    Gc {
        /// Keep blobs written more recently than this many seconds [default: the file
        /// server's, 600].
        #[arg(long, value_name = "SECONDS")]
        grace_seconds: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The app's directory.
    pub dir: PathBuf,
    /// The app's name [default: the directory's name].
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub size: SizeFlags,
    /// A variable for the app (repeatable); added to those it has.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = crate::cli::parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Stage with this buildpack instead of detecting one (`""` goes back to detection).
    #[arg(short, long, value_name = "NAME")]
    pub buildpack: Option<String>,
    /// The stack: debian (python3, node) or busybox.
    #[arg(short, long, value_name = "STACK")]
    pub stack: Option<String>,
    /// Hostnames to route to the app (repeatable), replacing its routes [default for a new app:
    /// NAME.<domain>].
    #[arg(long = "route", value_name = "HOST")]
    pub routes: Vec<String>,
    /// port (TCP connect), http (GET --health-check-endpoint answers 2xx) or process.
    #[arg(long, value_name = "TYPE")]
    pub health_check: Option<String>,
    #[arg(long, value_name = "PATH")]
    pub health_check_endpoint: Option<String>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, clap::Args)]
pub struct WaitFlags {
    /// Return once staged and desired, without waiting for the instances.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for the instances after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 180)]
    pub timeout: u64,
}

/// How many instances, and how large.
#[derive(Debug, clap::Args)]
pub struct SizeFlags {
    #[arg(short, long, value_name = "N")]
    pub instances: Option<i32>,
    /// Memory per instance, in MB.
    #[arg(short, long, value_name = "MB")]
    pub memory: Option<i32>,
    /// Disk per instance, in MB.
    #[arg(short = 'k', long, value_name = "MB")]
    pub disk: Option<i32>,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    pub name: String,
    #[command(flatten)]
    pub size: SizeFlags,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    pub name: String,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, clap::Args)]
pub struct AppLogsArgs {
    pub name: String,
    /// Follow: print new lines as they arrive.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines of this source type or below it (STG, APP, RTR, CELL, HEALTH).
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: AppCommand) -> anyhow::Result<()> {
    let apps = AppsClient::new(&ctx.apps_url, ctx.tls.as_ref())
        .with_context(|| format!("--apps {}", ctx.apps_url))?;
    match cmd {
        AppCommand::Push(args) => push(ctx, &apps, args).await,
        AppCommand::List => list(ctx, &apps).await,
        AppCommand::Get { name } => {
            let view = apps.get(&name).await?;
            show(ctx, &view)
        }
        AppCommand::Scale(args) => {
            let spec = AppSpec {
                instances: args.size.instances,
                memory_mb: args.size.memory,
                disk_mb: args.size.disk,
                ..Default::default()
            };
            anyhow::ensure!(
                spec != AppSpec::default(),
                crate::report::usage("nothing to scale: give --instances, --memory or --disk")
            );
            apps.put(&args.name, &spec).await?;
            finish(ctx, &apps, &args.name, &args.wait).await
        }
        AppCommand::Restart(args) => {
            apps.restart(&args.name).await?;
            finish(ctx, &apps, &args.name, &args.wait).await
        }
        AppCommand::Logs(args) => logs(ctx, &apps, args).await,
        AppCommand::Delete { name } => {
            apps.delete(&name).await?;
            if ctx.json() {
                output::emit_json(&serde_json::json!({"deleted": name}))
            } else {
                output::emit(&format!("deleted app {name}"));
                Ok(())
            }
        }
        AppCommand::Gc { grace_seconds } => {
            let report = apps.collect(grace_seconds).await?;
            if ctx.json() {
                output::emit_json(&report)
            } else {
                output::emit(&format!(
                    "deleted {} blobs ({} bytes); {} kept ({} bytes)",
                    report.deleted, report.freed_bytes, report.kept, report.kept_bytes
                ));
                Ok(())
            }
        }
    }
}

/// Progress (and the staging log) on stderr, so stdout holds only the result — the final
/// object with `-o json`.
fn say(_ctx: &Ctx, text: &str) {
    eprintln!("{text}");
}

/// A directory's name made into an app name: lowercase, other characters as '-'.
pub fn name_of(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_string();
    name.truncate(63);
    name
}

fn health_check(args: &PushArgs) -> anyhow::Result<Option<HealthCheck>> {
    let kind = match args.health_check.as_deref() {
        None if args.health_check_endpoint.is_some() => HealthCheckType::Http,
        None => return Ok(None),
        Some("port") => HealthCheckType::Port,
        Some("http") => HealthCheckType::Http,
        Some("process") => HealthCheckType::Process,
        Some(other) => {
            return Err(crate::report::usage(format!(
                "--health-check {other:?}: use port, http or process"
            )))
        }
    };
    Ok(Some(HealthCheck {
        kind,
        endpoint: args.health_check_endpoint.clone(),
    }))
}

async fn push(ctx: &Ctx, apps: &AppsClient, args: PushArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}: not a directory to push", args.dir.display()))?;
    anyhow::ensure!(dir.is_dir(), "{}: not a directory to push", dir.display());
    let name = args.name.clone().unwrap_or_else(|| name_of(&dir));
    let info = apps.info().await?;
    let packing = dir.clone();
    let (bytes, packed) =
        tokio::task::spawn_blocking(move || diego_lifecycle::archive::pack_tree_to_vec(&packing))
            .await?
            .with_context(|| format!("packing {}", dir.display()))?;
    let files = FileServerClient::with_tls(&info.file_server_url, ctx.tls.as_ref())?;
    let digest = Digest::of(&bytes);
    let size = bytes.len();
    let stored = files
        .upload(bytes.into())
        .await
        .context("uploading the app's bits")?;
    if stored.created {
        say(
            ctx,
            &format!(
                "uploaded {} files ({} KiB packed) of {}",
                packed.files,
                size.div_ceil(1024),
                dir.display()
            ),
        );
    } else {
        say(
            ctx,
            &format!("{} unchanged on the file server; not uploaded", dir.display()),
        );
    }

    let existing = match apps.get(&name).await {
        Ok(v) => Some(v.app),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let env = (!args.env.is_empty()).then(|| {
        let mut env: BTreeMap<String, String> = existing.as_ref().map(|a| a.env.clone()).unwrap_or_default();
        env.extend(args.env.iter().cloned());
        env
    });
    let spec = AppSpec {
        instances: args.size.instances,
        memory_mb: args.size.memory,
        disk_mb: args.size.disk,
        env,
        routes: (!args.routes.is_empty()).then(|| args.routes.clone()),
        health_check: health_check(&args)?,
        buildpack: args.buildpack.clone(),
        stack: args.stack.clone(),
    };
    let view = apps.put(&name, &spec).await?;
    if existing.is_none() {
        say(ctx, &format!("created app {name} ({})", view.app.guid));
    }
    let answer = apps.package(&name, &digest).await?;
    match &answer.build {
        Some(build) if answer.staging => {
            say(ctx, &format!("staging {name}…"));
            let logs_url = info.logs_url.clone().unwrap_or_else(|| ctx.logs_url.clone());
            let build = follow_staging(ctx, apps, &logs_url, &name, &answer.app.guid, build).await?;
            match build.state {
                BuildState::Failed => anyhow::bail!(
                    "staging {name} failed: {}",
                    build.error.as_deref().unwrap_or("no reason given")
                ),
                _ => say(
                    ctx,
                    &format!("staged {name} in {:.1} s", started.elapsed().as_secs_f64()),
                ),
            }
        }
        _ => say(
            ctx,
            &format!("{name}'s droplet was staged from these same bits; not staging again"),
        ),
    }
    finish(ctx, apps, &name, &args.wait).await
}

/// Prints the staging log while the build runs; returns the finished build.
async fn follow_staging(
    ctx: &Ctx,
    apps: &AppsClient,
    logs_url: &str,
    name: &str,
    guid: &str,
    build: &diego_apps::model::Build,
) -> anyhow::Result<diego_apps::model::Build> {
    let coloured = !ctx.json() && std::io::stderr().is_terminal();
    let query = LogQuery {
        since_ns: Some(build.started_at_ms.saturating_mul(1_000_000)),
        source: Some(diego_apps::model::STAGING_LOG_SOURCE.into()),
        recent: Some(1_000),
        ..Default::default()
    };
    let logs = LogsClient::with_tls(logs_url, ctx.tls.as_ref()).ok();
    let mut stream = match &logs {
        Some(l) => l.follow(guid, &query, None).await.ok(),
        None => None,
    };
    if stream.is_none() {
        say(
            ctx,
            &format!("(the staging log at {logs_url} cannot be followed; waiting for the build)"),
        );
    }
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let mut done: Option<(diego_apps::model::Build, Instant)> = None;
    // The staging's last line: its build cache uploaded, or the builder's failure.
    let mut last_line_seen = false;
    loop {
        // Once the build has ended, lines still on their way get a moment to arrive (none
        // when the last one is in).
        if let Some((b, at)) = &done {
            if last_line_seen || at.elapsed() > Duration::from_millis(300) || stream.is_none() {
                return Ok(b.clone());
            }
        }
        tokio::select! {
            next = async { stream.as_mut().expect("checked").next().await }, if stream.is_some() => {
                match next {
                    Ok(Some(FollowEvent::Lines(lines))) => {
                        for l in &lines {
                            say(ctx, &super::logs::format_line(l, coloured));
                            if l.message.starts_with("Uploaded build cache") || l.message.starts_with("staging failed: ") {
                                last_line_seen = true;
                                // The build ends with it: ask now rather than at the next tick.
                                poll.reset_immediately();
                            }
                        }
                    }
                    Ok(Some(FollowEvent::Dropped(_))) => {}
                    Ok(None) | Err(_) => stream = None,
                }
            }
            _ = poll.tick() => {
                if done.is_none() {
                    let b = apps.build(name, &build.guid).await?;
                    if b.state != BuildState::Staging {
                        done = Some((b, Instant::now()));
                    }
                }
            }
        }
    }
}

/// Waits (unless `--no-wait`) until every instance runs, then shows the app.
async fn finish(ctx: &Ctx, apps: &AppsClient, name: &str, wait: &WaitFlags) -> anyhow::Result<()> {
    let mut view = apps.get(name).await?;
    if !wait.no_wait {
        let deadline = Instant::now() + Duration::from_secs(wait.timeout);
        let mut last = None;
        loop {
            let want = view.app.instances.max(0) as usize;
            let progress = (view.running, want);
            if last != Some(progress) {
                say(ctx, &format!("instances: {}/{} running", view.running, want));
                last = Some(progress);
            }
            if view.running >= want
                && view
                    .instances_status
                    .iter()
                    .filter(|s| s.state == "RUNNING")
                    .count()
                    >= want
            {
                break;
            }
            if Instant::now() > deadline {
                let crashed: Vec<String> = view
                    .instances_status
                    .iter()
                    .filter(|s| s.state == "CRASHED")
                    .map(|s| format!("#{} {}", s.index, s.crash_reason))
                    .collect();
                anyhow::bail!(
                    "{name}: {}/{} instances running after {} s{}; `diego app logs {name}` shows why",
                    view.running,
                    want,
                    wait.timeout,
                    if crashed.is_empty() {
                        String::new()
                    } else {
                        format!(" (crashed: {})", crashed.join("; "))
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            view = apps.get(name).await?;
        }
    }
    if !ctx.json() {
        for url in &view.urls {
            say(ctx, &format!("{name} is at {url}"));
        }
    }
    show(ctx, &view)
}

async fn list(ctx: &Ctx, apps: &AppsClient) -> anyhow::Result<()> {
    let all = apps.list().await?;
    if ctx.json() {
        return output::emit_json(&all);
    }
    if all.is_empty() {
        output::emit("no apps");
        return Ok(());
    }
    let mut t = Table::new(["NAME", "STATE", "INSTANCES", "MEMORY", "BUILDPACK", "ROUTES"]);
    for v in &all {
        t.row([
            v.app.name.clone(),
            v.state.clone(),
            format!("{}/{}", v.running, v.app.instances),
            format!("{}M", v.app.memory_mb),
            output::dash(
                v.app
                    .droplet
                    .as_ref()
                    .map(|d| d.detected_buildpack.as_str())
                    .unwrap_or(""),
            ),
            output::dash(&v.app.routes.join(", ")),
        ]);
    }
    output::emit(&t.render());
    Ok(())
}

fn show(ctx: &Ctx, v: &AppView) -> anyhow::Result<()> {
    if ctx.json() {
        return output::emit_json(v);
    }
    let a = &v.app;
    let mut pairs = vec![
        ("name", a.name.clone()),
        ("guid", a.guid.clone()),
        ("state", v.state.clone()),
        ("instances", format!("{}/{} running", v.running, a.instances)),
        ("memory", format!("{}M", a.memory_mb)),
        ("disk", format!("{}M", a.disk_mb)),
        ("stack", a.stack.clone()),
        ("routes", output::dash(&v.urls.join(", "))),
    ];
    if let Some(d) = &a.droplet {
        pairs.push(("buildpack", d.detected_buildpack.clone()));
        pairs.push(("start command", d.start_command.clone()));
    }
    if let Some(b) = a.build.as_ref().filter(|b| b.state == BuildState::Failed) {
        pairs.push((
            "last staging",
            format!("FAILED: {}", b.error.as_deref().unwrap_or("")),
        ));
    }
    let mut text = output::key_values(&pairs);
    if !v.instances_status.is_empty() {
        let now = output::now();
        let mut t = Table::new([
            "INDEX", "STATE", "SINCE", "CRASHES", "CPU", "MEMORY", "DISK", "CELL", "ADDRESS",
        ]);
        for s in &v.instances_status {
            let state = match &s.presence {
                Some(p) => format!("{} ({p})", s.state),
                None => s.state.clone(),
            };
            t.row([
                s.index.to_string(),
                state,
                if s.since > 0 {
                    output::age(s.since, now)
                } else {
                    "-".into()
                },
                s.crash_count.to_string(),
                s.usage
                    .as_ref()
                    .map(|u| format!("{:.1}%", u.cpu_percent))
                    .unwrap_or("-".into()),
                s.usage
                    .as_ref()
                    .map(|u| mib(u.memory_bytes))
                    .unwrap_or("-".into()),
                s.usage.as_ref().map(|u| mib(u.disk_bytes)).unwrap_or("-".into()),
                output::dash(&s.cell_id),
                output::dash(&s.address),
            ]);
        }
        text.push_str("\n\n");
        text.push_str(&t.render());
    }
    output::emit(&text);
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

async fn logs(ctx: &Ctx, apps: &AppsClient, args: AppLogsArgs) -> anyhow::Result<()> {
    let view = apps.get(&args.name).await?;
    let logs_url = apps
        .info()
        .await
        .ok()
        .and_then(|i| i.logs_url)
        .unwrap_or_else(|| ctx.logs_url.clone());
    let logs_args = super::logs::LogsArgs {
        name: view.app.guid.clone(),
        follow: args.follow,
        recent: !args.follow,
        since: None,
        index: None,
        source: args.source,
    };
    super::logs::show(ctx, &logs_url, &view.app.guid, logs_args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_name_becomes_an_app_name() {
        for (dir, name) in [
            ("/x/static-site", "static-site"),
            ("/x/My_App", "my-app"),
            ("/x/.hidden", "hidden"),
            ("/x/python app 2", "python-app-2"),
        ] {
            assert_eq!(name_of(Path::new(dir)), name, "{dir}");
        }
    }
}
