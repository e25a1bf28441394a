//! The JSON-over-HTTP plumbing every client shares: a base URL, a pooled reqwest client,
//! requests with a timeout, and non-success answers turned into [`ClientError::Api`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ClientError, Result};

/// Time for a whole ordinary request unless a client sets another.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One server's base URL and the connection pool to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    base: String,
    pub(crate) http: reqwest::Client,
    timeout: Duration,
}

impl Api {
    /// `base_url` like `http://127.0.0.1:8889` (a trailing `/` is ignored).
    pub(crate) fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let base = base_url.into().trim_end_matches('/').to_string();
        Api {
            base,
            http,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same server with another per-request timeout.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        self.send(Method::GET, path, None::<&()>, None::<&()>).await
    }

    pub(crate) fn request<B: Serialize + ?Sized, Q: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> RequestBuilder {
        let mut req = self.http.request(method, url).timeout(self.timeout);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req
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
        let url = self.url(&path);
        let m = method.to_string();
        let resp = execute(self.request(method, &url, body, query), &m, &url).await?;
        let resp = check_status(resp, &m, &url).await?;
        let bytes = resp.bytes().await.map_err(|source| transport(source, &m, &url))?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            what: format!("the response to {m} {url}"),
            source,
        })
    }

    /// For routes that answer 204 (or any success whose body the caller does not need).
    pub(crate) async fn send_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<()> {
        let url = self.url(&path);
        let m = method.to_string();
        let resp = execute(self.request(method, &url, body, None::<&()>), &m, &url).await?;
        check_status(resp, &m, &url).await?;
        Ok(())
    }
}

pub(crate) fn transport(source: reqwest::Error, method: &str, url: &str) -> ClientError {
    ClientError::Transport {
        method: method.to_string(),
        url: url.to_string(),
        source,
    }
}

pub(crate) async fn execute(req: RequestBuilder, method: &str, url: &str) -> Result<Response> {
    req.send().await.map_err(|source| transport(source, method, url))
}

pub(crate) async fn check_status(resp: Response, method: &str, url: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let unprocessed = resp
        .headers()
        .get(diego_runtime::UNPROCESSED_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = resp
        .bytes()
        .await
        .map_err(|source| transport(source, method, url))?;
    Err(ClientError::from_answer(status.as_u16(), &body, unprocessed))
}
