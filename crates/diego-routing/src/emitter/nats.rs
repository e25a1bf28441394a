//! The NATS shell around [`EmitterState`]: feeds it tables, greetings, connection events and
//! the time, and publishes what it answers. It owns the state alone, so nothing is locked.

use std::sync::Arc;

use async_nats::{Client, Event, Message};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::{RegistryMessage, RouterGreeting, GREET, START};
use super::metrics::EmitterMetrics;
use super::state::{EmitterState, Outgoing, Timing};
use super::EmitterError;
use crate::table::Registration;

/// The latest table's registrations; `None` until the first listing.
pub(super) type Tables = watch::Receiver<Option<Arc<Vec<Registration>>>>;

/// Runs until `stop`. Fails only when the NATS client is gone for good (it reconnects by
/// itself).
pub(super) async fn run(
    client: Client,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut tables: Tables,
    timing: Timing,
    metrics: EmitterMetrics,
    stop: CancellationToken,
) -> Result<(), EmitterError> {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| EmitterError::Nats(format!("subscribing to {subject}: {e}")))
        }
    };
    let mut starts = subscribe(START.to_string()).await?;
    // Answers to our router.greet come to an inbox of our own.
    let inbox = client.new_inbox();
    let mut answers = subscribe(inbox.clone()).await?;
    let mut state = EmitterState::new(timing, Instant::now(), fastrand::f64());
    metrics
        .register_interval_seconds
        .set(state.register_interval().as_secs_f64());
    loop {
        let now = Instant::now();
        let out = tokio::select! {
            () = stop.cancelled() => break,
            changed = tables.changed() => {
                if changed.is_err() {
                    // The sync stops first on shutdown (and only then): finish with it.
                    stop.cancelled().await;
                    break;
                }
                let table = tables.borrow_and_update().clone();
                match table {
                    Some(t) => state.table(t.as_ref().clone(), now),
                    None => Vec::new(),
                }
            }
            msg = starts.next() => {
                let msg = msg.ok_or_else(|| EmitterError::Nats("the router.start subscription ended".into()))?;
                greeting(&mut state, &metrics, &msg, true, now)
            }
            msg = answers.next() => {
                let msg = msg.ok_or_else(|| EmitterError::Nats("the router.greet inbox subscription ended".into()))?;
                greeting(&mut state, &metrics, &msg, false, now)
            }
            event = events.recv() => match event {
                Some(Event::Connected) => {
                    metrics.nats_connected.set(1);
                    metrics.nats_connects.inc();
                    let info = client.server_info();
                    tracing::info!(server = %format!("{}:{}", info.host, info.port), "route-emitter: connected to NATS; greeting routers and sending the whole table");
                    if let Err(e) = client.publish_with_reply(GREET, inbox.clone(), bytes::Bytes::new()).await {
                        tracing::warn!(error = %e, "route-emitter: sending router.greet failed");
                    }
                    state.connected(now, fastrand::f64())
                }
                Some(Event::Disconnected) => {
                    metrics.nats_connected.set(0);
                    tracing::warn!("route-emitter: disconnected from NATS; reconnecting");
                    Vec::new()
                }
                Some(Event::Closed) => return Err(EmitterError::Nats("the NATS connection was closed".into())),
                Some(other) => {
                    tracing::warn!(event = %other, "route-emitter: NATS client event");
                    Vec::new()
                }
                None => return Err(EmitterError::Nats("the NATS client stopped".into())),
            },
            () = tokio::time::sleep_until(state.next_wake()) => state.tick(Instant::now(), fastrand::f64()),
        };
        publish(&client, &out, &metrics).await;
        metrics.registrations.set(state.registrations() as i64);
        metrics
            .unregistrations_cached
            .set(state.unregistrations_cached() as i64);
    }
    // What was published last goes out before the connection closes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
    Ok(())
}

fn greeting(
    state: &mut EmitterState,
    metrics: &EmitterMetrics,
    msg: &Message,
    started: bool,
    now: Instant,
) -> Vec<Outgoing> {
    metrics.greetings.inc();
    match RouterGreeting::parse(&msg.payload) {
        Ok(g) => {
            let before = state.register_interval();
            let out = state.greeted(g, started, now, fastrand::f64());
            let interval = state.register_interval();
            metrics.register_interval_seconds.set(interval.as_secs_f64());
            if interval != before {
                tracing::info!(subject = %msg.subject, interval_s = interval.as_secs_f64(), prune_threshold_s = ?g.prune_threshold.map(|d| d.as_secs()), "route-emitter: a router set the re-registration interval");
            }
            out
        }
        Err(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "route-emitter: ignoring a router greeting");
            Vec::new()
        }
    }
}

/// Publishes `out` in order. While disconnected nothing is queued (the client's buffer would
/// fill and block this loop): what is lost is sent again on reconnect.
async fn publish(client: &Client, out: &[Outgoing], metrics: &EmitterMetrics) {
    if out.is_empty() {
        return;
    }
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    let mut failed = 0;
    for o in out {
        if !connected {
            metrics.unsent(o.subject);
            continue;
        }
        let body = RegistryMessage::for_registration(&o.registration).to_bytes();
        match client.publish(o.subject.as_str(), body.into()).await {
            Ok(()) => metrics.sent(o.subject),
            Err(e) => {
                failed += 1;
                metrics.unsent(o.subject);
                tracing::debug!(error = %e, subject = o.subject.as_str(), "route-emitter: publish failed");
            }
        }
    }
    if !connected || failed > 0 {
        tracing::warn!(
            messages = out.len(),
            failed,
            connected,
            "route-emitter: messages not published; the table is sent again on reconnect and at the next full registration"
        );
    } else {
        tracing::debug!(messages = out.len(), "route-emitter: published");
    }
}
