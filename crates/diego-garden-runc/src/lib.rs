//! The foundations of Diego's runc container backend (DESIGN §6, docs/060-garden.md): what a
//! container is made of on disk, before anything runs it.
//!
//! - [`rootfs`]: rootfs URLs (`preloaded:NAME`, `oci:///…`, `docker-archive:///…`) resolved to
//!   read-only base trees in a store directory — `preloaded:busybox` is built from the
//!   `busybox-static` package on first use; [`image`] unpacks local OCI layouts and `docker save`
//!   tarballs (digests verified, whiteouts applied, paths confined to the root) once per image.
//! - [`overlay`]: each container's copy-on-write root, an overlayfs over the base; with a disk
//!   limit its writable layer sits on a sparse, loop-mounted ext4 image ([`overlay::disk`]).
//! - [`bundle`]: the OCI `config.json` of a container (namespaces, cgroup limits, non-root
//!   default user, no new privileges, masked paths, seccomp), as a pure function; [`oci`] is the
//!   subset of the runtime spec it writes; [`user`] resolves process users.
//! - [`runc`] and [`cgroup`]: the runc command line with a private state dir, and cleanup of
//!   the `/diego/<handle>` cgroups runc leaves behind.
//!
//! - [`backend`]: [`RuncBackend`], the `diego_garden::ContainerBackend` on these pieces — a
//!   detached idle init per container, a [`shim`] per process (its supervisor, outliving the
//!   server: output and exit status in files), a record per container, so that
//!   [`RuncBackend::open`] takes over a depot after the server was killed.
//! - [`netin`]: net-in port mapping, a userspace proxy from a host port into `127.0.0.1` in the
//!   container's network namespace (a thread joins it with `setns`), run for each container by
//!   a [proxy process](netin::proxy) of its own that, like a shim, outlives the server.
//!
//! Still to come: `grace_time_ms`; user namespaces for unprivileged containers.
//!
//! Privileged work goes through host commands (`mount`, `umount`, `mkfs.ext4`, `losetup`,
//! `runc`, `tar`): the workspace
//! denies `unsafe`, so there is no libc here (only `nix`'s safe `setns` for net-in). Image
//! layers are the exception to host `tar`: they are applied in-process (the `tar` crate) because
//! whiteouts and digest checks need every entry. Depends on `diego-garden` for the API types only;
//! must not depend on the executor, the BBS or the store.

pub mod backend;
pub mod bundle;
pub mod cgroup;
mod host;
pub mod image;
pub mod netin;
pub mod oci;
pub mod overlay;
pub mod rootfs;
pub mod runc;
pub mod shim;
pub mod user;

pub use backend::{Recovered, RuncBackend, RuncConfig};
pub use bundle::{config, write_config, BundleError};
pub use image::{Image, ImageError, ImageFormat};
pub use overlay::{Overlay, OverlayError};
pub use rootfs::{RootfsError, RootfsStore, RootfsUrl};
pub use runc::Runc;
pub use shim::ShimCommand;
pub use user::User;
