//! The cell side: a [`LogSink`] that ships lines to a log server in batches over one kept-alive
//! connection, and never blocks the writer.
//!
//! `emit` only decides (in [`ShipState`], under a short lock) and queues; a [`Worker`] sends.
//! It is woken when the queue turns non-empty and sends batches until the queue is empty, so
//! under load lines gather into large batches while one is in flight, and a lone line goes out
//! at once. It also runs every [`ShipperConfig::retry_interval`] to emit due notices and, while
//! the server is unreachable, to ask its `/health` whether it is back. The drop rules and
//! notices are in [`state`].

pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diego_runtime::{PassError, Waker, Worker};
use tokio_util::sync::CancellationToken;

use crate::line::{now_ns, LogLine};
use crate::routes;
use crate::sink::LogSink;
pub use state::{Counts, Drop, Limits, Offer, ShipState};

/// `--log-lines-per-second`'s default: lines per second per log guid on one cell.
pub const DEFAULT_LINES_PER_SECOND: u32 = 1_000;

/// Bytes of lines a cell holds for the server at most (16 MiB).
pub const DEFAULT_BUFFER_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// The log server, `http://HOST:PORT`.
    pub url: String,
    /// Lines per second per log guid; 0 = no limit.
    pub lines_per_second: u32,
    pub buffer_bytes: usize,
    /// Largest batch, in lines and in bytes.
    pub batch_lines: usize,
    pub batch_bytes: usize,
    /// How often notices are emitted and an unreachable server is asked again.
    pub retry_interval: Duration,
    /// How often a log guid over the rate limit gets a notice.
    pub notice_interval: Duration,
    /// Longest wait for the server to take a batch.
    pub request_timeout: Duration,
    /// Mutual TLS to the log server (`url` is then `https://…`); `None` speaks plain HTTP.
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl ShipperConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ShipperConfig {
            url: url.into().trim_end_matches('/').to_string(),
            lines_per_second: DEFAULT_LINES_PER_SECOND,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            batch_lines: 5_000,
            batch_bytes: 4 << 20,
            retry_interval: Duration::from_secs(1),
            notice_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Failures building a shipper.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("log server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

pub struct Shipper {
    config: ShipperConfig,
    state: Mutex<ShipState>,
    waker: Waker,
    http: reqwest::Client,
}

impl LogSink for Shipper {
    fn emit(&self, line: LogLine) {
        let offer = self.lock().offer(line, Instant::now());
        if offer == (Offer::Queued { first: true }) {
            self.waker.wake();
        }
    }
}

impl Shipper {
    /// A shipper to `config.url` and its sending loop, which runs until `shutdown` (then sends
    /// what is queued, for at most a couple of seconds, and ends).
    pub fn start(
        config: ShipperConfig,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Shipper>, tokio::task::JoinHandle<()>), ShipperError> {
        let bad = |reason: String| ShipperError::BadUrl {
            url: config.url.clone(),
            reason,
        };
        let parsed = reqwest::Url::parse(&config.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://".into()));
        }
        let http = diego_runtime::http_client(config.tls.as_ref())
            .pool_max_idle_per_host(1)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let worker = Worker::new("log-shipper").every(config.retry_interval);
        let shipper = Arc::new(Shipper {
            state: Mutex::new(ShipState::new(Limits {
                lines_per_second: config.lines_per_second,
                buffer_bytes: config.buffer_bytes,
                notice_interval: config.notice_interval,
            })),
            config,
            waker: worker.waker(),
            http,
        });
        let s = shipper.clone();
        let task = tokio::spawn(async move {
            let _ = worker
                .run(shutdown, || {
                    let s = s.clone();
                    async move { s.pass().await }
                })
                .await;
            // Last lines of a stopping cell: one more try, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.pass()).await;
        });
        Ok((shipper, task))
    }

    fn lock(&self) -> MutexGuard<'_, ShipState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was queued, sent and dropped so far.
    pub fn counts(&self) -> Counts {
        self.lock().counts()
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Sends until the queue is empty, or finds out whether an unreachable server is back.
    async fn pass(&self) -> Result<(), PassError> {
        if !self.lock().reachable() {
            if self.probe().await.is_err() {
                return Ok(());
            }
            tracing::info!(url = %self.config.url, "log server reachable again");
            self.lock().reachable_again();
        }
        loop {
            let batch = {
                let mut st = self.lock();
                st.tick(Instant::now(), now_ns());
                st.take_batch(self.config.batch_lines, self.config.batch_bytes)
            };
            if batch.is_empty() {
                return Ok(());
            }
            match self.post(&batch).await {
                Ok(()) => self.lock().sent(batch.len()),
                Err(e) => {
                    tracing::warn!(url = %self.config.url, error = %e, lines = batch.len(), "log server unreachable; dropping log lines until it answers");
                    self.lock().failed(batch);
                    return Err(PassError::retry(e));
                }
            }
        }
    }

    async fn post(&self, batch: &[LogLine]) -> Result<(), String> {
        let mut body = Vec::with_capacity(batch.len() * 160);
        for l in batch {
            serde_json::to_writer(&mut body, l).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        let resp = self
            .http
            .post(format!("{}{}", self.config.url, routes::LINES))
            .header(reqwest::header::CONTENT_TYPE, routes::NDJSON)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{status}: {text}"));
        }
        // Read the answer so the connection goes back to the pool.
        let _ = resp.bytes().await;
        Ok(())
    }

    async fn probe(&self) -> Result<(), reqwest::Error> {
        self.http
            .get(format!("{}{}", self.config.url, routes::HEALTH))
            .send()
            .await?
            .error_for_status()
            .map(|_| ())
    }
}
