//! Typed HTTP clients for Diego's services, and the route constants servers share.
//!
//! Depends on `diego-model` only among our crates (never on a server crate), so any
//! component or tool can talk to the BBS without pulling in its implementation.
//! Key types: [`BbsClient`] (one typed method per BBS route, failing over between the
//! [`BbsUrls`] it is given; [`failover`] says which requests are repeated where), [`RepClient`] and
//! [`AuctioneerClient`] (the auction's contracts), [`ClientError`],
//! [`SseParser`]/[`SseEvent`] (the event-stream framing), [`routes`] and [`startup`] (a role's
//! first requests, repeated while the BBS is not serving yet).

pub mod auctioneer;
pub mod bbs;
pub mod error;
pub mod failover;
mod http;
pub mod rep;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod urls;

pub use auctioneer::AuctioneerClient;
pub use bbs::{
    ActualLrpQuery, BbsClient, CellPresenceWithExpiry, DesiredLrpQuery, EventStream, LockHolder, TaskQuery,
};
pub use error::{ClientError, Result};
pub use rep::RepClient;
pub use sse::{SseEvent, SseParser};
pub use urls::{BbsUrlError, BbsUrls};
