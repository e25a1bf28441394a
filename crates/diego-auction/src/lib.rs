//! Diego's auction: where each LRP instance and task of a batch should run.
//!
//! The algorithm is pure and deterministic: no IO, no async, no clock inside it. The
//! auctioneer [`service`] is a thin shell that fetches cell states, calls [`schedule`], sends
//! the work to the winning cells and reports failures; it is the only module that does IO.
//!
//! - Inputs: [`CellState`] (a cell's `/state`), [`AuctionRequest`] of [`LrpStart`]s and
//!   [`TaskStart`]s, and [`AuctionConfig`].
//! - Output: [`AuctionResults`]; every failure carries Diego's exact placement error string
//!   ([`PlacementError`], diego-spec §6.5) and a [`PlacementExplanation`] counting why each cell
//!   was rejected.
//! - [`schedule`] uses an index (see `index.rs`) that provably picks the same cells as Diego's
//!   full scan, which [`naive::schedule`] keeps as the reference.
//! - [`sim`] builds Diego's simulation scenarios and the million-instance benchmark.

pub mod explain;
pub mod filter;
mod index;
pub mod naive;
mod scheduler;
pub mod service;
pub mod sim;
mod state;
pub mod types;

pub use explain::{InflightLimit, NamedCount, PlacementExplanation, ResourceMiss, RootfsMiss};
pub use filter::{placement_tag_mismatch, rootfs_matches, PlacementError, TagMismatch};
pub use types::{
    AuctionConfig, AuctionRequest, AuctionResults, CellResources, CellState, LrpFailure, LrpInstance,
    LrpPlacement, LrpStart, RootfsProvider, TaskFailure, TaskPlacement, TaskStart, WorkResources,
};

/// Run one auction round (diego-spec §6.1–§6.3): LRP index-0 instances, then tasks, then the
/// other indices, each on its lowest-scoring feasible cell, zones spread first.
pub fn schedule(cells: &[CellState], request: &AuctionRequest, config: &AuctionConfig) -> AuctionResults {
    scheduler::run::<index::Index>(cells, request, config)
}
