//! Log lines of apps and cells, end to end (diego-spec §7.2).
//!
//! - [`line`]: the [`LogLine`] (log guid, source type, instance index, stream, timestamp,
//!   message) and its JSON shape, a product contract.
//! - [`sink`]: the [`LogSink`] interface writers hand lines to, the [`LogStreamer`] that tags
//!   a container's output, [`LineBuffer`] (bytes to lines) and [`MemorySink`] for tests.
//! - [`shipper`]: the cell side, a sink that batches lines to a log server without ever
//!   blocking the writer (drops, rate limit and their notices).
//! - [`server`]: `diego logs-server`, a bounded history per log guid ([`store`], made durable
//!   by the [`journal`]), recent reads and SSE follow streams, `/health` and `/metrics`.
//! - [`client`]: reading recent lines and following.
//! - [`routes`]: the route paths, defined once for all of the above.
//!
//! Depends on `diego-runtime` (the one server loop and client builder) and `diego-client` (SSE
//! framing) only; never on the executor or the rep, which depend on it.

pub mod client;
pub mod journal;
pub mod line;
pub mod metrics;
pub mod query;
pub mod routes;
pub mod server;
pub mod shipper;
pub mod sink;
pub mod store;

pub use client::{Follow, FollowEvent, LogsClient, LogsError};
pub use line::{source, LogLine, LogStream, DEFAULT_LOG_SOURCE, MAX_MESSAGE_BYTES};
pub use query::LogQuery;
pub use server::{RunningServer, ServerConfig, ServerError};
pub use shipper::{Shipper, ShipperConfig};
pub use sink::{LineBuffer, LogSink, LogStreamer, MemorySink};
