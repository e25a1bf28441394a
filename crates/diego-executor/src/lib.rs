//! Diego's executor, phase 1: the pure logic a cell runs containers with, over the
//! [`diego_garden::ContainerBackend`] trait (diego-spec §2, §7.1, §7.2).
//!
//! - [`resources`]: capacity and reservations that never overcommit;
//! - [`container`]: the lifecycle state machine (reserved → initializing → created → running
//!   → completed) and [`container::RunResult`];
//! - [`checks`]: health checks of LRP instances (startup, liveness, readiness) probed from the
//!   cell, and [`checks::health_steps`], the monitor part of an LRP's tree;
//! - [`steps`]: one [`steps::Step`] per action kind, with Diego's failure texts;
//! - [`archive`], [`checksum`], [`download_cache`]: what the download step is made of — safe
//!   archive extraction (tar, tgz, zip), md5/sha1/sha256 checks, the cell's download cache;
//! - [`transformer`]: [`transformer::step_for`] builds a step tree from an action tree;
//! - log lines, the sink they go to and line splitting live in `diego-logs`; steps write
//!   through a [`diego_logs::LogStreamer`].
//!
//! Depends on `diego-model`, `diego-garden` and `diego-logs` only; must not depend on the rep, the BBS or any
//! HTTP server (the rep depends on this crate, not the other way). HTTP *clients* (reqwest) are
//! fine: downloads and HTTP health checks use one.

pub mod archive;
pub mod checks;
pub mod checksum;
pub mod container;
pub mod download_cache;
pub mod resources;
pub mod steps;
pub mod store;
pub mod transformer;

pub use container::{Container, ContainerState, RunResult};
pub use resources::{Reservation, ReserveError, ResourceCapacity, Resources};
pub use steps::{Step, StepContext, StepError};
pub use store::{
    default_concurrent_creates, ContainerEvent, ContainerStore, MonitorFactory, RunRequest, StoreConfig,
    StoreError,
};
pub use transformer::step_for;
