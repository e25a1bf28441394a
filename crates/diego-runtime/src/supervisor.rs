//! The ordered supervisor of a process's members.

use std::fmt::Display;
use std::future::Future;

use futures_util::future::select_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A member ended before shutdown was asked for; the others were stopped.
    #[error("{member} stopped unexpectedly: {reason}")]
    MemberDied { member: String, reason: String },
}

struct Member {
    name: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

/// Members of one process, started in order and stopped in reverse order. Each member is
/// a future given its own stop token; it must run until that token is cancelled. One ending
/// earlier — returning, failing or panicking — is a failure of the whole process.
pub struct Supervisor {
    shutdown: CancellationToken,
    members: Vec<Member>,
}

impl Supervisor {
    /// `shutdown` is the process's own stop (a signal); cancelling it stops every member.
    pub fn new(shutdown: CancellationToken) -> Self {
        Supervisor {
            shutdown,
            members: Vec::new(),
        }
    }

    /// Starts a member. Members spawned later are stopped earlier: spawn what others depend
    /// on first (the BBS before the cells that talk to it).
    pub fn spawn<F, Fut, E>(&mut self, name: impl Into<String>, member: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let stop = CancellationToken::new();
        let fut = member(stop.clone());
        self.add(name, stop, fut);
    }

    /// Starts a member already given its stop token (when others must hold that token before
    /// the member runs).
    pub fn add<Fut, E>(&mut self, name: impl Into<String>, stop: CancellationToken, member: Fut)
    where
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let task = tokio::spawn(async move { member.await.map_err(|e| e.to_string()) });
        self.members.push(Member {
            name: name.into(),
            stop,
            task,
        });
    }

    /// Waits for shutdown or for a member to end, then stops the rest in reverse start
    /// order, each after the one started after it has finished. `Err` names the member that
    /// ended on its own.
    pub async fn wait(mut self) -> Result<(), SupervisorError> {
        let mut failure = None;
        if !self.members.is_empty() {
            let ended = {
                let tasks = self.members.iter_mut().map(|m| &mut m.task);
                tokio::select! {
                    () = self.shutdown.cancelled() => None,
                    (outcome, i, _) = select_all(tasks) => Some((i, outcome)),
                }
            };
            if let Some((i, outcome)) = ended {
                let member = self.members.remove(i);
                let reason = match outcome {
                    Ok(Ok(())) => "it returned without being asked to stop".to_string(),
                    Ok(Err(e)) => e,
                    Err(join) => panic_text(join),
                };
                error!(member = %member.name, %reason, "a supervised member stopped; stopping the others");
                failure = Some(SupervisorError::MemberDied {
                    member: member.name,
                    reason,
                });
            }
        }
        while let Some(m) = self.members.pop() {
            m.stop.cancel();
            match m.task.await {
                Ok(Ok(())) => info!(member = %m.name, "stopped"),
                Ok(Err(e)) => error!(member = %m.name, error = %e, "failed while stopping"),
                Err(join) => error!(member = %m.name, reason = %panic_text(join), "failed while stopping"),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "it was cancelled".into();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into());
    format!("it panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Clone) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, move |s: &str| l.lock().unwrap().push(s.to_string()))
    }

    #[tokio::test]
    async fn shutdown_stops_members_in_reverse_start_order() {
        let (log, record) = recorder();
        let shutdown = CancellationToken::new();
        let mut sup = Supervisor::new(shutdown.clone());
        for name in ["bbs", "auctioneer", "cell"] {
            let record = record.clone();
            sup.spawn(name, move |stop| async move {
                stop.cancelled().await;
                record(name);
                Ok::<(), String>(())
            });
        }
        shutdown.cancel();
        sup.wait().await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["cell", "auctioneer", "bbs"]);
    }

    #[tokio::test]
    async fn a_failing_member_stops_the_others_and_is_named() {
        let (log, record) = recorder();
        let mut sup = Supervisor::new(CancellationToken::new());
        let r = record.clone();
        sup.spawn("server", move |stop| async move {
            stop.cancelled().await;
            r("server stopped");
            Ok::<(), String>(())
        });
        sup.spawn("presence", |_stop| async { Err::<(), _>("renewal refused") });
        let err = sup.wait().await.unwrap_err();
        assert_eq!(err.to_string(), "presence stopped unexpectedly: renewal refused");
        assert_eq!(*log.lock().unwrap(), ["server stopped"]);
    }

    #[tokio::test]
    async fn a_member_that_returns_or_panics_is_a_failure() {
        let mut sup = Supervisor::new(CancellationToken::new());
        sup.spawn("quitter", |_stop| async { Ok::<(), String>(()) });
        let err = sup.wait().await.unwrap_err();
        assert!(err.to_string().contains("returned without being asked"), "{err}");

        let mut sup = Supervisor::new(CancellationToken::new());
        sup.spawn("other", |stop| async move {
            stop.cancelled().await;
            Ok::<(), String>(())
        });
        sup.spawn("panicky", |_stop| async {
            if true {
                panic!("boom");
            }
            Ok::<(), String>(())
        });
        let err = sup.wait().await.unwrap_err();
        assert_eq!(err.to_string(), "panicky stopped unexpectedly: it panicked: boom");
    }
}
