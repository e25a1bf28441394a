//! `diego logs NAME`: an app's or task's log lines from the log server, recent and followed
//! (like `cf logs`).

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use diego_logs::{FollowEvent, LogLine, LogQuery, LogStream, LogsClient};

use crate::commands::Ctx;

/// Where the CLI looks for a log server unless told otherwise (`diego dev` runs one here).
pub const DEFAULT_LOGS_URL: &str = "http://127.0.0.1:8891";

/// Recent lines printed before following, and by `--recent`.
const RECENT_LINES: usize = 1_000;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// An LRP's process guid (its log guid is looked up in the BBS), a task guid, or a log guid.
    pub name: String,
    /// Follow: print new lines as they arrive (none of the earlier ones).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the recent lines and exit.
    #[arg(long, conflicts_with = "follow")]
    pub recent: bool,
    /// Only lines of the last DURATION: `90s`, `5m`, `2h`, `1d` (units s, m, h, d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only lines of this instance index.
    #[arg(long, value_name = "N")]
    pub index: Option<u32>,
    /// Only lines of this source type or below it (`APP` also matches `APP/PROC/WEB`; `CELL`,
    /// `HEALTH`, `STG`, `RTR`, …).
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

/// `90s`, `5m`, `2h`, `1d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as 30s, 5m, 2h or 1d (got {s:?})"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// ANSI colour of a source type on a terminal.
fn colour(source_type: &str) -> &'static str {
    match source_type.split('/').next().unwrap_or("") {
        "APP" => "\x1b[32m",
        "CELL" => "\x1b[36m",
        "HEALTH" => "\x1b[35m",
        "STG" => "\x1b[33m",
        "RTR" => "\x1b[34m",
        _ => "\x1b[37m",
    }
}

/// `2026-12-07T00:35:11.123Z [APP/PROC/WEB/0] OUT hello`, coloured by source when `colour`.
pub fn format_line(line: &LogLine, coloured: bool) -> String {
    let time = crate::output::rfc3339_millis(i64::try_from(line.timestamp_ns).unwrap_or(i64::MAX));
    let label = line.source_label();
    let stream = line.stream.short();
    if !coloured {
        return format!("{time} [{label}] {stream} {}", line.message);
    }
    let reset = "\x1b[0m";
    let message = match line.stream {
        LogStream::Stderr => format!("\x1b[31m{}{reset}", line.message),
        LogStream::Stdout => line.message.clone(),
    };
    format!(
        "{time} {}[{label}]{reset} {stream} {message}",
        colour(&line.source_type)
    )
}

/// The log guid `name` stands for: its desired LRP's, else its task's, else `name` itself.
async fn log_guid(ctx: &Ctx, name: &str) -> String {
    match ctx.client.desired_lrp(name).await {
        Ok(d) => return diego_model::log_guid_or(&d.log_guid, &d.process_guid).to_string(),
        Err(e) if !e.is_not_found() => {
            eprintln!(
                "note: could not ask the BBS at {} about {name:?} ({e}); reading {name:?} as a log guid",
                ctx.client.base_url()
            );
            return name.to_string();
        }
        Err(_) => {}
    }
    match ctx.client.task(name).await {
        Ok(t) => diego_model::log_guid_or(&t.task_definition.log_guid, &t.task_guid).to_string(),
        Err(_) => name.to_string(),
    }
}

struct Printer {
    json: bool,
    coloured: bool,
}

impl Printer {
    fn print(&self, line: &LogLine) -> anyhow::Result<()> {
        if self.json {
            crate::output::emit(&serde_json::to_string(line)?);
        } else {
            crate::output::emit(&format_line(line, self.coloured));
        }
        Ok(())
    }
}

pub async fn run(ctx: &Ctx, logs_url: &str, args: LogsArgs) -> anyhow::Result<()> {
    let guid = log_guid(ctx, &args.name).await;
    show(ctx, logs_url, &guid, args).await
}

/// Prints (and with `--follow` follows) the lines of log guid `guid`.
pub async fn show(ctx: &Ctx, logs_url: &str, guid: &str, args: LogsArgs) -> anyhow::Result<()> {
    let guid = guid.to_string();
    let client =
        LogsClient::with_tls(logs_url, ctx.tls.as_ref()).with_context(|| format!("--logs {logs_url}"))?;
    let query = LogQuery {
        since_ns: args
            .since
            .map(|d| diego_logs::line::now_ns().saturating_sub(d.as_nanos() as u64)),
        index: args.index,
        source: args.source.clone(),
        ..LogQuery::default()
    };
    let printer = Printer {
        json: ctx.json(),
        coloured: !ctx.json() && std::io::stdout().is_terminal(),
    };
    if args.recent {
        let query = LogQuery {
            limit: Some(RECENT_LINES),
            ..query
        };
        let lines = client
            .recent(&guid, &query)
            .await
            .with_context(|| format!("reading the logs of {guid:?}"))?;
        for l in &lines {
            printer.print(l)?;
        }
        return Ok(());
    }
    let query = LogQuery {
        recent: Some(if args.follow { 0 } else { RECENT_LINES }),
        ..query
    };
    follow(&client, &guid, &query, &printer).await
}

/// Follows until Ctrl-C, reconnecting (from the last line seen) when the server goes away.
async fn follow(client: &LogsClient, guid: &str, query: &LogQuery, printer: &Printer) -> anyhow::Result<()> {
    let mut last = None;
    let mut connected_once = false;
    loop {
        let mut stream = match client.follow(guid, query, last).await {
            Ok(s) => s,
            Err(e @ diego_logs::LogsError::Refused { .. }) => return Err(e.into()),
            Err(e) if !connected_once => {
                return Err(anyhow::Error::new(e).context(format!("following the logs of {guid:?}")))
            }
            Err(e) => {
                eprintln!("{e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        connected_once = true;
        loop {
            match stream.next().await {
                Ok(Some(FollowEvent::Lines(lines))) => {
                    for l in &lines {
                        printer.print(l)?;
                    }
                }
                Ok(Some(FollowEvent::Dropped(n))) => {
                    eprintln!("{n} log lines were evicted by the log server before they could be shown")
                }
                Ok(None) => {
                    eprintln!("the log server ended the stream; reconnecting");
                    break;
                }
                Err(e) => {
                    eprintln!("{e}; reconnecting");
                    break;
                }
            }
        }
        last = stream.last_event_id().or(last);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_a_table() {
        let ok = [
            ("30", 30),
            ("90s", 90),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86_400),
            (" 0s ", 0),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)), "{s}");
        }
        for (s, err) in [
            ("5x", "unknown unit \"x\""),
            ("m", "expected a duration"),
            ("-5m", "expected a duration"),
            ("", "expected a duration"),
        ] {
            let got = parse_duration(s).unwrap_err();
            assert!(got.contains(err), "{s}: {got}");
        }
    }

    #[test]
    fn lines_print_like_cf_logs() {
        let mut line = LogLine {
            log_guid: "g".into(),
            source_type: "APP/PROC/WEB".into(),
            instance_index: Some(0),
            stream: LogStream::Stdout,
            timestamp_ns: 1_796_603_711_123_456_789,
            message: "hello".into(),
        };
        assert_eq!(
            format_line(&line, false),
            "2026-12-07T00:35:11.123Z [APP/PROC/WEB/0] OUT hello"
        );
        line.instance_index = None;
        line.source_type = "CELL".into();
        line.stream = LogStream::Stderr;
        assert_eq!(
            format_line(&line, false),
            "2026-12-07T00:35:11.123Z [CELL] ERR hello"
        );
        let coloured = format_line(&line, true);
        assert!(
            coloured.contains("\x1b[36m[CELL]\x1b[0m") && coloured.contains("\x1b[31mhello"),
            "{coloured:?}"
        );
    }
}
