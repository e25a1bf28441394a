//! Diego's event stream, derived from the store's change feed.
//!
//! Every committed change has a revision; an SSE event carries the revision of its change as
//! its `id`, so a subscriber that reconnects with `Last-Event-ID` resumes exactly after the
//! last change it saw — across reconnects and BBS restarts alike, because the feed is
//! durable. When the subscriber asks for a point older than the retained history (or falls
//! that far behind while connected), it gets an explicit `resync` event instead of a silent
//! gap, and the stream continues from the newest revision.
//!
//! One change can yield two events (a crash is `actual_lrp_crashed` then
//! `actual_lrp_changed`); only the last carries the `id`, so a reconnect replays a change
//! that was cut half-way rather than losing its tail.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use diego_model::{ActualLrp, ActualLrpCrashed, ActualLrpState, Event};
use diego_store::{Change, DynStore, Record};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Which events a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Lrps,
    Tasks,
}

/// Changes read from the store per page.
const PAGE: usize = 1000;

/// The events one change stands for, in order.
pub fn events_for(change: &Change) -> Vec<Event> {
    match (&change.before, &change.after) {
        (None, Some(Record::Task(t))) => vec![Event::TaskCreated {
            task: Box::new(t.clone()),
        }],
        (Some(Record::Task(b)), Some(Record::Task(a))) => {
            vec![Event::TaskChanged {
                before: Box::new(b.clone()),
                after: Box::new(a.clone()),
            }]
        }
        (Some(Record::Task(t)), None) => vec![Event::TaskRemoved {
            task: Box::new(t.clone()),
        }],
        (None, Some(Record::DesiredLrp(d))) => vec![Event::DesiredLrpCreated {
            desired_lrp: Box::new(d.clone()),
        }],
        (Some(Record::DesiredLrp(b)), Some(Record::DesiredLrp(a))) => {
            vec![Event::DesiredLrpChanged {
                before: Box::new(b.clone()),
                after: Box::new(a.clone()),
            }]
        }
        (Some(Record::DesiredLrp(d)), None) => vec![Event::DesiredLrpRemoved {
            desired_lrp: Box::new(d.clone()),
        }],
        (None, Some(Record::ActualLrp(a))) => vec![Event::ActualLrpCreated {
            actual_lrp: Box::new(a.clone()),
        }],
        (Some(Record::ActualLrp(b)), Some(Record::ActualLrp(a))) => {
            let mut events = Vec::with_capacity(2);
            if is_crash(b, a) {
                events.push(Event::ActualLrpCrashed(Box::new(ActualLrpCrashed {
                    key: b.key(),
                    instance_key: b.instance_key(),
                    crash_count: a.crash_count,
                    crash_reason: a.crash_reason.clone(),
                    since: a.since,
                })));
            }
            events.push(Event::ActualLrpChanged {
                before: Box::new(b.clone()),
                after: Box::new(a.clone()),
            });
            events
        }
        (Some(Record::ActualLrp(a)), None) => vec![Event::ActualLrpRemoved {
            actual_lrp: Box::new(a.clone()),
        }],
        _ => Vec::new(),
    }
}

/// A held instance that lost its cell and gained a crash: only the crash transition does
/// that (it bumps the count, or resets it to 1 after a long run, and stamps a new `since`).
fn is_crash(before: &ActualLrp, after: &ActualLrp) -> bool {
    let was_held = matches!(before.state, ActualLrpState::Claimed | ActualLrpState::Running);
    let now_free = matches!(after.state, ActualLrpState::Crashed | ActualLrpState::Unclaimed);
    was_held
        && now_free
        && !after.crash_reason.is_empty()
        && (after.crash_count != before.crash_count
            || (after.crash_count == 1 && after.since != before.since))
}

fn on_topic(event: &Event, topic: Topic) -> bool {
    match event {
        Event::Resync { .. } => true,
        e if e.is_task_event() => topic == Topic::Tasks,
        _ => topic == Topic::Lrps,
    }
}

fn sse(event: &Event, id: Option<u64>) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    let e = SseEvent::default().event(event.name()).data(data);
    match id {
        Some(id) => e.id(id.to_string()),
        None => e,
    }
}

/// An SSE response streaming `topic` from after revision `after` (`None` = from now).
///
/// The stream ends when `shutdown` is cancelled, so open subscriptions never hold up a
/// graceful shutdown (subscribers reconnect with their last id).
pub fn stream(
    store: DynStore,
    topic: Topic,
    after: Option<u64>,
    shutdown: CancellationToken,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    tokio::spawn(async move {
        tokio::select! {
            result = pump(store, topic, after, &tx) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "event stream ended");
                }
            }
            _ = shutdown.cancelled() => {}
        }
    });
    let stream = futures_util::StreamExt::map(ReceiverStream::new(rx), Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn pump(
    store: DynStore,
    topic: Topic,
    after: Option<u64>,
    tx: &mpsc::Sender<SseEvent>,
) -> Result<(), diego_store::StoreError> {
    let mut head = store.watch_head();
    let mut pos = match after {
        Some(p) => p,
        None => *head.borrow_and_update(),
    };
    loop {
        let page = store.changes_since(pos, PAGE).await?;
        // Changes after `pos` were pruned before we could read them: say so.
        if pos < page.head && pos + 1 < page.oldest {
            let resync = Event::Resync {
                reason: format!(
                    "events after {pos} are no longer retained (oldest kept is {}); relist and continue",
                    page.oldest
                ),
            };
            pos = page.head;
            if tx.send(sse(&resync, Some(pos))).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let full = page.changes.len() == PAGE;
        for change in &page.changes {
            let events: Vec<Event> = events_for(change)
                .into_iter()
                .filter(|e| on_topic(e, topic))
                .collect();
            let last = events.len().saturating_sub(1);
            for (i, e) in events.iter().enumerate() {
                let id = (i == last).then_some(change.revision);
                if tx.send(sse(e, id)).await.is_err() {
                    return Ok(());
                }
            }
            pos = change.revision;
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}
