//! Routing (diego-spec §8): how HTTP traffic reaches an app's instances by hostname.
//!
//! - [`table`]: the routing table, pure: desired `cf-router` routes × routable instances,
//!   changed only by BBS events; the router's host map and the emitter's registrations.
//! - [`router`]: the HTTP router on hyper: host-header routing over the table, balancing,
//!   retries of refused connects, WebSockets, sticky sessions, drain, admin endpoints.
//! - [`sync`]: keeps a table current from the BBS (subscribe, list, replay, follow; relist
//!   every 60 s and on a `resync` event).
//! - [`emitter`]: the route-emitter, the table's registrations over NATS in gorouter's
//!   protocol (`router.register` / `router.unregister`, greetings, repeated unregistrations).

pub mod emitter;
pub mod router;
pub mod sync;
pub mod table;

pub use sync::{SyncConfig, SyncStats, DEFAULT_RESYNC_INTERVAL};
pub use table::{
    diff_registrations, is_routable, normalize_host, Endpoint, HostMap, Pool, Registration, RegistrationDiff,
    RegistrationKey, RoutingTable,
};
