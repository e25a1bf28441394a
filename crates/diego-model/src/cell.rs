//! Cells and domains: who can run work, and which domains' desired state is fresh.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::validation::{join, Validator};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCapacity {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

/// A root filesystem scheme a cell can run: `preloaded` with a fixed set of names
/// (`properties`), or an arbitrary scheme such as `oci` (empty properties).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

/// A cell announcing itself: where its rep listens and what it can hold.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPresence {
    pub cell_id: String,
    /// The rep's base URL, e.g. `http://127.0.0.1:1801`.
    pub rep_url: String,
    #[serde(default)]
    pub zone: String,
    pub capacity: CellCapacity,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootfs_providers: Vec<RootfsProvider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_placement_tags: Vec<String>,
}

impl CellPresence {
    pub fn validate(&self, v: &mut Validator, path: &str) {
        v.guid(&join(path, "cell_id"), &self.cell_id);
        v.url(&join(path, "rep_url"), &self.rep_url);
        let c = join(path, "capacity");
        v.non_negative(&join(&c, "memory_mb"), self.capacity.memory_mb.into());
        v.non_negative(&join(&c, "disk_mb"), self.capacity.disk_mb.into());
        v.non_negative(&join(&c, "containers"), self.capacity.containers.into());
        for (i, p) in self.rootfs_providers.iter().enumerate() {
            v.required(&format!("{}[{i}].name", join(path, "rootfs_providers")), &p.name);
        }
    }
}

/// Body of a presence registration or renewal.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterCellRequest {
    pub cell_presence: CellPresence,
    /// Seconds the presence lives without renewal; must be > 0.
    pub ttl_seconds: i64,
}

impl RegisterCellRequest {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        self.cell_presence.validate(&mut v, "cell_presence");
        v.positive("ttl_seconds", self.ttl_seconds);
        v.into_result()
    }
}

/// A cell whose presence lapsed (or was removed) while instances still name it, as the
/// active BBS's converger last saw it (`GET /v1/lapsed_cells`). It is forgotten once no
/// instance names it and it lapsed long enough ago, or when the cell registers again.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapsedCell {
    pub cell_id: String,
    /// When the BBS saw the presence go (Unix ns).
    pub lapsed_at: Timestamp,
    /// Instances (any presence) whose rows still name the cell.
    pub instances: u64,
    /// The presence as it was last registered, when the BBS saw it lapse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_presence: Option<CellPresence>,
}

/// A domain whose desired state its owner keeps fresh (diego-spec §1.4).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub domain: String,
    /// When the freshness lapses (Unix ns); 0 = fresh forever.
    #[serde(default)]
    pub expires_at: Timestamp,
}

/// Body of a domain upsert. `ttl_seconds` 0 keeps the domain fresh forever.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertDomainRequest {
    pub domain: String,
    #[serde(default)]
    pub ttl_seconds: i64,
}

impl UpsertDomainRequest {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        v.guid("domain", &self.domain);
        v.non_negative("ttl_seconds", self.ttl_seconds);
        v.into_result()
    }
}

/// `POST /v1/locks/{key}`: take or renew a lock for `ttl_seconds` (leader election between
/// instances of a component; `value` tells others how to reach the holder, e.g. its URL).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireLockRequest {
    pub owner: String,
    #[serde(default)]
    pub value: String,
    pub ttl_seconds: i64,
}

impl AcquireLockRequest {
    pub fn validate(&self) -> Result<(), Vec<crate::FieldError>> {
        let mut v = Validator::new();
        v.required("owner", &self.owner);
        v.positive("ttl_seconds", self.ttl_seconds);
        v.into_result()
    }
}

/// `GET {rep_url}/container_metrics`: what one container of a cell uses.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    /// The instance guid (LRPs) or the task guid.
    pub guid: String,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// CPU time used since the container started.
    pub cpu_usage_ns: u64,
    /// Average CPU use since the container started, in percent of one core.
    pub cpu_percent: f64,
    pub age_ms: u64,
}
