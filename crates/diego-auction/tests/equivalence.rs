//! The index must pick exactly the cells the full scan picks.

mod common;

use diego_auction::sim::{self, Rng};
use diego_auction::{naive, schedule};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn index_matches_full_scan(seed in any::<u64>(), cells in 0usize..14, zones in 1u64..4, lrps in 0usize..9, tasks in 0usize..7) {
        let mut rng = Rng::new(seed);
        let cells = common::random_cells(&mut rng, cells, zones);
        let request = common::random_request(&mut rng, lrps, tasks);
        let config = common::random_config(&mut rng);
        let fast = schedule(&cells, &request, &config);
        let slow = naive::schedule(&cells, &request, &config);
        prop_assert_eq!(fast, slow);
    }

    /// Many identical cells: ties everywhere, decided by key and cell id.
    #[test]
    fn index_matches_full_scan_on_uniform_cells(seed in any::<u64>(), cells in 1usize..80, processes in 1usize..40, instances in 1u32..6) {
        let mut s = sim::million(cells, processes, instances, seed);
        let mut rng = Rng::new(seed);
        for c in s.cells.iter_mut() {
            if rng.below(4) == 0 {
                c.available.memory_mb -= 1024 * rng.below(60) as i64;
                c.starting_container_count = rng.below(3) as u32;
            }
        }
        prop_assert_eq!(schedule(&s.cells, &s.request, &s.config), naive::schedule(&s.cells, &s.request, &s.config));
    }
}

#[test]
fn index_matches_full_scan_on_the_simulation_scenarios() {
    for s in [
        sim::cold_start(8, 5),
        sim::imbalanced_deploy(5, 200),
        sim::zone_distribution(),
        sim::huge_batch(40, 120, 80, 9),
        sim::over_demand(30, 300, 4),
    ] {
        assert_eq!(
            schedule(&s.cells, &s.request, &s.config),
            naive::schedule(&s.cells, &s.request, &s.config),
            "{}",
            s.name
        );
    }
}
