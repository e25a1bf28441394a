//! What to simulate: how many cells, their size, zones and tags, and where they meet the BBS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use diego_client::BbsUrls;
use diego_model::RootfsProvider;

use crate::error::SimCellsError;

/// Diego's default container limit per cell.
pub const DEFAULT_CONTAINERS: i32 = 250;
pub const DEFAULT_MEMORY_MB: i32 = 16 * 1024;
pub const DEFAULT_DISK_MB: i32 = 64 * 1024;
pub const DEFAULT_CELL_ID_PREFIX: &str = "sim";
/// Renewed every third of this, so a presence survives two lost renewals.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);
/// BBS calls in flight across all cells (claims, starts, task starts and completions, removals).
pub const DEFAULT_MAX_IN_FLIGHT_BBS_CALLS: usize = 256;

#[derive(Debug, Clone)]
pub struct SimCellsConfig {
    /// The BBS processes the cells register with and claim work in (failing over between them).
    pub bbs: BbsUrls,
    /// How long the start waits for a BBS that is not serving yet (nothing listening, or a
    /// 5xx answer) before it fails.
    pub bbs_wait: Duration,
    /// Where the one listener serving every cell binds (port 0 picks a free one).
    pub listen: SocketAddr,
    /// How many cells.
    pub count: usize,
    /// Zone names; cell `i` is in `zones[i % zones.len()]`. Empty: every cell in zone "".
    pub zones: Vec<String>,
    /// Each cell's capacity.
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
    pub rootfs_providers: Vec<RootfsProvider>,
    /// Required placement tags of every cell (§6.3).
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    /// Cell ids are `{prefix}-{i:04}` (`sim-0007`).
    pub cell_id_prefix: String,
    pub presence_ttl: Duration,
    /// The host in the cells' rep URLs. Default: the listen address, or 127.0.0.1 when that
    /// is unspecified (0.0.0.0 or ::).
    pub advertise_host: Option<String>,
    /// How long a simulated task "runs" between its start and its completion.
    pub task_run_time: Duration,
    /// Bound on BBS calls in flight across all cells.
    pub max_in_flight_bbs_calls: usize,
    /// What the HTTP server bounds: how long it waits for a request, how many connections it
    /// holds (see [`diego_runtime::ServeLimits`]).
    pub serve_limits: diego_runtime::ServeLimits,
    /// Mutual TLS for the cells' API and their requests to the BBS; `None` speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

/// Zones of equal size: 3 when `count` divides by 3, else 2 when it is even, else 1.
///
/// Diego spreads a process's instances evenly over zones first and over cells second, so
/// with unequal zones (10 cells as 4/3/3) the cells of a smaller zone take more instances
/// each (20 instances: 7 in a 3-cell zone, so 3 on one cell). Equal zones keep both even.
pub fn default_zones(count: usize) -> usize {
    match count {
        c if c >= 3 && c % 3 == 0 => 3,
        c if c >= 2 && c % 2 == 0 => 2,
        _ => 1,
    }
}

impl SimCellsConfig {
    /// `count` cells of the default size in [`default_zones`]`(count)` zones, listening on
    /// 127.0.0.1:0.
    pub fn new(bbs: impl Into<BbsUrls>, count: usize) -> Self {
        SimCellsConfig {
            bbs: bbs.into(),
            bbs_wait: diego_client::startup::DEFAULT_BBS_WAIT,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            count,
            zones: zone_names(default_zones(count)),
            memory_mb: DEFAULT_MEMORY_MB,
            disk_mb: DEFAULT_DISK_MB,
            containers: DEFAULT_CONTAINERS,
            rootfs_providers: default_rootfs_providers(),
            placement_tags: Vec::new(),
            optional_placement_tags: Vec::new(),
            cell_id_prefix: DEFAULT_CELL_ID_PREFIX.into(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
            advertise_host: None,
            task_run_time: Duration::ZERO,
            max_in_flight_bbs_calls: DEFAULT_MAX_IN_FLIGHT_BBS_CALLS,
            serve_limits: Default::default(),
            tls: None,
        }
    }

    /// The cells' ids, in order: `sim-0000`, `sim-0001`, … (wider when `count` needs it).
    pub fn cell_ids(&self) -> Vec<String> {
        let width = self.count.saturating_sub(1).to_string().len().max(4);
        (0..self.count)
            .map(|i| format!("{}-{i:0width$}", self.cell_id_prefix))
            .collect()
    }

    /// The zone of cell number `i`.
    pub fn zone_of(&self, i: usize) -> String {
        if self.zones.is_empty() {
            String::new()
        } else {
            self.zones[i % self.zones.len()].clone()
        }
    }

    /// `http://HOST:PORT`, the part of every rep URL before `/cells/{cell_id}`.
    pub fn advertised_base_url(&self, bound: SocketAddr) -> String {
        let host = match &self.advertise_host {
            Some(h) => h.clone(),
            None if bound.ip().is_unspecified() => "127.0.0.1".into(),
            None => match bound.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
        };
        let scheme = diego_runtime::tls::scheme(self.tls.as_ref());
        format!("{scheme}://{host}:{}", bound.port())
    }

    pub fn validate(&self) -> Result<(), SimCellsError> {
        let mut problems = Vec::new();
        if self.count == 0 {
            problems.push("count must be >= 1 (got 0)".to_string());
        }
        let prefix_ok = !self.cell_id_prefix.is_empty()
            && self
                .cell_id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !prefix_ok {
            problems.push(format!(
                "cell_id_prefix must match ^[a-zA-Z0-9_-]+$ (got {:?})",
                self.cell_id_prefix
            ));
        }
        for (name, v) in [
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("containers", self.containers),
        ] {
            if v < 0 {
                problems.push(format!("{name} must be >= 0 (got {v})"));
            }
        }
        if self.presence_ttl < Duration::from_secs(1) {
            problems.push(format!(
                "presence_ttl must be at least 1s (got {:?})",
                self.presence_ttl
            ));
        }
        if self.max_in_flight_bbs_calls == 0 {
            problems.push("max_in_flight_bbs_calls must be >= 1 (got 0)".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimCellsError::Invalid(problems.join("; ")))
        }
    }
}

/// `z0`, `z1`, … `z{n-1}`.
pub fn zone_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("z{i}")).collect()
}

/// What a real cell of this project offers: `preloaded:busybox` plus local OCI images
/// (`oci:` layouts and `docker-archive:` tarballs, any image).
pub fn default_rootfs_providers() -> Vec<RootfsProvider> {
    vec![
        RootfsProvider {
            name: "preloaded".into(),
            properties: vec!["busybox".into()],
        },
        RootfsProvider {
            name: "oci".into(),
            properties: Vec::new(),
        },
        RootfsProvider {
            name: "docker-archive".into(),
            properties: Vec::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_ids_are_zero_padded_and_widen_when_needed() {
        let c = SimCellsConfig::new("http://bbs", 3);
        assert_eq!(c.cell_ids(), ["sim-0000", "sim-0001", "sim-0002"]);
        let big = SimCellsConfig::new("http://bbs", 12_000).cell_ids();
        assert_eq!(big[7], "sim-00007");
        assert_eq!(big.last().unwrap(), "sim-11999");
        let exact = SimCellsConfig::new("http://bbs", 10_000).cell_ids();
        assert_eq!(exact.last().unwrap(), "sim-9999");
    }

    #[test]
    fn default_zones_are_equal_in_size() {
        let zones: Vec<usize> = [1, 2, 3, 4, 5, 6, 10, 1000, 999]
            .into_iter()
            .map(default_zones)
            .collect();
        assert_eq!(zones, [1, 2, 3, 2, 1, 3, 2, 2, 3]);
    }

    #[test]
    fn zones_are_spread_round_robin() {
        let mut c = SimCellsConfig::new("http://bbs", 5);
        c.zones = zone_names(3);
        let zones: Vec<String> = (0..5).map(|i| c.zone_of(i)).collect();
        assert_eq!(zones, ["z0", "z1", "z2", "z0", "z1"]);
        c.zones.clear();
        assert_eq!(c.zone_of(4), "");
    }

    #[test]
    fn advertised_url_replaces_unspecified_hosts() {
        let mut c = SimCellsConfig::new("http://bbs", 1);
        assert_eq!(
            c.advertised_base_url("0.0.0.0:1801".parse().unwrap()),
            "http://127.0.0.1:1801"
        );
        assert_eq!(
            c.advertised_base_url("10.0.0.5:1801".parse().unwrap()),
            "http://10.0.0.5:1801"
        );
        assert_eq!(
            c.advertised_base_url("[::1]:1801".parse().unwrap()),
            "http://[::1]:1801"
        );
        c.advertise_host = Some("cells.example".into());
        assert_eq!(
            c.advertised_base_url("0.0.0.0:1801".parse().unwrap()),
            "http://cells.example:1801"
        );
    }

    #[test]
    fn validation_names_every_problem() {
        let mut c = SimCellsConfig::new("http://bbs", 0);
        c.cell_id_prefix = "bad prefix".into();
        c.memory_mb = -1;
        c.presence_ttl = Duration::from_millis(10);
        let msg = c.validate().unwrap_err().to_string();
        for part in ["count", "cell_id_prefix", "memory_mb", "presence_ttl"] {
            assert!(msg.contains(part), "{part} missing from {msg}");
        }
        assert!(SimCellsConfig::new("http://bbs", 2).validate().is_ok());
    }
}
