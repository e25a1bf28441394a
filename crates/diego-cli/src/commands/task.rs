//! `diego task …`: submit, list, inspect, cancel and delete one-off tasks.

use std::path::PathBuf;

use anyhow::Context as _;
use diego_client::TaskQuery;
use diego_model::{Action, DesireTaskRequest, EnvironmentVariable, Task, TaskState};

use super::Ctx;
use crate::cli::parse_key_value;
use crate::output::{self, dash, ellipsize, emit, emit_json, key_values, Table};
use crate::report::usage;

pub const DEFAULT_DOMAIN: &str = "default";
pub const DEFAULT_ROOTFS: &str = "preloaded:busybox";

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Submit a task: `diego task submit hello -- echo hello`.
    Submit(SubmitArgs),
    /// List tasks.
    List(ListArgs),
    /// Show one task.
    Get { guid: String },
    /// Cancel a pending or running task.
    Cancel { guid: String },
    /// Delete a completed task (resolves it, then deletes it).
    Delete { guid: String },
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The task guid (letters, digits, `-`, `_`); optional with -f when the file has one.
    pub guid: Option<String>,

    /// Domain [default: default].
    #[arg(long)]
    pub domain: Option<String>,

    /// Root filesystem [default: preloaded:busybox].
    #[arg(long, value_name = "ROOTFS")]
    pub image: Option<String>,

    /// Memory limit in MB.
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub memory: Option<i32>,

    /// Disk limit in MB.
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    pub disk: Option<i32>,

    /// A file in the container whose contents become the task's result.
    #[arg(long, value_name = "PATH")]
    pub result_file: Option<String>,

    /// An environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,

    /// Read a DesireTaskRequest from this JSON file (flags override its fields).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The command to run, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long = "cell", value_name = "CELL_ID")]
    pub cell: Option<String>,
    /// PENDING, RUNNING, COMPLETED or RESOLVING.
    #[arg(long, value_parser = parse_task_state)]
    pub state: Option<TaskState>,
}

pub fn parse_task_state(s: &str) -> Result<TaskState, String> {
    TaskState::parse(s)
        .ok_or_else(|| format!("expected PENDING, RUNNING, COMPLETED or RESOLVING (got {s:?})"))
}

pub async fn run(ctx: &Ctx, cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Submit(args) => submit(ctx, args).await,
        TaskCommand::List(args) => list(ctx, args).await,
        TaskCommand::Get { guid } => get(ctx, &guid).await,
        TaskCommand::Cancel { guid } => cancel(ctx, &guid).await,
        TaskCommand::Delete { guid } => delete(ctx, &guid).await,
    }
}

/// The request `submit` sends: the file (if any) with the flags laid over it.
pub fn build_request(args: &SubmitArgs) -> anyhow::Result<DesireTaskRequest> {
    let mut req = match &args.file {
        Some(path) => super::read_request_file::<DesireTaskRequest>(
            path,
            &[
                ("domain", serde_json::json!(DEFAULT_DOMAIN)),
                ("task_definition.rootfs", serde_json::json!(DEFAULT_ROOTFS)),
            ],
        )?,
        None => DesireTaskRequest {
            domain: DEFAULT_DOMAIN.to_string(),
            task_definition: diego_model::TaskDefinition {
                rootfs: DEFAULT_ROOTFS.to_string(),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    if let Some(g) = &args.guid {
        req.task_guid = g.clone();
    }
    if req.task_guid.is_empty() {
        return Err(usage(
            "a task guid is required: `diego task submit GUID -- CMD ARGS...`",
        ));
    }
    if let Some(d) = &args.domain {
        req.domain = d.clone();
    }
    let def = &mut req.task_definition;
    if let Some(i) = &args.image {
        def.rootfs = i.clone();
    }
    if let Some(m) = args.memory {
        def.memory_mb = m;
    }
    if let Some(d) = args.disk {
        def.disk_mb = d;
    }
    if let Some(r) = &args.result_file {
        def.result_file = r.clone();
    }
    def.env
        .extend(args.env.iter().map(|(k, v)| EnvironmentVariable::new(k, v)));
    if let Some(action) = super::command_action(&args.command) {
        def.action = Some(action);
    } else if def.action.is_none() {
        return Err(usage(
            "nothing to run: give a command after `--` (e.g. `-- echo hello`) or an action with -f",
        ));
    }
    Ok(req)
}

async fn submit(ctx: &Ctx, args: SubmitArgs) -> anyhow::Result<()> {
    let req = build_request(&args)?;
    let task = ctx.client.desire_task(&req).await?;
    if ctx.json() {
        return emit_json(&task);
    }
    emit(&format!(
        "submitted task {} (domain {}): {}",
        task.task_guid, task.domain, task.state
    ));
    Ok(())
}

async fn list(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let query = TaskQuery {
        domain: args.domain,
        cell_id: args.cell,
        state: args.state,
    };
    let mut tasks = ctx.client.tasks(&query).await?;
    if ctx.json() {
        return emit_json(&tasks);
    }
    if tasks.is_empty() {
        emit("no tasks");
        return Ok(());
    }
    tasks.sort_by(|a, b| (a.created_at, &a.task_guid).cmp(&(b.created_at, &b.task_guid)));
    emit(&task_table(&tasks, output::now()).render());
    Ok(())
}

pub fn task_table(tasks: &[Task], now: i64) -> Table {
    let mut t = Table::new(["GUID", "DOMAIN", "STATE", "CELL", "AGE", "RESULT"]);
    for task in tasks {
        t.row([
            task.task_guid.clone(),
            task.domain.clone(),
            task.state.to_string(),
            dash(&task.cell_id),
            output::age(task.created_at, now),
            outcome(task),
        ]);
    }
    t
}

/// What happened to a task, in a few words.
fn outcome(task: &Task) -> String {
    match task.state {
        TaskState::Completed | TaskState::Resolving if task.failed => {
            format!("failed: {}", ellipsize(&task.failure_reason, 50))
        }
        TaskState::Completed | TaskState::Resolving => {
            let r = ellipsize(&task.result, 50);
            if r.is_empty() {
                "succeeded".to_string()
            } else {
                format!("succeeded: {r}")
            }
        }
        _ if task.rejection_count > 0 => {
            format!(
                "rejected {}x: {}",
                task.rejection_count,
                ellipsize(&task.rejection_reason, 40)
            )
        }
        _ => "-".to_string(),
    }
}

async fn get(ctx: &Ctx, guid: &str) -> anyhow::Result<()> {
    let task = ctx.client.task(guid).await?;
    if ctx.json() {
        return emit_json(&task);
    }
    emit(&task_details(&task, output::now()));
    Ok(())
}

pub fn task_details(task: &Task, now: i64) -> String {
    let def = &task.task_definition;
    let mut rows = vec![
        ("guid", task.task_guid.clone()),
        ("domain", task.domain.clone()),
        ("state", task.state.to_string()),
        ("cell", dash(&task.cell_id)),
        ("rootfs", def.rootfs.clone()),
        (
            "command",
            def.action
                .as_ref()
                .map(describe_action)
                .unwrap_or_else(|| "-".into()),
        ),
        ("memory", mb(def.memory_mb)),
        ("disk", mb(def.disk_mb)),
        ("created", output::timestamp(task.created_at, now)),
        ("updated", output::timestamp(task.updated_at, now)),
    ];
    if !def.env.is_empty() {
        let env: Vec<String> = def
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        rows.push(("env", env.join(" ")));
    }
    if !def.result_file.is_empty() {
        rows.push(("result file", def.result_file.clone()));
    }
    if matches!(task.state, TaskState::Completed | TaskState::Resolving) {
        rows.push(("failed", if task.failed { "yes".into() } else { "no".into() }));
        if task.failed {
            rows.push(("failure reason", task.failure_reason.clone()));
        }
        rows.push(("result", dash(&task.result)));
    }
    if task.rejection_count > 0 || !task.rejection_reason.is_empty() {
        rows.push((
            "rejections",
            format!("{} (last: {})", task.rejection_count, task.rejection_reason),
        ));
    }
    if let Some(why) = &task.placement_explanation {
        rows.push(("placement", why.to_string()));
    }
    key_values(&rows)
}

/// The command line of a run action, or the action's kind for anything else.
pub fn describe_action(action: &Action) -> String {
    match &action.run {
        Some(run) => std::iter::once(run.path.as_str())
            .chain(run.args.iter().map(String::as_str))
            .map(shell_word)
            .collect::<Vec<_>>()
            .join(" "),
        None => format!("({})", action_kind(action)),
    }
}

fn action_kind(a: &Action) -> &'static str {
    if a.download.is_some() {
        "download"
    } else if a.upload.is_some() {
        "upload"
    } else if a.timeout.is_some() {
        "timeout"
    } else if a.try_.is_some() {
        "try"
    } else if a.serial.is_some() {
        "serial"
    } else if a.parallel.is_some() {
        "parallel"
    } else if a.codependent.is_some() {
        "codependent"
    } else if a.emit_progress.is_some() {
        "emit_progress"
    } else {
        "empty"
    }
}

/// Quotes a word the way a shell user would type it back.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn mb(n: i32) -> String {
    if n == 0 {
        "unlimited".to_string()
    } else {
        format!("{n} MB")
    }
}

async fn cancel(ctx: &Ctx, guid: &str) -> anyhow::Result<()> {
    let task = ctx.client.cancel_task(guid).await?;
    if ctx.json() {
        return emit_json(&task);
    }
    emit(&format!("cancelled task {} ({})", task.task_guid, task.state));
    Ok(())
}

/// Deleting is Diego's two-step resolve: mark RESOLVING, then delete. Only a COMPLETED
/// task (or one a previous attempt left RESOLVING) can go.
async fn delete(ctx: &Ctx, guid: &str) -> anyhow::Result<()> {
    let task = ctx.client.task(guid).await?;
    match task.state {
        TaskState::Completed => {
            ctx.client.resolving_task(guid).await.with_context(|| format!("resolving task {guid}"))?;
        }
        TaskState::Resolving => {}
        state => anyhow::bail!(
            "task {guid} is {state}; only COMPLETED tasks can be deleted (cancel it first: `diego task cancel {guid}`)"
        ),
    }
    ctx.client
        .delete_task(guid)
        .await
        .with_context(|| format!("deleting task {guid}"))?;
    if ctx.json() {
        return emit_json(&task);
    }
    emit(&format!("deleted task {guid}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use diego_model::RunAction;

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Task(TaskCommand::Submit(a)) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn submit_builds_a_run_action_with_defaults() {
        let args = submit_args(&[
            "diego", "task", "submit", "hello", "--memory", "64", "--env", "A=1", "-e", "B=x=y", "--", "sh",
            "-c", "echo hi",
        ]);
        let req = build_request(&args).unwrap();
        assert_eq!(req.task_guid, "hello");
        assert_eq!(req.domain, "default");
        assert_eq!(req.task_definition.rootfs, "preloaded:busybox");
        assert_eq!(req.task_definition.memory_mb, 64);
        assert_eq!(
            req.task_definition.env,
            vec![
                EnvironmentVariable::new("A", "1"),
                EnvironmentVariable::new("B", "x=y")
            ]
        );
        let run = req.task_definition.action.unwrap().run.unwrap();
        assert_eq!(run.path, "sh");
        assert_eq!(run.args, vec!["-c", "echo hi"]);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.json");
        std::fs::write(
            &path,
            r#"{"task_guid":"from-file","domain":"d1","task_definition":{"rootfs":"oci:///img",
                "action":{"run":{"path":"true"}}}}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let req = build_request(&submit_args(&["diego", "task", "submit", "-f", p])).unwrap();
        assert_eq!((req.task_guid.as_str(), req.domain.as_str()), ("from-file", "d1"));
        assert_eq!(req.task_definition.rootfs, "oci:///img");
        let req = build_request(&submit_args(&[
            "diego", "task", "submit", "g2", "-f", p, "--domain", "d2",
        ]))
        .unwrap();
        assert_eq!((req.task_guid.as_str(), req.domain.as_str()), ("g2", "d2"));
        assert_eq!(req.task_definition.action.unwrap().run.unwrap().path, "true");
    }

    #[test]
    fn a_file_gets_the_same_defaults_as_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.json");
        std::fs::write(
            &path,
            r#"{"task_guid":"t1","task_definition":{"action":{"run":{"path":"true"}}}}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let from_file = build_request(&submit_args(&["diego", "task", "submit", "-f", p])).unwrap();
        let from_flags =
            build_request(&submit_args(&["diego", "task", "submit", "t1", "--", "true"])).unwrap();
        assert_eq!(from_file, from_flags);
        assert_eq!(
            (
                from_file.domain.as_str(),
                from_file.task_definition.rootfs.as_str()
            ),
            ("default", "preloaded:busybox")
        );
    }

    #[test]
    fn submit_without_a_command_is_a_usage_error() {
        let err = build_request(&submit_args(&["diego", "task", "submit", "hello"])).unwrap_err();
        assert!(err.downcast_ref::<crate::report::UsageError>().is_some(), "{err}");
    }

    #[test]
    fn bad_env_and_state_are_rejected_by_clap() {
        let e = Cli::try_parse_from(["diego", "task", "submit", "x", "--env", "NOEQUALS", "--", "true"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["diego", "task", "list", "--state", "DONE"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let cli =
            Cli::try_parse_from(["diego", "task", "list", "--state", "pending", "--cell", "c1"]).unwrap();
        match cli.command {
            Command::Task(TaskCommand::List(a)) => {
                assert_eq!(a.state, Some(TaskState::Pending));
                assert_eq!(a.cell.as_deref(), Some("c1"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn commands_are_quoted_for_display() {
        let a = Action::run(RunAction {
            path: "sh".into(),
            args: vec!["-c".into(), "echo it's".into()],
            ..Default::default()
        });
        assert_eq!(describe_action(&a), r"sh -c 'echo it'\''s'");
    }
}
