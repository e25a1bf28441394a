//! `diego events`: follow the BBS event streams, one line per event, forever.
//!
//! Each stream is followed by its own task that resubscribes with `Last-Event-ID` when the
//! connection drops, so nothing between the last seen id and the reconnect is lost. A
//! `resync` event (the BBS no longer has what we missed) is called out plainly.

use std::time::Duration;

use diego_client::{BbsClient, EventStream, SseEvent};
use diego_model::{ActualLrp, Event, Presence, Task, TaskState};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::lrp::address;
use super::Ctx;
use crate::output::{ellipsize, emit};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Task events only.
    #[arg(long)]
    pub tasks: bool,
    /// LRP events only.
    #[arg(long)]
    pub lrps: bool,
    /// Replay the retained events after this id first, then follow.
    #[arg(long, value_name = "ID")]
    pub since: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Lrps,
    Tasks,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::Lrps => "lrp",
            Topic::Tasks => "task",
        }
    }
}

impl EventsArgs {
    /// Both streams unless exactly one was asked for.
    pub fn topics(&self) -> Vec<Topic> {
        match (self.lrps, self.tasks) {
            (true, false) => vec![Topic::Lrps],
            (false, true) => vec![Topic::Tasks],
            _ => vec![Topic::Lrps, Topic::Tasks],
        }
    }
}

/// What a follower hands to the printer.
enum Msg {
    Frame(SseEvent),
    /// A line for stderr about the stream itself (dropped, reconnected).
    Note(String),
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx, args: EventsArgs) -> anyhow::Result<()> {
    let topics = args.topics();
    // Subscribe to everything before printing anything, so a wrong URL fails at once with
    // the usual error instead of retrying forever.
    let mut streams = Vec::new();
    for &topic in &topics {
        streams.push((topic, subscribe(&ctx.client, topic, args.since).await?));
    }
    let names: Vec<&str> = topics.iter().map(|t| t.name()).collect();
    eprintln!(
        "following {} events from {} (Ctrl-C to stop)",
        names.join(" and "),
        ctx.client.base_url()
    );

    let (tx, mut rx) = mpsc::channel(256);
    for (topic, stream) in streams {
        tokio::spawn(follow(ctx.client.clone(), topic, stream, args.since, tx.clone()));
    }
    drop(tx);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Frame(frame) if ctx.json() => emit(&frame_json(&frame)),
            Msg::Frame(frame) => emit(&frame_line(&frame)),
            Msg::Note(note) => eprintln!("{note}"),
        }
    }
    Ok(())
}

async fn subscribe(
    client: &BbsClient,
    topic: Topic,
    after: Option<u64>,
) -> diego_client::Result<EventStream> {
    match topic {
        Topic::Lrps => client.events_lrps(after).await,
        Topic::Tasks => client.events_tasks(after).await,
    }
}

/// Forwards frames from `stream`, resubscribing after the last seen id whenever it ends.
async fn follow(
    client: BbsClient,
    topic: Topic,
    mut stream: EventStream,
    mut last: Option<u64>,
    tx: mpsc::Sender<Msg>,
) {
    let note = |s: String| Msg::Note(format!("{} events: {s}", topic.name()));
    loop {
        while let Some(item) = stream.next().await {
            match item {
                Ok(frame) => {
                    if let Some(id) = frame.id {
                        last = Some(id);
                    }
                    if tx.send(Msg::Frame(frame)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(note(format!("stream broke ({e})"))).await;
                    break;
                }
            }
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            tokio::time::sleep(backoff).await;
            match subscribe(&client, topic, last).await {
                Ok(s) => {
                    let from = last.map(|i| format!(" after id {i}")).unwrap_or_default();
                    if tx
                        .send(note(format!("reconnected, resuming{from}")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    stream = s;
                    break;
                }
                Err(e) => {
                    if tx.send(note(format!("reconnecting: {e}"))).await.is_err() {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// `-o json`: one compact object per line, `{"id","event","data"}`, with `data` exactly as
/// the server sent it (a string when it is not JSON).
pub fn frame_json(frame: &SseEvent) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        id: Option<u64>,
        event: &'a str,
        data: Box<serde_json::value::RawValue>,
    }
    use serde_json::value::RawValue;
    // The server's bytes as they are when they fit on one line; otherwise re-encoded compactly.
    let data = match RawValue::from_string(frame.data.clone()) {
        Ok(raw) if !frame.data.contains('\n') => raw,
        _ => {
            let v = serde_json::from_str::<serde_json::Value>(&frame.data)
                .unwrap_or_else(|_| serde_json::Value::String(frame.data.clone()));
            RawValue::from_string(v.to_string()).expect("serde_json output is valid JSON")
        }
    };
    serde_json::to_string(&Line {
        id: frame.id,
        event: &frame.event,
        data,
    })
    .expect("serialising a line")
}

/// The human line for a frame; frames that do not decode are shown raw.
pub fn frame_line(frame: &SseEvent) -> String {
    match frame.decode() {
        Ok(event) => event_line(frame.id, &event),
        Err(_) => {
            let id = frame.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
            format!("{id} {} {}", frame.event, ellipsize(&frame.data, 200))
        }
    }
}

/// `17 actual_lrp_changed web/0 UNCLAIMED -> CLAIMED cell-a`. Frames without an id (the
/// first of two events from one change) show `-`.
pub fn event_line(id: Option<u64>, event: &Event) -> String {
    let id = id.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let mut parts: Vec<String> = vec![id, event.name().to_string()];
    match event {
        Event::DesiredLrpCreated { desired_lrp: d } => {
            parts.push(d.process_guid.clone());
            parts.push(format!("instances={} domain={}", d.instances, d.domain));
        }
        Event::DesiredLrpChanged { before: b, after: a } => {
            parts.push(a.process_guid.clone());
            if b.instances != a.instances {
                parts.push(format!("instances {} -> {}", b.instances, a.instances));
            }
            if b.routes != a.routes {
                parts.push("routes changed".into());
            }
            if b.annotation != a.annotation {
                parts.push("annotation changed".into());
            }
        }
        Event::DesiredLrpRemoved { desired_lrp: d } => parts.push(d.process_guid.clone()),
        Event::ActualLrpCreated { actual_lrp: a } => {
            parts.push(actual_key(a));
            parts.push(a.state.to_string());
        }
        Event::ActualLrpChanged { before: b, after: a } => {
            parts.push(actual_key(a));
            if b.state != a.state {
                parts.push(format!("{} -> {}", b.state, a.state));
            } else {
                parts.push(a.state.to_string());
            }
            if b.presence != a.presence {
                parts.push(format!(
                    "presence {} -> {}",
                    b.presence.as_str(),
                    a.presence.as_str()
                ));
            }
            if !a.cell_id.is_empty() {
                parts.push(a.cell_id.clone());
            }
            if a.state == diego_model::ActualLrpState::Running
                && (b.address != a.address || b.ports != a.ports)
            {
                parts.push(address(a));
            }
            if a.crash_count != b.crash_count {
                parts.push(format!("crashes={}", a.crash_count));
            }
            if !a.placement_error.is_empty() && a.placement_error != b.placement_error {
                parts.push(format!("placement error: {}", ellipsize(&a.placement_error, 120)));
            }
        }
        Event::ActualLrpRemoved { actual_lrp: a } => {
            parts.push(actual_key(a));
            parts.push(a.state.to_string());
            if !a.cell_id.is_empty() {
                parts.push(a.cell_id.clone());
            }
        }
        Event::ActualLrpCrashed(c) => {
            parts.push(format!("{}/{}", c.key.process_guid, c.key.index));
            if !c.instance_key.cell_id.is_empty() {
                parts.push(c.instance_key.cell_id.clone());
            }
            parts.push(format!(
                "crash #{}: {}",
                c.crash_count,
                ellipsize(&c.crash_reason, 120)
            ));
        }
        Event::TaskCreated { task } => {
            parts.push(task.task_guid.clone());
            parts.push(format!("{} domain={}", task.state, task.domain));
        }
        Event::TaskChanged { before: b, after: a } => {
            parts.push(a.task_guid.clone());
            if b.state != a.state {
                parts.push(format!("{} -> {}", b.state, a.state));
            } else {
                parts.push(a.state.to_string());
            }
            if !a.cell_id.is_empty() {
                parts.push(a.cell_id.clone());
            }
            if a.rejection_count != b.rejection_count {
                parts.push(format!("rejected: {}", ellipsize(&a.rejection_reason, 120)));
            }
            if a.state == TaskState::Completed && b.state != TaskState::Completed {
                parts.push(task_outcome(a));
            }
        }
        Event::TaskRemoved { task } => {
            parts.push(task.task_guid.clone());
            parts.push(task.state.to_string());
        }
        Event::Resync { reason } => {
            return format!(
                "{} resync: EVENTS WERE MISSED ({reason}); anything derived from earlier events may be stale, relist to catch up",
                parts[0]
            );
        }
    }
    parts.join(" ")
}

fn actual_key(a: &ActualLrp) -> String {
    match a.presence {
        Presence::Ordinary => format!("{}/{}", a.process_guid, a.index),
        p => format!("{}/{} ({})", a.process_guid, a.index, p.as_str()),
    }
}

fn task_outcome(t: &Task) -> String {
    if t.failed {
        format!("failed: {}", ellipsize(&t.failure_reason, 120))
    } else {
        "succeeded".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use diego_model::{ActualLrpKey, ActualLrpState, DesireTaskRequest};

    fn actual(state: ActualLrpState, cell: &str) -> ActualLrp {
        let mut a = ActualLrp::unclaimed(
            ActualLrpKey {
                process_guid: "web".into(),
                index: 0,
                domain: "d".into(),
            },
            1,
            "epoch".into(),
        );
        a.state = state;
        a.cell_id = cell.into();
        a
    }

    #[test]
    fn actual_changes_show_the_transition_and_cell() {
        let e = Event::ActualLrpChanged {
            before: Box::new(actual(ActualLrpState::Unclaimed, "")),
            after: Box::new(actual(ActualLrpState::Claimed, "cell-a")),
        };
        assert_eq!(
            event_line(Some(17), &e),
            "17 actual_lrp_changed web/0 UNCLAIMED -> CLAIMED cell-a"
        );
        let created = Event::ActualLrpCreated {
            actual_lrp: Box::new(actual(ActualLrpState::Unclaimed, "")),
        };
        assert_eq!(event_line(None, &created), "- actual_lrp_created web/0 UNCLAIMED");
    }

    #[test]
    fn task_lines() {
        let req = DesireTaskRequest {
            task_guid: "hello".into(),
            domain: "d".into(),
            ..Default::default()
        };
        let t = Task::desired(req, 1, "e".into());
        assert_eq!(
            event_line(
                Some(3),
                &Event::TaskCreated {
                    task: Box::new(t.clone())
                }
            ),
            "3 task_created hello PENDING domain=d"
        );
        let mut done = t.clone();
        done.state = TaskState::Completed;
        done.cell_id = "cell-a".into();
        done.failed = true;
        done.failure_reason = "exit status 1".into();
        let e = Event::TaskChanged {
            before: Box::new(t),
            after: Box::new(done),
        };
        assert_eq!(
            event_line(Some(4), &e),
            "4 task_changed hello PENDING -> COMPLETED cell-a failed: exit status 1"
        );
    }

    #[test]
    fn resync_is_called_out() {
        let line = event_line(
            Some(9),
            &Event::Resync {
                reason: "fell behind".into(),
            },
        );
        assert!(
            line.starts_with("9 resync: EVENTS WERE MISSED (fell behind)"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_id_name_and_data() {
        let frame = SseEvent {
            id: Some(5),
            event: "resync".into(),
            data: r#"{"type":"resync","reason":"r"}"#.into(),
        };
        assert_eq!(
            frame_json(&frame),
            r#"{"id":5,"event":"resync","data":{"type":"resync","reason":"r"}}"#
        );
        let multi_line = SseEvent {
            id: None,
            event: "e".into(),
            data: "{\n\"a\": 1\n}".into(),
        };
        assert_eq!(
            frame_json(&multi_line),
            r#"{"id":null,"event":"e","data":{"a":1}}"#
        );
        let raw = SseEvent {
            id: None,
            event: "future_event".into(),
            data: "not json".into(),
        };
        assert_eq!(frame_line(&raw), "- future_event not json");
    }

    #[test]
    fn topics_default_to_both() {
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Events(a) => a,
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(
            parse(&["diego", "events"]).topics(),
            vec![Topic::Lrps, Topic::Tasks]
        );
        assert_eq!(
            parse(&["diego", "events", "--tasks"]).topics(),
            vec![Topic::Tasks]
        );
        let a = parse(&["diego", "events", "--lrps", "--since", "42"]);
        assert_eq!((a.topics(), a.since), (vec![Topic::Lrps], Some(42)));
    }
}
