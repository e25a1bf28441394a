//! `diego cell drain CELL_ID`: asks a cell to evacuate (diego-spec §4.7) and follows it until
//! it has left the BBS.
//!
//! The cell is found by its presence in the BBS (its rep URL); `POST /evacuate` starts the
//! evacuation, and progress is what the BBS still has on the cell: instances (held, or
//! EVACUATING while their replacements start) and running tasks.

use std::time::Duration;

use anyhow::Context as _;
use diego_client::{ActualLrpQuery, RepClient, TaskQuery};
use diego_model::{ActualLrpState, Presence, TaskState};
use tokio::time::Instant;

use super::Ctx;
use crate::output::emit;

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The cell to evacuate (see `diego cells`).
    pub cell_id: String,
    /// Give up waiting after this long (the cell's own evacuation timeout is 600 s by default).
    #[arg(long, value_name = "SECS", default_value_t = 660)]
    pub timeout: u64,
    /// Drain even when no other cell can take the cell's work: its instances are stopped at
    /// the evacuation timeout and stay unplaced, its running tasks fail.
    #[arg(long)]
    pub force: bool,
}

/// What the BBS still has on an evacuating cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Left {
    /// Instances the cell holds in ORDINARY rows (running or starting).
    held: usize,
    /// Instances kept serving while their replacements start.
    evacuating: usize,
    tasks: usize,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instances = self.held + self.evacuating;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{instances} instance{} left ({} evacuating, waiting for their replacements), {} task{} running",
            plural(instances),
            self.evacuating,
            self.tasks,
            plural(self.tasks)
        )
    }
}

async fn left(ctx: &Ctx, cell_id: &str) -> anyhow::Result<Left> {
    let actuals = ctx
        .client
        .actual_lrps(&ActualLrpQuery {
            cell_id: Some(cell_id.to_string()),
            ..Default::default()
        })
        .await?;
    let tasks = ctx
        .client
        .tasks(&TaskQuery {
            cell_id: Some(cell_id.to_string()),
            state: Some(TaskState::Running),
            ..Default::default()
        })
        .await?;
    let held =
        |a: &&diego_model::ActualLrp| matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running);
    Ok(Left {
        held: actuals
            .iter()
            .filter(held)
            .filter(|a| a.presence == Presence::Ordinary)
            .count(),
        evacuating: actuals
            .iter()
            .filter(|a| a.presence == Presence::Evacuating)
            .count(),
        tasks: tasks.len(),
    })
}

/// Why a drain is refused without `--force`: the cell holds work and no other cell (present,
/// answering and not evacuating itself) can take it, so draining would only stop it.
fn refusal(id: &str, work: Left, takers: usize) -> Option<String> {
    let holds = work.held + work.evacuating + work.tasks;
    (holds > 0 && takers == 0).then(|| {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "refusing to drain cell {id}: no other cell can take its {} and {}; they would be \
             stopped and left unplaced. Add a cell (e.g. `diego dev --cells 2`) or give --force",
            plural(work.held + work.evacuating, "instance"),
            plural(work.tasks, "running task"),
        )
    })
}

async fn present(ctx: &Ctx, cell_id: &str) -> anyhow::Result<bool> {
    Ok(ctx
        .client
        .cells()
        .await?
        .iter()
        .any(|c| c.cell_presence.cell_id == cell_id))
}

pub async fn run(ctx: &Ctx, args: DrainArgs) -> anyhow::Result<()> {
    let id = &args.cell_id;
    let bbs = ctx.client.urls().to_string();
    let cells = ctx
        .client
        .cells()
        .await
        .with_context(|| format!("listing the cells of the BBS at {bbs}"))?;
    let Some(cell) = cells.iter().find(|c| c.cell_presence.cell_id == *id) else {
        let known: Vec<&str> = cells.iter().map(|c| c.cell_presence.cell_id.as_str()).collect();
        anyhow::bail!(
            "cell {id:?} is not registered with the BBS at {bbs} (live cells: {}); see `diego cells`",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let http = diego_runtime::http_client(ctx.tls.as_ref()).build()?;
    if !args.force {
        let work = left(ctx, id).await?;
        // One cell able to take work is enough: stop asking at the first.
        let others = cells.iter().filter(|c| c.cell_presence.cell_id != *id);
        let mut takers = 0;
        for other in others {
            let rep = RepClient::new(&other.cell_presence.rep_url, http.clone(), Duration::from_secs(5));
            if rep.state().await.is_ok_and(|s| !s.evacuating) {
                takers = 1;
                break;
            }
        }
        if let Some(why) = refusal(id, work, takers) {
            anyhow::bail!(why);
        }
    }
    let rep_url = cell.cell_presence.rep_url.clone();
    let rep = RepClient::new(&rep_url, http, Duration::from_secs(10));
    rep.evacuate()
        .await
        .with_context(|| format!("asking cell {id:?} at {rep_url} to evacuate"))?;
    eprintln!("cell {id}: evacuating (rep {rep_url})");

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut shown = None;
    loop {
        match present(ctx, id).await {
            Ok(false) => {
                emit(&format!("cell {id} drained"));
                return Ok(());
            }
            Ok(true) => {}
            Err(e) => eprintln!("cell {id}: cannot reach the BBS ({e:#}); still waiting"),
        }
        let now = left(ctx, id).await.ok();
        if now.is_some() && now != shown {
            if let Some(l) = now {
                eprintln!("cell {id}: {l}");
            }
            shown = now;
        }
        if Instant::now() >= deadline {
            let what = shown
                .map(|l| l.to_string())
                .unwrap_or_else(|| "unknown work left".into());
            anyhow::bail!(
                "cell {id:?} is still registered after {}s ({what}); it keeps evacuating — run \
                 `diego cell drain {id}` again to keep waiting, or raise --timeout",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_that_would_only_stop_work_is_refused() {
        let busy = Left {
            held: 2,
            evacuating: 0,
            tasks: 1,
        };
        let idle = Left {
            held: 0,
            evacuating: 0,
            tasks: 0,
        };
        let why = refusal("cell-1", busy, 0).expect("refused");
        assert!(
            why.starts_with("refusing to drain cell cell-1: no other cell"),
            "{why}"
        );
        assert!(why.contains("--force") && !why.contains('\n'), "{why}");
        assert!(why.contains("its 2 instances and 1 running task;"), "{why}");
        assert_eq!(refusal("cell-1", busy, 1), None, "another cell takes the work");
        assert_eq!(refusal("cell-1", idle, 0), None, "nothing to lose");
    }
}
