//! The app lifecycle: what runs inside a staging container (the builder, Diego's tailor) and
//! inside an app's container (the launcher, Diego's soldier).
//!
//! - [`archive`]: a directory tree as a gzipped tar that depends only on its content (app
//!   packages, lifecycle bundles).
//! - [`procfile`]: a `Procfile`'s processes.
//! - [`release`]: the `default_process_types` a buildpack's `bin/release` prints.
//! - [`builder`]: the buildpack sequence over an app's directory — `bin/detect` of each in
//!   order until one accepts, then its `bin/supply`, `bin/finalize` and `bin/release` — and the
//!   start command it settles on, as a [`builder::StagingResult`].
//! - [`droplet`]: the staged app as one gzipped tar (`app/`, `deps/`, `profile.d/`, the
//!   staging result).
//! - [`launch`]: how the launcher starts the droplet's command (profiles sourced, `exec`).
//! - [`env`]: an app's environment — what its desired LRP carries (`PORT`, `MEMORY_LIMIT`,
//!   `VCAP_APPLICATION`, the user's variables), what the launcher adds from the cell's
//!   variables — and the names users may not set.

pub mod archive;
pub mod builder;
pub mod droplet;
pub mod env;
pub mod launch;
pub mod procfile;
pub mod release;
