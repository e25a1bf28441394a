//! Typed HTTP clients for Diego's services, and the route constants servers share.
//!
//! Depends on `diego-model` only among our crates. Key types: [`BbsClient`],
//! [`ClientError`], [`routes`].

pub mod routes;
