//! Why work did not fit: every cell counted once, under the first check it fails.
//!
//! Checks run in Diego's order — evacuating (Diego drops such cells before the auction), rootfs,
//! volume drivers, placement tags, then memory, disk, containers — so the counts add up to the
//! number of cells: `fitting_cells + rejected_cells() == total_cells`. For each resource the
//! explanation also gives the nearest miss: what the work needs and the most any cell rejected
//! for that resource has free.

use std::collections::BTreeMap;

pub use diego_model::auction::{InflightLimit, NamedCount, PlacementExplanation, ResourceMiss, RootfsMiss};

/// The first failed check for one cell.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rejection<'a> {
    Evacuating,
    Rootfs,
    VolumeDriver(&'a str),
    MissingTag(&'a str),
    UnrequestedTag(&'a str),
    /// (need, available)
    Memory(i64, i64),
    Disk(i64, i64),
    Containers(i64, i64),
}

/// Accumulates rejections into an explanation.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    total: u32,
    fitting: u32,
    evacuating: u32,
    rootfs: u32,
    drivers: BTreeMap<String, u32>,
    missing: BTreeMap<String, u32>,
    unrequested: BTreeMap<String, u32>,
    memory: Option<ResourceMiss>,
    disk: Option<ResourceMiss>,
    containers: Option<ResourceMiss>,
}

fn bump_miss(slot: &mut Option<ResourceMiss>, need: i64, available: i64) {
    match slot {
        None => {
            *slot = Some(ResourceMiss {
                cells: 1,
                need,
                best_available: available,
            })
        }
        Some(m) => {
            m.cells += 1;
            if available > m.best_available {
                m.best_available = available;
                m.need = need;
            }
        }
    }
}

impl Tally {
    pub(crate) fn fit(&mut self) {
        self.total += 1;
        self.fitting += 1;
    }

    pub(crate) fn reject(&mut self, r: Rejection<'_>) {
        self.total += 1;
        let bump = |m: &mut BTreeMap<String, u32>, k: &str| *m.entry(k.to_string()).or_insert(0) += 1;
        match r {
            Rejection::Evacuating => self.evacuating += 1,
            Rejection::Rootfs => self.rootfs += 1,
            Rejection::VolumeDriver(d) => bump(&mut self.drivers, d),
            Rejection::MissingTag(t) => bump(&mut self.missing, t),
            Rejection::UnrequestedTag(t) => bump(&mut self.unrequested, t),
            Rejection::Memory(need, avail) => bump_miss(&mut self.memory, need, avail),
            Rejection::Disk(need, avail) => bump_miss(&mut self.disk, need, avail),
            Rejection::Containers(need, avail) => bump_miss(&mut self.containers, need, avail),
        }
    }

    pub(crate) fn finish(self, rootfs: &str, inflight_limit: Option<InflightLimit>) -> PlacementExplanation {
        let named = |m: BTreeMap<String, u32>| {
            m.into_iter()
                .map(|(name, cells)| NamedCount { name, cells })
                .collect()
        };
        PlacementExplanation {
            total_cells: self.total,
            fitting_cells: self.fitting,
            evacuating: self.evacuating,
            rootfs: (self.rootfs > 0).then(|| RootfsMiss {
                rootfs: rootfs.to_string(),
                cells: self.rootfs,
            }),
            volume_drivers: named(self.drivers),
            missing_placement_tags: named(self.missing),
            unrequested_placement_tags: named(self.unrequested),
            memory: self.memory,
            disk: self.disk,
            containers: self.containers,
            inflight_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_example() {
        let mut t = Tally::default();
        for avail in [0, 128, 256, 64, 32, 16, 8] {
            t.reject(Rejection::Memory(512, avail));
        }
        for _ in 0..5 {
            t.reject(Rejection::MissingTag("gpu"));
        }
        let e = t.finish("preloaded:cflinuxfs4", None);
        assert_eq!(e.to_string(), "0 of 12 cells fit: 7 lack memory (need 512 MB, best has 256 MB free), 5 lack placement tag \"gpu\"");
        assert_eq!(e.rejected_cells() + e.fitting_cells, e.total_cells);
    }

    #[test]
    fn no_cells() {
        let e = Tally::default().finish("preloaded:x", None);
        assert_eq!(e.to_string(), "0 of 0 cells fit: no cells reported");
    }
}
