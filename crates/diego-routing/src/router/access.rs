//! One access record per request: logged under the `access` target when the response is
//! done (its last byte sent, or the client gone), and handed to the router's hook.

use std::sync::Arc;
use std::time::Duration;

/// Called with every access record, e.g. to ship RTR lines to the logs server under the
/// endpoint's `log_guid`. It runs on the request path: it must not block.
pub type AccessHook = Arc<dyn Fn(&AccessRecord) + Send + Sync>;

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    pub host: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// From the request's arrival until its response ended.
    pub duration: Duration,
    pub client: String,
    pub request_id: String,
    /// The instance that answered, when one did.
    pub backend: Option<BackendInfo>,
    /// Attempts made again on another instance after a connect failure.
    pub retries: u32,
}

/// The instance of an access record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub address: String,
    pub process_guid: String,
    pub index: i32,
    pub instance_guid: String,
    pub log_guid: String,
}

impl AccessRecord {
    /// Logs the record (target `access`) and hands it to `hook`.
    pub fn emit(&self, hook: Option<&AccessHook>) {
        let (address, index) = match &self.backend {
            Some(b) => (b.address.as_str(), b.index),
            None => ("-", -1),
        };
        tracing::info!(
            target: "access",
            host = %self.host,
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.duration.as_secs_f64() * 1e3,
            backend = address,
            index,
            request_id = %self.request_id,
            client = %self.client,
            retries = self.retries,
            "request"
        );
        if let Some(hook) = hook {
            hook(self);
        }
    }
}
