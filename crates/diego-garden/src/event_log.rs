//! The history of one process's events, readable from the start by any number of attachers
//! while it grows. Backends append; `run` and `attach` hand out [`EventLog::stream`]s.

use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use tokio::sync::watch;

use crate::types::ProcessEvent;

#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<ProcessEvent>>>,
    /// The number of events appended so far; readers wait on it instead of polling.
    len: watch::Sender<usize>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    pub fn new() -> Self {
        Self {
            events: Arc::default(),
            len: watch::Sender::new(0),
        }
    }

    /// Appends an event. Nothing may follow an `Exited`; later events are dropped.
    pub fn push(&self, event: ProcessEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(events.last(), Some(ProcessEvent::Exited(_))) {
            return;
        }
        events.push(event);
        self.len.send_replace(events.len());
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<crate::ExitStatus> {
        match self.events.lock().unwrap_or_else(|p| p.into_inner()).last() {
            Some(ProcessEvent::Exited(s)) => Some(*s),
            _ => None,
        }
    }

    /// Every event from the first, then live ones, ending after `Exited`.
    pub fn stream(&self) -> BoxStream<'static, ProcessEvent> {
        let events = self.events.clone();
        let rx = self.len.subscribe();
        Box::pin(futures_util::stream::unfold(
            (events, rx, 0usize, false),
            |(events, mut rx, idx, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = events.lock().unwrap_or_else(|p| p.into_inner()).get(idx).cloned();
                    if let Some(e) = next {
                        let done = matches!(e, ProcessEvent::Exited(_));
                        return Some((e, (events, rx, idx + 1, done)));
                    }
                    // Nothing new yet: wait for an append (or for the log to be dropped).
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitStatus;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn late_readers_see_everything_and_live_readers_wait() {
        let log = EventLog::new();
        log.push(ProcessEvent::Stdout("a".into()));
        let live = log.stream();
        let reader = tokio::spawn(async move { live.collect::<Vec<_>>().await });
        tokio::task::yield_now().await;
        log.push(ProcessEvent::Stderr("b".into()));
        log.push(ProcessEvent::Exited(ExitStatus {
            code: 3,
            ..Default::default()
        }));
        log.push(ProcessEvent::Stdout("after exit is dropped".into()));
        let want = vec![
            ProcessEvent::Stdout("a".into()),
            ProcessEvent::Stderr("b".into()),
            ProcessEvent::Exited(ExitStatus {
                code: 3,
                ..Default::default()
            }),
        ];
        assert_eq!(reader.await.unwrap(), want);
        assert_eq!(
            log.stream().collect::<Vec<_>>().await,
            want,
            "a reader after the exit gets the whole history"
        );
        assert_eq!(log.exit_status().map(|s| s.code), Some(3));
    }
}
