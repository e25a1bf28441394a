//! The routing table (diego-spec §8): desired HTTP routes × routable instances.
//!
//! [`RoutingTable`] holds what it was told — each desired LRP's `cf-router` routes and every
//! routable actual LRP — and is changed only by [`RoutingTable::apply`] with BBS events, so
//! the same table feeds the router ([`RoutingTable::hosts`]) and the NATS emitter
//! ([`RoutingTable::registrations`]). It does no IO; [`crate::sync`] keeps it current.
//!
//! An instance is routable when it is RUNNING and its `routable` flag is not `false`
//! (readiness checks pass, or there are none). EVACUATING instances stay routable until
//! their row is removed, and SUSPECT ones too: a cell that lost its presence may still be
//! serving, and while the replacement starts it is the only one that can.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use diego_model::{ActualLrp, ActualLrpState, CfRoute, Event, Presence, Routes, Timestamp};
use serde::Serialize;

/// One routable instance's address for one container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    /// The cell's address and the host port mapped to the container port.
    pub host: String,
    pub port: u32,
    /// The host port of the container's TLS proxy for this port, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u32>,
    pub container_port: u32,
    pub process_guid: String,
    pub index: i32,
    pub instance_guid: String,
    pub cell_id: String,
    /// The app's log guid, its process guid when it has none (`app` in gorouter's messages;
    /// the router's access lines go there).
    pub log_guid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_address: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    pub presence: Presence,
    /// When the instance last changed state (Unix ns).
    pub since: Timestamp,
}

impl Endpoint {
    /// `host:port`, what a proxy connects to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Every endpoint one hostname sends to. Several LRPs may share a hostname (blue/green
/// deploys): their endpoints are pooled, as gorouter does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// The hostname as routes name it (lowercase; `*.domain` for a wildcard).
    pub hostname: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
}

/// Hostname → pool, for one request's lookup: exact names first, then the most specific
/// `*.domain` wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMap {
    exact: HashMap<String, Arc<Pool>>,
    /// Keyed by the domain after `*.`.
    wildcard: HashMap<String, Arc<Pool>>,
}

impl HostMap {
    /// The pool for a request's `Host` (any case, with or without `:port` or a trailing dot).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Pool>> {
        let host = normalize_host(host);
        if let Some(pool) = self.exact.get(host.as_ref()) {
            return Some(pool);
        }
        let mut rest = host.as_ref();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(pool) = self.wildcard.get(parent) {
                return Some(pool);
            }
            rest = parent;
        }
        None
    }

    /// Every pool, sorted by hostname.
    pub fn pools(&self) -> Vec<&Arc<Pool>> {
        let mut all: Vec<_> = self.exact.values().chain(self.wildcard.values()).collect();
        all.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        all
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every endpoint in the map, counted once per pool it is in.
    pub fn endpoint_count(&self) -> usize {
        self.pools().iter().map(|p| p.endpoints.len()).sum()
    }
}

/// A `Host` header's hostname: lowercase, without a port or a trailing dot.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        // `[v6]:port` or `name:port`; a bare IPv6 literal has more than one colon.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// One gorouter registration: an endpoint under the hostnames of one route entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Registration {
    pub uris: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_group_guid: Option<String>,
    /// The LRP's first placement tag: Cloud Foundry places an isolation segment's apps by
    /// that tag, and its routers shard by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation_segment: Option<String>,
    pub endpoint: Endpoint,
}

/// What identifies a registration to gorouter: the same key registered again replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationKey {
    pub uris: Vec<String>,
    pub host: String,
    pub port: u32,
    pub instance_guid: String,
}

impl Registration {
    pub fn key(&self) -> RegistrationKey {
        RegistrationKey {
            uris: self.uris.clone(),
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            instance_guid: self.endpoint.instance_guid.clone(),
        }
    }
}

/// What changed between two sets of registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationDiff {
    /// New, or changed in a field other than the key (sent again as a register).
    pub register: Vec<Registration>,
    /// Gone: their key is in `old` but not in `new`.
    pub unregister: Vec<Registration>,
}

/// The registrations to send to move a router from `old` to `new`.
pub fn diff_registrations(old: &[Registration], new: &[Registration]) -> RegistrationDiff {
    let old_by_key: BTreeMap<RegistrationKey, &Registration> = old.iter().map(|r| (r.key(), r)).collect();
    let new_keys: BTreeSet<RegistrationKey> = new.iter().map(Registration::key).collect();
    let register = new
        .iter()
        .filter(|r| old_by_key.get(&r.key()).is_none_or(|o| *o != *r))
        .cloned()
        .collect();
    let unregister = old_by_key
        .into_iter()
        .filter(|(k, _)| !new_keys.contains(k))
        .map(|(_, r)| r.clone())
        .collect();
    RegistrationDiff { register, unregister }
}

/// A desired LRP's HTTP routes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DesiredRoutes {
    log_guid: String,
    routes: Vec<CfRoute>,
    isolation_segment: Option<String>,
}

/// What the table keeps of a routable instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    instance_guid: String,
    cell_id: String,
    address: String,
    /// container port → (host port, host TLS proxy port)
    ports: BTreeMap<u32, (u32, Option<u32>)>,
    instance_address: String,
    availability_zone: String,
    since: Timestamp,
}

/// Desired routes and routable instances, by process guid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    desired: HashMap<String, DesiredRoutes>,
    /// process guid → (index, presence) → instance
    instances: HashMap<String, BTreeMap<(i32, Presence), Instance>>,
}

/// What the table needs of a desired LRP (a scheduling info or the whole record).
pub struct DesiredRef<'a> {
    pub process_guid: &'a str,
    pub log_guid: &'a str,
    pub routes: &'a Routes,
    pub placement_tags: &'a [String],
}

impl<'a> From<&'a diego_model::DesiredLrp> for DesiredRef<'a> {
    fn from(d: &'a diego_model::DesiredLrp) -> Self {
        DesiredRef {
            process_guid: &d.process_guid,
            log_guid: &d.log_guid,
            routes: &d.routes,
            placement_tags: &d.placement_tags,
        }
    }
}

impl<'a> From<&'a diego_model::DesiredLrpSchedulingInfo> for DesiredRef<'a> {
    fn from(d: &'a diego_model::DesiredLrpSchedulingInfo) -> Self {
        DesiredRef {
            process_guid: &d.process_guid,
            log_guid: &d.log_guid,
            routes: &d.routes,
            placement_tags: &d.placement_tags,
        }
    }
}

/// Whether an actual LRP should receive traffic.
pub fn is_routable(a: &ActualLrp) -> bool {
    a.state == ActualLrpState::Running && a.routable != Some(false) && !a.address.is_empty()
}

impl RoutingTable {
    /// The table of a full listing.
    pub fn from_snapshot<'a, D>(desired: impl IntoIterator<Item = D>, actual: &[ActualLrp]) -> Self
    where
        D: Into<DesiredRef<'a>>,
    {
        let mut t = RoutingTable::default();
        for d in desired {
            t.set_desired(d.into());
        }
        for a in actual {
            t.set_actual(a);
        }
        t
    }

    /// Applies one BBS event; says whether anything a router sees changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::DesiredLrpCreated { desired_lrp } => self.set_desired(desired_lrp.as_ref().into()),
            Event::DesiredLrpChanged { after, .. } => self.set_desired(after.as_ref().into()),
            Event::DesiredLrpRemoved { desired_lrp } => {
                self.desired.remove(&desired_lrp.process_guid).is_some()
            }
            Event::ActualLrpCreated { actual_lrp } => self.set_actual(actual_lrp),
            Event::ActualLrpChanged { before, after } => {
                let moved = (before.process_guid != after.process_guid)
                    || (before.index, before.presence) != (after.index, after.presence);
                let removed = moved && self.remove_actual(before);
                self.set_actual(after) | removed
            }
            Event::ActualLrpRemoved { actual_lrp } => self.remove_actual(actual_lrp),
            Event::ActualLrpCrashed(_)
            | Event::TaskCreated { .. }
            | Event::TaskChanged { .. }
            | Event::TaskRemoved { .. }
            | Event::Resync { .. } => false,
        }
    }

    fn set_desired(&mut self, d: DesiredRef<'_>) -> bool {
        // The BBS validates `cf-router` routes when an LRP is desired or updated; a record that
        // fails anyway (written before validation existed) routes nothing rather than a guess.
        let routes = diego_model::routes::cf_routes(d.routes).unwrap_or_default();
        if routes.is_empty() {
            return self.desired.remove(d.process_guid).is_some();
        }
        let new = DesiredRoutes {
            log_guid: diego_model::log_guid_or(d.log_guid, d.process_guid).to_string(),
            routes,
            isolation_segment: d.placement_tags.first().filter(|t| !t.is_empty()).cloned(),
        };
        match self.desired.get(d.process_guid) {
            Some(old) if *old == new => false,
            _ => {
                self.desired.insert(d.process_guid.to_string(), new);
                true
            }
        }
    }

    fn set_actual(&mut self, a: &ActualLrp) -> bool {
        if !is_routable(a) {
            return self.remove_actual(a);
        }
        let instance = Instance {
            instance_guid: a.instance_guid.clone(),
            cell_id: a.cell_id.clone(),
            address: a.address.clone(),
            ports: a
                .ports
                .iter()
                .map(|p| {
                    let tls = (p.host_tls_proxy_port != 0).then_some(p.host_tls_proxy_port);
                    (p.container_port, (p.host_port, tls))
                })
                .collect(),
            instance_address: a.instance_address.clone(),
            availability_zone: a.availability_zone.clone(),
            since: a.since,
        };
        let slot = self
            .instances
            .entry(a.process_guid.clone())
            .or_default()
            .entry((a.index, a.presence));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if *e.get() == instance {
                    false
                } else {
                    e.insert(instance);
                    true
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(instance);
                true
            }
        }
    }

    fn remove_actual(&mut self, a: &ActualLrp) -> bool {
        let Some(of_process) = self.instances.get_mut(&a.process_guid) else {
            return false;
        };
        let removed = of_process.remove(&(a.index, a.presence)).is_some();
        if of_process.is_empty() {
            self.instances.remove(&a.process_guid);
        }
        removed
    }

    /// Routable instances held (whether or not a route names them).
    pub fn instance_count(&self) -> usize {
        self.instances.values().map(BTreeMap::len).sum()
    }

    /// Desired LRPs with at least one HTTP route.
    pub fn routed_process_count(&self) -> usize {
        self.desired.len()
    }

    /// The endpoints of `process_guid` on `container_port`, by index then presence.
    fn endpoints(&self, process_guid: &str, log_guid: &str, container_port: u32) -> Vec<Endpoint> {
        let Some(instances) = self.instances.get(process_guid) else {
            return Vec::new();
        };
        instances
            .iter()
            .filter_map(|(&(index, presence), i)| {
                let &(port, tls_port) = i.ports.get(&container_port)?;
                Some(Endpoint {
                    host: i.address.clone(),
                    port,
                    tls_port,
                    container_port,
                    process_guid: process_guid.to_string(),
                    index,
                    instance_guid: i.instance_guid.clone(),
                    cell_id: i.cell_id.clone(),
                    log_guid: log_guid.to_string(),
                    instance_address: i.instance_address.clone(),
                    availability_zone: i.availability_zone.clone(),
                    presence,
                    since: i.since,
                })
            })
            .collect()
    }

    /// The router's view: every routed hostname and its endpoints (possibly none: a route
    /// without a running instance is still known, so the router can say 503 rather than 404).
    pub fn hosts(&self) -> HostMap {
        let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
        let mut processes: Vec<_> = self.desired.iter().collect();
        processes.sort_by(|a, b| a.0.cmp(b.0));
        for (process_guid, d) in processes {
            for route in &d.routes {
                let endpoints: Vec<Arc<Endpoint>> = self
                    .endpoints(process_guid, &d.log_guid, route.port)
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                for hostname in &route.hostnames {
                    let hostname = hostname.to_ascii_lowercase();
                    let pool = pools.entry(hostname.clone()).or_insert_with(|| Pool {
                        hostname,
                        endpoints: Vec::new(),
                        route_service_url: None,
                    });
                    pool.endpoints.extend(endpoints.iter().cloned());
                    if pool.route_service_url.is_none() {
                        pool.route_service_url.clone_from(&route.route_service_url);
                    }
                }
            }
        }
        let mut map = HostMap::default();
        for (hostname, pool) in pools {
            match hostname.strip_prefix("*.") {
                Some(domain) => map.wildcard.insert(domain.to_string(), Arc::new(pool)),
                None => map.exact.insert(hostname, Arc::new(pool)),
            };
        }
        map
    }

    /// The emitter's view: one registration per (route entry, endpoint), sorted.
    pub fn registrations(&self) -> Vec<Registration> {
        let mut out = Vec::new();
        for (process_guid, d) in &self.desired {
            for route in &d.routes {
                let uris: Vec<String> = route.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
                for endpoint in self.endpoints(process_guid, &d.log_guid, route.port) {
                    out.push(Registration {
                        uris: uris.clone(),
                        route_service_url: route.route_service_url.clone(),
                        router_group_guid: route.router_group_guid.clone(),
                        isolation_segment: d.isolation_segment.clone(),
                        endpoint,
                    });
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::{DesiredLrp, PortMapping};
    use serde_json::json;

    fn desired(guid: &str, routes: serde_json::Value) -> DesiredLrp {
        let mut d = DesiredLrp {
            process_guid: guid.into(),
            log_guid: format!("log-{guid}"),
            ..Default::default()
        };
        d.routes.insert("cf-router".into(), routes);
        d
    }

    fn web(hosts: &[&str]) -> DesiredLrp {
        desired("web", json!([{"hostnames": hosts, "port": 8080}]))
    }

    fn actual(
        guid: &str,
        index: i32,
        state: ActualLrpState,
        presence: Presence,
        host_port: u32,
    ) -> ActualLrp {
        ActualLrp {
            process_guid: guid.into(),
            index,
            domain: "d".into(),
            instance_guid: format!("{guid}-{index}-{presence:?}"),
            cell_id: "cell-1".into(),
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port,
                ..Default::default()
            }],
            instance_address: String::new(),
            state,
            crash_count: 0,
            crash_reason: String::new(),
            since: 1,
            placement_error: String::new(),
            placement_explanation: None,
            presence,
            routable: None,
            availability_zone: "z1".into(),
            metric_tags: Default::default(),
            modification_tag: Default::default(),
        }
    }

    fn running(index: i32, port: u32) -> ActualLrp {
        actual("web", index, ActualLrpState::Running, Presence::Ordinary, port)
    }

    fn ports(map: &HostMap, host: &str) -> Option<Vec<u32>> {
        map.lookup(host)
            .map(|p| p.endpoints.iter().map(|e| e.port).collect())
    }

    #[test]
    fn which_instances_are_routable() {
        use ActualLrpState::*;
        use Presence::*;
        let cases = [
            (Running, Ordinary, None, true),
            (Running, Ordinary, Some(true), true),
            (Running, Ordinary, Some(false), false),
            (Running, Evacuating, None, true),
            (Running, Suspect, None, true),
            (Claimed, Ordinary, None, false),
            (Claimed, Suspect, None, false),
            (Unclaimed, Ordinary, None, false),
            (Crashed, Ordinary, None, false),
        ];
        for (state, presence, routable, want) in cases {
            let mut a = actual("web", 0, state, presence, 61000);
            a.routable = routable;
            let t = RoutingTable::from_snapshot([&web(&["web.example.com"])], &[a]);
            let got = ports(&t.hosts(), "web.example.com").unwrap();
            assert_eq!(
                !got.is_empty(),
                want,
                "{state:?} {presence:?} routable={routable:?}"
            );
        }
    }

    #[test]
    fn lookups_match_exact_names_then_the_closest_wildcard() {
        let lrps = [
            desired("a", json!([{"hostnames": ["api.example.com"], "port": 8080}])),
            desired("b", json!([{"hostnames": ["*.example.com"], "port": 8080}])),
            desired("c", json!([{"hostnames": ["*.eu.example.com"], "port": 8080}])),
        ];
        let actuals = [
            actual("a", 0, ActualLrpState::Running, Presence::Ordinary, 1),
            actual("b", 0, ActualLrpState::Running, Presence::Ordinary, 2),
            actual("c", 0, ActualLrpState::Running, Presence::Ordinary, 3),
        ];
        let map = RoutingTable::from_snapshot(&lrps, &actuals).hosts();
        let cases = [
            ("api.example.com", Some(vec![1])),
            ("API.Example.COM:8080", Some(vec![1])),
            ("api.example.com.", Some(vec![1])),
            ("www.example.com", Some(vec![2])),
            ("a.b.example.com", Some(vec![2])),
            ("x.eu.example.com", Some(vec![3])),
            ("example.com", None),
            ("other.org", None),
            ("", None),
        ];
        for (host, want) in cases {
            assert_eq!(ports(&map, host), want, "{host}");
        }
    }

    #[test]
    fn a_route_without_running_instances_is_known_and_empty() {
        let t = RoutingTable::from_snapshot(
            [&web(&["web.example.com"])],
            &[actual("web", 0, ActualLrpState::Claimed, Presence::Ordinary, 1)],
        );
        assert_eq!(ports(&t.hosts(), "web.example.com"), Some(vec![]));
    }

    #[test]
    fn events_keep_the_table_in_step() {
        let mut t = RoutingTable::default();
        let d = web(&["web.example.com"]);
        assert!(t.apply(&Event::DesiredLrpCreated {
            desired_lrp: Box::new(d.clone())
        }));
        let claimed = actual("web", 0, ActualLrpState::Claimed, Presence::Ordinary, 0);
        let r0 = running(0, 61000);
        assert!(!t.apply(&Event::ActualLrpCreated {
            actual_lrp: Box::new(claimed.clone())
        }));
        assert!(t.apply(&Event::ActualLrpChanged {
            before: Box::new(claimed),
            after: Box::new(r0.clone())
        }));
        assert!(t.apply(&Event::ActualLrpCreated {
            actual_lrp: Box::new(running(1, 61001))
        }));
        assert_eq!(ports(&t.hosts(), "web.example.com"), Some(vec![61000, 61001]));
        // The same record again changes nothing.
        assert!(!t.apply(&Event::ActualLrpCreated {
            actual_lrp: Box::new(r0.clone())
        }));

        // Index 0 is evacuated: the old instance stays routable beside its replacement, until
        // its row is removed.
        let evacuating = actual("web", 0, ActualLrpState::Running, Presence::Evacuating, 61000);
        assert!(t.apply(&Event::ActualLrpChanged {
            before: Box::new(r0.clone()),
            after: Box::new(evacuating.clone())
        }));
        assert!(t.apply(&Event::ActualLrpCreated {
            actual_lrp: Box::new(running(0, 61005))
        }));
        assert_eq!(
            ports(&t.hosts(), "web.example.com"),
            Some(vec![61005, 61000, 61001])
        );
        assert!(t.apply(&Event::ActualLrpRemoved {
            actual_lrp: Box::new(evacuating)
        }));
        assert_eq!(ports(&t.hosts(), "web.example.com"), Some(vec![61005, 61001]));

        // A crash takes the instance out at once.
        let crashed = actual("web", 1, ActualLrpState::Crashed, Presence::Ordinary, 0);
        assert!(t.apply(&Event::ActualLrpChanged {
            before: Box::new(running(1, 61001)),
            after: Box::new(crashed)
        }));
        assert_eq!(ports(&t.hosts(), "web.example.com"), Some(vec![61005]));

        // New hostnames replace the old ones; removing the LRP removes its routes.
        let mut moved = d.clone();
        moved.routes = web(&["new.example.com"]).routes;
        assert!(t.apply(&Event::DesiredLrpChanged {
            before: Box::new(d.clone()),
            after: Box::new(moved.clone())
        }));
        assert_eq!(ports(&t.hosts(), "web.example.com"), None);
        assert_eq!(ports(&t.hosts(), "new.example.com"), Some(vec![61005]));
        assert!(!t.apply(&Event::DesiredLrpChanged {
            before: Box::new(moved.clone()),
            after: Box::new(moved.clone())
        }));
        assert!(t.apply(&Event::DesiredLrpRemoved {
            desired_lrp: Box::new(moved)
        }));
        assert!(t.hosts().is_empty());
    }

    #[test]
    fn only_the_routed_port_is_used_and_shared_hostnames_pool() {
        let a = desired("a", json!([{"hostnames": ["shared.example.com"], "port": 8080}]));
        let b = desired("b", json!([{"hostnames": ["shared.example.com"], "port": 9090}]));
        let mut ab = actual("b", 0, ActualLrpState::Running, Presence::Ordinary, 2);
        ab.ports.push(PortMapping {
            container_port: 9090,
            host_port: 3,
            ..Default::default()
        });
        let t = RoutingTable::from_snapshot(
            [&a, &b],
            &[actual("a", 0, ActualLrpState::Running, Presence::Ordinary, 1), ab],
        );
        assert_eq!(ports(&t.hosts(), "shared.example.com"), Some(vec![1, 3]));
    }

    #[test]
    fn registration_diffs() {
        let d = web(&["web.example.com"]);
        let before = RoutingTable::from_snapshot([&d], &[running(0, 1), running(1, 2)]).registrations();
        let mut moved = running(1, 2);
        moved.since = 5;
        let after = RoutingTable::from_snapshot([&d], &[running(0, 1), moved, running(2, 3)]).registrations();
        let diff = diff_registrations(&before, &after);
        let ports = |rs: &[Registration]| rs.iter().map(|r| r.endpoint.port).collect::<Vec<_>>();
        // index 1 changed only in `since`: registered again, not unregistered.
        assert_eq!(ports(&diff.register), vec![2, 3]);
        assert!(diff.unregister.is_empty());
        let gone = diff_registrations(&after, &before[..1]);
        assert_eq!(ports(&gone.unregister), vec![2, 3]);
        assert!(gone.register.is_empty());
        assert_eq!(after[0].uris, ["web.example.com"]);
        assert_eq!(after[0].endpoint.log_guid, "log-web");
        assert_eq!(after[0].isolation_segment, None);

        // The first placement tag names the isolation segment; a new one registers again.
        let mut isolated = d.clone();
        isolated.placement_tags = vec!["iso-1".into(), "other".into()];
        let moved = RoutingTable::from_snapshot([&isolated], &[running(0, 1), running(1, 2)]).registrations();
        assert!(moved
            .iter()
            .all(|r| r.isolation_segment.as_deref() == Some("iso-1")));
        let diff = diff_registrations(&before, &moved);
        assert_eq!(ports(&diff.register), vec![1, 2]);
        assert!(diff.unregister.is_empty());
    }

    #[test]
    fn an_lrp_without_a_log_guid_logs_under_its_process_guid() {
        let mut d = web(&["web.example.com"]);
        d.log_guid.clear();
        let t = RoutingTable::from_snapshot([&d], &[running(0, 1)]);
        assert_eq!(t.registrations()[0].endpoint.log_guid, "web");
        let hosts = t.hosts();
        assert_eq!(
            hosts.lookup("web.example.com").unwrap().endpoints[0].log_guid,
            "web"
        );
    }

    #[test]
    fn invalid_stored_routes_route_nothing() {
        let bad = desired("web", json!({"not": "a list"}));
        let t = RoutingTable::from_snapshot([&bad], &[running(0, 1)]);
        assert!(t.hosts().is_empty());
        assert_eq!(t.instance_count(), 1);
    }
}
