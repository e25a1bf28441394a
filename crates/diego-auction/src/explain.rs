//! Why work did not fit: every cell counted once, under the first check it fails.
//!
//! Checks run in Diego's order — evacuating (Diego drops such cells before the auction), rootfs,
//! volume drivers, placement tags, then memory, disk, containers — so the counts add up to the
//! number of cells: `fitting_cells + rejected_cells() == total_cells`. For each resource the
//! explanation also gives the nearest miss: what the work needs and the most any cell rejected
//! for that resource has free.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A count of cells rejected for one named thing (a tag, a volume driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub cells: u32,
}

/// Cells that cannot run the requested rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMiss {
    pub rootfs: String,
    pub cells: u32,
}

/// Cells rejected for one resource, with the nearest miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMiss {
    pub cells: u32,
    /// What the work needs on the closest cell (memory includes that cell's proxy allowance).
    pub need: i64,
    /// The most any of these cells has free.
    pub best_available: i64,
}

/// The in-flight start cap that stopped the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightLimit {
    pub starting: u64,
    pub maximum: u32,
}

/// Why a unit of work was not placed, cell by cell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementExplanation {
    /// Cells in the auction's input, evacuating ones included.
    pub total_cells: u32,
    /// Cells that would have taken the work (non-zero only when the in-flight cap stopped it).
    pub fitting_cells: u32,
    pub evacuating: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsMiss>,
    /// Per volume driver: cells lacking it (the first missing driver of each cell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_drivers: Vec<NamedCount>,
    /// Per tag: cells that offer the requested tag neither as required nor as optional.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_placement_tags: Vec<NamedCount>,
    /// Per tag: cells that require a tag the work does not ask for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unrequested_placement_tags: Vec<NamedCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<ResourceMiss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight_limit: Option<InflightLimit>,
}

impl PlacementExplanation {
    /// Cells rejected for any reason; with `fitting_cells` this adds up to `total_cells`.
    pub fn rejected_cells(&self) -> u32 {
        let named = |v: &Vec<NamedCount>| v.iter().map(|n| n.cells).sum::<u32>();
        let res = |r: &Option<ResourceMiss>| r.map_or(0, |r| r.cells);
        self.evacuating
            + self.rootfs.as_ref().map_or(0, |r| r.cells)
            + named(&self.volume_drivers)
            + named(&self.missing_placement_tags)
            + named(&self.unrequested_placement_tags)
            + res(&self.memory)
            + res(&self.disk)
            + res(&self.containers)
    }
}

impl fmt::Display for PlacementExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} cells fit", self.fitting_cells, self.total_cells)?;
        // Biggest reason first; ties keep the filter order.
        let mut counted: Vec<(u32, String)> = Vec::new();
        if self.evacuating > 0 {
            counted.push((self.evacuating, format!("{} evacuating", self.evacuating)));
        }
        if let Some(r) = &self.rootfs {
            counted.push((r.cells, format!("{} lack rootfs \"{}\"", r.cells, r.rootfs)));
        }
        for n in &self.volume_drivers {
            counted.push((n.cells, format!("{} lack volume driver \"{}\"", n.cells, n.name)));
        }
        for n in &self.missing_placement_tags {
            counted.push((n.cells, format!("{} lack placement tag \"{}\"", n.cells, n.name)));
        }
        for n in &self.unrequested_placement_tags {
            counted.push((
                n.cells,
                format!("{} require placement tag \"{}\"", n.cells, n.name),
            ));
        }
        for (name, unit, r) in [
            ("memory", " MB", &self.memory),
            ("disk", " MB", &self.disk),
            ("containers", "", &self.containers),
        ] {
            if let Some(r) = r {
                let text = format!(
                    "{} lack {name} (need {}{unit}, best has {}{unit} free)",
                    r.cells, r.need, r.best_available
                );
                counted.push((r.cells, text));
            }
        }
        counted.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut parts: Vec<String> = Vec::new();
        if let Some(l) = self.inflight_limit {
            parts.push(format!(
                "in-flight start limit reached ({} starting, maximum {})",
                l.starting, l.maximum
            ));
        }
        parts.extend(counted.into_iter().map(|(_, text)| text));
        if self.total_cells == 0 {
            parts.push("no cells reported".to_string());
        }
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

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
