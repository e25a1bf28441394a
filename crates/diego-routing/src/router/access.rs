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

impl AccessRecord {
    /// The app's RTR log line about this request (none when no instance answered: there is no
    /// app to give it to), in gorouter's access-log order.
    pub fn rtr_line(&self) -> Option<diego_logs::LogLine> {
        let b = self.backend.as_ref()?;
        let message = format!(
            "{host} - \"{method} {path} HTTP/1.1\" {status} {bytes} \"{client}\" \"{backend}\" \
             vcap_request_id:\"{id}\" response_time:{secs:.6} app_id:\"{app}\" app_index:\"{index}\" retries:{retries}",
            host = self.host,
            method = self.method,
            path = self.path,
            status = self.status,
            bytes = self.bytes,
            client = self.client,
            backend = b.address,
            id = self.request_id,
            secs = self.duration.as_secs_f64(),
            app = b.process_guid,
            index = b.index,
            retries = self.retries,
        );
        Some(diego_logs::LogLine::now(
            b.log_guid.clone(),
            diego_logs::source::RTR,
            u32::try_from(b.index).ok(),
            diego_logs::LogStream::Stdout,
            message,
        ))
    }
}

/// A hook that hands every answered request's RTR line to `sink` (a log shipper).
pub fn ship_to(sink: Arc<dyn diego_logs::LogSink>) -> AccessHook {
    Arc::new(move |record: &AccessRecord| {
        if let Some(line) = record.rtr_line() {
            sink.emit(line);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(backend: Option<BackendInfo>) -> AccessRecord {
        AccessRecord {
            host: "web.diego.localhost".into(),
            method: "GET".into(),
            path: "/a?b=1".into(),
            status: 200,
            bytes: 42,
            duration: Duration::from_micros(1_500),
            client: "127.0.0.1:50000".into(),
            request_id: "rid".into(),
            backend,
            retries: 1,
        }
    }

    #[test]
    fn rtr_lines_go_to_the_app_that_answered() {
        assert!(record(None).rtr_line().is_none());
        let sink = diego_logs::MemorySink::new();
        let hook = ship_to(sink.clone());
        hook(&record(Some(BackendInfo {
            address: "127.0.0.1:61001".into(),
            process_guid: "web".into(),
            index: 2,
            instance_guid: "ig".into(),
            log_guid: "web-logs".into(),
        })));
        hook(&record(None));
        let lines = sink.lines();
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(
            (l.log_guid.as_str(), l.source_type.as_str(), l.instance_index),
            ("web-logs", "RTR", Some(2))
        );
        assert_eq!(
            l.message,
            "web.diego.localhost - \"GET /a?b=1 HTTP/1.1\" 200 42 \"127.0.0.1:50000\" \"127.0.0.1:61001\" \
             vcap_request_id:\"rid\" response_time:0.001500 app_id:\"web\" app_index:\"2\" retries:1"
        );
    }
}
