//! What convergence should do: a pure function from a snapshot of the store to a plan
//! (diego-spec §4.2 task convergence, §4.5 LRP convergence, §4.6 suspects, §5 restarts).
//!
//! The plan names every record it acts on as it was read, so the worker applies each action
//! as a compare-and-swap on that record: anything that changed since the snapshot wins, and
//! the next pass decides again from the new state.

use std::collections::{HashMap, HashSet};

use diego_model::clock::NANOS_PER_MILLI;
use diego_model::{
    ActualLrp, ActualLrpState, DesiredLrpSchedulingInfo, Presence, RestartPolicy, Task, TaskState, Timestamp,
};

/// Diego's failure reason for a running task whose cell vanished (diego-spec §4.2).
pub const CELL_DISAPPEARED: &str = "cell disappeared before completion";
/// Diego's failure reason for a task no cell took in time.
pub const NOT_STARTED_IN_TIME: &str = "not started within time limit";

/// The durations convergence compares against (diego-spec §4.8 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergeConfig {
    /// A RESOLVING task is demoted, a COMPLETED task's callback re-sent after this long
    /// without change.
    pub kick_task_ms: i64,
    /// A PENDING task unchanged this long is auctioned again.
    pub resend_pending_task_ms: i64,
    /// A PENDING task older than this fails.
    pub expire_pending_task_ms: i64,
    /// A COMPLETED task is deleted this long after it first completed.
    pub expire_completed_task_ms: i64,
    /// An UNCLAIMED instance unchanged this long is auctioned again.
    pub stale_unclaimed_ms: i64,
}

impl Default for ConvergeConfig {
    fn default() -> Self {
        ConvergeConfig {
            kick_task_ms: 30_000,
            resend_pending_task_ms: 30_000,
            expire_pending_task_ms: 30 * 60_000,
            expire_completed_task_ms: 120_000,
            stale_unclaimed_ms: 30_000,
        }
    }
}

/// Everything one pass looks at, read at `now`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now: Timestamp,
    pub tasks: Vec<Task>,
    pub desired: Vec<DesiredLrpSchedulingInfo>,
    /// Every presence of every index.
    pub actual: Vec<ActualLrp>,
    /// Cells whose presence is live.
    pub cells: HashSet<String>,
    /// Fresh domains: only their LRPs' instances may be retired.
    pub fresh_domains: HashSet<String>,
}

/// One thing to do, carrying the record(s) as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A PENDING task: ask the auctioneer again.
    AuctionTask(Task),
    /// PENDING or RUNNING → COMPLETED, failed with `reason`.
    FailTask { task: Task, reason: &'static str },
    /// RESOLVING for too long → COMPLETED, so its resolution is tried again.
    DemoteTask(Task),
    /// COMPLETED long enough: delete it.
    DeleteTask(Task),
    /// COMPLETED with a callback not yet delivered: deliver it again.
    ResendCallback(Task),
    /// A desired index without an instance: create it UNCLAIMED and auction it.
    CreateInstance { info_index: usize, index: i32 },
    /// UNCLAIMED for too long: auction again (no write).
    AuctionInstance { info_index: usize, lrp: ActualLrp },
    /// An index beyond the desired count, or of an LRP no longer desired: stop it.
    RetireInstance(ActualLrp),
    /// RUNNING on a cell whose presence lapsed: becomes SUSPECT (still serving, still routed)
    /// and a new UNCLAIMED instance is created and auctioned beside it.
    SuspectInstance { info_index: usize, lrp: ActualLrp },
    /// CLAIMED on a vanished cell (or a replacement whose cell vanished too): UNCLAIMED and
    /// auctioned.
    UnclaimInstance { info_index: usize, lrp: ActualLrp },
    /// CRASHED and its restart backoff has passed: UNCLAIMED and auctioned.
    RestartCrashed { info_index: usize, lrp: ActualLrp },
    /// A SUSPECT instance no longer needed: its replacement runs, or its LRP is gone.
    RemoveSuspect(ActualLrp),
    /// A SUSPECT instance whose cell came back before its replacement ran: the replacement
    /// (if any) is deleted and the suspect becomes ORDINARY again.
    RestoreSuspect {
        suspect: ActualLrp,
        replacement: Option<ActualLrp>,
    },
    /// An EVACUATING instance whose cell is gone.
    RemoveEvacuating(ActualLrp),
}

impl Action {
    /// A short name, for logs and counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AuctionTask(_) => "auction_task",
            Action::FailTask { .. } => "fail_task",
            Action::DemoteTask(_) => "demote_task",
            Action::DeleteTask(_) => "delete_task",
            Action::ResendCallback(_) => "resend_callback",
            Action::CreateInstance { .. } => "create_instance",
            Action::AuctionInstance { .. } => "auction_instance",
            Action::RetireInstance(_) => "retire_instance",
            Action::SuspectInstance { .. } => "suspect_instance",
            Action::UnclaimInstance { .. } => "unclaim_instance",
            Action::RestartCrashed { .. } => "restart_crashed",
            Action::RemoveSuspect(_) => "remove_suspect",
            Action::RestoreSuspect { .. } => "restore_suspect",
            Action::RemoveEvacuating(_) => "remove_evacuating",
        }
    }
}

/// What a pass saw, with Diego's metric names where they exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `LRPsMissing`: desired indices without an ORDINARY instance.
    pub lrps_missing: u64,
    /// `LRPsExtra`: ORDINARY instances at an index beyond the desired count.
    pub lrps_extra: u64,
    /// `CrashedActualLRPs`.
    pub crashed: u64,
    /// `CrashingDesiredLRPs`: desired LRPs with a crashed instance.
    pub crashing_desired: u64,
    /// `SuspectRunningActualLRPs`.
    pub suspect_running: u64,
    /// `SuspectClaimedActualLRPs`.
    pub suspect_claimed: u64,
    /// `PresentCells`.
    pub present_cells: u64,
    /// Cells named by instances but without a live presence, each with the number of
    /// instance rows naming it (`SuspectCells` counts them).
    pub lapsed_cells: std::collections::BTreeMap<String, u64>,
    /// Instances of LRPs no longer desired.
    pub orphans: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub tasks: Vec<Action>,
    pub lrps: Vec<Action>,
    pub observed: Observed,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.tasks.len() + self.lrps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides one pass.
pub fn plan(snapshot: &Snapshot, config: &ConvergeConfig) -> Plan {
    let mut p = Plan {
        tasks: plan_tasks(snapshot, config),
        ..Plan::default()
    };
    plan_lrps(snapshot, config, &mut p);
    p
}

fn older_than(t: Timestamp, ms: i64, now: Timestamp) -> bool {
    now.saturating_sub(t) >= ms.saturating_mul(NANOS_PER_MILLI)
}

fn plan_tasks(s: &Snapshot, c: &ConvergeConfig) -> Vec<Action> {
    let now = s.now;
    let mut out = Vec::new();
    for t in &s.tasks {
        match t.state {
            TaskState::Pending if older_than(t.created_at, c.expire_pending_task_ms, now) => {
                out.push(Action::FailTask {
                    task: t.clone(),
                    reason: NOT_STARTED_IN_TIME,
                });
            }
            TaskState::Pending if older_than(t.updated_at, c.resend_pending_task_ms, now) => {
                out.push(Action::AuctionTask(t.clone()));
            }
            TaskState::Running if !s.cells.contains(&t.cell_id) => out.push(Action::FailTask {
                task: t.clone(),
                reason: CELL_DISAPPEARED,
            }),
            TaskState::Resolving if older_than(t.updated_at, c.kick_task_ms, now) => {
                out.push(Action::DemoteTask(t.clone()));
            }
            TaskState::Completed if older_than(t.first_completed_at, c.expire_completed_task_ms, now) => {
                out.push(Action::DeleteTask(t.clone()));
            }
            TaskState::Completed
                if older_than(t.updated_at, c.kick_task_ms, now)
                    && !t.task_definition.completion_callback_url.is_empty() =>
            {
                out.push(Action::ResendCallback(t.clone()));
            }
            _ => {}
        }
    }
    out
}

/// The rows of one index.
#[derive(Default)]
struct Index<'a> {
    ordinary: Option<&'a ActualLrp>,
    suspect: Option<&'a ActualLrp>,
    evacuating: Option<&'a ActualLrp>,
}

fn on_missing_cell(a: &ActualLrp, cells: &HashSet<String>) -> bool {
    matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
        && !a.cell_id.is_empty()
        && !cells.contains(&a.cell_id)
}

fn plan_lrps(s: &Snapshot, c: &ConvergeConfig, p: &mut Plan) {
    let now = s.now;
    let infos: HashMap<&str, usize> = s
        .desired
        .iter()
        .enumerate()
        .map(|(i, d)| (d.process_guid.as_str(), i))
        .collect();
    let policies: Vec<RestartPolicy> = s
        .desired
        .iter()
        .map(|d| RestartPolicy::with_override(d.crash_policy.as_ref()))
        .collect();
    // Which desired indices have an instance that stands for them (or are being handled).
    let mut covered: Vec<Vec<bool>> = s
        .desired
        .iter()
        .map(|d| vec![false; d.instances.max(0) as usize])
        .collect();
    let mut crashing: HashSet<usize> = HashSet::new();
    let mut suspect_cells: HashMap<&str, u64> = HashMap::new();

    // Group the rows of each index by sorting (the store lists them ordered by
    // (guid, index, presence), so this is one pass over sorted data; nothing here depends on
    // that order, only the speed). A sort beats a hash map of 250,000 string keys.
    let mut rows: Vec<&ActualLrp> = s.actual.iter().collect();
    rows.sort_by(|a, b| (a.process_guid.as_str(), a.index).cmp(&(b.process_guid.as_str(), b.index)));
    let mut groups: Vec<((&str, i32), Index)> = Vec::with_capacity(rows.len());
    for a in rows {
        let key = (a.process_guid.as_str(), a.index);
        if groups.last().is_none_or(|(k, _)| *k != key) {
            groups.push((key, Index::default()));
        }
        let g = &mut groups.last_mut().expect("pushed above").1;
        match a.presence {
            Presence::Ordinary => g.ordinary = Some(a),
            Presence::Suspect => g.suspect = Some(a),
            Presence::Evacuating => g.evacuating = Some(a),
        }
        if !a.cell_id.is_empty() && !s.cells.contains(&a.cell_id) {
            *suspect_cells.entry(a.cell_id.as_str()).or_default() += 1;
        }
    }

    for (key, g) in &groups {
        let key = *key;
        let info_index = infos.get(key.0).copied();
        let desired = info_index.map(|i| &s.desired[i]);
        let domain = desired
            .map(|d| d.domain.as_str())
            .or_else(|| {
                g.ordinary
                    .or(g.suspect)
                    .or(g.evacuating)
                    .map(|a| a.domain.as_str())
            })
            .unwrap_or_default();
        let fresh = s.fresh_domains.contains(domain);
        let wanted = desired.is_some_and(|d| key.1 >= 0 && key.1 < d.instances);

        if let Some(e) = g.evacuating {
            if !e.cell_id.is_empty() && !s.cells.contains(&e.cell_id) {
                p.lrps.push(Action::RemoveEvacuating(e.clone()));
            }
        }

        let o = g.ordinary;
        let o_running = o.is_some_and(|o| o.state == ActualLrpState::Running);

        // Suspects first: they decide what happens to the ordinary row.
        let mut ordinary_handled = false;
        if let Some(sus) = g.suspect {
            match sus.state {
                ActualLrpState::Running => p.observed.suspect_running += 1,
                ActualLrpState::Claimed => p.observed.suspect_claimed += 1,
                _ => {}
            }
            let cell_back = s.cells.contains(&sus.cell_id);
            if !wanted {
                if fresh {
                    p.lrps.push(Action::RemoveSuspect(sus.clone()));
                }
            } else if o_running && !o.is_some_and(|o| on_missing_cell(o, &s.cells)) {
                // The replacement runs: the suspect is no longer needed.
                p.lrps.push(Action::RemoveSuspect(sus.clone()));
            } else if cell_back {
                p.lrps.push(Action::RestoreSuspect {
                    suspect: sus.clone(),
                    replacement: o.cloned(),
                });
                ordinary_handled = true;
                if let Some(i) = info_index {
                    cover(&mut covered[i], key.1);
                }
            } else if let (Some(i), Some(o)) = (info_index, o) {
                // Both on vanished cells: place the replacement again.
                if on_missing_cell(o, &s.cells) {
                    p.lrps.push(Action::UnclaimInstance {
                        info_index: i,
                        lrp: o.clone(),
                    });
                    ordinary_handled = true;
                    cover(&mut covered[i], key.1);
                }
            }
        }

        let Some(o) = o else {
            continue;
        };
        if ordinary_handled {
            continue;
        }
        if o.state == ActualLrpState::Crashed {
            p.observed.crashed += 1;
            if let Some(i) = info_index {
                crashing.insert(i);
            }
        }
        let Some(i) = info_index else {
            p.observed.orphans += 1;
            if fresh {
                p.lrps.push(Action::RetireInstance(o.clone()));
            }
            continue;
        };
        if !wanted {
            p.observed.lrps_extra += 1;
            if fresh {
                p.lrps.push(Action::RetireInstance(o.clone()));
            }
            continue;
        }
        cover(&mut covered[i], key.1);
        let lrp = o.clone();
        if on_missing_cell(o, &s.cells) {
            p.lrps.push(match o.state {
                ActualLrpState::Running if g.suspect.is_none() => {
                    Action::SuspectInstance { info_index: i, lrp }
                }
                _ => Action::UnclaimInstance { info_index: i, lrp },
            });
            continue;
        }
        match o.state {
            ActualLrpState::Unclaimed if older_than(o.since, c.stale_unclaimed_ms, now) => {
                p.lrps.push(Action::AuctionInstance { info_index: i, lrp });
            }
            ActualLrpState::Crashed if policies[i].should_restart_crashed(o.crash_count, o.since, now) => {
                p.lrps.push(Action::RestartCrashed { info_index: i, lrp });
            }
            _ => {}
        }
    }

    for (i, seen) in covered.iter().enumerate() {
        for (index, &c) in seen.iter().enumerate() {
            if !c {
                p.observed.lrps_missing += 1;
                p.lrps.push(Action::CreateInstance {
                    info_index: i,
                    index: index as i32,
                });
            }
        }
    }
    p.observed.crashing_desired = crashing.len() as u64;
    p.observed.present_cells = s.cells.len() as u64;
    p.observed.lapsed_cells = suspect_cells
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect();
}

fn cover(seen: &mut [bool], index: i32) {
    if let Some(slot) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) {
        *slot = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::{ActualLrpKey, DesireTaskRequest};

    const S: i64 = 1_000_000_000;
    const NOW: Timestamp = 100_000 * S;

    fn info(guid: &str, instances: i32) -> DesiredLrpSchedulingInfo {
        DesiredLrpSchedulingInfo {
            process_guid: guid.into(),
            domain: "d".into(),
            instances,
            ..Default::default()
        }
    }

    fn lrp(guid: &str, index: i32, state: ActualLrpState, cell: &str, since_s_ago: i64) -> ActualLrp {
        let key = ActualLrpKey {
            process_guid: guid.into(),
            index,
            domain: "d".into(),
        };
        let mut a = ActualLrp::unclaimed(key, NOW - since_s_ago * S, "e".into());
        a.state = state;
        if state != ActualLrpState::Unclaimed && state != ActualLrpState::Crashed {
            a.cell_id = cell.into();
            a.instance_guid = format!("{guid}-{index}-{cell}");
        }
        a
    }

    fn with_presence(mut a: ActualLrp, p: Presence) -> ActualLrp {
        a.presence = p;
        a
    }

    fn snapshot(desired: Vec<DesiredLrpSchedulingInfo>, actual: Vec<ActualLrp>, cells: &[&str]) -> Snapshot {
        Snapshot {
            now: NOW,
            tasks: Vec::new(),
            desired,
            actual,
            cells: cells.iter().map(|c| c.to_string()).collect(),
            fresh_domains: ["d".to_string()].into(),
        }
    }

    /// The plan's LRP actions as short strings: `kind guid/index[presence]`.
    fn lrp_actions(s: &Snapshot) -> Vec<String> {
        let p = plan(s, &ConvergeConfig::default());
        p.lrps
            .iter()
            .map(|a| {
                let who = |l: &ActualLrp| format!("{}/{}", l.process_guid, l.index);
                let target = match a {
                    Action::CreateInstance { info_index, index } => {
                        format!("{}/{index}", s.desired[*info_index].process_guid)
                    }
                    Action::AuctionInstance { lrp, .. }
                    | Action::SuspectInstance { lrp, .. }
                    | Action::UnclaimInstance { lrp, .. }
                    | Action::RestartCrashed { lrp, .. } => who(lrp),
                    Action::RetireInstance(l) | Action::RemoveSuspect(l) | Action::RemoveEvacuating(l) => {
                        who(l)
                    }
                    Action::RestoreSuspect { suspect, replacement } => {
                        format!("{} replacing={}", who(suspect), replacement.is_some())
                    }
                    other => panic!("task action in LRP plan: {other:?}"),
                };
                format!("{} {target}", a.kind())
            })
            .collect()
    }

    use ActualLrpState::*;

    #[test]
    fn lrp_rules() {
        struct Case {
            name: &'static str,
            desired: Vec<DesiredLrpSchedulingInfo>,
            actual: Vec<ActualLrp>,
            cells: &'static [&'static str],
            fresh: bool,
            want: &'static [&'static str],
        }
        let cases = vec![
            Case {
                name: "converged: nothing to do",
                desired: vec![info("web", 2)],
                actual: vec![lrp("web", 0, Running, "c1", 60), lrp("web", 1, Running, "c2", 60)],
                cells: &["c1", "c2"],
                fresh: true,
                want: &[],
            },
            Case {
                name: "a missing index is created",
                desired: vec![info("web", 3)],
                actual: vec![lrp("web", 0, Running, "c1", 60), lrp("web", 2, Running, "c1", 60)],
                cells: &["c1"],
                fresh: true,
                want: &["create_instance web/1"],
            },
            Case {
                name: "an LRP without any instance gets all of them",
                desired: vec![info("api", 2)],
                actual: vec![],
                cells: &["c1"],
                fresh: true,
                want: &["create_instance api/0", "create_instance api/1"],
            },
            Case {
                name: "extra indices and orphans are retired in a fresh domain",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("gone", 0, Running, "c1", 60),
                    lrp("web", 0, Running, "c1", 60),
                    lrp("web", 1, Running, "c1", 60),
                ],
                cells: &["c1"],
                fresh: true,
                want: &["retire_instance gone/0", "retire_instance web/1"],
            },
            Case {
                name: "with a stale domain extra indices and orphans are left alone",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("gone", 0, Running, "c1", 60),
                    lrp("web", 0, Running, "c1", 60),
                    lrp("web", 1, Running, "c1", 60),
                ],
                cells: &["c1"],
                fresh: false,
                want: &[],
            },
            Case {
                name: "a stale domain still recreates missing indices",
                desired: vec![info("web", 1)],
                actual: vec![],
                cells: &["c1"],
                fresh: false,
                want: &["create_instance web/0"],
            },
            Case {
                name: "UNCLAIMED for 30 s is auctioned again; a fresh one is not",
                desired: vec![info("web", 2)],
                actual: vec![lrp("web", 0, Unclaimed, "", 30), lrp("web", 1, Unclaimed, "", 29)],
                cells: &["c1"],
                fresh: true,
                want: &["auction_instance web/0"],
            },
            Case {
                name: "RUNNING on a vanished cell becomes SUSPECT; CLAIMED is unclaimed",
                desired: vec![info("web", 2)],
                actual: vec![
                    lrp("web", 0, Running, "lost", 60),
                    lrp("web", 1, Claimed, "lost", 60),
                ],
                cells: &["c1"],
                fresh: true,
                want: &["suspect_instance web/0", "unclaim_instance web/1"],
            },
            Case {
                name: "vanished cells are handled in a stale domain too",
                desired: vec![info("web", 1)],
                actual: vec![lrp("web", 0, Running, "lost", 60)],
                cells: &["c1"],
                fresh: false,
                want: &["suspect_instance web/0"],
            },
            Case {
                name: "a suspect stays while its replacement is placed",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("web", 0, Claimed, "c1", 1),
                    with_presence(lrp("web", 0, Running, "lost", 60), Presence::Suspect),
                ],
                cells: &["c1"],
                fresh: true,
                want: &[],
            },
            Case {
                name: "a suspect without a replacement row gets one",
                desired: vec![info("web", 1)],
                actual: vec![with_presence(
                    lrp("web", 0, Running, "lost", 60),
                    Presence::Suspect,
                )],
                cells: &["c1"],
                fresh: true,
                want: &["create_instance web/0"],
            },
            Case {
                name: "a suspect is removed once its replacement runs",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("web", 0, Running, "c1", 1),
                    with_presence(lrp("web", 0, Running, "lost", 60), Presence::Suspect),
                ],
                cells: &["c1"],
                fresh: true,
                want: &["remove_suspect web/0"],
            },
            Case {
                name: "a suspect whose cell returns first is restored, its replacement dropped",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("web", 0, Unclaimed, "", 60),
                    with_presence(lrp("web", 0, Running, "back", 60), Presence::Suspect),
                ],
                cells: &["back"],
                fresh: true,
                want: &["restore_suspect web/0 replacing=true"],
            },
            Case {
                name: "a replacement on a vanished cell while the suspect's is gone too is placed again",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("web", 0, Running, "lost2", 60),
                    with_presence(lrp("web", 0, Running, "lost", 60), Presence::Suspect),
                ],
                cells: &["c1"],
                fresh: true,
                want: &["unclaim_instance web/0"],
            },
            Case {
                name: "the suspect of an LRP no longer desired is removed (fresh domain)",
                desired: vec![],
                actual: vec![with_presence(
                    lrp("gone", 0, Running, "lost", 60),
                    Presence::Suspect,
                )],
                cells: &["c1"],
                fresh: true,
                want: &["remove_suspect gone/0"],
            },
            Case {
                name: "an EVACUATING instance whose cell is gone is removed",
                desired: vec![info("web", 1)],
                actual: vec![
                    lrp("web", 0, Running, "c1", 5),
                    with_presence(lrp("web", 0, Running, "drained", 60), Presence::Evacuating),
                ],
                cells: &["c1"],
                fresh: true,
                want: &["remove_evacuating web/0"],
            },
        ];
        for case in cases {
            let mut s = snapshot(case.desired, case.actual, case.cells);
            if !case.fresh {
                s.fresh_domains.clear();
            }
            assert_eq!(lrp_actions(&s), case.want, "{}", case.name);
        }
    }

    #[test]
    fn crashed_instances_restart_after_their_backoff() {
        let crashed = |count: i32, secs_ago: i64| {
            let mut a = lrp("web", 0, Crashed, "", secs_ago);
            a.crash_count = count;
            a
        };
        // Crash count 4 (the first delayed restart under the defaults) waits 30 s.
        let s = snapshot(vec![info("web", 1)], vec![crashed(4, 29)], &["c1"]);
        assert_eq!(lrp_actions(&s), Vec::<String>::new());
        let s = snapshot(vec![info("web", 1)], vec![crashed(4, 30)], &["c1"]);
        assert_eq!(lrp_actions(&s), ["restart_crashed web/0"]);
        // Given up on.
        let s = snapshot(vec![info("web", 1)], vec![crashed(200, 100_000)], &["c1"]);
        assert_eq!(lrp_actions(&s), Vec::<String>::new());
        let p = plan(&s, &ConvergeConfig::default());
        assert_eq!((p.observed.crashed, p.observed.crashing_desired), (1, 1));
        // A per-LRP policy changes the wait.
        let mut custom = info("web", 1);
        custom.crash_policy = Some(diego_model::CrashPolicy {
            immediate_restarts: Some(0),
            max_backoff_ms: Some(30_000),
            max_restarts: Some(300),
        });
        let s = snapshot(vec![custom], vec![crashed(250, 30)], &["c1"]);
        assert_eq!(lrp_actions(&s), ["restart_crashed web/0"]);
    }

    #[test]
    fn observations_count_what_the_pass_saw() {
        let s = snapshot(
            vec![info("web", 3)],
            vec![
                lrp("web", 0, Running, "lost", 60),
                lrp("web", 3, Running, "c1", 60),
                with_presence(lrp("web", 1, Running, "lost", 60), Presence::Suspect),
                lrp("orphan", 0, Running, "c1", 60),
            ],
            &["c1", "c2"],
        );
        let o = plan(&s, &ConvergeConfig::default()).observed;
        assert_eq!(o.lrps_missing, 2, "indices 1 and 2 have no ordinary instance");
        assert_eq!(o.lrps_extra, 1);
        assert_eq!(o.orphans, 1);
        assert_eq!(o.suspect_running, 1);
        assert_eq!(o.present_cells, 2);
        assert_eq!(o.lapsed_cells.len(), 1);
    }

    fn task(guid: &str, state: TaskState, cell: &str, created_s_ago: i64, updated_s_ago: i64) -> Task {
        let req = DesireTaskRequest {
            task_guid: guid.into(),
            domain: "d".into(),
            ..Default::default()
        };
        let mut t = Task::desired(req, NOW - created_s_ago * S, "e".into());
        t.state = state;
        t.cell_id = cell.into();
        t.updated_at = NOW - updated_s_ago * S;
        if matches!(state, TaskState::Completed | TaskState::Resolving) {
            t.first_completed_at = t.updated_at;
        }
        t
    }

    #[test]
    fn task_rules() {
        let mut with_callback = task("cb", TaskState::Completed, "", 100, 31);
        with_callback.task_definition.completion_callback_url = "http://127.0.0.1:1/cb".into();
        let s = Snapshot {
            now: NOW,
            tasks: vec![
                task("fresh-pending", TaskState::Pending, "", 5, 5),
                task("stale-pending", TaskState::Pending, "", 40, 30),
                task("expired-pending", TaskState::Pending, "", 1800, 1),
                task("running-here", TaskState::Running, "c1", 100, 100),
                task("running-lost", TaskState::Running, "lost", 100, 1),
                task("resolving-stuck", TaskState::Resolving, "", 100, 30),
                task("resolving-now", TaskState::Resolving, "", 100, 10),
                task("completed-old", TaskState::Completed, "", 200, 120),
                task("completed-new", TaskState::Completed, "", 100, 31),
                with_callback,
            ],
            cells: ["c1".to_string()].into(),
            ..Default::default()
        };
        let got: Vec<String> = plan(&s, &ConvergeConfig::default())
            .tasks
            .iter()
            .map(|a| match a {
                Action::AuctionTask(t)
                | Action::DemoteTask(t)
                | Action::DeleteTask(t)
                | Action::ResendCallback(t) => {
                    format!("{} {}", a.kind(), t.task_guid)
                }
                Action::FailTask { task, reason } => format!("fail_task {} ({reason})", task.task_guid),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                "auction_task stale-pending",
                "fail_task expired-pending (not started within time limit)",
                "fail_task running-lost (cell disappeared before completion)",
                "demote_task resolving-stuck",
                "delete_task completed-old",
                "resend_callback cb",
            ]
        );
    }
}
