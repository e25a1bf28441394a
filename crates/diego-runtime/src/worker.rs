//! Workers: named loops that run one pass at a time.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Why a pass did not finish. A retryable failure is counted and logged and the next pass
/// runs as usual; a fatal one ends the worker (and, under a [`crate::Supervisor`], its
/// process).
#[derive(Debug)]
pub struct PassError {
    fatal: bool,
    message: String,
}

impl PassError {
    pub fn retry(e: impl Display) -> Self {
        PassError {
            fatal: false,
            message: e.to_string(),
        }
    }

    pub fn fatal(e: impl Display) -> Self {
        PassError {
            fatal: true,
            message: e.to_string(),
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.fatal
    }
}

impl Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PassError {}

/// Wakes a worker for a pass now. Wakes that arrive during a pass are folded into one
/// further pass right after it.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// What a worker has done, readable while it runs (metrics, tests).
#[derive(Debug, Default)]
pub struct WorkerStats {
    passes: AtomicU64,
    errors: AtomicU64,
}

impl WorkerStats {
    /// Passes finished, failed ones included.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Passes that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// A named loop running a pass at start, every `interval` (if any) and whenever woken.
pub struct Worker {
    name: &'static str,
    interval: Option<Duration>,
    waker: Waker,
    stats: Arc<WorkerStats>,
}

impl Worker {
    pub fn new(name: &'static str) -> Self {
        Worker {
            name,
            interval: None,
            waker: Waker::default(),
            stats: Arc::default(),
        }
    }

    /// Also run a pass this long after the previous one ended.
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs passes until `shutdown` is cancelled (a pass in progress is finished first) or a
    /// pass fails fatally.
    pub async fn run<F, Fut>(self, shutdown: CancellationToken, mut pass: F) -> Result<(), PassError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), PassError>>,
    {
        let name = self.name;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let started = tokio::time::Instant::now();
            let outcome = pass().await;
            let n = self.stats.passes.fetch_add(1, Ordering::Relaxed) + 1;
            let took_ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok(()) => debug!(worker = name, pass = n, took_ms, "pass done"),
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if e.fatal {
                        tracing::error!(worker = name, pass = n, error = %e, "pass failed fatally; the worker stops");
                        return Err(e);
                    }
                    warn!(worker = name, pass = n, took_ms, error = %e, "pass failed");
                }
            }
            let tick = async {
                match self.interval {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.waker.0.notified() => {}
                () = tick => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_on_the_interval_and_when_woken() {
        let worker = Worker::new("t").every(Duration::from_secs(30));
        let waker = worker.waker();
        let stats = worker.stats();
        let shutdown = CancellationToken::new();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let task = tokio::spawn(worker.run(shutdown.clone(), move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "one pass at start");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "one pass per interval");
        waker.wake();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count.load(Ordering::SeqCst), 3, "a wake runs a pass at once");
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(stats.passes(), 3);
        assert_eq!(stats.errors(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_during_a_pass_fold_into_one_more_and_passes_never_overlap() {
        let worker = Worker::new("t");
        let waker = worker.waker();
        let shutdown = CancellationToken::new();
        let running = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let (r, c) = (running.clone(), count.clone());
        let task = tokio::spawn(worker.run(shutdown.clone(), move || {
            let (r, c) = (r.clone(), c.clone());
            async move {
                assert_eq!(r.fetch_add(1, Ordering::SeqCst), 0, "passes overlap");
                tokio::time::sleep(Duration::from_secs(5)).await;
                c.fetch_add(1, Ordering::SeqCst);
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..10 {
            waker.wake();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "the first pass and one folded re-run"
        );
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_counted_and_a_fatal_one_ends_the_worker() {
        let worker = Worker::new("t").every(Duration::from_secs(1));
        let stats = worker.stats();
        let mut n = 0;
        let result = worker
            .run(CancellationToken::new(), move || {
                n += 1;
                let n = n;
                async move {
                    match n {
                        1 | 2 => Err(PassError::retry("flaky")),
                        3 => Ok(()),
                        _ => Err(PassError::fatal("broken")),
                    }
                }
            })
            .await;
        let e = result.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.to_string(), "broken");
        assert_eq!(stats.passes(), 4);
        assert_eq!(stats.errors(), 3);
    }
}
