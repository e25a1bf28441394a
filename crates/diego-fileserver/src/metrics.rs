//! The file server's Prometheus metrics, served at `/metrics` through `diego_runtime::metrics`
//! (with the request metrics `fileserver_requests_total` and
//! `fileserver_request_duration_seconds`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `fileserver_uploads_total` | counter | uploads stored as new blobs |
//! | `fileserver_uploads_existing_total` | counter | uploads of blobs already held (not stored again) |
//! | `fileserver_uploads_refused_total` | counter | uploads refused: too large, wrong checksum, cut off |
//! | `fileserver_upload_bytes_total` | counter | bytes stored by uploads |
//! | `fileserver_downloads_total` | counter | blobs served (`GET` with a body) |
//! | `fileserver_not_modified_total` | counter | `304` answers to `If-None-Match` |
//! | `fileserver_gc_deleted_total` | counter | blobs deleted by garbage collection |
//! | `fileserver_blobs` | gauge | blobs held |
//! | `fileserver_blob_bytes` | gauge | bytes held in blobs |

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The prefix of the file server's metric names.
pub const PREFIX: &str = "fileserver";

#[derive(Default, Clone)]
pub struct Metrics {
    pub uploads: Counter,
    pub uploads_existing: Counter,
    pub uploads_refused: Counter,
    pub upload_bytes: Counter,
    pub downloads: Counter,
    pub not_modified: Counter,
    pub gc_deleted: Counter,
    pub blobs: Gauge<i64, AtomicI64>,
    pub blob_bytes: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// Registers these metrics in `r` (the role registry, which adds the prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register("uploads", "Uploads stored as new blobs", self.uploads.clone());
        r.register(
            "uploads_existing",
            "Uploads of blobs already held (not stored again)",
            self.uploads_existing.clone(),
        );
        r.register(
            "uploads_refused",
            "Uploads refused: too large, wrong checksum or cut off",
            self.uploads_refused.clone(),
        );
        r.register(
            "upload_bytes",
            "Bytes stored by uploads",
            self.upload_bytes.clone(),
        );
        r.register("downloads", "Blobs served", self.downloads.clone());
        r.register(
            "not_modified",
            "Answers 304 to If-None-Match",
            self.not_modified.clone(),
        );
        r.register(
            "gc_deleted",
            "Blobs deleted by garbage collection",
            self.gc_deleted.clone(),
        );
        r.register("blobs", "Blobs held", self.blobs.clone());
        r.register("blob_bytes", "Bytes held in blobs", self.blob_bytes.clone());
    }

    pub fn build(&self) -> std::sync::Arc<diego_runtime::metrics::Metrics> {
        let mut b = diego_runtime::metrics::Metrics::builder(PREFIX);
        self.register(b.role());
        b.build()
    }
}
