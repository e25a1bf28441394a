//! One file per command group; each parses nothing itself (clap did) and calls the client.

pub mod actual;
pub mod auctioneer;
pub mod bbs;
pub mod bench;
pub mod cell;
pub mod cells;
pub mod dev;
pub mod domains;
pub mod drain;
pub mod events;
pub mod garden;
pub mod logs;
pub mod logs_server;
pub mod lrp;
pub mod route_emitter;
pub mod router;
pub mod sim_cells;
pub mod task;

use diego_client::BbsClient;

use crate::cli::{Cli, Command};
use crate::output::OutputFormat;

/// What every client command needs.
pub struct Ctx {
    pub client: BbsClient,
    pub output: OutputFormat,
    /// The log server (`--logs`).
    pub logs_url: String,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let bbs = cli
        .bbs_urls()
        .map_err(|e| crate::report::usage(format!("--bbs: {e}")))?;
    let ctx = Ctx {
        client: BbsClient::new(bbs.clone()),
        output: cli.output,
        logs_url: cli.logs.clone(),
    };
    match cli.command {
        Command::Bbs(args) => bbs::run(args).await,
        Command::Auctioneer(args) => auctioneer::run(&bbs, args).await,
        Command::RouteEmitter(args) => route_emitter::run(&bbs, args).await,
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
        Command::Garden(args) => garden::run(args).await,
        Command::Logs(args) => logs::run(&ctx, &ctx.logs_url, args).await,
        Command::LogsServer(args) => logs_server::run(args).await,
        Command::Router(args) => router::run(&bbs, args).await,
        Command::SimCells(args) => sim_cells::run(args, &bbs).await,
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
