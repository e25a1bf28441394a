//! One shape for the background work of every role.
//!
//! - [`Worker`]: a named loop that runs a pass on an interval and whenever it is woken,
//!   never two passes at once, counting passes and errors.
//! - [`Supervisor`]: a process's members under one cancellation token. A member that ends on
//!   its own (returns, fails or panics) stops the others, and the supervisor reports it so
//!   the process exits non-zero; on shutdown members stop in reverse start order.
//! - [`Lease`]: keeps a TTL'd registration (a lock, a cell presence) renewed every third of
//!   its TTL and knows when it is held.
//! - [`serve`] and [`http_client`]: the one HTTP server loop and the one HTTP-client builder
//!   every role uses, the seam where transport security goes. [`ServeLimits`] bounds how
//!   long the server waits for a request and how many connections it holds.
//! - [`tls`]: mutual TLS for that seam — a role's CA, certificate and key ([`tls::TlsFiles`])
//!   loaded into a [`tls::Tls`] that reloads when the files change, and `diego certs`'
//!   certificate making ([`tls::certs`]).
//! - [`metrics`]: a role's Prometheus registry, its HTTP request metrics (an axum layer keyed
//!   by route template) and its `/metrics` endpoint.
//!
//! Depends on no other crate of this workspace.

mod http;
mod lease;
pub mod metrics;
mod supervisor;
pub mod tls;
mod worker;

pub use http::{
    error_response, http_client, no_such_route, serve, Handler, ServeLimits, CLIENT_POOL_IDLE_TIMEOUT,
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, UNPROCESSED_HEADER,
};
pub use lease::{Lease, Renewal};
pub use supervisor::{Supervisor, SupervisorError};
pub use worker::{PassError, Waker, Worker, WorkerStats};
