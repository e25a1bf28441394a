//! Typed HTTP clients for Diego's services, and the route constants servers share.
//!
//! Depends on `diego-model` only among our crates (never on a server crate), so any
//! component or tool can talk to the BBS without pulling in its implementation.
//! Key types: [`BbsClient`] (one typed method per BBS route), [`RepClient`] and
//! [`AuctioneerClient`] (the auction's contracts), [`ClientError`],
//! [`SseParser`]/[`SseEvent`] (the event-stream framing) and [`routes`].

pub mod auctioneer;
pub mod bbs;
pub mod error;
mod http;
pub mod rep;
pub mod routes;
pub mod sse;

pub use auctioneer::AuctioneerClient;
pub use bbs::{
    ActualLrpQuery, BbsClient, CellPresenceWithExpiry, DesiredLrpQuery, EventStream, LockHolder, TaskQuery,
};
pub use error::{ClientError, Result};
pub use rep::RepClient;
pub use sse::{SseEvent, SseParser};
