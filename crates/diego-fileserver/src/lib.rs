//! The file server: content-addressed blobs — app packages, build caches, droplets — kept on
//! disk under their SHA-256 and served over HTTP, so no role ever reads another's files from a
//! shared path. The [`server`] is `diego file-server`; the [`client`] is how other roles (the
//! apps service, the CLI) upload and download.

pub mod blobs;
pub mod client;
pub mod digest;
pub mod lifecycle;
pub mod metrics;
pub mod routes;
pub mod server;

pub use client::{FileServerClient, FileServerError};
pub use digest::Digest;
