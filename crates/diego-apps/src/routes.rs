//! The apps service's routes, shared by the service and its client.
//!
//! - `GET /v1/info`: `{"file_server_url","logs_url","router_url","domain","default_stack",
//!   "buildpacks"}` — what a pushing client needs to know.
//! - `GET /v1/apps`; `GET|PUT|DELETE /v1/apps/{name}`: list, one app with its instances, create
//!   or change (fields left out keep their value), delete (its LRP and routes go at once, its
//!   blobs at the next collection).
//! - `POST /v1/apps/{name}/packages` `{"digest"}`: the app's bits, already on the file server;
//!   stages them unless the droplet was staged from the same bits (`202` with the build, or
//!   `200` and `"staging":false`).
//! - `GET /v1/apps/{name}/builds/{guid}`: a staging's state.
//! - `POST /v1/apps/{name}/restart`: new instances replace the old.
//! - `POST /v1/staging/{guid}/completed`: the staging Task's completion callback (the BBS).
//! - `POST /v1/gc` `{"grace_seconds"}`: collect the file server's blobs no app refers to.
//! - `POST /v1/sync`: run the sync now.
//! - `GET /health`, `GET /metrics`.

pub const INFO: &str = "/v1/info";
pub const APPS: &str = "/v1/apps";
pub const APP: &str = "/v1/apps/{name}";
pub const PACKAGES: &str = "/v1/apps/{name}/packages";
pub const BUILD: &str = "/v1/apps/{name}/builds/{guid}";
pub const RESTART: &str = "/v1/apps/{name}/restart";
pub const STAGING_COMPLETED: &str = "/v1/staging/{guid}/completed";
pub const GC: &str = "/v1/gc";
pub const SYNC: &str = "/v1/sync";
pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";

/// Where `diego apps` listens unless told otherwise (and `diego dev`'s apps service).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8893";

pub fn app_path(name: &str) -> String {
    APP.replace("{name}", name)
}

pub fn packages_path(name: &str) -> String {
    PACKAGES.replace("{name}", name)
}

pub fn build_path(name: &str, guid: &str) -> String {
    BUILD.replace("{name}", name).replace("{guid}", guid)
}

pub fn restart_path(name: &str) -> String {
    RESTART.replace("{name}", name)
}

pub fn staging_completed_path(guid: &str) -> String {
    STAGING_COMPLETED.replace("{guid}", guid)
}
