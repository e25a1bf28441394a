//! `diego lrp …`: create, list, inspect, scale, update and delete desired LRPs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use diego_client::{ActualLrpQuery, DesiredLrpQuery};
use diego_model::{
    ActualLrp, ActualLrpState, Check, CheckDefinition, CrashPolicy, DesiredLrp, DesiredLrpUpdate,
    EnvironmentVariable, Presence, RestartPolicy, Routes,
};
use serde::Serialize;
use serde_json::json;

use super::task::{describe_action, mb, DEFAULT_DOMAIN, DEFAULT_ROOTFS};
use super::Ctx;
use crate::cli::parse_key_value;
use crate::output::{self, dash, emit, emit_json, key_values, Table};
use crate::report::usage;

/// The router whose routes `--route` sets.
pub use diego_model::CF_ROUTER;

#[derive(Debug, clap::Subcommand)]
pub enum LrpCommand {
    /// Create a desired LRP: `diego lrp create web --instances 2 --port 8080 -- ./server`.
    Create(CreateArgs),
    /// List desired LRPs.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show a desired LRP and its instances.
    Get { guid: String },
    /// Change the number of instances.
    Scale { guid: String, instances: i32 },
    /// Change instances, routes or annotation in place.
    Update(UpdateArgs),
    /// Delete a desired LRP (its instances are stopped).
    Delete { guid: String },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The process guid (letters, digits, `-`, `_`); optional with -f when the file has one.
    pub guid: Option<String>,

    /// Domain [default: default].
    #[arg(long)]
    pub domain: Option<String>,

    /// Root filesystem [default: preloaded:busybox].
    #[arg(long, value_name = "ROOTFS")]
    pub image: Option<String>,

    /// Number of instances [default: 1].
    #[arg(long, short = 'i', value_name = "N", allow_negative_numbers = true)]
    pub instances: Option<i32>,

    /// Memory limit in MB.
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub memory: Option<i32>,

    /// Disk limit in MB.
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub disk: Option<i32>,

    /// A container port to expose (repeatable; the first one receives routed traffic).
    #[arg(long = "port", short = 'p', value_name = "PORT",
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub ports: Vec<u32>,

    /// A hostname the router sends to the first port (repeatable).
    #[arg(long = "route", value_name = "HOST")]
    pub routes: Vec<String>,

    /// How the cell checks an instance is up, on the first port: `port` (a TCP connect, the
    /// default when there is a port), `http` (GET --health-check-path answers 200) or `none`
    /// (RUNNING as soon as the process starts). A check definition from -f is kept unless
    /// this is given.
    #[arg(long, value_enum, value_name = "KIND")]
    pub health_check: Option<HealthCheck>,

    /// The path an `http` health check gets.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub health_check_path: String,

    /// An environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,

    #[command(flatten)]
    pub crash_policy: CrashPolicyArgs,

    /// Read a DesiredLrp from this JSON file (flags override its fields).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The command to run, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The desired LRP's `crash_policy`; unset parts keep Diego's defaults (3 immediate restarts,
/// a 30 s backoff doubling to 16 min, given up at crash #200).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CrashPolicyArgs {
    /// Crashes restarted at once before the backoff starts [default: 3].
    #[arg(long, value_name = "N")]
    pub immediate_restarts: Option<u32>,

    /// The cap of the doubling crash backoff, in ms (30000..=86400000) [default: 960000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub max_backoff_ms: Option<i64>,

    /// The crash count at which an instance is no longer restarted [default: 200].
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
}

impl CrashPolicyArgs {
    fn is_set(&self) -> bool {
        self.immediate_restarts.is_some() || self.max_backoff_ms.is_some() || self.max_restarts.is_some()
    }

    /// `current` with the flags given laid over it.
    pub fn apply(&self, current: Option<&CrashPolicy>) -> CrashPolicy {
        let mut p = current.cloned().unwrap_or_default();
        if let Some(n) = self.immediate_restarts {
            p.immediate_restarts = Some(n);
        }
        if let Some(ms) = self.max_backoff_ms {
            p.max_backoff_ms = Some(ms);
        }
        if let Some(n) = self.max_restarts {
            p.max_restarts = Some(n);
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthCheck {
    Port,
    Http,
    None,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    pub guid: String,

    #[arg(long, short = 'i', value_name = "N", allow_negative_numbers = true)]
    pub instances: Option<i32>,

    /// Replaces the cf-router hostnames (repeatable); they route to the LRP's first port.
    #[arg(long = "route", value_name = "HOST")]
    pub routes: Vec<String>,

    #[arg(long)]
    pub annotation: Option<String>,

    /// Changes the crash policy (the flags given replace those parts of the current one).
    #[command(flatten)]
    pub crash_policy: CrashPolicyArgs,
}

pub async fn run(ctx: &Ctx, cmd: LrpCommand) -> anyhow::Result<()> {
    match cmd {
        LrpCommand::Create(args) => create(ctx, args).await,
        LrpCommand::List { domain } => list(ctx, domain).await,
        LrpCommand::Get { guid } => get(ctx, &guid).await,
        LrpCommand::Scale { guid, instances } => {
            let update = DesiredLrpUpdate {
                instances: Some(instances),
                ..Default::default()
            };
            let lrp = ctx.client.update_desired_lrp(&guid, &update).await?;
            if ctx.json() {
                return emit_json(&lrp);
            }
            let s = if lrp.instances == 1 { "" } else { "s" };
            emit(&format!(
                "scaled {} to {} instance{s}",
                lrp.process_guid, lrp.instances
            ));
            Ok(())
        }
        LrpCommand::Update(args) => update(ctx, args).await,
        LrpCommand::Delete { guid } => {
            ctx.client.remove_desired_lrp(&guid).await?;
            if !ctx.json() {
                emit(&format!("deleted LRP {guid}"));
            }
            Ok(())
        }
    }
}

/// The `cf-router` routes value: every hostname to `port`.
pub fn cf_routes(hostnames: &[String], port: u32) -> serde_json::Value {
    json!([{ "hostnames": hostnames, "port": port }])
}

/// The desired LRP `create` sends: the file (if any) with the flags laid over it.
pub fn build_lrp(args: &CreateArgs) -> anyhow::Result<DesiredLrp> {
    let mut lrp = match &args.file {
        Some(path) => super::read_request_file::<DesiredLrp>(
            path,
            &[
                ("domain", json!(DEFAULT_DOMAIN)),
                ("rootfs", json!(DEFAULT_ROOTFS)),
                ("instances", json!(1)),
            ],
        )?,
        None => DesiredLrp {
            domain: DEFAULT_DOMAIN.to_string(),
            rootfs: DEFAULT_ROOTFS.to_string(),
            instances: 1,
            ..Default::default()
        },
    };
    if let Some(g) = &args.guid {
        lrp.process_guid = g.clone();
    }
    if lrp.process_guid.is_empty() {
        return Err(usage(
            "a process guid is required: `diego lrp create GUID -- CMD ARGS...`",
        ));
    }
    if let Some(d) = &args.domain {
        lrp.domain = d.clone();
    }
    if let Some(i) = &args.image {
        lrp.rootfs = i.clone();
    }
    if let Some(n) = args.instances {
        lrp.instances = n;
    }
    if let Some(m) = args.memory {
        lrp.memory_mb = m;
    }
    if let Some(d) = args.disk {
        lrp.disk_mb = d;
    }
    if !args.ports.is_empty() {
        lrp.ports = args.ports.clone();
    }
    // The check made here is on the first port; one out of range is left for the server to
    // refuse as `ports[0]`, the field the user gave, not as a check they never wrote.
    let first_port_ok = lrp.ports.first().is_some_and(|p| (1..=65535).contains(p));
    let kind = match args.health_check {
        Some(kind) => Some(kind),
        None if lrp.check_definition.is_none() && first_port_ok => Some(HealthCheck::Port),
        None => None,
    };
    if let Some(kind) = kind {
        let port = lrp.ports.first().copied();
        lrp.check_definition = match (kind, port) {
            (HealthCheck::None, _) => None,
            (_, None) => {
                return Err(usage(
                    "--health-check port|http needs a --port: the container port to check",
                ))
            }
            (HealthCheck::Port, Some(p)) => Some(CheckDefinition {
                checks: vec![Check::tcp(p)],
                ..Default::default()
            }),
            (HealthCheck::Http, Some(p)) => Some(CheckDefinition {
                checks: vec![Check::http(p, &args.health_check_path)],
                ..Default::default()
            }),
        };
    }
    if !args.routes.is_empty() {
        let Some(&port) = lrp.ports.first() else {
            return Err(usage(
                "--route needs a --port: the container port the router sends traffic to",
            ));
        };
        lrp.routes
            .insert(CF_ROUTER.to_string(), cf_routes(&args.routes, port));
    }
    if args.crash_policy.is_set() {
        lrp.crash_policy = Some(args.crash_policy.apply(lrp.crash_policy.as_ref()));
    }
    lrp.env
        .extend(args.env.iter().map(|(k, v)| EnvironmentVariable::new(k, v)));
    if let Some(action) = super::command_action(&args.command) {
        lrp.action = Some(action);
    } else if lrp.action.is_none() {
        return Err(usage(
            "nothing to run: give a command after `--` (e.g. `-- sleep 3600`) or an action with -f",
        ));
    }
    Ok(lrp)
}

async fn create(ctx: &Ctx, args: CreateArgs) -> anyhow::Result<()> {
    let lrp = build_lrp(&args)?;
    let created = ctx.client.desire_lrp(&lrp).await?;
    if ctx.json() {
        return emit_json(&created);
    }
    let s = if created.instances == 1 { "" } else { "s" };
    emit(&format!(
        "created LRP {} (domain {}) with {} instance{s}",
        created.process_guid, created.domain, created.instances
    ));
    Ok(())
}

async fn list(ctx: &Ctx, domain: Option<String>) -> anyhow::Result<()> {
    let mut lrps = ctx
        .client
        .desired_lrps(&DesiredLrpQuery {
            domain: domain.clone(),
            process_guid: None,
        })
        .await?;
    if ctx.json() {
        return emit_json(&lrps);
    }
    if lrps.is_empty() {
        emit("no LRPs");
        return Ok(());
    }
    let actuals = ctx
        .client
        .actual_lrps(&ActualLrpQuery {
            domain,
            ..Default::default()
        })
        .await?;
    lrps.sort_by(|a, b| a.process_guid.cmp(&b.process_guid));
    emit(&lrp_table(&lrps, &actuals).render());
    Ok(())
}

pub fn lrp_table(lrps: &[DesiredLrp], actuals: &[ActualLrp]) -> Table {
    let mut running: BTreeMap<&str, usize> = BTreeMap::new();
    for a in actuals {
        if a.state == ActualLrpState::Running && a.presence == Presence::Ordinary {
            *running.entry(a.process_guid.as_str()).or_default() += 1;
        }
    }
    let mut t = Table::new([
        "PROCESS_GUID",
        "DOMAIN",
        "RUNNING",
        "ROOTFS",
        "MEMORY",
        "DISK",
        "ROUTES",
    ]);
    for l in lrps {
        t.row([
            l.process_guid.clone(),
            l.domain.clone(),
            format!(
                "{}/{}",
                running.get(l.process_guid.as_str()).copied().unwrap_or(0),
                l.instances
            ),
            l.rootfs.clone(),
            mb(l.memory_mb),
            mb(l.disk_mb),
            dash(&route_summary(&l.routes)),
        ]);
    }
    t
}

/// `cf-router` hostnames, or the router names when they are something else.
pub fn route_summary(routes: &Routes) -> String {
    let mut parts = Vec::new();
    for (router, value) in routes {
        let hosts: Vec<&str> = value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("hostnames")?.as_array())
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        if router == CF_ROUTER && !hosts.is_empty() {
            parts.push(hosts.join(","));
        } else {
            parts.push(format!("({router})"));
        }
    }
    parts.join(" ")
}

/// `-o json` of `lrp get`: the two API objects side by side.
#[derive(Serialize)]
struct LrpView<'a> {
    desired_lrp: &'a DesiredLrp,
    actual_lrps: &'a [ActualLrp],
}

async fn get(ctx: &Ctx, guid: &str) -> anyhow::Result<()> {
    let lrp = ctx.client.desired_lrp(guid).await?;
    let query = ActualLrpQuery {
        process_guid: Some(guid.to_string()),
        ..Default::default()
    };
    let mut actuals = ctx.client.actual_lrps(&query).await?;
    actuals.sort_by_key(|a| (a.index, a.presence));
    if ctx.json() {
        return emit_json(&LrpView {
            desired_lrp: &lrp,
            actual_lrps: &actuals,
        });
    }
    let now = output::now();
    emit(&lrp_details(&lrp, &actuals, now));
    emit("");
    if actuals.is_empty() {
        emit("no instances");
    } else {
        let usage = container_usage(ctx, &actuals).await;
        let policy = RestartPolicy::with_override(lrp.crash_policy.as_ref());
        emit(&instance_table(&actuals, now, &usage, &policy).render());
    }
    let unplaced = placement_notes(&actuals);
    if !unplaced.is_empty() {
        emit("");
        emit(&unplaced);
    }
    Ok(())
}

/// Why unplaced instances did not fit: Diego's error, then the auction's cell-by-cell account,
/// one line per distinct explanation (instances sharing one are listed together).
pub fn placement_notes(actuals: &[ActualLrp]) -> String {
    let mut groups: Vec<(String, Vec<i32>)> = Vec::new();
    for a in actuals.iter().filter(|a| !a.placement_error.is_empty()) {
        let line = match &a.placement_explanation {
            Some(why) => format!("{} — {why}", a.placement_error),
            None => a.placement_error.clone(),
        };
        match groups.iter_mut().find(|(l, _)| *l == line) {
            Some((_, indices)) => indices.push(a.index),
            None => groups.push((line, vec![a.index])),
        }
    }
    groups
        .into_iter()
        .map(|(line, indices)| format!("not placed (index {}): {line}", join(&indices)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the instances' containers use, asked of their cells' reps (best effort: a cell that
/// does not answer within 2 s shows `-`).
async fn container_usage(ctx: &Ctx, actuals: &[ActualLrp]) -> Usage {
    let mut usage = Usage::new();
    let Ok(cells) = ctx.client.cells().await else {
        return usage;
    };
    let Ok(http) = diego_runtime::http_client(ctx.tls.as_ref()).build() else {
        return usage;
    };
    for cell in cells {
        let c = cell.cell_presence;
        if !actuals.iter().any(|a| a.cell_id == c.cell_id) {
            continue;
        }
        let rep = diego_client::RepClient::new(c.rep_url, http.clone(), std::time::Duration::from_secs(2));
        if let Ok(metrics) = rep.container_metrics().await {
            usage.extend(metrics.into_iter().map(|m| (m.guid.clone(), m)));
        }
    }
    usage
}

pub fn lrp_details(lrp: &DesiredLrp, actuals: &[ActualLrp], now: i64) -> String {
    let running = actuals
        .iter()
        .filter(|a| a.state == ActualLrpState::Running && a.presence == Presence::Ordinary)
        .count();
    let mut rows = vec![
        ("process guid", lrp.process_guid.clone()),
        ("domain", lrp.domain.clone()),
        (
            "instances",
            format!("{running} running of {} desired", lrp.instances),
        ),
        ("rootfs", lrp.rootfs.clone()),
        (
            "command",
            lrp.action
                .as_ref()
                .map(describe_action)
                .unwrap_or_else(|| "-".into()),
        ),
        ("memory", mb(lrp.memory_mb)),
        ("disk", mb(lrp.disk_mb)),
        (
            "ports",
            if lrp.ports.is_empty() {
                "-".into()
            } else {
                join(&lrp.ports)
            },
        ),
        ("routes", dash(&route_summary(&lrp.routes))),
        ("crash policy", crash_policy_summary(lrp.crash_policy.as_ref())),
        ("created", output::timestamp(lrp.created_at, now)),
    ];
    if !lrp.annotation.is_empty() {
        rows.push(("annotation", output::ellipsize(&lrp.annotation, 80)));
    }
    key_values(&rows)
}

/// The effective crash policy in a line, and whether it is the LRP's own or the default.
pub fn crash_policy_summary(policy: Option<&CrashPolicy>) -> String {
    let p = RestartPolicy::with_override(policy);
    let ms = |ms: i64| output::human_duration(ms * diego_model::clock::NANOS_PER_MILLI);
    let backoff = if p.max_backoff_ms > p.min_backoff_ms {
        format!(
            "{} backoff doubling to {}",
            ms(p.min_backoff_ms),
            ms(p.max_backoff_ms)
        )
    } else {
        format!("{} backoff", ms(p.min_backoff_ms))
    };
    let s = if p.immediate_restarts == 1 { "" } else { "s" };
    format!(
        "{} immediate restart{s}, then {backoff}; gives up at crash #{} ({})",
        p.immediate_restarts,
        p.max_restarts,
        if policy.is_some() {
            "crash_policy"
        } else {
            "default"
        }
    )
}

/// When a CRASHED instance is restarted: `in 25s`, `due` (at the next convergence pass) or
/// `never (gave up)`; `-` for an instance in any other state.
pub fn next_restart(a: &ActualLrp, policy: &RestartPolicy, now: i64) -> String {
    if a.state != ActualLrpState::Crashed {
        return "-".to_string();
    }
    match policy.restart_due_at(a.crash_count, a.since) {
        None => "never (gave up)".to_string(),
        Some(t) if t > now => format!("in {}", output::human_duration(t - now)),
        Some(_) => "due".to_string(),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Actual LRPs as a table; `with_guid` adds the process guid column (for `actual list`).
pub fn actual_table(actuals: &[ActualLrp], with_guid: bool, now: i64) -> Table {
    table(actuals, with_guid, now, None, None)
}

/// What each instance's container uses, by instance guid.
pub type Usage = HashMap<String, diego_model::CellContainerMetrics>;

/// One LRP's instances (`lrp get`): like [`actual_table`], with CPU (average since start)
/// and memory columns from `usage`, and when each CRASHED instance restarts under `policy`.
pub fn instance_table(actuals: &[ActualLrp], now: i64, usage: &Usage, policy: &RestartPolicy) -> Table {
    table(actuals, false, now, Some(usage), Some(policy))
}

fn table(
    actuals: &[ActualLrp],
    with_guid: bool,
    now: i64,
    usage: Option<&Usage>,
    policy: Option<&RestartPolicy>,
) -> Table {
    let mut header = vec![
        "INDEX",
        "STATE",
        "PRESENCE",
        "CELL",
        "ADDRESS",
        "SINCE",
        "CRASHES",
        "PLACEMENT_ERROR",
    ];
    if with_guid {
        header.insert(0, "PROCESS_GUID");
    }
    if policy.is_some() {
        header.insert(header.len() - 1, "NEXT_RESTART");
    }
    if usage.is_some() {
        header.insert(header.len() - 1, "CPU");
        header.insert(header.len() - 1, "MEMORY");
    }
    let mut t = Table::new(header);
    for a in actuals {
        let mut row = vec![
            a.index.to_string(),
            a.state.to_string(),
            a.presence.as_str().to_string(),
            dash(&a.cell_id),
            address(a),
            output::age(a.since, now),
            a.crash_count.to_string(),
            dash(&output::ellipsize(&a.placement_error, 60)),
        ];
        if let Some(policy) = policy {
            row.insert(row.len() - 1, next_restart(a, policy, now));
        }
        if let Some(usage) = usage {
            let (cpu, memory) = match usage.get(&a.instance_guid) {
                Some(m) => (
                    format!("{:.1}%", m.cpu_percent),
                    format!("{:.1}M", m.memory_bytes as f64 / (1024.0 * 1024.0)),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            let at = row.len() - 1;
            row.insert(at, memory);
            row.insert(at, cpu);
        }
        if with_guid {
            row.insert(0, a.process_guid.clone());
        }
        t.row(row);
    }
    t
}

/// `10.0.0.5:61001->8080,61002->9090`; `-` until the instance has an address.
pub fn address(a: &ActualLrp) -> String {
    if a.address.is_empty() {
        return "-".to_string();
    }
    if a.ports.is_empty() {
        return a.address.clone();
    }
    let ports: Vec<String> = a
        .ports
        .iter()
        .map(|p| format!("{}->{}", p.host_port, p.container_port))
        .collect();
    format!("{}:{}", a.address, ports.join(","))
}

async fn update(ctx: &Ctx, args: UpdateArgs) -> anyhow::Result<()> {
    let mut update = DesiredLrpUpdate {
        instances: args.instances,
        annotation: args.annotation.clone(),
        ..Default::default()
    };
    if args.crash_policy.is_set() {
        let current = ctx.client.desired_lrp(&args.guid).await?;
        update.crash_policy = Some(args.crash_policy.apply(current.crash_policy.as_ref()));
    }
    if !args.routes.is_empty() {
        // Routes are replaced whole: keep other routers' entries and aim at the LRP's port.
        let current = ctx.client.desired_lrp(&args.guid).await?;
        let Some(&port) = current.ports.first() else {
            anyhow::bail!(
                "LRP {} exposes no ports, so it cannot have routes; recreate it with --port",
                args.guid
            );
        };
        let mut routes = current.routes.clone();
        routes.insert(CF_ROUTER.to_string(), cf_routes(&args.routes, port));
        update.routes = Some(routes);
    }
    if update == DesiredLrpUpdate::default() {
        return Err(usage(
            "nothing to update: give --instances, --route, --annotation or a crash policy flag (--immediate-restarts, --max-backoff-ms, --max-restarts)",
        ));
    }
    let lrp = ctx.client.update_desired_lrp(&args.guid, &update).await?;
    if ctx.json() {
        return emit_json(&lrp);
    }
    emit(&format!("updated LRP {}", lrp.process_guid));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use diego_model::PortMapping;

    fn create_args(argv: &[&str]) -> CreateArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Lrp(LrpCommand::Create(a)) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_checks_the_first_port_unless_told_otherwise() {
        let lrp = |extra: &[&str]| {
            let mut argv = vec!["diego", "lrp", "create", "web"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--", "./server"]);
            build_lrp(&create_args(&argv))
        };
        let checks = |l: DesiredLrp| l.check_definition.map(|d| d.checks);
        assert_eq!(checks(lrp(&[]).unwrap()), None, "no port, no check");
        assert_eq!(
            checks(lrp(&["--port", "8080", "--port", "9090"]).unwrap()),
            Some(vec![Check::tcp(8080)])
        );
        assert_eq!(
            checks(
                lrp(&[
                    "-p",
                    "8080",
                    "--health-check",
                    "http",
                    "--health-check-path",
                    "/up"
                ])
                .unwrap()
            ),
            Some(vec![Check::http(8080, "/up")])
        );
        assert_eq!(
            checks(lrp(&["-p", "8080", "--health-check", "none"]).unwrap()),
            None
        );
        let err = lrp(&["--health-check", "port"]).unwrap_err().to_string();
        assert!(err.contains("needs a --port"), "{err}");
    }

    #[test]
    fn create_builds_routes_for_the_first_port() {
        let args = create_args(&[
            "diego",
            "lrp",
            "create",
            "web",
            "--instances",
            "3",
            "--port",
            "8080",
            "--port",
            "9090",
            "--route",
            "a.example.com",
            "--route",
            "b.example.com",
            "--",
            "./server",
            "--flag",
        ]);
        let lrp = build_lrp(&args).unwrap();
        assert_eq!(lrp.process_guid, "web");
        assert_eq!(lrp.instances, 3);
        assert_eq!(lrp.ports, vec![8080, 9090]);
        assert_eq!(
            serde_json::to_value(&lrp.routes).unwrap(),
            json!({"cf-router": [{"hostnames": ["a.example.com", "b.example.com"], "port": 8080}]})
        );
        assert_eq!(route_summary(&lrp.routes), "a.example.com,b.example.com");
        let run = lrp.action.unwrap().run.unwrap();
        assert_eq!(
            (run.path.as_str(), run.args),
            ("./server", vec!["--flag".to_string()])
        );
    }

    #[test]
    fn defaults_and_errors() {
        let lrp = build_lrp(&create_args(&["diego", "lrp", "create", "w", "--", "sleep", "1"])).unwrap();
        assert_eq!(
            (lrp.instances, lrp.domain.as_str(), lrp.rootfs.as_str()),
            (1, "default", "preloaded:busybox")
        );
        let err = build_lrp(&create_args(&[
            "diego", "lrp", "create", "w", "--route", "h", "--", "x",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("--route needs a --port"), "{err}");
        // Negative counts reach the server, whose validation explains the limit.
        let lrp = build_lrp(&create_args(&[
            "diego", "lrp", "create", "w", "-i", "-1", "--", "x",
        ]))
        .unwrap();
        assert_eq!(lrp.instances, -1);
    }

    #[test]
    fn a_file_gets_the_same_defaults_as_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            path.to_str().unwrap().to_string()
        };
        let bare = file(
            "bare.json",
            r#"{"process_guid":"web","action":{"run":{"path":"sleep","args":["9"]}}}"#,
        );
        let from_file = build_lrp(&create_args(&["diego", "lrp", "create", "-f", &bare])).unwrap();
        let from_flags = build_lrp(&create_args(&[
            "diego", "lrp", "create", "web", "--", "sleep", "9",
        ]))
        .unwrap();
        assert_eq!(from_file, from_flags);
        assert_eq!(
            (
                from_file.domain.as_str(),
                from_file.rootfs.as_str(),
                from_file.instances
            ),
            ("default", "preloaded:busybox", 1)
        );
        // What the file says is kept, even where it matches no default.
        let zero = file(
            "zero.json",
            r#"{"process_guid":"web","domain":"d","rootfs":"oci:///x","instances":0,
                "action":{"run":{"path":"true"}}}"#,
        );
        let lrp = build_lrp(&create_args(&["diego", "lrp", "create", "-f", &zero])).unwrap();
        assert_eq!(
            (lrp.domain.as_str(), lrp.rootfs.as_str(), lrp.instances),
            ("d", "oci:///x", 0)
        );
        // A misspelt field is named, not silently dropped.
        let typo = file(
            "typo.json",
            r#"{"process_guid":"web","intances":3,"action":{"run":{"path":"true"}}}"#,
        );
        let err = build_lrp(&create_args(&["diego", "lrp", "create", "-f", &typo]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field") && err.contains("intances"), "{err}");
    }

    #[test]
    fn a_bad_port_is_reported_against_what_the_user_gave() {
        let err = Cli::try_parse_from(["diego", "lrp", "create", "w", "--port", "0", "--", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("--port") && text.contains("1..=65535"), "{text}");
        assert!(!text.contains("check"), "{text}");
        // From a file: no check is made up for the bad port, so the server names `ports[0]` alone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lrp.json");
        std::fs::write(
            &path,
            r#"{"process_guid":"w","ports":[0],"action":{"run":{"path":"x"}}}"#,
        )
        .unwrap();
        let lrp = build_lrp(&create_args(&[
            "diego",
            "lrp",
            "create",
            "-f",
            path.to_str().unwrap(),
        ]))
        .unwrap();
        let fields: Vec<String> = lrp.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["ports[0]"]);
    }

    #[test]
    fn scale_parses() {
        match Cli::try_parse_from(["diego", "lrp", "scale", "web", "5"])
            .unwrap()
            .command
        {
            Command::Lrp(LrpCommand::Scale { guid, instances }) => {
                assert_eq!((guid.as_str(), instances), ("web", 5))
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["diego", "lrp", "scale", "web", "many"]).is_err());
    }

    #[test]
    fn actual_rows_show_address_and_placement_error() {
        let mut a = ActualLrp {
            process_guid: "web".into(),
            index: 0,
            domain: "d".into(),
            instance_guid: "i".into(),
            cell_id: "cell-a".into(),
            address: "10.0.0.5".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61001,
                ..Default::default()
            }],
            instance_address: String::new(),
            state: ActualLrpState::Running,
            crash_count: 2,
            crash_reason: String::new(),
            since: 1_000_000_000,
            placement_error: String::new(),
            placement_explanation: None,
            presence: Presence::Ordinary,
            routable: None,
            availability_zone: String::new(),
            metric_tags: Default::default(),
            modification_tag: Default::default(),
        };
        let mut b = a.clone();
        b.index = 1;
        b.state = ActualLrpState::Unclaimed;
        b.cell_id.clear();
        b.address.clear();
        b.ports.clear();
        b.placement_error = "insufficient resources: memory".into();
        a.since = 0;
        let t = actual_table(&[a, b], true, 61_000_000_000).render();
        assert_eq!(
            t,
            "PROCESS_GUID   INDEX   STATE       PRESENCE   CELL     ADDRESS                SINCE   CRASHES   PLACEMENT_ERROR\n\
             web            0       RUNNING     ORDINARY   cell-a   10.0.0.5:61001->8080   -       2         -\n\
             web            1       UNCLAIMED   ORDINARY   -        -                      1m0s    2         insufficient resources: memory"
        );
    }

    #[test]
    fn crash_policy_is_summarised_with_its_source() {
        assert_eq!(
            crash_policy_summary(None),
            "3 immediate restarts, then 30s backoff doubling to 16m0s; gives up at crash #200 (default)"
        );
        let own = CrashPolicy {
            immediate_restarts: Some(1),
            max_backoff_ms: Some(30_000),
            max_restarts: Some(5),
        };
        assert_eq!(
            crash_policy_summary(Some(&own)),
            "1 immediate restart, then 30s backoff; gives up at crash #5 (crash_policy)"
        );
    }

    #[test]
    fn create_and_update_take_crash_policy_flags() {
        let args = create_args(&[
            "diego",
            "lrp",
            "create",
            "w",
            "--immediate-restarts",
            "0",
            "--max-restarts",
            "5",
            "--",
            "x",
        ]);
        let lrp = build_lrp(&args).unwrap();
        assert_eq!(
            lrp.crash_policy,
            Some(CrashPolicy {
                immediate_restarts: Some(0),
                max_backoff_ms: None,
                max_restarts: Some(5),
            })
        );
        assert_eq!(
            build_lrp(&create_args(&["diego", "lrp", "create", "w", "--", "x"]))
                .unwrap()
                .crash_policy,
            None
        );
        match Cli::try_parse_from(["diego", "lrp", "update", "w", "--max-backoff-ms", "60000"])
            .unwrap()
            .command
        {
            Command::Lrp(LrpCommand::Update(u)) => {
                let merged = u.crash_policy.apply(lrp.crash_policy.as_ref());
                assert_eq!(
                    (
                        merged.immediate_restarts,
                        merged.max_backoff_ms,
                        merged.max_restarts
                    ),
                    (Some(0), Some(60_000), Some(5))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn crashed_instances_show_when_they_restart() {
        let s = 1_000_000_000i64;
        let key = diego_model::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "d".into(),
        };
        let crashed = |index: i32, count: i32, since: i64| {
            let mut a = ActualLrp::unclaimed(key.clone(), since, "epoch".into());
            a.index = index;
            a.state = ActualLrpState::Crashed;
            a.crash_count = count;
            a
        };
        let mut running = ActualLrp::unclaimed(key.clone(), 0, "epoch".into());
        running.state = ActualLrpState::Running;
        running.cell_id = "cell-a".into();
        running.crash_count = 2;
        running.presence = Presence::Suspect;
        let policy = RestartPolicy::default();
        let now = 100 * s;
        assert_eq!(next_restart(&crashed(1, 5, 90 * s), &policy, now), "in 50s");
        assert_eq!(next_restart(&crashed(1, 4, 60 * s), &policy, now), "due");
        assert_eq!(
            next_restart(&crashed(1, 200, 60 * s), &policy, now),
            "never (gave up)"
        );
        assert_eq!(next_restart(&running, &policy, now), "-");
        let t = instance_table(
            &[running, crashed(1, 5, 90 * s), crashed(2, 200, 60 * s)],
            now,
            &Usage::new(),
            &policy,
        )
        .render();
        assert_eq!(
            t,
            "INDEX   STATE     PRESENCE   CELL     ADDRESS   SINCE   CRASHES   NEXT_RESTART      CPU   MEMORY   PLACEMENT_ERROR\n\
             0       RUNNING   SUSPECT    cell-a   -         -       2         -                 -     -        -\n\
             1       CRASHED   ORDINARY   -        -         10s     5         in 50s            -     -        -\n\
             2       CRASHED   ORDINARY   -        -         40s     200       never (gave up)   -     -        -"
        );
    }

    #[test]
    fn placement_notes_group_instances_by_explanation() {
        use diego_model::auction::{PlacementExplanation, ResourceMiss};
        let why = PlacementExplanation {
            total_cells: 12,
            memory: Some(ResourceMiss {
                cells: 12,
                need: 512,
                best_available: 256,
            }),
            ..Default::default()
        };
        let placed = ActualLrp::unclaimed(
            diego_model::ActualLrpKey {
                process_guid: "web".into(),
                index: 0,
                domain: "d".into(),
            },
            0,
            "epoch".into(),
        );
        let unplaced = |index: i32| {
            let mut a = placed.clone();
            a.index = index;
            a.placement_error = "insufficient resources: memory".into();
            a.placement_explanation = Some(why.clone());
            a
        };
        assert_eq!(
            placement_notes(&[placed.clone(), unplaced(1), unplaced(2)]),
            "not placed (index 1,2): insufficient resources: memory — 0 of 12 cells fit: 12 lack memory (need 512 MB, best has 256 MB free)"
        );
        assert_eq!(placement_notes(&[]), "");
    }
}
