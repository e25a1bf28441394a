//! The apps service (`diego apps`): the layer that turns *apps* into Tasks and LRPs, as Cloud
//! Foundry's Cloud Controller, stager, nsync and TPS do for Diego (docs/210-apps.md).
//!
//! - [`model`]: an app (name, instances, memory, disk, env, routes, health check, buildpack,
//!   stack), its package, its droplet and its latest staging, and how a request is checked.
//! - [`store`]: the apps, durable in one JSON file written atomically.
//! - [`plan`]: pure translations — the staging Task of a package, the desired LRP of a staged
//!   app, and the sync's steps (what to desire, update and remove so the BBS matches the apps).
//! - [`status`]: an app's instances, joining its desired LRP with the BBS's actual LRPs (TPS).
//! - [`service`]: the HTTP API, the staging callback and the sync worker.
//! - [`client`]: how the CLI talks to it.

pub mod client;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod routes;
pub mod service;
pub mod status;
pub mod store;

pub use client::{AppsClient, AppsError};
pub use model::{App, AppSpec};
