//! The container API over HTTP: a server generic over any backend and a client that is itself a backend.
//!
//! - [`routes`]: the route table, shared by both sides so paths cannot drift.
//! - [`server`]: [`server::router`] / [`server::serve`] expose a [`crate::DynBackend`].
//! - [`client`]: [`client::GardenClient`] implements [`crate::ContainerBackend`] against a server.
//! - [`wire`]: the binary framing of process event streams.
//!
//! Errors travel as the JSON of [`crate::GardenError`] with status 404 (`NotFound`), 409
//! (`Exists`), 400 (`Invalid`) or 503 (`Unavailable`); the client turns them back into the same
//! variant and message.

pub mod client;
pub mod routes;
pub mod server;
pub mod wire;
