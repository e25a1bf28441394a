//! Random small auctions for property tests: few cells, few processes, heavy on ties,
//! heterogeneous totals, filters, existing load, evacuating cells and odd configurations.

#![allow(dead_code)]

use diego_auction::sim::Rng;
use diego_auction::{
    AuctionConfig, AuctionRequest, CellResources, CellState, LrpInstance, LrpStart, RootfsProvider,
    TaskStart, WorkResources,
};

pub fn pick<'a, T>(rng: &mut Rng, v: &'a [T]) -> &'a T {
    &v[rng.below(v.len() as u64) as usize]
}

fn subset(rng: &mut Rng, v: &[&str]) -> Vec<String> {
    v.iter()
        .filter(|_| rng.below(3) == 0)
        .map(|s| s.to_string())
        .collect()
}

pub const ROOTFS: [&str; 4] = [
    "preloaded:cflinuxfs4",
    "preloaded:cflinuxfs3",
    "docker:///org/app#v1",
    "oci:///img",
];

pub fn random_cells(rng: &mut Rng, n: usize, zones: u64) -> Vec<CellState> {
    (0..n)
        .map(|_| {
            let total = CellResources::new(
                *pick(rng, &[64, 100, 128, 256]),
                *pick(rng, &[64, 100, 200]),
                2 + rng.below(6) as i64,
            );
            let mut c = CellState::new(
                &format!("c{:02}", rng.below(24)),
                &format!("z{}", rng.below(zones)),
                total,
            );
            c.cell_index = rng.below(10) as u32;
            c.rootfs_providers = Vec::new();
            if rng.below(5) != 0 {
                c.rootfs_providers
                    .push(RootfsProvider::preloaded(&["cflinuxfs4"]));
            }
            if rng.below(3) == 0 {
                c.rootfs_providers
                    .push(RootfsProvider::preloaded(&["cflinuxfs3"]));
            }
            if rng.below(2) == 0 {
                c.rootfs_providers.push(RootfsProvider::arbitrary("docker"));
            }
            if rng.below(4) == 0 {
                c.placement_tags = subset(rng, &["a", "b"]);
            }
            if rng.below(4) == 0 {
                c.optional_placement_tags = subset(rng, &["o", "a"]);
            }
            if rng.below(4) == 0 {
                c.volume_drivers = vec!["nfs".to_string()];
            }
            if rng.below(3) == 0 {
                c.available.memory_mb -= rng.below(c.total.memory_mb as u64 + 1) as i64;
                c.available.disk_mb -= rng.below(c.total.disk_mb as u64 + 1) as i64;
                c.available.containers -= rng.below(c.total.containers as u64 + 1) as i64;
            }
            for _ in 0..rng.below(3) {
                c.lrps.push(LrpInstance {
                    process_guid: format!("p{}", rng.below(5)),
                    index: rng.below(5) as u32,
                });
            }
            for i in 0..rng.below(2) {
                c.tasks.push(format!("old-task-{i}"));
            }
            c.starting_container_count = rng.below(3) as u32;
            c.evacuating = rng.below(10) == 0;
            c.proxy_memory_mb = *pick(rng, &[0, 0, 0, 8]);
            c
        })
        .collect()
}

pub fn random_request(rng: &mut Rng, lrps: usize, tasks: usize) -> AuctionRequest {
    let lrps = (0..lrps)
        .map(|_| {
            let indices: Vec<u32> = (0..5).filter(|_| rng.below(2) == 0).collect();
            let res = WorkResources::new(*pick(rng, &[0, 8, 16, 32, 64]), *pick(rng, &[0, 8, 32]));
            let mut l = LrpStart::new(&format!("p{}", rng.below(6)), indices, res);
            if rng.below(3) == 0 {
                l.rootfs = pick(rng, &ROOTFS).to_string();
            }
            if rng.below(4) == 0 {
                l.placement_tags = subset(rng, &["a", "b", "o"]);
            }
            if rng.below(6) == 0 {
                l.volume_drivers = vec!["nfs".to_string()];
            }
            l
        })
        .collect();
    let tasks = (0..tasks)
        .map(|i| {
            let res = WorkResources::new(*pick(rng, &[0, 8, 16, 32, 64]), *pick(rng, &[0, 8, 32]));
            let mut t = TaskStart::new(&format!("t{}", i as u64 + rng.below(2)), res);
            if rng.below(3) == 0 {
                t.rootfs = pick(rng, &ROOTFS).to_string();
            }
            if rng.below(4) == 0 {
                t.placement_tags = subset(rng, &["a", "o"]);
            }
            t
        })
        .collect();
    AuctionRequest { lrps, tasks }
}

pub fn random_config(rng: &mut Rng) -> AuctionConfig {
    AuctionConfig {
        starting_container_weight: *pick(rng, &[0.25, 0.25, 0.0, 1.0]),
        bin_pack_first_fit_weight: *pick(rng, &[0.0, 0.0, 0.25, 0.5]),
        starting_container_count_maximum: *pick(rng, &[0, 0, 0, 6, 12]),
    }
}
