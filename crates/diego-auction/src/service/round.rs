//! The scheduling loop: one round at a time, over everything queued since the last one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_client::{BbsClient, RepClient};
use diego_model::api::{LrpPlacementFailure, PlacementFailuresRequest};
use diego_model::auction::{
    CellState as WireCell, LrpStartRequest, LrpWork, PlacementExplanation, TaskStartRequest, Work,
};
use diego_model::ErrorType;
use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::metrics::{failure_reason, RoundFigures, WorkKind, REP_REFUSED_REASON};
use super::{AuctioneerConfig, Queue, Shared};
use crate::{
    AuctionRequest, AuctionResults, CellResources, CellState, LrpInstance, LrpStart, RootfsProvider,
    TaskStart, WorkResources,
};

/// Diego's error for work a cell's rep turned down after the auction chose it.
const REP_REFUSED: &str = "insufficient resources";

/// Most concurrent task failure reports to the BBS.
const REPORT_CONCURRENCY: usize = 64;

pub(super) async fn run_loop(
    shared: Arc<Shared>,
    bbs: BbsClient,
    http: reqwest::Client,
    config: AuctioneerConfig,
    shutdown: CancellationToken,
) {
    loop {
        let due = shared.parked().next_due();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.work.notified() => {}
            _ = sleep_until(due), if due.is_some() => {}
        }
        if !shared.active.load(Ordering::SeqCst) {
            // Standing by: the work stays queued; the lock holder notifies once it is active.
            continue;
        }
        if shared.recheck_cells.swap(false, Ordering::SeqCst) {
            // Only parked work was asked for: a changed set of cells releases it.
            if let Ok(presences) = bbs.cells().await {
                see_cells(&shared, &presences);
            }
        }
        {
            let mut parked = shared.parked();
            parked.release_due(Instant::now(), &mut shared.queue());
        }
        let queue = shared.take();
        if queue.is_empty() {
            continue;
        }
        if let Err(e) = round(&shared, &bbs, &http, &config, queue).await {
            warn!(error = %e, "auction round could not run; retrying in 1 s");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            shared.work.notify_one();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Tells the backoff which cells there are; a change releases parked work into the queue
/// (and wakes the loop for it).
fn see_cells(shared: &Shared, presences: &[diego_client::CellPresenceWithExpiry]) {
    let ids = presences
        .iter()
        .map(|p| p.cell_presence.cell_id.clone())
        .collect();
    let mut parked = shared.parked();
    if parked.cells_seen(ids, &mut shared.queue()) > 0 {
        shared.work.notify_one();
    }
}

/// One auction round. On an error before anything was sent the work goes back in the queue.
async fn round(
    shared: &Shared,
    bbs: &BbsClient,
    http: &reqwest::Client,
    config: &AuctioneerConfig,
    queue: Queue,
) -> Result<(), diego_client::ClientError> {
    let started = Instant::now();
    let presences = match bbs.cells().await {
        Ok(p) => p,
        Err(e) => {
            let mut q = shared.queue();
            for (_, r) in queue.lrps {
                q.push_lrp(r);
            }
            for (_, r) in queue.tasks {
                q.push_task(r);
            }
            return Err(e);
        }
    };
    see_cells(shared, &presences);
    let cells_present = presences.len();
    let fetch_started = Instant::now();
    let fetched = fetch_states(http, config, presences).await;
    let fetch_duration = fetch_started.elapsed();
    let lrps: Vec<LrpStartRequest> = queue.lrps.into_values().collect();
    let tasks: Vec<TaskStartRequest> = queue.tasks.into_values().collect();
    let request = AuctionRequest {
        lrps: lrps.iter().map(lrp_start).collect(),
        tasks: tasks.iter().map(task_start).collect(),
    };
    let cells: Vec<CellState> = fetched
        .iter()
        .enumerate()
        .map(|(i, (_, s))| cell_state(s, i as u32))
        .collect();
    let auction = config.auction;
    let results = tokio::task::spawn_blocking(move || crate::schedule(&cells, &request, &auction))
        .await
        .expect("the placement algorithm panicked");
    let scheduled = started.elapsed();

    // One `/work` per cell.
    let mut works: BTreeMap<&str, Work> = BTreeMap::new();
    for p in &results.successful_lrps {
        let r = &lrps[p.lrp];
        works
            .entry(p.cell_id.as_str())
            .or_insert_with(|| Work {
                cell_id: p.cell_id.clone(),
                ..Default::default()
            })
            .lrps
            .push(LrpWork {
                process_guid: r.process_guid.clone(),
                domain: r.domain.clone(),
                index: p.index as i32,
                placement_constraint: r.placement_constraint.clone(),
                resource: r.resource.clone(),
            });
    }
    for p in &results.successful_tasks {
        works
            .entry(p.cell_id.as_str())
            .or_insert_with(|| Work {
                cell_id: p.cell_id.clone(),
                ..Default::default()
            })
            .tasks
            .push(tasks[p.task].clone());
    }
    let rep_urls: BTreeMap<&str, &str> = fetched
        .iter()
        .map(|(url, s)| (s.cell_id.as_str(), url.as_str()))
        .collect();
    let refused: Vec<Work> = stream::iter(works.into_values())
        .map(|work| {
            let rep = RepClient::new(rep_urls[work.cell_id.as_str()], http.clone(), config.cell_timeout);
            async move {
                match rep.perform(&work).await {
                    Ok(failed) => failed,
                    Err(e) => {
                        // Not retried: the rep may have taken it. The BBS asks again for
                        // whatever stays unclaimed.
                        warn!(cell = %work.cell_id, error = %e, "sending work");
                        Work::default()
                    }
                }
            }
        })
        .buffer_unordered(config.cell_concurrency.max(1))
        .filter(|w| std::future::ready(!w.is_empty()))
        .collect()
        .await;

    park_failures(shared, &lrps, &results);
    let refused_lrps: usize = refused.iter().map(|w| w.lrps.len()).sum();
    let refused_tasks: usize = refused.iter().map(|w| w.tasks.len()).sum();
    let failures = results
        .failed_lrps
        .iter()
        .map(|f| (WorkKind::Lrp, failure_reason(&f.placement_error)))
        .chain(
            results
                .failed_tasks
                .iter()
                .map(|f| (WorkKind::Task, failure_reason(&f.placement_error))),
        )
        .chain(std::iter::repeat_n(
            (WorkKind::Lrp, REP_REFUSED_REASON),
            refused_lrps,
        ))
        .chain(std::iter::repeat_n(
            (WorkKind::Task, REP_REFUSED_REASON),
            refused_tasks,
        ))
        .collect();
    shared.metrics.round(&RoundFigures {
        lrps_placed: (results.successful_lrps.len() - refused_lrps) as u64,
        tasks_placed: (results.successful_tasks.len() - refused_tasks) as u64,
        failures,
        duration: started.elapsed(),
        fetch_states: fetch_duration,
        cells: cells_present,
        cells_answered: fetched.len(),
    });
    info!(
        cells = fetched.len(),
        lrps_placed = results.successful_lrps.len() - refused_lrps,
        tasks_placed = results.successful_tasks.len() - refused_tasks,
        lrps_failed = results.failed_lrps.len() + refused_lrps,
        tasks_failed = results.failed_tasks.len() + refused_tasks,
        schedule_ms = scheduled.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "auction round"
    );
    // Counted before the failures reach the BBS, so whoever sees a failure recorded also
    // sees its round counted.
    report_failures(bbs, &results, &refused).await;
    Ok(())
}

/// Every live cell's `/state`, as `(rep_url, state)`, skipping cells that do not answer in
/// time, answer an error (a 503 while the cell's self-check fails) or name another cell.
async fn fetch_states(
    http: &reqwest::Client,
    config: &AuctioneerConfig,
    presences: Vec<diego_client::CellPresenceWithExpiry>,
) -> Vec<(String, WireCell)> {
    let mut states: Vec<(String, WireCell)> = stream::iter(presences)
        .map(|p| {
            let rep = RepClient::new(p.cell_presence.rep_url.clone(), http.clone(), config.cell_timeout);
            async move {
                match rep.state().await {
                    Ok(s) if s.cell_id == p.cell_presence.cell_id => Some((p.cell_presence.rep_url, s)),
                    Ok(s) => {
                        warn!(presence = %p.cell_presence.cell_id, answered = %s.cell_id, "a rep reported another cell id; skipping it");
                        None
                    }
                    Err(e) => {
                        debug!(cell = %p.cell_presence.cell_id, error = %e, "cell state unavailable; skipping the cell");
                        None
                    }
                }
            }
        })
        .buffer_unordered(config.cell_concurrency.max(1))
        .filter_map(std::future::ready)
        .collect()
        .await;
    // Deterministic input, whatever order the answers came in.
    states.sort_by(|a, b| a.1.cell_id.cmp(&b.1.cell_id));
    states
}

/// Parks the LRP instances no cell could take (see `backoff.rs`); an LRP with an instance
/// placed starts its backoff over.
fn park_failures(shared: &Shared, lrps: &[LrpStartRequest], results: &AuctionResults) {
    let mut failed: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
    for f in &results.failed_lrps {
        failed.entry(f.lrp).or_default().push(f.index as i32);
    }
    let now = Instant::now();
    let mut parked = shared.parked();
    for p in &results.successful_lrps {
        parked.placed(&lrps[p.lrp].process_guid);
    }
    for (lrp, indices) in failed {
        parked.park(
            LrpStartRequest {
                indices,
                ..lrps[lrp].clone()
            },
            now,
        );
    }
}

/// Instances per placement-failure request (each index is a few bytes of JSON; the BBS takes
/// bodies of up to 1 MiB).
const FAILURES_PER_REQUEST: usize = 20_000;

/// The LRP failures of a round grouped by process, reason and explanation, in requests of at
/// most [`FAILURES_PER_REQUEST`] instances.
fn group_lrp_failures(results: &AuctionResults, refused: &[Work]) -> Vec<PlacementFailuresRequest> {
    let mut groups: Vec<LrpPlacementFailure> = Vec::new();
    let mut at: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    let failures = results
        .failed_lrps
        .iter()
        .map(|f| {
            (
                f.process_guid.as_str(),
                f.index,
                f.placement_error.as_str(),
                Some(&f.explanation),
            )
        })
        .chain(refused.iter().flat_map(|w| {
            w.lrps
                .iter()
                .map(|l| (l.process_guid.as_str(), l.index.max(0) as u32, REP_REFUSED, None))
        }));
    for (guid, index, error, explanation) in failures {
        let candidates = at.entry((guid, error)).or_default();
        let found = candidates
            .iter()
            .copied()
            .find(|&g| groups[g].placement_explanation.as_ref() == explanation);
        let g = match found {
            Some(g) => g,
            None => {
                groups.push(LrpPlacementFailure {
                    process_guid: guid.to_string(),
                    indices: Vec::new(),
                    placement_error: error.to_string(),
                    placement_explanation: explanation.cloned(),
                });
                candidates.push(groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[g].indices.push(index);
    }
    let mut requests = Vec::new();
    let mut current = PlacementFailuresRequest::default();
    let mut size = 0;
    for mut g in groups {
        while !g.indices.is_empty() {
            let room = FAILURES_PER_REQUEST - size;
            let rest = if g.indices.len() > room {
                g.indices.split_off(room)
            } else {
                Vec::new()
            };
            size += g.indices.len();
            current.lrps.push(LrpPlacementFailure {
                indices: std::mem::replace(&mut g.indices, rest),
                ..g.clone()
            });
            if size == FAILURES_PER_REQUEST {
                requests.push(std::mem::take(&mut current));
                size = 0;
            }
        }
    }
    if !current.lrps.is_empty() {
        requests.push(current);
    }
    requests
}

async fn report_failures(bbs: &BbsClient, results: &AuctionResults, refused: &[Work]) {
    for request in group_lrp_failures(results, refused) {
        match bbs.report_placement_failures(&request).await {
            Ok(r) => debug!(
                recorded = r.recorded,
                unchanged = r.unchanged,
                skipped = r.skipped,
                "placement failures reported"
            ),
            Err(e) => warn!(error = %e, "reporting placement failures"),
        }
    }
    let mut tasks: Vec<(&str, &str, Option<&PlacementExplanation>)> = Vec::new();
    for f in &results.failed_tasks {
        tasks.push((&f.task_guid, &f.placement_error, Some(&f.explanation)));
    }
    for w in refused {
        for t in &w.tasks {
            tasks.push((&t.task_guid, REP_REFUSED, None));
        }
    }
    stream::iter(tasks)
        .for_each_concurrent(REPORT_CONCURRENCY, |(guid, error, explanation)| async move {
            match bbs.reject_task(guid, error, explanation).await {
                Ok(_) => {}
                // Gone, or claimed meanwhile: nothing to report any more.
                Err(e) if e.is_not_found() || matches!(e.kind(), Some(ErrorType::InvalidStateTransition)) => {
                    debug!(task_guid = guid, error = %e, "placement failure not recorded")
                }
                Err(e) => warn!(task_guid = guid, error = %e, "reporting a placement failure"),
            }
        })
        .await;
}

fn work_resources(r: &diego_model::common::Resources) -> WorkResources {
    WorkResources {
        memory_mb: i64::from(r.memory_mb),
        disk_mb: i64::from(r.disk_mb),
        max_pids: i64::from(r.max_pids),
    }
}

fn lrp_start(r: &LrpStartRequest) -> LrpStart {
    LrpStart {
        process_guid: r.process_guid.clone(),
        domain: r.domain.clone(),
        indices: r.indices.iter().map(|i| *i as u32).collect(),
        resources: work_resources(&r.resource),
        rootfs: r.placement_constraint.rootfs.clone(),
        placement_tags: r.placement_constraint.placement_tags.clone(),
        volume_drivers: r.placement_constraint.volume_drivers.clone(),
    }
}

fn task_start(r: &TaskStartRequest) -> TaskStart {
    TaskStart {
        task_guid: r.task_guid.clone(),
        domain: r.domain.clone(),
        resources: work_resources(&r.resource),
        rootfs: r.placement_constraint.rootfs.clone(),
        placement_tags: r.placement_constraint.placement_tags.clone(),
        volume_drivers: r.placement_constraint.volume_drivers.clone(),
    }
}

fn resources(r: &diego_model::auction::CellResources) -> CellResources {
    CellResources::new(
        i64::from(r.memory_mb),
        i64::from(r.disk_mb),
        i64::from(r.containers),
    )
}

/// A rep's `/state` as the algorithm's input; `cell_index` is the cell's position among the
/// cells of this round (sorted by id), for the optional bin-pack weight.
fn cell_state(s: &WireCell, cell_index: u32) -> CellState {
    CellState {
        cell_id: s.cell_id.clone(),
        zone: s.zone.clone(),
        cell_index,
        rootfs_providers: s
            .rootfs_providers
            .iter()
            .map(|p| RootfsProvider {
                name: p.name.clone(),
                properties: p.properties.clone(),
            })
            .collect(),
        total: resources(&s.total_resources),
        available: resources(&s.available_resources),
        placement_tags: s.placement_tags.clone(),
        optional_placement_tags: s.optional_placement_tags.clone(),
        volume_drivers: s.volume_drivers.clone(),
        lrps: s
            .lrps
            .iter()
            .map(|l| LrpInstance {
                process_guid: l.process_guid.clone(),
                index: l.index.max(0) as u32,
            })
            .collect(),
        tasks: s.tasks.iter().map(|t| t.task_guid.clone()).collect(),
        starting_container_count: s.starting_container_count.max(0) as u32,
        evacuating: s.evacuating,
        proxy_memory_mb: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LrpFailure;

    fn failure(guid: &str, index: u32, error: &str, cells: u32) -> LrpFailure {
        LrpFailure {
            lrp: 0,
            process_guid: guid.into(),
            index,
            placement_error: error.into(),
            explanation: PlacementExplanation {
                total_cells: cells,
                ..Default::default()
            },
        }
    }

    #[test]
    fn failures_are_grouped_by_lrp_reason_and_explanation_in_bounded_requests() {
        let mut results = AuctionResults::default();
        for i in 0..(FAILURES_PER_REQUEST as u32 + 5) {
            results
                .failed_lrps
                .push(failure("huge", i, "insufficient resources: memory", 1));
        }
        results
            .failed_lrps
            .push(failure("web", 0, "insufficient resources: memory", 1));
        results
            .failed_lrps
            .push(failure("web", 1, "insufficient resources: memory", 2));
        let refused = [Work {
            lrps: vec![LrpWork {
                process_guid: "web".into(),
                index: 2,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let requests = group_lrp_failures(&results, &refused);
        type Group<'a> = (&'a str, usize, &'a str, Option<u32>);
        let shape: Vec<Vec<Group<'_>>> = requests
            .iter()
            .map(|r| {
                r.lrps
                    .iter()
                    .map(|g| {
                        (
                            g.process_guid.as_str(),
                            g.indices.len(),
                            g.placement_error.as_str(),
                            g.placement_explanation.as_ref().map(|x| x.total_cells),
                        )
                    })
                    .collect()
            })
            .collect();
        let memory = "insufficient resources: memory";
        assert_eq!(
            shape,
            [
                vec![("huge", FAILURES_PER_REQUEST, memory, Some(1))],
                vec![
                    ("huge", 5, memory, Some(1)),
                    ("web", 1, memory, Some(1)),
                    ("web", 1, memory, Some(2)),
                    ("web", 1, REP_REFUSED, None),
                ],
            ]
        );
        assert_eq!(requests[1].lrps[0].indices[0], FAILURES_PER_REQUEST as u32);
        assert!(group_lrp_failures(&AuctionResults::default(), &[]).is_empty());
    }
}
