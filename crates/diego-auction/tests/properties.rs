//! Invariants over random auctions: capacity, filters, spreading, failure reporting.

mod common;

use std::collections::HashMap;

use diego_auction::sim::Rng;
use diego_auction::{
    placement_tag_mismatch, rootfs_matches, schedule, AuctionConfig, AuctionRequest, CellResources,
    CellState, LrpStart, WorkResources,
};
use proptest::prelude::*;

const DIEGO_ERRORS: [&str; 7] = [
    "insufficient resources",
    "found no compatible cell for required rootfs",
    "found no compatible cell with required volume drivers",
    "found no compatible cell with",
    "unable to communicate to compatible cells",
    "no other cell: every cell is evacuating",
    "waiting to start instance: reached in-flight start limit",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// No cell is overcommitted; every placement passes the filters on a live cell; every
    /// failure has one of Diego's strings and an explanation whose counts add up.
    #[test]
    fn placements_respect_capacity_and_filters(seed in any::<u64>(), cells in 0usize..14, zones in 1u64..4, lrps in 0usize..9, tasks in 0usize..7) {
        let mut rng = Rng::new(seed);
        let cells = common::random_cells(&mut rng, cells, zones);
        let request = common::random_request(&mut rng, lrps, tasks);
        let config = common::random_config(&mut rng);
        let r = schedule(&cells, &request, &config);

        // The first cell of each id is the one the auction uses.
        let mut by_id: HashMap<&str, &CellState> = HashMap::new();
        for c in &cells {
            by_id.entry(c.cell_id.as_str()).or_insert(c);
        }
        let mut free: HashMap<&str, CellResources> = by_id.iter().map(|(k, c)| (*k, c.available)).collect();
        let check = |cell: &CellState, rootfs: &str, drivers: &[String], tags: &[String]| {
            assert!(!cell.evacuating);
            assert!(rootfs_matches(&cell.rootfs_providers, rootfs), "{rootfs} on {:?}", cell.rootfs_providers);
            assert!(drivers.iter().all(|d| cell.volume_drivers.contains(d)));
            assert_eq!(placement_tag_mismatch(&cell.placement_tags, &cell.optional_placement_tags, tags), None);
        };
        for p in &r.successful_lrps {
            let l = &request.lrps[p.lrp];
            let cell = by_id[p.cell_id.as_str()];
            check(cell, &l.rootfs, &l.volume_drivers, &l.placement_tags);
            let f = free.get_mut(p.cell_id.as_str()).unwrap();
            f.memory_mb -= l.resources.memory_mb + cell.proxy_memory_mb;
            f.disk_mb -= l.resources.disk_mb;
            f.containers -= 1;
        }
        for p in &r.successful_tasks {
            let t = &request.tasks[p.task];
            check(by_id[p.cell_id.as_str()], &t.rootfs, &t.volume_drivers, &t.placement_tags);
            let f = free.get_mut(p.cell_id.as_str()).unwrap();
            f.memory_mb -= t.resources.memory_mb;
            f.disk_mb -= t.resources.disk_mb;
            f.containers -= 1;
        }
        for (id, f) in &free {
            prop_assert!(f.memory_mb >= 0 && f.disk_mb >= 0 && f.containers >= 0, "{id} overcommitted: {f:?}");
        }
        let explanations = r.failed_lrps.iter().map(|f| (&f.placement_error, &f.explanation))
            .chain(r.failed_tasks.iter().map(|f| (&f.placement_error, &f.explanation)));
        for (e, x) in explanations {
            prop_assert!(DIEGO_ERRORS.iter().any(|d| e.starts_with(d)), "unexpected error {e}");
            prop_assert_eq!(x.total_cells as usize, by_id.len());
            prop_assert_eq!(x.fitting_cells + x.rejected_cells(), x.total_cells);
            if !e.starts_with("waiting") {
                prop_assert_eq!(x.fitting_cells, 0, "{}: {}", e, x);
            }
        }
        // Every requested instance and task is either placed or failed, once.
        let mut wanted: Vec<(String, u32)> = request.lrps.iter()
            .flat_map(|l| l.indices.iter().map(move |&i| (l.process_guid.clone(), i))).collect();
        wanted.sort();
        wanted.dedup();
        let mut got: Vec<(String, u32)> = r.successful_lrps.iter().map(|p| (p.process_guid.clone(), p.index))
            .chain(r.failed_lrps.iter().map(|p| (p.process_guid.clone(), p.index))).collect();
        got.sort();
        prop_assert_eq!(got, wanted);
    }

    /// With room everywhere, every process ends up within one instance between zones and
    /// within one instance between the cells of a zone.
    #[test]
    fn processes_spread_across_zones_and_cells(seed in any::<u64>(), cells in 1usize..30, zones in 1usize..4, processes in 1usize..8) {
        let mut rng = Rng::new(seed);
        let zones = zones.min(cells);
        let cells: Vec<CellState> = (0..cells).map(|i| {
            let mut c = CellState::new(&format!("c{i:02}"), &format!("z{}", i % zones), CellResources::new(10_000, 10_000, 500));
            // Uneven load, but plenty of room left.
            let used = rng.below(5_000) as i64;
            c.available.memory_mb -= used;
            c.starting_container_count = rng.below(4) as u32;
            c
        }).collect();
        let lrps: Vec<LrpStart> = (0..processes).map(|p| {
            let n = 1 + rng.below(3 * cells.len() as u64) as u32;
            LrpStart::new(&format!("p{p}"), 0..n, WorkResources::new(1 + rng.below(64) as i64, 1))
        }).collect();
        let r = schedule(&cells, &AuctionRequest { lrps, tasks: vec![] }, &AuctionConfig::default());
        prop_assert!(r.failed_lrps.is_empty());
        let zone_of: HashMap<&str, &str> = cells.iter().map(|c| (c.cell_id.as_str(), c.zone.as_str())).collect();
        let mut per_zone: HashMap<(&str, &str), u32> = HashMap::new();
        let mut per_cell: HashMap<(&str, &str), u32> = HashMap::new();
        for p in &r.successful_lrps {
            *per_zone.entry((p.process_guid.as_str(), zone_of[p.cell_id.as_str()])).or_default() += 1;
            *per_cell.entry((p.process_guid.as_str(), p.cell_id.as_str())).or_default() += 1;
        }
        for p in 0..processes {
            let g = format!("p{p}");
            let zc: Vec<u32> = (0..zones).map(|z| per_zone.get(&(g.as_str(), format!("z{z}").as_str())).copied().unwrap_or(0)).collect();
            prop_assert!(zc.iter().max().unwrap() - zc.iter().min().unwrap() <= 1, "{g} zones {zc:?}");
            for z in 0..zones {
                let zn = format!("z{z}");
                let cc: Vec<u32> = cells.iter().filter(|c| c.zone == zn)
                    .map(|c| per_cell.get(&(g.as_str(), c.cell_id.as_str())).copied().unwrap_or(0)).collect();
                prop_assert!(cc.iter().max().unwrap() - cc.iter().min().unwrap() <= 1, "{g} in {zn}: {cc:?}");
            }
        }
    }

    /// Diego's AZ test, generalised: a lone empty cell in an otherwise empty zone receives
    /// its zone's share, however loaded (but not full) it is.
    #[test]
    fn lone_cell_gets_its_zones_share(others in 1usize..6, preload in 0i64..90, instances in 1u32..40) {
        let mut cells: Vec<CellState> = (0..others).map(|i| CellState::new(&format!("a{i}"), "za", CellResources::new(100, 100, 100))).collect();
        let mut lone = CellState::new("lone", "zb", CellResources::new(100, 100, 100));
        lone.available = CellResources::new(100 - preload, 100 - preload, 100 - preload);
        cells.push(lone);
        let lrps = vec![LrpStart::new("red", 0..instances, WorkResources::new(1, 1))];
        let r = schedule(&cells, &AuctionRequest { lrps, tasks: vec![] }, &AuctionConfig::default());
        // Index 0 goes to the pooled (all-empty) zones, where the emptier or lower-id "a" cells
        // win; every later instance alternates to the zone with fewer, as long as the lone cell
        // has room.
        let on_lone = r.successful_lrps.iter().filter(|p| p.cell_id == "lone").count() as i64;
        prop_assert_eq!(on_lone, (instances as i64 / 2).min(100 - preload));
        prop_assert!(r.failed_lrps.is_empty());
    }
}
