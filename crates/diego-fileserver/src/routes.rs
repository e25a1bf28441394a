//! The file server's routes, shared by the server and the client.
//!
//! - `PUT /v1/blobs/{digest}`: the body is stored as blob `digest` (64 lowercase hex digits of
//!   its SHA-256, checked). `201` with `{"digest","size","created":true}` when new, `200` with
//!   `created: false` when it was already held (the body is then not read); `400` for a name
//!   that is not a digest, `413` past the upload limit, `422` when the body hashes otherwise.
//! - `POST /v1/blobs`: the body is stored under the digest it hashes to; answers as a `PUT`
//!   (for an uploader that cannot know the digest first, such as a staging container).
//! - `GET|HEAD /v1/blobs/{digest}`: the blob, `application/octet-stream`, with
//!   `ETag: "<digest>"`; `If-None-Match` naming it answers `304`; `404` when not held.
//! - `POST /v1/gc`: `{"keep":[digest…],"grace_seconds":N}` deletes every blob not in `keep`
//!   last written more than `grace_seconds` (default 600) ago; answers
//!   `{"deleted","freed_bytes","kept","kept_bytes"}`.
//! - `GET /v1/lifecycle`: `[{"name","digest","size"}]`, the lifecycle bundles served;
//!   `GET|HEAD /v1/lifecycle/{name}` one of them (`NAME.tgz`), with its digest as `ETag`.
//! - `GET /health`, `GET /metrics`.

pub const BLOBS: &str = "/v1/blobs";
pub const BLOB: &str = "/v1/blobs/{digest}";
pub const LIFECYCLE: &str = "/v1/lifecycle";
pub const LIFECYCLE_BUNDLE: &str = "/v1/lifecycle/{name}";
pub const GC: &str = "/v1/gc";
pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";

/// On every answer: the largest upload the server takes, so a client can refuse a larger one
/// before sending it (a server that refuses a body mid-upload closes the connection, and the
/// sender may see only that).
pub const MAX_UPLOAD_HEADER: &str = "x-diego-max-upload-bytes";

/// What a `413` says: `size` bytes (when known) over `limit`.
pub fn too_large_message(size: Option<u64>, limit: u64) -> String {
    let size = match size.filter(|n| *n > limit) {
        Some(n) => format!("{n} bytes"),
        None => "more bytes".into(),
    };
    format!("the upload has {size}, more than this file server's limit of {limit} bytes (--max-upload-bytes)")
}

/// A collection's grace period unless the request names one.
pub const DEFAULT_GC_GRACE_SECONDS: u64 = 600;

/// `/v1/blobs/<digest>`.
pub fn blob_path(digest: &crate::Digest) -> String {
    BLOB.replace("{digest}", &digest.hex())
}

/// `/v1/lifecycle/<name>`.
pub fn lifecycle_path(name: &str) -> String {
    LIFECYCLE_BUNDLE.replace("{name}", name)
}
