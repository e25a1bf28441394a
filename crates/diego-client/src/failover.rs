//! Failing over between the BBS processes of a [`BbsUrls`] list.
//!
//! A client sticks to the BBS that last answered. When an attempt fails, [`classify`] says
//! what the failure proves about the request and [`retry_next`] whether the request may go
//! to the next BBS at once, given how safe repeating it is ([`Retry`]). Both are pure; the
//! table is in docs/165-high-availability.md.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ClientError, Result};
use crate::http::Api;
use crate::urls::BbsUrls;

/// What a failed attempt proves about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No server acted on it: the connection was refused or timed out, or the server answered
    /// that it did not process it (a 503 with [`diego_runtime::UNPROCESSED_HEADER`]).
    NotSent,
    /// It was sent and the answer was lost (a timeout after sending, a reset mid-response, a
    /// broken body): it may have been applied.
    AnswerLost,
    /// A 503 from the BBS itself (its store did not answer in time): a write may or may not
    /// have been applied; a read can be asked elsewhere.
    Unavailable,
    /// The BBS answered (any other error status, or a body that does not decode): final.
    Answered,
}

/// How safe it is to send a request again, to another BBS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating leaves the same state (reads; a PATCH of absolute values; a lock or
    /// presence renewal; a domain upsert; a delete): repeated after any failure but an answer.
    Idempotent,
    /// A write the API refuses to apply twice (creating a record under a caller-chosen
    /// guid): repeated after a lost answer too, and the caller turns a refusal of the repeat
    /// into success when the stored record is the one it sent.
    Resend,
    /// Anything else: repeated only when it was not sent.
    Once,
}

/// The failure an attempt's error proves.
pub fn classify(e: &ClientError) -> Failure {
    match e {
        ClientError::Transport { source, .. } if source.is_connect() => Failure::NotSent,
        ClientError::Transport { .. } => Failure::AnswerLost,
        ClientError::Api {
            unprocessed: true, ..
        } => Failure::NotSent,
        ClientError::Api { status: 503, .. } => Failure::Unavailable,
        ClientError::Api { .. } | ClientError::Decode { .. } | ClientError::Unreachable { .. } => {
            Failure::Answered
        }
    }
}

/// Whether a request sent under `retry` goes on to the next BBS after `failure`.
pub fn retry_next(failure: Failure, retry: Retry) -> bool {
    match (failure, retry) {
        (Failure::NotSent, _) => true,
        (Failure::AnswerLost | Failure::Unavailable, Retry::Idempotent | Retry::Resend) => true,
        (Failure::AnswerLost | Failure::Unavailable, Retry::Once) => false,
        (Failure::Answered, _) => false,
    }
}

/// The retry class of a plain request by its method: POSTs are sent once (each handler that
/// can be repeated says so itself); the others are idempotent by HTTP's definition and this
/// API's use of them.
pub fn retry_for(method: &Method) -> Retry {
    if method == Method::POST {
        Retry::Once
    } else {
        Retry::Idempotent
    }
}

/// The outcome of a request over the list.
pub(crate) struct Sent<T> {
    pub result: Result<T>,
    /// The request went to another BBS after an attempt whose answer was lost, so an earlier
    /// attempt may have been applied.
    pub resent: bool,
}

/// The BBS processes of one client and which of them it sticks to. Clones share both.
#[derive(Debug, Clone)]
pub(crate) struct Failover {
    apis: Arc<[Api]>,
    urls: BbsUrls,
    current: Arc<AtomicUsize>,
}

impl Failover {
    pub(crate) fn new(urls: BbsUrls, http: reqwest::Client) -> Self {
        let apis: Vec<Api> = urls.iter().map(|u| Api::new(u, http.clone())).collect();
        Failover {
            apis: apis.into(),
            urls,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn urls(&self) -> &BbsUrls {
        &self.urls
    }

    /// The BBS the next request goes to first.
    pub(crate) fn current(&self) -> &Api {
        &self.apis[self.current.load(Ordering::Relaxed) % self.apis.len()]
    }

    /// Sends with `attempt` to the current BBS and, while [`retry_next`] allows, to each next
    /// one once. The BBS that answers (success or an error answer) becomes the current one.
    pub(crate) async fn run<T, F, Fut>(&self, retry: Retry, attempt: F) -> Sent<T>
    where
        F: Fn(Api) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let n = self.apis.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut resent = false;
        let mut failures: Vec<ClientError> = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let result = attempt(self.apis[i].clone()).await;
            let failure = match &result {
                Ok(_) => None,
                Err(e) => Some(classify(e)),
            };
            match failure {
                None | Some(Failure::Answered) => {
                    self.settle(start, i);
                    return Sent { result, resent };
                }
                Some(f) if k + 1 < n && retry_next(f, retry) => {
                    if f != Failure::NotSent {
                        resent = true;
                    }
                    if let Err(e) = result {
                        tracing::debug!(error = %e, next = %self.apis[(i + 1) % n].base_url(), "BBS failed; trying the next");
                        failures.push(e);
                    }
                }
                Some(f) => {
                    if f == Failure::Unavailable {
                        // It answered; it only could not finish.
                        self.settle(start, i);
                    } else if n > 1 {
                        // Start the next request elsewhere.
                        self.settle(start, (i + 1) % n);
                    }
                    let result = match result {
                        Err(e) if !failures.is_empty() && retry_next(f, retry) => {
                            failures.push(e);
                            Err(ClientError::Unreachable { attempts: failures })
                        }
                        other => other,
                    };
                    return Sent { result, resent };
                }
            }
        }
        unreachable!("the last attempt always returns")
    }

    fn settle(&self, was: usize, now: usize) {
        if was != now {
            let _ = self
                .current
                .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed);
            tracing::info!(bbs = %self.apis[now].base_url(), "now talking to this BBS");
        }
    }

    pub(crate) async fn send<B, Q, T>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<T>
    where
        B: Serialize + ?Sized,
        Q: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.send_with(retry_for(&method), method, path, body, query)
            .await
            .result
    }

    pub(crate) async fn send_with<B, Q, T>(
        &self,
        retry: Retry,
        method: Method,
        path: String,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Sent<T>
    where
        B: Serialize + ?Sized,
        Q: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.run(retry, |api| {
            let (method, path) = (method.clone(), path.clone());
            async move { api.send(method, path, body, query).await }
        })
        .await
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        self.send(Method::GET, path, None::<&()>, None::<&()>).await
    }

    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: String,
        body: &B,
    ) -> Result<T> {
        self.send(Method::POST, path, Some(body), None::<&()>).await
    }

    pub(crate) async fn post_empty<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        self.send(Method::POST, path, None::<&()>, None::<&()>).await
    }

    pub(crate) async fn send_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<()> {
        self.send_no_content_with(retry_for(&method), method, path, body)
            .await
            .result
    }

    pub(crate) async fn send_no_content_with<B: Serialize + ?Sized>(
        &self,
        retry: Retry,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Sent<()> {
        self.run(retry, |api| {
            let (method, path) = (method.clone(), path.clone());
            async move { api.send_no_content(method, path, body).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diego_model::{ApiError, ErrorType};

    fn api(status: u16, unprocessed: bool) -> ClientError {
        ClientError::Api {
            status,
            error: ApiError::new(ErrorType::UnknownError, "x"),
            unprocessed,
        }
    }

    /// A real reqwest error of each transport kind, from sockets on loopback.
    async fn transport_errors() -> (ClientError, ClientError) {
        use tokio::io::AsyncReadExt as _;
        // Refused: a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/v1/ping");
        let refused = http.get(&url).send().await.unwrap_err();
        // Lost: a server that reads the request and closes without answering.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        });
        let lost = http
            .post(format!("http://{addr}/v1/tasks"))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        let wrap = |source, url: &str| ClientError::Transport {
            method: "POST".into(),
            url: url.into(),
            source,
        };
        (wrap(refused, &url), wrap(lost, &addr.to_string()))
    }

    #[tokio::test]
    async fn classifies_each_kind_of_failure() {
        let (refused, lost) = transport_errors().await;
        let decode = ClientError::Decode {
            what: "x".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        let cases = [
            (refused, Failure::NotSent),
            (lost, Failure::AnswerLost),
            (api(503, true), Failure::NotSent),
            (api(503, false), Failure::Unavailable),
            (api(409, false), Failure::Answered),
            (api(500, false), Failure::Answered),
            (api(404, false), Failure::Answered),
            (decode, Failure::Answered),
        ];
        for (e, want) in cases {
            assert_eq!(classify(&e), want, "{e}");
        }
    }

    #[test]
    fn which_failures_go_to_the_next_bbs() {
        use Failure::*;
        use Retry::*;
        let table = [
            (NotSent, Idempotent, true),
            (NotSent, Resend, true),
            (NotSent, Once, true),
            (AnswerLost, Idempotent, true),
            (AnswerLost, Resend, true),
            (AnswerLost, Once, false),
            (Unavailable, Idempotent, true),
            (Unavailable, Resend, true),
            (Unavailable, Once, false),
            (Answered, Idempotent, false),
            (Answered, Resend, false),
            (Answered, Once, false),
        ];
        for (failure, retry, want) in table {
            assert_eq!(retry_next(failure, retry), want, "{failure:?} under {retry:?}");
        }
        assert_eq!(retry_for(&Method::POST), Once);
        for m in [Method::GET, Method::PATCH, Method::DELETE, Method::PUT] {
            assert_eq!(retry_for(&m), Idempotent, "{m}");
        }
    }

    #[tokio::test]
    async fn sticks_to_the_bbs_that_answered() {
        let urls = BbsUrls::new(["http://a:1", "http://b:2", "http://c:3"]).unwrap();
        let f = Failover::new(urls, reqwest::Client::new());
        // a refuses, b answers: b becomes current; the next request starts at b.
        let seen = std::sync::Mutex::new(Vec::new());
        let sent = f
            .run(Retry::Once, |api| {
                let url = api.base_url().to_string();
                seen.lock().unwrap().push(url.clone());
                async move {
                    if url == "http://a:1" {
                        Err(api_unprocessed())
                    } else {
                        Ok(url)
                    }
                }
            })
            .await;
        assert_eq!(sent.result.unwrap(), "http://b:2");
        assert!(!sent.resent, "an unprocessed request was not sent");
        assert_eq!(f.current().base_url(), "http://b:2");
        // Every one failing: one error naming each attempt.
        let sent: Sent<()> = f
            .run(Retry::Idempotent, |_| async { Err(api_unprocessed()) })
            .await;
        match sent.result {
            Err(ClientError::Unreachable { attempts }) => assert_eq!(attempts.len(), 3),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        // An answer (an error status) is final: no other BBS is asked.
        let calls = AtomicUsize::new(0);
        let sent: Sent<()> = f
            .run(Retry::Idempotent, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(api(409, false)) }
            })
            .await;
        assert!(matches!(sent.result, Err(ClientError::Api { status: 409, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn api_unprocessed() -> ClientError {
        api(503, true)
    }
}
