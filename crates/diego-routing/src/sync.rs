//! Keeps a [`RoutingTable`] current from the BBS, the way a Kubernetes informer does:
//! subscribe to the LRP event stream first, then list; apply the events that arrived during
//! the list on top of it; then follow the stream. Every `resync_interval` (60 s, as Diego's
//! route-emitter) it lists again while still reading the stream and replays what arrived
//! during that list, so a missed event is mended within one interval. A `resync` event from
//! the BBS (it no longer has what this subscriber missed) relists at once; a dropped stream
//! reconnects with `Last-Event-ID`, losing nothing.
//!
//! Whoever runs it gets the table through `publish` after every change: after a listing and
//! after each batch of events that were ready together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_client::{ActualLrpQuery, DesiredLrpQuery};
use diego_client::{BbsClient, EventStream, SseEvent};
use diego_model::Event;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::table::RoutingTable;

/// Diego's route-emitter `sync_interval`.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Most events applied before the table is published once.
const MAX_BATCH: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often the whole table is listed again.
    pub resync_interval: Duration,
    /// Wait before reconnecting after the BBS could not be reached.
    pub retry_delay: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Counters of a running sync, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Events applied to the table.
    pub events: AtomicU64,
    /// Full listings (the first, the periodic ones and those a `resync` event asked for).
    pub listings: AtomicU64,
    /// Connections and listings that failed.
    pub errors: AtomicU64,
    /// How long the last listing took, in ms.
    pub last_listing_ms: AtomicU64,
    /// Times the table was handed to `publish`.
    pub publishes: AtomicU64,
}

/// Runs until `stop`: keeps a routing table in step with the BBS at `bbs` and hands it to
/// `publish` after every change. Errors are retried, never returned.
pub async fn run(
    bbs: BbsClient,
    config: SyncConfig,
    stats: Arc<SyncStats>,
    mut publish: impl FnMut(&RoutingTable) + Send,
    stop: CancellationToken,
) {
    let mut last_id: Option<u64> = None;
    let mut table: Option<RoutingTable> = None;
    let mut next_listing = Instant::now();
    while !stop.is_cancelled() {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            s = bbs.events_lrps(last_id) => s,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "routing: cannot follow the BBS's LRP events; retrying");
                sleep_or_stop(config.retry_delay, &stop).await;
                continue;
            }
        };
        loop {
            if table.is_none() || Instant::now() >= next_listing {
                match list(&bbs, &mut stream, &mut last_id, &stats, &stop).await {
                    Listing::Done(t) => {
                        publish_table(&t, &stats, &mut publish);
                        table = Some(t);
                        next_listing = Instant::now() + config.resync_interval;
                    }
                    Listing::Stopped => return,
                    Listing::StreamEnded => break,
                    Listing::Failed => {
                        sleep_or_stop(config.retry_delay, &stop).await;
                        break;
                    }
                }
            }
            let Some(t) = table.as_mut() else { break };
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_listing.into()) => continue,
                f = stream.next() => f,
            };
            let Some(Ok(frame)) = frame else {
                tracing::info!("routing: the BBS's event stream ended; reconnecting");
                break;
            };
            let mut changed = false;
            let mut resync = false;
            let mut next = Some(frame);
            let mut applied = 0;
            while let Some(frame) = next.take() {
                match decode(&frame, &mut last_id) {
                    Some(Event::Resync { reason }) => {
                        tracing::info!(%reason, "routing: the BBS asks for a resync; listing again");
                        resync = true;
                        break;
                    }
                    Some(event) => {
                        changed |= t.apply(&event);
                        stats.events.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
                applied += 1;
                if applied < MAX_BATCH {
                    // Only what is already here: a batch never waits for more.
                    next = stream.next().now_or_never().flatten().and_then(Result::ok);
                }
            }
            if changed {
                publish_table(t, &stats, &mut publish);
            }
            if resync {
                next_listing = Instant::now();
            }
        }
    }
}

enum Listing {
    Done(RoutingTable),
    Stopped,
    /// The stream ended while listing: reconnect (with `Last-Event-ID`) and list again.
    StreamEnded,
    Failed,
}

/// Lists desired and actual LRPs while reading `stream`, then replays onto the listing the
/// events that arrived meanwhile. Events carry whole records, so replaying one the listing
/// already shows leaves the same state, and the last event of each record wins.
async fn list(
    bbs: &BbsClient,
    stream: &mut EventStream,
    last_id: &mut Option<u64>,
    stats: &SyncStats,
    stop: &CancellationToken,
) -> Listing {
    let started = Instant::now();
    let (every_desired, every_actual) = (DesiredLrpQuery::default(), ActualLrpQuery::default());
    let listing = async {
        tokio::try_join!(
            bbs.scheduling_infos(&every_desired),
            bbs.actual_lrps(&every_actual)
        )
    };
    tokio::pin!(listing);
    let mut during: Vec<Event> = Vec::new();
    let mut stream_open = true;
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => return Listing::Stopped,
            r = &mut listing => break r,
            f = stream.next(), if stream_open => match f {
                Some(Ok(frame)) => {
                    if let Some(ev) = decode(&frame, last_id) {
                        during.push(ev);
                    }
                }
                _ => stream_open = false,
            },
        }
    };
    stats.listings.fetch_add(1, Ordering::Relaxed);
    if !stream_open {
        return Listing::StreamEnded;
    }
    let (desired, actual) = match result {
        Ok(r) => r,
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "routing: listing LRPs failed; retrying");
            return Listing::Failed;
        }
    };
    let mut table = RoutingTable::from_snapshot(&desired, &actual);
    for ev in &during {
        // A resync event during a listing needs nothing more: the listing is newer.
        table.apply(ev);
    }
    stats.events.fetch_add(during.len() as u64, Ordering::Relaxed);
    stats
        .last_listing_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    Listing::Done(table)
}

fn decode(frame: &SseEvent, last_id: &mut Option<u64>) -> Option<Event> {
    if let Some(id) = frame.id {
        *last_id = Some(id);
    }
    match frame.decode() {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::warn!(error = %e, "routing: skipping an event that does not decode");
            None
        }
    }
}

fn publish_table(t: &RoutingTable, stats: &SyncStats, publish: &mut impl FnMut(&RoutingTable)) {
    stats.publishes.fetch_add(1, Ordering::Relaxed);
    publish(t);
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
