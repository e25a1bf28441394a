//! `diego actual list`: actual LRPs (instances) across processes.

use diego_client::ActualLrpQuery;
use diego_model::{ActualLrpState, Presence};

use super::lrp::actual_table;
use super::Ctx;
use crate::output::{self, emit, emit_json};

#[derive(Debug, clap::Subcommand)]
pub enum ActualCommand {
    /// List actual LRPs.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long = "cell", value_name = "CELL_ID")]
    pub cell: Option<String>,
    #[arg(long, value_name = "GUID")]
    pub process_guid: Option<String>,
    #[arg(long)]
    pub index: Option<i32>,
    /// UNCLAIMED, CLAIMED, RUNNING or CRASHED.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<ActualLrpState>,
    /// ORDINARY, EVACUATING or SUSPECT.
    #[arg(long, value_parser = parse_presence)]
    pub presence: Option<Presence>,
}

fn parse_state(s: &str) -> Result<ActualLrpState, String> {
    ActualLrpState::parse(s)
        .ok_or_else(|| format!("expected UNCLAIMED, CLAIMED, RUNNING or CRASHED (got {s:?})"))
}

fn parse_presence(s: &str) -> Result<Presence, String> {
    Presence::parse(s).ok_or_else(|| format!("expected ORDINARY, EVACUATING or SUSPECT (got {s:?})"))
}

pub async fn run(ctx: &Ctx, cmd: ActualCommand) -> anyhow::Result<()> {
    let ActualCommand::List(args) = cmd;
    let query = ActualLrpQuery {
        domain: args.domain,
        cell_id: args.cell,
        process_guid: args.process_guid,
        index: args.index,
        state: args.state,
        presence: args.presence,
    };
    let mut actuals = ctx.client.actual_lrps(&query).await?;
    if ctx.json() {
        return emit_json(&actuals);
    }
    if actuals.is_empty() {
        emit("no actual LRPs");
        return Ok(());
    }
    actuals
        .sort_by(|a, b| (&a.process_guid, a.index, a.presence).cmp(&(&b.process_guid, b.index, b.presence)));
    emit(&actual_table(&actuals, true, output::now()).render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn filters_parse() {
        let argv = [
            "diego",
            "actual",
            "list",
            "--process-guid",
            "web",
            "--index",
            "2",
            "--state",
            "unclaimed",
        ];
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Actual(ActualCommand::List(a)) => {
                assert_eq!(a.process_guid.as_deref(), Some("web"));
                assert_eq!(a.index, Some(2));
                assert_eq!(a.state, Some(ActualLrpState::Unclaimed));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["diego", "actual", "list", "--presence", "gone"]).is_err());
    }
}
