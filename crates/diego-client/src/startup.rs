//! Starting against a BBS that is not answering yet.
//!
//! On a cluster the roles start in no particular order (one host boots before another, an
//! operator restarts the BBS while cells come up), so a cell's or an agent's first request to
//! the BBS is repeated for a while when nothing answers or the BBS says it is unavailable (a
//! passive BBS, one still opening its store). A refusal (4xx) is an answer and ends the wait
//! at once, and so does the wait's end: a wrong `--bbs` still says so.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ClientError;

/// How long a role's start waits for the BBS by default.
pub const DEFAULT_BBS_WAIT: Duration = Duration::from_secs(30);

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether an error means "the BBS is not serving yet" rather than "the BBS said no".
pub fn not_serving_yet(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } | ClientError::Unreachable { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::Decode { .. } => false,
    }
}

/// Runs `attempt` until it succeeds, fails with an answer, `wait` has passed, or `stop` is
/// cancelled; returns the last result. `what` names the request in the one warning logged
/// when the first attempt fails.
pub async fn while_starting<T, F, Fut>(
    what: &str,
    wait: Duration,
    stop: &CancellationToken,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = FIRST_PAUSE;
    let mut warned = false;
    loop {
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        if !not_serving_yet(&err) || now >= deadline || stop.is_cancelled() {
            return Err(err);
        }
        if !warned {
            warned = true;
            warn!(error = %err, wait = ?wait, "{what}: the BBS is not serving yet; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            _ = stop.cancelled() => return Err(err),
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api(status: u16) -> ClientError {
        ClientError::from_answer(status, b"", false)
    }

    #[test]
    fn only_a_bbs_not_serving_is_waited_for() {
        for (e, wait) in [
            (api(503), true),
            (api(500), true),
            (api(400), false),
            (api(404), false),
            (api(409), false),
            (ClientError::Unreachable { attempts: vec![] }, true),
        ] {
            assert_eq!(not_serving_yet(&e), wait, "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_until_an_answer_and_stops_at_a_refusal_or_the_deadline() {
        let stop = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let got = while_starting("t", Duration::from_secs(30), &stop, || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(api(503)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);

        tries.store(0, Ordering::SeqCst);
        let refused: Result<(), _> = while_starting("t", Duration::from_secs(30), &stop, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(api(400))
        })
        .await;
        assert_eq!(refused.unwrap_err().status(), Some(400));
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        let started = tokio::time::Instant::now();
        let gave_up: Result<(), _> =
            while_starting("t", Duration::from_secs(5), &stop, || async { Err(api(503)) }).await;
        assert_eq!(gave_up.unwrap_err().status(), Some(503));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        stop.cancel();
        let tries = AtomicU32::new(0);
        let r: Result<(), _> = while_starting("t", Duration::from_secs(30), &stop, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(api(503))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
