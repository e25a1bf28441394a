//! Filters (diego-spec §6.3): rootfs, volume drivers, placement tags — and Diego's error strings
//! for work that no cell passes (§6.5).
//!
//! Filters depend only on a cell's static attributes, so cells are grouped into *classes* of
//! identical attributes and a constraint is judged once per class, not once per cell.

use std::fmt;

use crate::types::{CellState, RootfsProvider};

/// Why work cannot be placed: Diego's placement errors, rendered exactly as Diego does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// No cell can run the rootfs.
    RootfsMismatch,
    /// No cell with the rootfs has every volume driver.
    VolumeDriverMismatch,
    /// No cell with the rootfs and drivers matches the placement tags (the request's tags).
    PlacementTagMismatch(Vec<String>),
    /// Cells pass the filters but none has room; the problems every such cell shares.
    InsufficientResources {
        disk: bool,
        memory: bool,
        containers: bool,
    },
    /// No cell answered.
    CellCommunication,
    /// Every cell is evacuating, so none is left to place on.
    NoOtherCell,
    /// The in-flight start cap is reached.
    ExceededInflightCreation,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::RootfsMismatch => f.write_str("found no compatible cell for required rootfs"),
            PlacementError::VolumeDriverMismatch => {
                f.write_str("found no compatible cell with required volume drivers")
            }
            PlacementError::PlacementTagMismatch(tags) => match tags.as_slice() {
                [] => f.write_str("found no compatible cell with no placement tags"),
                [one] => write!(f, "found no compatible cell with placement tag \"{one}\""),
                [init @ .., last] => {
                    let quoted: Vec<String> = init.iter().map(|t| format!("\"{t}\"")).collect();
                    write!(
                        f,
                        "found no compatible cell with placement tags {} and \"{last}\"",
                        quoted.join(", ")
                    )
                }
            },
            PlacementError::InsufficientResources {
                disk,
                memory,
                containers,
            } => {
                // Diego sorts the problem names: containers, disk, memory.
                let mut problems = Vec::new();
                if *containers {
                    problems.push("containers");
                }
                if *disk {
                    problems.push("disk");
                }
                if *memory {
                    problems.push("memory");
                }
                if problems.is_empty() {
                    f.write_str("insufficient resources")
                } else {
                    write!(f, "insufficient resources: {}", problems.join(", "))
                }
            }
            PlacementError::CellCommunication => f.write_str("unable to communicate to compatible cells"),
            PlacementError::NoOtherCell => f.write_str("no other cell: every cell is evacuating"),
            PlacementError::ExceededInflightCreation => {
                f.write_str("waiting to start instance: reached in-flight start limit")
            }
        }
    }
}

/// A rootfs URL split the way Go's `url.Parse` does for matching: lowercased scheme and, for
/// `scheme:opaque` forms, the opaque part without query or fragment.
fn parse_rootfs(rootfs: &str) -> Option<(String, &str)> {
    let rootfs = rootfs.split('#').next().unwrap_or("");
    let (scheme, rest) = rootfs.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.') {
        return None;
    }
    let opaque = if rest.starts_with('/') {
        ""
    } else {
        rest.split('?').next().unwrap_or("")
    };
    Some((scheme.to_ascii_lowercase(), opaque))
}

/// Can a cell with these providers run `rootfs`? The URL's scheme must name a provider; a
/// fixed-set provider also needs the opaque part (`cflinuxfs4` in `preloaded:cflinuxfs4`) in its set.
pub fn rootfs_matches(providers: &[RootfsProvider], rootfs: &str) -> bool {
    let Some((scheme, opaque)) = parse_rootfs(rootfs) else {
        return false;
    };
    providers
        .iter()
        .filter(|p| p.name == scheme)
        .any(|p| p.properties.is_empty() || p.properties.iter().any(|s| s == opaque))
}

/// The first requested volume driver the cell lacks, if any.
pub fn missing_volume_driver<'a>(cell_drivers: &[String], requested: &'a [String]) -> Option<&'a str> {
    requested
        .iter()
        .find(|d| !cell_drivers.contains(d))
        .map(String::as_str)
}

/// How a placement-tag check fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMismatch {
    /// The work asks for a tag the cell offers neither as required nor as optional.
    Missing(String),
    /// The cell requires a tag the work does not ask for.
    Unrequested(String),
}

/// Diego's rule: cell's required tags ⊆ requested tags ⊆ required ∪ optional.
pub fn placement_tag_mismatch(
    required: &[String],
    optional: &[String],
    requested: &[String],
) -> Option<TagMismatch> {
    if let Some(t) = requested
        .iter()
        .find(|t| !required.contains(t) && !optional.contains(t))
    {
        return Some(TagMismatch::Missing(t.clone()));
    }
    required
        .iter()
        .find(|t| !requested.contains(t))
        .map(|t| TagMismatch::Unrequested(t.clone()))
}

/// What the filters say about one class of cells for one constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Rootfs,
    VolumeDriver(String),
    Tag(TagMismatch),
    Pass,
}

impl Verdict {
    /// How far through Diego's filter chain the class got (rootfs, drivers, tags, passed).
    fn stage(&self) -> u8 {
        match self {
            Verdict::Rootfs => 0,
            Verdict::VolumeDriver(_) => 1,
            Verdict::Tag(_) => 2,
            Verdict::Pass => 3,
        }
    }
}

/// The static attributes that filters look at, canonicalised (sorted, deduplicated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CellClass {
    pub rootfs_providers: Vec<RootfsProvider>,
    pub volume_drivers: Vec<String>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
}

fn sorted_unique(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

impl CellClass {
    pub fn of(cell: &CellState) -> Self {
        let mut providers: Vec<RootfsProvider> = cell
            .rootfs_providers
            .iter()
            .map(|p| RootfsProvider {
                name: p.name.clone(),
                properties: sorted_unique(&p.properties),
            })
            .collect();
        providers.sort_by(|a, b| (&a.name, &a.properties).cmp(&(&b.name, &b.properties)));
        providers.dedup();
        Self {
            rootfs_providers: providers,
            volume_drivers: sorted_unique(&cell.volume_drivers),
            placement_tags: sorted_unique(&cell.placement_tags),
            optional_placement_tags: sorted_unique(&cell.optional_placement_tags),
        }
    }

    /// Run the filters in Diego's order: rootfs, volume drivers, placement tags.
    pub fn verdict(&self, c: &Constraint) -> Verdict {
        if !rootfs_matches(&self.rootfs_providers, &c.rootfs) {
            return Verdict::Rootfs;
        }
        if let Some(d) = missing_volume_driver(&self.volume_drivers, &c.volume_drivers) {
            return Verdict::VolumeDriver(d.to_string());
        }
        match placement_tag_mismatch(
            &self.placement_tags,
            &self.optional_placement_tags,
            &c.placement_tags,
        ) {
            Some(m) => Verdict::Tag(m),
            None => Verdict::Pass,
        }
    }
}

/// A placement constraint as requested (Diego's `rep.PlacementConstraint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub rootfs: String,
    pub volume_drivers: Vec<String>,
    pub placement_tags: Vec<String>,
}

/// A constraint judged against every class present in the auction.
#[derive(Debug, Clone)]
pub struct JudgedConstraint {
    pub constraint: Constraint,
    /// Per class id.
    pub verdicts: Vec<Verdict>,
    /// Per class id: did it pass every filter?
    pub compatible: Vec<bool>,
    /// Set when no (non-evacuating) cell passes the filters.
    pub filter_error: Option<PlacementError>,
}

impl JudgedConstraint {
    /// `live_classes[c]` says whether class `c` has a non-evacuating cell. The filter error is
    /// the most specific one any live class reached (tag > volume drivers > rootfs), which is
    /// what Diego's per-zone `filterCells` plus its cross-zone preference intend (§6.5).
    pub fn new(constraint: Constraint, classes: &[CellClass], live_classes: &[bool]) -> Self {
        let verdicts: Vec<Verdict> = classes.iter().map(|cl| cl.verdict(&constraint)).collect();
        let compatible: Vec<bool> = verdicts
            .iter()
            .zip(live_classes)
            .map(|(v, live)| *live && *v == Verdict::Pass)
            .collect();
        let furthest = verdicts
            .iter()
            .zip(live_classes)
            .filter(|(_, live)| **live)
            .map(|(v, _)| v.stage())
            .max();
        let filter_error = match furthest {
            Some(3) => None,
            Some(2) => Some(PlacementError::PlacementTagMismatch(
                constraint.placement_tags.clone(),
            )),
            Some(1) => Some(PlacementError::VolumeDriverMismatch),
            Some(_) => Some(PlacementError::RootfsMismatch),
            None => Some(PlacementError::CellCommunication),
        };
        Self {
            constraint,
            verdicts,
            compatible,
            filter_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_error_strings_match_diego() {
        let e = |tags: &[&str]| {
            PlacementError::PlacementTagMismatch(tags.iter().map(|s| s.to_string()).collect()).to_string()
        };
        assert_eq!(e(&[]), "found no compatible cell with no placement tags");
        assert_eq!(e(&["a"]), "found no compatible cell with placement tag \"a\"");
        assert_eq!(
            e(&["a", "b"]),
            "found no compatible cell with placement tags \"a\" and \"b\""
        );
        assert_eq!(
            e(&["a", "b", "c"]),
            "found no compatible cell with placement tags \"a\", \"b\" and \"c\""
        );
    }

    #[test]
    fn insufficient_resources_lists_sorted_common_problems() {
        let e = |disk, memory, containers| {
            PlacementError::InsufficientResources {
                disk,
                memory,
                containers,
            }
            .to_string()
        };
        assert_eq!(e(false, false, false), "insufficient resources");
        assert_eq!(e(false, true, false), "insufficient resources: memory");
        assert_eq!(
            e(true, true, true),
            "insufficient resources: containers, disk, memory"
        );
        assert_eq!(e(true, true, false), "insufficient resources: disk, memory");
    }

    #[test]
    fn fixed_strings_match_diego() {
        assert_eq!(
            PlacementError::RootfsMismatch.to_string(),
            "found no compatible cell for required rootfs"
        );
        assert_eq!(
            PlacementError::VolumeDriverMismatch.to_string(),
            "found no compatible cell with required volume drivers"
        );
        assert_eq!(
            PlacementError::CellCommunication.to_string(),
            "unable to communicate to compatible cells"
        );
        assert_eq!(
            PlacementError::NoOtherCell.to_string(),
            "no other cell: every cell is evacuating"
        );
        assert_eq!(
            PlacementError::ExceededInflightCreation.to_string(),
            "waiting to start instance: reached in-flight start limit"
        );
    }

    #[test]
    fn rootfs_matching() {
        let providers = vec![
            RootfsProvider::preloaded(&["cflinuxfs4", "busybox"]),
            RootfsProvider::arbitrary("docker"),
        ];
        assert!(rootfs_matches(&providers, "preloaded:cflinuxfs4"));
        assert!(rootfs_matches(&providers, "preloaded:busybox"));
        assert!(!rootfs_matches(&providers, "preloaded:cflinuxfs3"));
        assert!(!rootfs_matches(&providers, "preloaded:cflinuxfs4x"));
        assert!(
            !rootfs_matches(&providers, "preloaded:///cflinuxfs4"),
            "a path is not the opaque stack name"
        );
        assert!(rootfs_matches(&providers, "docker:///cloudfoundry/grace#latest"));
        assert!(
            rootfs_matches(&providers, "DOCKER://registry.example/org/image"),
            "schemes are case-insensitive"
        );
        assert!(!rootfs_matches(&providers, "oci:///some/image"));
        assert!(!rootfs_matches(&providers, "cflinuxfs4"), "no scheme");
        assert!(!rootfs_matches(&providers, ""));
        assert!(!rootfs_matches(&[], "preloaded:cflinuxfs4"));
        // Query strings are not part of the stack name.
        let layered = vec![RootfsProvider::fixed("preloaded+layer", &["cflinuxfs4"])];
        assert!(rootfs_matches(
            &layered,
            "preloaded+layer:cflinuxfs4?layer=http://x/y.tgz"
        ));
        assert!(!rootfs_matches(
            &layered,
            "preloaded+layer:cflinuxfs3?layer=http://x/y.tgz"
        ));
    }

    #[test]
    fn placement_tag_rule() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Untagged work lands only on untagged cells (no optional tags).
        assert_eq!(placement_tag_mismatch(&[], &[], &[]), None);
        assert_eq!(
            placement_tag_mismatch(&s(&["iso"]), &[], &[]),
            Some(TagMismatch::Unrequested("iso".into()))
        );
        assert_eq!(
            placement_tag_mismatch(&[], &[], &s(&["gpu"])),
            Some(TagMismatch::Missing("gpu".into()))
        );
        // Exact equality passes.
        assert_eq!(
            placement_tag_mismatch(&s(&["a", "b"]), &[], &s(&["b", "a"])),
            None
        );
        // Optional tags may be asked for, or not.
        assert_eq!(placement_tag_mismatch(&s(&["a"]), &s(&["o"]), &s(&["a"])), None);
        assert_eq!(
            placement_tag_mismatch(&s(&["a"]), &s(&["o"]), &s(&["a", "o"])),
            None
        );
        assert_eq!(placement_tag_mismatch(&[], &s(&["o"]), &[]), None);
        assert_eq!(placement_tag_mismatch(&[], &s(&["o"]), &s(&["o"])), None);
        // But the required tags must still be asked for, and nothing beyond required ∪ optional.
        assert_eq!(
            placement_tag_mismatch(&s(&["a"]), &s(&["o"]), &s(&["o"])),
            Some(TagMismatch::Unrequested("a".into()))
        );
        assert_eq!(
            placement_tag_mismatch(&s(&["a"]), &s(&["o"]), &s(&["a", "x"])),
            Some(TagMismatch::Missing("x".into()))
        );
    }
}
