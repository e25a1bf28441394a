//! The foundations of Diego's runc container backend (DESIGN §6, docs/060-garden.md): what a
//! container is made of on disk, before anything runs it.
//!
//! - [`rootfs`]: rootfs URLs (`preloaded:NAME`; `oci:///…` and `docker-archive:///…` are
//!   recognised but not yet supported) resolved to read-only base trees in a store directory —
//!   `preloaded:busybox` is built from the `busybox-static` package on first use.
//! - [`overlay`]: each container's copy-on-write root, an overlayfs over the base; with a disk
//!   limit its writable layer sits on a sparse, loop-mounted ext4 image ([`overlay::disk`]).
//! - [`bundle`]: the OCI `config.json` of a container (namespaces, cgroup limits, non-root
//!   default user, no new privileges, masked paths, seccomp), as a pure function; [`oci`] is the
//!   subset of the runtime spec it writes; [`user`] resolves process users.
//! - [`runc`] and [`cgroup`]: the runc command line with a private state dir, and cleanup of
//!   the `/diego/<handle>` cgroups runc leaves behind.
//!
//! - [`backend`]: [`RuncBackend`], the `diego_garden::ContainerBackend` on these pieces — a
//!   detached idle init per container, processes as foreground `runc exec --process` children
//!   of the server feeding event logs, host `kill` for signals, host `tar` for streaming.
//! - [`netin`]: net-in port mapping, a userspace proxy from a host port into `127.0.0.1` in the
//!   container's network namespace (a thread per container joins it with `setns`).
//!
//! Still to come: surviving restarts of the cell agent (today all state is in memory and a
//! restarted server neither rediscovers containers nor re-attaches to processes; the plan is
//! a per-container supervisor that owns the processes and their event logs); `grace_time_ms`;
//! local OCI images; user namespaces for unprivileged containers.
//!
//! Privileged work goes through host commands (`mount`, `umount`, `mkfs.ext4`, `losetup`,
//! `runc`, `tar`): the workspace denies `unsafe`, so there is no libc here (only `nix`'s safe
//! `setns` for net-in). Depends on `diego-garden` for the API types only; must not depend on the
//! executor, the BBS or the store.

pub mod backend;
pub mod bundle;
pub mod cgroup;
mod host;
pub mod netin;
pub mod oci;
pub mod overlay;
pub mod rootfs;
pub mod runc;
pub mod user;

pub use backend::{RuncBackend, RuncConfig};
pub use bundle::{config, write_config, BundleError};
pub use overlay::{Overlay, OverlayError};
pub use rootfs::{RootfsError, RootfsStore, RootfsUrl};
pub use runc::Runc;
pub use user::User;
