//! Listings: every filter field, and the order results come back in.

use diego_model::{ActualLrp, ActualLrpState, Presence, TaskState};

use super::fixtures::{actual_lrp, actual_lrp_on, desired_lrp, task_on};
use super::{setup, StoreFactory};
use crate::{ActualLrpFilter, DesiredLrpFilter, DynStore, Record, TaskFilter, Txn, Write};

async fn insert_all(s: &DynStore, records: Vec<Record>) {
    s.commit(Txn {
        fence: None,
        writes: records.into_iter().map(Write::insert).collect(),
    })
    .await
    .expect("inserting fixtures");
}

/// Tasks filter by domain, cell and state, ordered by task guid.
pub async fn list_tasks_filters(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let tasks = vec![
        task_on("t3", "d1", "c1", TaskState::Running),
        task_on("t1", "d1", "", TaskState::Pending),
        task_on("t4", "d2", "c1", TaskState::Completed),
        task_on("t2", "d2", "c2", TaskState::Running),
    ];
    insert_all(s, tasks.iter().cloned().map(Record::Task).collect()).await;

    let guids = |f: TaskFilter| async move {
        s.list_tasks(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.task_guid)
            .collect::<Vec<_>>()
    };
    let d = |x: &str| Some(x.to_string());
    assert_eq!(guids(TaskFilter::default()).await, ["t1", "t2", "t3", "t4"]);
    assert_eq!(
        guids(TaskFilter {
            domain: d("d1"),
            ..Default::default()
        })
        .await,
        ["t1", "t3"]
    );
    assert_eq!(
        guids(TaskFilter {
            cell_id: d("c1"),
            ..Default::default()
        })
        .await,
        ["t3", "t4"]
    );
    assert_eq!(
        guids(TaskFilter {
            state: Some(TaskState::Running),
            ..Default::default()
        })
        .await,
        ["t2", "t3"]
    );
    assert_eq!(
        guids(TaskFilter {
            domain: d("d2"),
            cell_id: d("c1"),
            state: None
        })
        .await,
        ["t4"]
    );
    assert_eq!(
        guids(TaskFilter {
            domain: d("d1"),
            cell_id: None,
            state: Some(TaskState::Pending)
        })
        .await,
        ["t1"]
    );
    assert!(guids(TaskFilter {
        state: Some(TaskState::Resolving),
        ..Default::default()
    })
    .await
    .is_empty());
    assert!(guids(TaskFilter {
        domain: d("nope"),
        ..Default::default()
    })
    .await
    .is_empty());

    let all = s.list_tasks(&TaskFilter::default()).await.unwrap();
    let mut expected = tasks;
    expected.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
    assert_eq!(all, expected, "listed records are the stored records");
}

/// Desired LRPs filter by domain and a set of process guids, ordered by process guid; the
/// scheduling infos are exactly the scheduling halves of the same LRPs.
pub async fn list_desired_lrps_filters(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let lrps = [
        desired_lrp("p3", "d1"),
        desired_lrp("p1", "d1"),
        desired_lrp("p2", "d2"),
    ];
    insert_all(s, lrps.iter().cloned().map(Record::DesiredLrp).collect()).await;

    let cases: Vec<(DesiredLrpFilter, Vec<&str>)> = vec![
        (DesiredLrpFilter::default(), vec!["p1", "p2", "p3"]),
        (
            DesiredLrpFilter {
                domain: Some("d1".into()),
                ..Default::default()
            },
            vec!["p1", "p3"],
        ),
        (
            DesiredLrpFilter {
                domain: None,
                process_guids: vec!["p3".into(), "p2".into(), "missing".into()],
            },
            vec!["p2", "p3"],
        ),
        (
            DesiredLrpFilter {
                domain: Some("d1".into()),
                process_guids: vec!["p2".into(), "p3".into()],
            },
            vec!["p3"],
        ),
        (
            DesiredLrpFilter {
                domain: Some("none".into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, want) in cases {
        let got = s.list_desired_lrps(&filter).await.unwrap();
        let got_guids: Vec<&str> = got.iter().map(|d| d.process_guid.as_str()).collect();
        assert_eq!(got_guids, want, "{filter:?}");
        for d in &got {
            let original = lrps.iter().find(|o| o.process_guid == d.process_guid).unwrap();
            assert_eq!(d, original, "a listed desired LRP is the stored one, both halves");
        }
        let infos = s.list_scheduling_infos(&filter).await.unwrap();
        assert_eq!(
            infos,
            got.iter().map(|d| d.scheduling_info()).collect::<Vec<_>>(),
            "{filter:?}"
        );
    }
}

/// Six actual LRPs across two processes, indexes that sort differently as text, all
/// presences, two cells, two domains and several states, inserted out of order.
fn actual_fixtures() -> Vec<ActualLrp> {
    let claimed = |mut a: ActualLrp| {
        a.state = ActualLrpState::Claimed;
        a
    };
    vec![
        actual_lrp_on("pB", 0, "d2", "c2", Presence::Suspect),
        actual_lrp_on("pA", 10, "d1", "c1", Presence::Ordinary),
        actual_lrp_on("pA", 0, "d1", "c2", Presence::Evacuating),
        actual_lrp("pA", 2, "d1"),
        claimed(actual_lrp_on("pB", 0, "d2", "c1", Presence::Ordinary)),
        actual_lrp_on("pA", 0, "d1", "c1", Presence::Ordinary),
        actual_lrp("pA", 1, "d1"),
    ]
}

fn key(a: &ActualLrp) -> (String, i32, Presence) {
    (a.process_guid.clone(), a.index, a.presence)
}

/// Actual LRPs filter by every field, ordered by (process_guid, index, presence).
pub async fn list_actual_lrps_filters(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let all = actual_fixtures();
    insert_all(s, all.iter().cloned().map(Record::ActualLrp).collect()).await;
    let mut sorted = all.clone();
    sorted.sort_by_key(key);

    let listed = s.list_actual_lrps(&ActualLrpFilter::default()).await.unwrap();
    let keys: Vec<_> = listed
        .iter()
        .map(|a| (a.process_guid.as_str(), a.index, a.presence))
        .collect();
    assert_eq!(
        keys,
        [
            ("pA", 0, Presence::Ordinary),
            ("pA", 0, Presence::Evacuating),
            ("pA", 1, Presence::Ordinary),
            ("pA", 2, Presence::Ordinary),
            ("pA", 10, Presence::Ordinary),
            ("pB", 0, Presence::Ordinary),
            ("pB", 0, Presence::Suspect),
        ]
    );
    assert_eq!(listed, sorted);

    let s_ = |x: &str| Some(x.to_string());
    let filters = [
        (
            ActualLrpFilter {
                domain: s_("d2"),
                ..Default::default()
            },
            2,
        ),
        (
            ActualLrpFilter {
                cell_id: s_("c1"),
                ..Default::default()
            },
            3,
        ),
        (
            ActualLrpFilter {
                cell_id: s_("c2"),
                ..Default::default()
            },
            2,
        ),
        (
            ActualLrpFilter {
                process_guid: s_("pA"),
                ..Default::default()
            },
            5,
        ),
        (
            ActualLrpFilter {
                index: Some(0),
                ..Default::default()
            },
            4,
        ),
        (
            ActualLrpFilter {
                state: Some(ActualLrpState::Unclaimed),
                ..Default::default()
            },
            2,
        ),
        (
            ActualLrpFilter {
                state: Some(ActualLrpState::Claimed),
                ..Default::default()
            },
            1,
        ),
        (
            ActualLrpFilter {
                presence: Some(Presence::Evacuating),
                ..Default::default()
            },
            1,
        ),
        (
            ActualLrpFilter {
                presence: Some(Presence::Suspect),
                ..Default::default()
            },
            1,
        ),
        (
            ActualLrpFilter {
                presence: Some(Presence::Ordinary),
                ..Default::default()
            },
            5,
        ),
        (
            ActualLrpFilter {
                process_guid: s_("pA"),
                index: Some(0),
                ..Default::default()
            },
            2,
        ),
        (
            ActualLrpFilter {
                domain: s_("d1"),
                cell_id: s_("c1"),
                state: Some(ActualLrpState::Running),
                ..Default::default()
            },
            2,
        ),
        (
            ActualLrpFilter {
                process_guid: s_("pB"),
                presence: Some(Presence::Ordinary),
                cell_id: s_("c1"),
                ..Default::default()
            },
            1,
        ),
        (
            ActualLrpFilter {
                process_guid: s_("pC"),
                ..Default::default()
            },
            0,
        ),
    ];
    for (filter, count) in filters {
        let got = s.list_actual_lrps(&filter).await.unwrap();
        let want: Vec<ActualLrp> = sorted.iter().filter(|a| filter.matches(a)).cloned().collect();
        assert_eq!(want.len(), count, "fixture check for {filter:?}");
        assert_eq!(got, want, "{filter:?}");
        let json = s.list_actual_lrps_json(&filter).await.unwrap();
        let decoded: Vec<ActualLrp> = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, want, "JSON listing of {filter:?}");
    }
}

/// `get_actual_lrps` returns every presence of one index, ORDINARY first, and no other index.
pub async fn get_actual_lrps_returns_every_presence(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let all = actual_fixtures();
    insert_all(s, all.iter().cloned().map(Record::ActualLrp).collect()).await;

    let got = s.get_actual_lrps("pA", 0).await.unwrap();
    assert_eq!(
        got.iter().map(|a| a.presence).collect::<Vec<_>>(),
        [Presence::Ordinary, Presence::Evacuating]
    );
    assert!(got.iter().all(|a| a.process_guid == "pA" && a.index == 0));
    let got = s.get_actual_lrps("pB", 0).await.unwrap();
    assert_eq!(
        got.iter().map(|a| a.presence).collect::<Vec<_>>(),
        [Presence::Ordinary, Presence::Suspect]
    );
    assert_eq!(s.get_actual_lrps("pA", 10).await.unwrap().len(), 1);
    assert!(s.get_actual_lrps("pA", 3).await.unwrap().is_empty());
}

async fn update(s: &DynStore, r: Record) -> Record {
    s.commit(Txn::one(Write::update(r)))
        .await
        .expect("updating")
        .records
        .remove(0)
        .expect("stored record")
}

/// Listings see updates of the filtered fields: a record moves between cells and states
/// (and stays findable when an update leaves those fields alone).
pub async fn filters_follow_updates(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    let by_cell = |cell: &'static str| async move {
        let f = ActualLrpFilter {
            cell_id: Some(cell.into()),
            ..Default::default()
        };
        s.list_actual_lrps(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.state)
            .collect::<Vec<_>>()
    };
    insert_all(
        s,
        vec![
            Record::ActualLrp(actual_lrp("p", 0, "d")),
            Record::Task(task_on("t", "d", "", TaskState::Pending)),
        ],
    )
    .await;

    let mut a = actual_lrp("p", 0, "d");
    a.cell_id = "c1".into();
    a.state = ActualLrpState::Claimed;
    let mut a = update(s, Record::ActualLrp(a))
        .await
        .as_actual_lrp()
        .unwrap()
        .clone();
    assert_eq!(by_cell("c1").await, [ActualLrpState::Claimed]);
    assert!(by_cell("").await.is_empty());

    a.state = ActualLrpState::Running;
    let mut a = update(s, Record::ActualLrp(a))
        .await
        .as_actual_lrp()
        .unwrap()
        .clone();
    assert_eq!(by_cell("c1").await, [ActualLrpState::Running]);
    let running = ActualLrpFilter {
        state: Some(ActualLrpState::Running),
        domain: Some("d".into()),
        ..Default::default()
    };
    assert_eq!(s.list_actual_lrps(&running).await.unwrap().len(), 1);

    a.cell_id = "c2".into();
    let stored = update(s, Record::ActualLrp(a))
        .await
        .as_actual_lrp()
        .unwrap()
        .clone();
    // The JSON listing shows the record as last written, new modification tag included.
    let json = s
        .list_actual_lrps_json(&ActualLrpFilter::default())
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Vec<ActualLrp>>(&json).unwrap(), [stored]);
    assert!(by_cell("c1").await.is_empty());
    assert_eq!(by_cell("c2").await, [ActualLrpState::Running]);

    let tasks = |state: TaskState, cell: &'static str| async move {
        let f = TaskFilter {
            state: Some(state),
            cell_id: Some(cell.into()),
            domain: Some("d".into()),
        };
        s.list_tasks(&f).await.unwrap().len()
    };
    let t = s.get_task("t").await.unwrap().unwrap();
    let t = update(
        s,
        Record::Task(diego_model::Task {
            state: TaskState::Running,
            cell_id: "c1".into(),
            ..t
        }),
    )
    .await;
    assert_eq!(
        (
            tasks(TaskState::Running, "c1").await,
            tasks(TaskState::Pending, "").await
        ),
        (1, 0)
    );
    let t = t.as_task().unwrap().clone();
    let t = update(s, Record::Task(diego_model::Task { failed: true, ..t })).await;
    assert_eq!(
        tasks(TaskState::Running, "c1").await,
        1,
        "an update of other fields keeps it listed"
    );
    let t = t.as_task().unwrap().clone();
    update(
        s,
        Record::Task(diego_model::Task {
            state: TaskState::Completed,
            ..t
        }),
    )
    .await;
    assert_eq!(
        (
            tasks(TaskState::Completed, "c1").await,
            tasks(TaskState::Running, "c1").await
        ),
        (1, 0)
    );

    insert_all(s, vec![Record::DesiredLrp(desired_lrp("web", "d"))]).await;
    let mut d = desired_lrp("web", "d");
    d.instances = 9;
    update(s, Record::DesiredLrp(d)).await;
    let f = DesiredLrpFilter {
        domain: Some("d".into()),
        ..Default::default()
    };
    assert_eq!(s.list_desired_lrps(&f).await.unwrap()[0].instances, 9);
    assert_eq!(s.list_scheduling_infos(&f).await.unwrap()[0].instances, 9);
    let mut d = s.get_desired_lrp("web").await.unwrap().unwrap();
    d.domain = "other".into();
    update(s, Record::DesiredLrp(d)).await;
    assert!(s.list_desired_lrps(&f).await.unwrap().is_empty());
    let f = DesiredLrpFilter {
        domain: Some("other".into()),
        ..Default::default()
    };
    assert_eq!(s.list_scheduling_infos(&f).await.unwrap().len(), 1);
}

/// A listing larger than any page or batch a backend may use internally comes back whole and
/// in order. Inserted 100 per transaction (etcd allows 128 operations per transaction).
pub async fn large_listings_are_complete_and_ordered(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    const N: usize = 6_000;
    // A permutation of 0..N, so inserts arrive out of order.
    let order: Vec<usize> = (0..N).map(|i| (i * 7_919) % N).collect();
    for batch in order.chunks(100) {
        let writes = batch
            .iter()
            .map(|&i| {
                let p = if i % 2 == 0 {
                    Presence::Ordinary
                } else {
                    Presence::Evacuating
                };
                Write::insert(Record::ActualLrp(actual_lrp_on(
                    &format!("p{:03}", i / 20),
                    (i % 20) as i32 / 2,
                    "d",
                    &format!("c{}", i % 3),
                    p,
                )))
            })
            .collect();
        s.commit(Txn { writes, fence: None }).await.unwrap();
    }
    let all = s.list_actual_lrps(&ActualLrpFilter::default()).await.unwrap();
    assert_eq!(all.len(), N);
    assert!(
        all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "ordered by (process_guid, index, presence)"
    );
    let c1 = s
        .list_actual_lrps(&ActualLrpFilter {
            cell_id: Some("c1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        c1,
        all.iter()
            .filter(|a| a.cell_id == "c1")
            .cloned()
            .collect::<Vec<_>>()
    );
}

/// `counts` agrees with the listings, by state (and presence), after inserts and deletes.
pub async fn counts_by_state(f: &impl StoreFactory) {
    let (fx, _) = setup(f).await;
    let s = &fx.store;
    assert_eq!(s.counts().await.unwrap(), crate::Counts::default());
    let mut records: Vec<Record> = actual_fixtures().into_iter().map(Record::ActualLrp).collect();
    records.push(Record::Task(task_on("t1", "d", "", TaskState::Pending)));
    records.push(Record::Task(task_on("t2", "d", "c1", TaskState::Running)));
    records.push(Record::Task(task_on("t3", "d", "c1", TaskState::Running)));
    records.push(Record::DesiredLrp(desired_lrp("pA", "d1")));
    insert_all(s, records).await;

    let c = s.counts().await.unwrap();
    assert_eq!(c.tasks.get(&TaskState::Pending), Some(&1));
    assert_eq!(c.tasks.get(&TaskState::Running), Some(&2));
    assert_eq!(c.tasks.get(&TaskState::Completed), None);
    assert_eq!(c.desired_lrps, 1);
    let mut want = std::collections::BTreeMap::new();
    for a in s.list_actual_lrps(&ActualLrpFilter::default()).await.unwrap() {
        *want.entry((a.state, a.presence)).or_insert(0u64) += 1;
    }
    assert_eq!(c.actual_lrps, want);
    assert_eq!(
        c.actual_lrps.values().sum::<u64>(),
        actual_fixtures().len() as u64
    );

    let t1 = s.get_task("t1").await.unwrap().unwrap();
    s.commit(Txn::one(Write::delete(&Record::Task(t1))))
        .await
        .unwrap();
    assert_eq!(s.counts().await.unwrap().tasks.get(&TaskState::Pending), None);
}
