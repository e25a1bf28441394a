//! Diego's auction behaviour, case by case (diego-spec §6.1–§6.6 and the auction's own tests).

use diego_auction::sim;
use diego_auction::{
    schedule, AuctionConfig, AuctionRequest, AuctionResults, CellResources, CellState, LrpInstance, LrpStart,
    RootfsProvider, TaskStart, WorkResources,
};

fn cell(id: &str, zone: &str, memory: i64, disk: i64, containers: i64) -> CellState {
    CellState::new(id, zone, CellResources::new(memory, disk, containers))
}

fn lrp(guid: &str, indices: impl IntoIterator<Item = u32>, memory: i64) -> LrpStart {
    LrpStart::new(guid, indices, WorkResources::new(memory, 1))
}

fn task(guid: &str, memory: i64) -> TaskStart {
    TaskStart::new(guid, WorkResources::new(memory, 1))
}

fn run(cells: &[CellState], lrps: Vec<LrpStart>, tasks: Vec<TaskStart>) -> AuctionResults {
    schedule(cells, &AuctionRequest { lrps, tasks }, &AuctionConfig::default())
}

fn winners(r: &AuctionResults) -> Vec<(String, u32, String)> {
    r.successful_lrps
        .iter()
        .map(|p| (p.process_guid.clone(), p.index, p.cell_id.clone()))
        .collect()
}

#[test]
fn lone_cell_in_a_zone_gets_its_zones_share() {
    // auction simulation "AZ distribution": cells 0 and 2 in z0, cell 1 alone in z1 holding 50
    // instances; 40 instances of "red" split 20/20 between the zones.
    let s = sim::zone_distribution();
    let r = schedule(&s.cells, &s.request, &s.config);
    assert!(r.failed_lrps.is_empty());
    let on = |id: &str| r.successful_lrps.iter().filter(|p| p.cell_id == id).count();
    assert_eq!(on("cell-00001"), 20);
    assert_eq!(on("cell-00000") + on("cell-00002"), 20);
    assert!(on("cell-00000").abs_diff(on("cell-00002")) <= 1);
}

#[test]
fn order_is_index_zero_then_tasks_then_other_indices_bigger_first() {
    // One cell of 100 MB. Index-0 LRPs by memory (B 30, A 10), then tasks by memory (T2 40,
    // T1 5): 85 MB used. Then index ≥ 1 by index, then memory: C1 (50) fails, D1 (10) fits,
    // E2 (12) no longer does — by memory alone E2 would have taken D1's place.
    let cells = vec![cell("only", "z", 100, 1000, 100)];
    let r = run(
        &cells,
        vec![
            lrp("A", [0], 10),
            lrp("E", [2], 12),
            lrp("C", [1], 50),
            lrp("B", [0], 30),
            lrp("D", [1], 10),
        ],
        vec![task("T1", 5), task("T2", 40)],
    );
    let placed: Vec<String> = r
        .successful_lrps
        .iter()
        .map(|p| format!("{}{}", p.process_guid, p.index))
        .collect();
    assert_eq!(placed, ["B0", "A0", "D1"]);
    let tasks: Vec<&str> = r.successful_tasks.iter().map(|t| t.task_guid.as_str()).collect();
    assert_eq!(
        tasks,
        ["T2", "T1"],
        "tasks before index-1 instances, larger first"
    );
    let failed: Vec<String> = r
        .failed_lrps
        .iter()
        .map(|p| format!("{}{}", p.process_guid, p.index))
        .collect();
    assert_eq!(failed, ["C1", "E2"]);
    assert!(r
        .failed_lrps
        .iter()
        .all(|f| f.placement_error == "insufficient resources: memory"));
}

#[test]
fn packing_optimally_when_memory_is_low() {
    // auction simulation: boulders before pebbles, but index 0 of every app first.
    let cells = vec![cell("only", "z", 100, 100, 100)];
    let mut lrps: Vec<LrpStart> = (0..80).map(|i| lrp(&format!("pebble-{i}"), [0], 1)).collect();
    lrps.push(lrp("red", [0, 1], 50));
    let r = run(&cells, lrps, vec![]);
    assert_eq!(r.successful_lrps.len(), 51);
    assert_eq!(r.failed_lrps.len(), 31);
    assert!(winners(&r).iter().any(|(g, i, _)| g == "red" && *i == 0));
    assert!(r
        .failed_lrps
        .iter()
        .any(|f| f.process_guid == "red" && f.index == 1));
}

#[test]
fn instances_of_one_process_spread_before_stacking() {
    // The emptier cell scores lower, but the second instance pays 1000 there.
    let mut busy = cell("busy", "z", 100, 100, 100);
    busy.available = CellResources::new(40, 40, 40);
    let cells = vec![cell("empty", "z", 100, 100, 100), busy];
    let r = run(&cells, vec![lrp("web", [0, 1], 10)], vec![]);
    let w = winners(&r);
    assert_eq!(w[0].2, "empty");
    assert_eq!(w[1].2, "busy");
}

#[test]
fn existing_instances_count_for_spreading() {
    let mut a = cell("a", "z", 100, 100, 100);
    a.lrps.push(LrpInstance {
        process_guid: "web".into(),
        index: 0,
    });
    let mut b = cell("b", "z", 100, 100, 100);
    b.available = CellResources::new(10, 10, 10);
    let r = run(&[a, b], vec![lrp("web", [1], 5)], vec![]);
    assert_eq!(winners(&r)[0].2, "b");
}

#[test]
fn starting_containers_weigh_a_quarter_each() {
    // Cell "starting" is emptier by 0.2 of one resource's fraction (score −0.067) but has one
    // starting container (+0.25): "idle" wins. With weight 0 the emptier cell wins.
    let mut starting = cell("starting", "z", 100, 100, 100);
    starting.starting_container_count = 1;
    let mut idle = cell("idle", "z", 100, 100, 100);
    idle.available.memory_mb = 80;
    let cells = vec![starting, idle];
    let r = run(&cells, vec![lrp("x", [0], 1)], vec![]);
    assert_eq!(winners(&r)[0].2, "idle");
    let config = AuctionConfig {
        starting_container_weight: 0.0,
        ..AuctionConfig::default()
    };
    let r = schedule(
        &cells,
        &AuctionRequest {
            lrps: vec![lrp("x", [0], 1)],
            tasks: vec![],
        },
        &config,
    );
    assert_eq!(winners(&r)[0].2, "starting");
}

#[test]
fn placements_in_a_round_see_each_other() {
    // Two identical cells: unrelated apps alternate because each placement raises the score.
    let cells = vec![cell("a", "z", 100, 100, 100), cell("b", "z", 100, 100, 100)];
    let r = run(
        &cells,
        (0..6).map(|i| lrp(&format!("app{i}"), [0], 10)).collect(),
        vec![],
    );
    let a = r.successful_lrps.iter().filter(|p| p.cell_id == "a").count();
    assert_eq!(a, 3);
    assert_eq!(r.successful_lrps[0].cell_id, "a", "ties go to the lower cell id");
}

#[test]
fn tasks_ignore_zones_and_avoid_cells_with_tasks() {
    let mut a = cell("a", "z1", 100, 100, 100);
    a.tasks.push("old".into());
    let mut b = cell("b", "z2", 100, 100, 100);
    b.available = CellResources::new(10, 10, 10);
    let r = run(&[a, b], vec![], vec![task("t", 5)]);
    assert_eq!(r.successful_tasks[0].cell_id, "b");
}

#[test]
fn insufficient_resources_lists_only_problems_every_cell_shares() {
    let mut no_mem = cell("no-mem", "z", 100, 100, 100);
    no_mem.available.memory_mb = 5;
    let mut no_disk = cell("no-disk", "z", 100, 100, 100);
    no_disk.available.disk_mb = 0;
    let r = run(&[no_mem.clone(), no_disk], vec![lrp("x", [0], 10)], vec![]);
    assert_eq!(r.failed_lrps[0].placement_error, "insufficient resources");
    let mut full = no_mem.clone();
    full.cell_id = "full".into();
    full.available.containers = 0;
    let r = run(&[no_mem, full], vec![lrp("x", [0], 10)], vec![task("t", 10)]);
    assert_eq!(r.failed_lrps[0].placement_error, "insufficient resources: memory");
    let e = &r.failed_lrps[0].explanation;
    assert_eq!(
        e.to_string(),
        "0 of 2 cells fit: 2 lack memory (need 10 MB, best has 5 MB free)"
    );
    assert_eq!(
        r.failed_tasks[0].placement_error,
        "insufficient resources: memory"
    );

    let mut c = cell("c", "z", 100, 100, 1);
    c.available = CellResources::new(0, 100, 0);
    let r = run(&[c], vec![lrp("x", [0], 10)], vec![]);
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "insufficient resources: containers, memory"
    );
}

#[test]
fn most_specific_filter_error_wins() {
    let mut wrong_rootfs = cell("a", "z1", 100, 100, 100);
    wrong_rootfs.rootfs_providers = vec![RootfsProvider::preloaded(&["cflinuxfs3"])];
    let no_driver = cell("b", "z2", 100, 100, 100);
    let mut driver_but_tagged = cell("c", "z3", 100, 100, 100);
    driver_but_tagged.volume_drivers = vec!["nfs".into()];
    driver_but_tagged.placement_tags = vec!["iso".into()];
    let mut want = lrp("x", [0], 1);
    want.volume_drivers = vec!["nfs".into()];

    let r = run(&[wrong_rootfs.clone()], vec![want.clone()], vec![]);
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "found no compatible cell for required rootfs"
    );
    let r = run(
        &[wrong_rootfs.clone(), no_driver.clone()],
        vec![want.clone()],
        vec![],
    );
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "found no compatible cell with required volume drivers"
    );
    let r = run(&[wrong_rootfs, no_driver, driver_but_tagged], vec![want], vec![]);
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "found no compatible cell with no placement tags"
    );
    let e = &r.failed_lrps[0].explanation;
    assert_eq!(
        e.to_string(),
        "0 of 3 cells fit: 1 lack rootfs \"preloaded:cflinuxfs4\", 1 lack volume driver \"nfs\", \
         1 require placement tag \"iso\""
    );
}

#[test]
fn placement_tags_name_the_requested_tags() {
    let mut t = lrp("x", [0], 1);
    t.placement_tags = vec!["gpu".into(), "fast".into(), "eu".into()];
    let r = run(&[cell("a", "z", 100, 100, 100)], vec![t], vec![]);
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "found no compatible cell with placement tags \"gpu\", \"fast\" and \"eu\""
    );
    assert_eq!(
        r.failed_lrps[0].explanation.to_string(),
        "0 of 1 cells fit: 1 lack placement tag \"gpu\""
    );
}

#[test]
fn optional_tags_admit_tagged_and_untagged_work() {
    let mut seg = cell("seg", "z", 100, 100, 100);
    seg.placement_tags = vec!["iso".into()];
    seg.optional_placement_tags = vec!["gpu".into()];
    let mut shared = cell("shared", "z", 100, 100, 100);
    shared.optional_placement_tags = vec!["gpu".into()];
    let tagged = |tags: &[&str]| {
        let mut l = lrp(&format!("app-{}", tags.join("-")), [0], 1);
        l.placement_tags = tags.iter().map(|s| s.to_string()).collect();
        l
    };
    let r = run(
        &[seg, shared],
        vec![
            tagged(&["iso"]),
            tagged(&["iso", "gpu"]),
            tagged(&[]),
            tagged(&["gpu"]),
            tagged(&["gpu", "x"]),
        ],
        vec![],
    );
    let cell_of = |g: &str| winners(&r).into_iter().find(|w| w.0 == g).map(|w| w.2);
    assert_eq!(cell_of("app-iso").as_deref(), Some("seg"));
    assert_eq!(cell_of("app-iso-gpu").as_deref(), Some("seg"));
    assert_eq!(cell_of("app-").as_deref(), Some("shared"));
    assert_eq!(cell_of("app-gpu").as_deref(), Some("shared"));
    assert_eq!(cell_of("app-gpu-x"), None);
}

#[test]
fn docker_rootfs_needs_a_docker_provider() {
    let mut no_docker = cell("a", "z", 100, 100, 100);
    no_docker.rootfs_providers = vec![RootfsProvider::preloaded(&["cflinuxfs4"])];
    let docker = cell("b", "z", 100, 100, 100);
    let mut l = lrp("x", [0], 1);
    l.rootfs = "docker:///cloudfoundry/grace#latest".into();
    let r = run(&[no_docker, docker], vec![l], vec![]);
    assert_eq!(winners(&r)[0].2, "b");
}

#[test]
fn no_cells_fail_to_communicate_and_only_evacuating_cells_say_so() {
    let r = run(&[], vec![lrp("x", [0, 1], 1)], vec![task("t", 1)]);
    assert_eq!(r.failed_lrps.len(), 2);
    assert!(r
        .failed_lrps
        .iter()
        .all(|f| f.placement_error == "unable to communicate to compatible cells"));
    assert_eq!(
        r.failed_tasks[0].placement_error,
        "unable to communicate to compatible cells"
    );
    let mut evac = cell("a", "z", 100, 100, 100);
    evac.evacuating = true;
    let r = run(&[evac], vec![lrp("x", [0], 1)], vec![]);
    // Diego says "unable to communicate" here too; the cells did answer, so we say why.
    assert_eq!(
        r.failed_lrps[0].placement_error,
        "no other cell: every cell is evacuating"
    );
    assert_eq!(
        r.failed_lrps[0].explanation.to_string(),
        "0 of 1 cells fit: 1 evacuating"
    );
}

#[test]
fn evacuating_cells_get_nothing() {
    let mut evac = cell("a", "z", 1000, 1000, 100);
    evac.evacuating = true;
    let mut busy = cell("b", "z", 100, 100, 100);
    busy.available.memory_mb = 20;
    let r = run(
        &[evac, busy],
        vec![lrp("x", [0], 10), lrp("y", [0], 10), lrp("z", [0], 10)],
        vec![],
    );
    assert!(r.successful_lrps.iter().all(|p| p.cell_id == "b"));
    assert_eq!(r.failed_lrps.len(), 1);
    assert_eq!(
        r.failed_lrps[0].explanation.to_string(),
        "0 of 2 cells fit: 1 evacuating, 1 lack memory (need 10 MB, best has 0 MB free)"
    );
}

#[test]
fn in_flight_cap_stops_starts() {
    let mut a = cell("a", "z", 100, 100, 100);
    a.starting_container_count = 2;
    let config = AuctionConfig {
        starting_container_count_maximum: 3,
        ..AuctionConfig::default()
    };
    let req = AuctionRequest {
        lrps: vec![lrp("x", [0, 1, 2], 1)],
        tasks: vec![task("t", 1)],
    };
    let r = schedule(&[a], &req, &config);
    assert_eq!(r.successful_lrps.len(), 1);
    assert_eq!(r.failed_lrps.len(), 2);
    assert_eq!(r.failed_tasks.len(), 1);
    for e in r
        .failed_lrps
        .iter()
        .map(|f| &f.placement_error)
        .chain([&r.failed_tasks[0].placement_error])
    {
        assert_eq!(e, "waiting to start instance: reached in-flight start limit");
    }
    let x = &r.failed_tasks[0].explanation;
    assert_eq!(x.fitting_cells, 1);
    assert_eq!(
        x.to_string(),
        "1 of 1 cells fit: in-flight start limit reached (3 starting, maximum 3)"
    );
}

#[test]
fn proxy_memory_counts_for_lrps_not_tasks() {
    let mut a = cell("a", "z", 100, 100, 100);
    a.proxy_memory_mb = 32;
    let r = run(&[a.clone()], vec![lrp("x", [0], 70)], vec![]);
    assert_eq!(r.failed_lrps[0].placement_error, "insufficient resources: memory");
    assert_eq!(
        r.failed_lrps[0].explanation.to_string(),
        "0 of 1 cells fit: 1 lack memory (need 102 MB, best has 100 MB free)"
    );
    let r = run(&[a.clone()], vec![], vec![task("t", 70)]);
    assert_eq!(r.successful_tasks.len(), 1);
    // The proxy allowance is reserved with the instance: 2 × (30 + 32) > 100.
    let r = run(&[a], vec![lrp("x", [0], 30), lrp("y", [0], 30)], vec![]);
    assert_eq!(r.successful_lrps.len(), 1);
}

#[test]
fn duplicate_work_is_auctioned_once() {
    let cells = vec![cell("a", "z", 100, 100, 100)];
    let r = run(
        &cells,
        vec![lrp("x", [0, 0], 1), lrp("x", [0, 1], 1)],
        vec![task("t", 1), task("t", 1)],
    );
    assert_eq!(r.successful_lrps.len(), 2);
    assert_eq!(r.successful_tasks.len(), 1);
}

#[test]
fn bin_pack_first_fit_favours_low_cell_indices() {
    // auction simulation "Bin Pack First Fit": per zone, cells with a lower index get at least
    // as many instances as cells with a higher one.
    let cells: Vec<CellState> = (0..10)
        .map(|i| {
            let mut c = cell(&format!("cell-{i}"), &format!("z{}", i % 2), 100, 100, 100);
            c.cell_index = i as u32;
            c
        })
        .collect();
    let config = AuctionConfig {
        bin_pack_first_fit_weight: 0.5,
        ..AuctionConfig::default()
    };
    let lrps = (0..40).map(|i| lrp(&format!("app-{i}"), [0], 1)).collect();
    let r = schedule(&cells, &AuctionRequest { lrps, tasks: vec![] }, &config);
    let count = |i: usize| {
        r.successful_lrps
            .iter()
            .filter(|p| p.cell_id == format!("cell-{i}"))
            .count()
    };
    for z in 0..2 {
        let zone: Vec<usize> = (0..10).filter(|i| i % 2 == z).map(count).collect();
        assert!(zone.windows(2).all(|w| w[0] >= w[1]), "zone {z}: {zone:?}");
    }
    assert!(count(0) > count(8));
}

#[test]
fn imbalanced_deploy_does_not_overload_empty_cells() {
    // auction simulation: 95 cells with 50 instances, 5 empty; 500 new apps. Empty cells
    // score lower, so they get more — but the starting-container weight caps how many.
    let s = sim::imbalanced_deploy(5, 500);
    let r = schedule(&s.cells, &s.request, &s.config);
    assert_eq!(r.successful_lrps.len(), 500);
    let on = |i: usize| {
        r.successful_lrps
            .iter()
            .filter(|p| p.cell_id == format!("cell-{i:05}"))
            .count()
    };
    let empty_max = (95..100).map(on).max().unwrap();
    let loaded_min = (0..95).map(on).min().unwrap();
    assert!(
        empty_max <= loaded_min + 3,
        "empty cells got {empty_max}, loaded ones at least {loaded_min}"
    );
}
