//! One file per command group; each parses nothing itself (clap did) and calls the client.

pub mod actual;
pub mod app;
pub mod apps;
pub mod auctioneer;
pub mod bbs;
pub mod bench;
pub mod cell;
pub mod cells;
pub mod certs;
pub mod dev;
pub mod domains;
pub mod drain;
pub mod events;
pub mod file_server;
pub mod garden;
pub mod logs;
pub mod logs_server;
pub mod lrp;
pub mod rootfs;
pub mod route_emitter;
pub mod router;
pub mod sim_cells;
pub mod task;

use anyhow::Context as _;
use diego_client::{BbsClient, BbsUrls};
use diego_runtime::tls::{Tls, TlsFiles};

use crate::cli::{Cli, Command};
use crate::output::OutputFormat;

/// What every client command needs.
pub struct Ctx {
    pub client: BbsClient,
    pub output: OutputFormat,
    /// The log server (`--logs`).
    pub logs_url: String,
    /// The apps service (`--apps`).
    pub apps_url: String,
    /// Mutual TLS (`--tls-ca/--tls-cert/--tls-key`), for the role's listeners and every
    /// client it builds.
    pub tls: Option<Tls>,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let files = tls_files(&cli)?;
    if matches!(cli.command, Command::Dev(_)) {
        anyhow::ensure!(
            files.is_none(),
            "diego dev serves plain HTTP on loopback and takes no --tls-ca/--tls-cert/--tls-key (or DIEGO_TLS_*)"
        );
    }
    let tls = match (&cli.command, files) {
        (Command::Certs(_) | Command::Rootfs(_) | Command::Bench(_) | Command::Dev(_), _) | (_, None) => None,
        (_, Some(files)) => Some(Tls::load(files).context("loading the TLS files")?),
    };
    let bbs = cli
        .bbs_urls()
        .map_err(|e| crate::report::usage(format!("--bbs: {e}")))?;
    let bbs = bbs
        .iter()
        .map(|url| role_url("--bbs", url, crate::cli::DEFAULT_BBS_URL, tls.as_ref()))
        .collect::<anyhow::Result<Vec<String>>>()?;
    let bbs = BbsUrls::new(bbs).map_err(|e| crate::report::usage(format!("--bbs: {e}")))?;
    let logs_url = role_url("--logs", &cli.logs, logs::DEFAULT_LOGS_URL, tls.as_ref())?;
    let apps_url = role_url("--apps", &cli.apps, app::DEFAULT_APPS_URL, tls.as_ref())?;
    let ctx = Ctx {
        client: BbsClient::with_tls(bbs.clone(), tls.as_ref()),
        output: cli.output,
        logs_url,
        apps_url,
        tls,
    };
    match cli.command {
        Command::Certs(cmd) => certs::run(cmd),
        Command::Rootfs(cmd) => rootfs::run(cmd),
        Command::Bbs(args) => bbs::run(args, ctx.tls.clone()).await,
        Command::Auctioneer(args) => auctioneer::run(&bbs, args, ctx.tls.clone()).await,
        Command::RouteEmitter(args) => route_emitter::run(&bbs, args, ctx.tls.clone()).await,
        Command::Cell(cmd) => cell::dispatch(&ctx, cmd).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Task(cmd) => task::run(&ctx, cmd).await,
        Command::Lrp(cmd) => lrp::run(&ctx, cmd).await,
        Command::Actual(cmd) => actual::run(&ctx, cmd).await,
        Command::Cells => cells::run(&ctx).await,
        Command::Domains => domains::run(&ctx).await,
        Command::Events(args) => events::run(&ctx, args).await,
        Command::Bench(cmd) => {
            // A BBS named on the command line or in the environment (not just the default) is
            // one to benchmark instead of starting a cluster.
            let named = std::env::var_os("DIEGO_BBS_URL").is_some()
                || bbs.as_slice() != [crate::cli::DEFAULT_BBS_URL];
            bench::run(cmd, named.then(|| bbs.first().to_string())).await
        }
        Command::Garden(args) => garden::run(args, ctx.tls.clone()).await,
        Command::Logs(args) => logs::run(&ctx, &ctx.logs_url, args).await,
        Command::LogsServer(args) => logs_server::run(args, ctx.tls.clone()).await,
        Command::Apps(args) => apps::run(&bbs, &ctx.logs_url, args, ctx.tls.clone()).await,
        Command::App(cmd) => app::run(&ctx, cmd).await,
        Command::FileServer(args) => file_server::run(args, ctx.tls.clone()).await,
        Command::Router(args) => router::run(&bbs, args, ctx.tls.clone()).await,
        Command::SimCells(args) => sim_cells::run(args, &bbs, ctx.tls.clone()).await,
    }
}

/// `--tls-ca/--tls-cert/--tls-key` (or their `DIEGO_TLS_*` variables, or config keys): all
/// three or none.
fn tls_files(cli: &Cli) -> anyhow::Result<Option<TlsFiles>> {
    let given = [
        ("--tls-ca", "DIEGO_TLS_CA", &cli.tls_ca),
        ("--tls-cert", "DIEGO_TLS_CERT", &cli.tls_cert),
        ("--tls-key", "DIEGO_TLS_KEY", &cli.tls_key),
    ];
    let missing: Vec<String> = given
        .iter()
        .filter(|(_, _, v)| v.is_none())
        .map(|(flag, env, _)| format!("{flag} (or {env})"))
        .collect();
    match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None, None) => Ok(None),
        _ => anyhow::bail!(
            "mutual TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}",
            missing.join(" and ")
        ),
    }
}

/// The URL of another role (`flag`'s `url`) in the scheme `tls` calls for. Left at its
/// default `http://` one, it becomes `https://` with TLS; a URL given explicitly in the
/// other scheme is refused, naming the flag.
pub fn role_url(flag: &str, url: &str, default: &str, tls: Option<&Tls>) -> anyhow::Result<String> {
    match (tls.is_some(), url.split_once("://").map(|(s, _)| s)) {
        (true, Some("http")) if url == default => Ok(url.replacen("http://", "https://", 1)),
        (true, Some("http")) => anyhow::bail!(
            "{flag} {url}: with TLS on (--tls-ca/--tls-cert/--tls-key) the roles speak https://; use https://{}",
            &url["http://".len()..]
        ),
        (false, Some("https")) => anyhow::bail!(
            "{flag} {url} is https:// but no TLS is configured: give --tls-ca, --tls-cert and --tls-key (or DIEGO_TLS_*)"
        ),
        _ => Ok(url.to_string()),
    }
}

/// The run action of a `-- CMD ARGS…` command line, if one was given.
pub fn command_action(command: &[String]) -> Option<diego_model::Action> {
    let (cmd, rest) = command.split_first()?;
    Some(diego_model::Action::run(diego_model::RunAction {
        path: cmd.clone(),
        args: rest.to_vec(),
        ..Default::default()
    }))
}

/// Reads a `-f FILE` request: `defaults` (dotted paths such as `task_definition.rootfs`) fill
/// what the file leaves out, so a file and the flags give the same result, and a field the
/// request type does not know is refused naming it, as the BBS would refuse it.
pub fn read_request_file<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    defaults: &[(&str, serde_json::Value)],
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {shown}"))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{shown} is not JSON"))?;
    for (dotted, default) in defaults {
        fill_default(&mut value, dotted, default);
    }
    let bytes = serde_json::to_vec(&value)?;
    let parsed = diego_bbs::extract::parse_json::<T>(&bytes)
        .map_err(|e| anyhow::anyhow!("{shown}: {}", e.0.message))?;
    Ok(parsed)
}

/// Sets `dotted` in `value` to `default` unless the object path already holds it. Absent
/// parent objects are created; a parent that is not an object is left for the parse to refuse.
fn fill_default(value: &mut serde_json::Value, dotted: &str, default: &serde_json::Value) {
    let mut at = value;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(object) = at.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            object.entry(part).or_insert_with(|| default.clone());
            return;
        }
        at = object
            .entry(part)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}
