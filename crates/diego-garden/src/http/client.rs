//! [`GardenClient`]: a [`ContainerBackend`] that is a garden server elsewhere, so the executor
//! cannot tell a remote backend from a local one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::routes::{self, SignalRequest};
use super::wire;
use crate::{
    Capacity, ContainerBackend, ContainerInfo, ContainerMetrics, ContainerSpec, GardenError, ProcessSpec,
    ProcessStream, Properties, Signal, TarStream,
};

#[derive(Debug, Clone)]
pub struct GardenClient {
    base: Url,
    http: reqwest::Client,
}

impl GardenClient {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7777`, or with a path
    /// prefix), with the HTTP client every role starts from. No request timeout: event and
    /// file streams last as long as they need to.
    pub fn new(base_url: &str) -> Result<Self, GardenError> {
        Self::with_tls(base_url, None)
    }

    /// Like [`GardenClient::new`], over mutual TLS when `tls` is given (`base_url` is then
    /// `https://…`).
    pub fn with_tls(base_url: &str, tls: Option<&diego_runtime::tls::Tls>) -> Result<Self, GardenError> {
        let http = diego_runtime::http_client(tls)
            .build()
            .map_err(|e| GardenError::Unavailable(format!("building the HTTP client: {e}")))?;
        Self::with_http_client(base_url, http)
    }

    /// Like [`GardenClient::new`] with a caller-configured HTTP client (a request timeout set
    /// there would also cut event streams short).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self, GardenError> {
        let base = Url::parse(base_url)
            .map_err(|e| GardenError::Invalid(format!("garden server url {base_url:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(GardenError::Invalid(format!(
                "garden server url {base_url:?}: must be http(s)://host:port[/prefix]"
            )));
        }
        Ok(Self { base, http })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `template` with its placeholders filled, each value encoded as one path segment.
    fn url(&self, template: &str, params: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base url can be a base")
            .pop_if_empty()
            .extend(routes::fill(template, params));
        url
    }

    /// Sends the request; a non-2xx answer becomes the server's `GardenError`.
    async fn send(&self, req: RequestBuilder) -> Result<Response, GardenError> {
        let resp = req.send().await.map_err(|e| transport("sending request", &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, GardenError> {
        let resp = self.send(req).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport("reading response", &e))?;
        serde_json::from_slice(&body)
            .map_err(|e| GardenError::Unavailable(format!("garden server sent an unreadable response: {e}")))
    }

    fn process_stream(id: String, resp: Response) -> ProcessStream {
        ProcessStream {
            id,
            events: wire::decode_stream(resp.bytes_stream()),
        }
    }
}

/// A transport failure: the server may be down or restarting, so retrying may help.
fn transport(what: &str, e: &reqwest::Error) -> GardenError {
    // reqwest's Display hides the cause ("error sending request"); the chain says why.
    let mut msg = format!("garden server: {what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    GardenError::Unavailable(msg)
}

/// The server's error as it sent it; a body that is not one (a proxy's page, an old server)
/// is mapped by status.
async fn error_from(resp: Response) -> GardenError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if let Ok(err) = serde_json::from_slice::<GardenError>(&body) {
        return err;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let msg = format!("garden server answered {status}: {text}");
    match status {
        StatusCode::NOT_FOUND => GardenError::NotFound(msg),
        StatusCode::CONFLICT => GardenError::Exists(msg),
        s if s.is_client_error() => GardenError::Invalid(msg),
        _ => GardenError::Unavailable(msg),
    }
}

#[async_trait]
impl ContainerBackend for GardenClient {
    async fn ping(&self) -> Result<(), GardenError> {
        self.send(self.http.get(self.url(routes::PING, &[]))).await?;
        Ok(())
    }

    async fn capacity(&self) -> Result<Capacity, GardenError> {
        self.json(self.http.get(self.url(routes::CAPACITY, &[]))).await
    }

    async fn create(&self, spec: ContainerSpec) -> Result<ContainerInfo, GardenError> {
        self.json(self.http.post(self.url(routes::CONTAINERS, &[])).json(&spec))
            .await
    }

    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError> {
        let query: Vec<(String, &str)> = filter
            .iter()
            .map(|(k, v)| (format!("{}{k}", routes::PROPERTY_PREFIX), v.as_str()))
            .collect();
        self.json(self.http.get(self.url(routes::CONTAINERS, &[])).query(&query))
            .await
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError> {
        self.json(
            self.http
                .get(self.url(routes::CONTAINER_INFO, &[("handle", handle)])),
        )
        .await
    }

    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError> {
        let url = self.url(routes::CONTAINER_STOP, &[("handle", handle)]);
        self.send(self.http.post(url).query(&[("kill", kill)])).await?;
        Ok(())
    }

    async fn destroy(&self, handle: &str) -> Result<(), GardenError> {
        let url = self.url(routes::CONTAINER, &[("handle", handle)]);
        self.send(self.http.delete(url)).await?;
        Ok(())
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<ProcessStream, GardenError> {
        let url = self.url(routes::PROCESSES, &[("handle", handle)]);
        let resp = self.send(self.http.post(url).json(&spec)).await?;
        let id = resp
            .headers()
            .get(routes::PROCESS_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                GardenError::Unavailable(format!(
                    "garden server started a process without a {} header",
                    routes::PROCESS_ID_HEADER
                ))
            })?;
        Ok(Self::process_stream(id, resp))
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError> {
        let url = self.url(routes::PROCESS_ATTACH, &[("handle", handle), ("id", process_id)]);
        let resp = self.send(self.http.get(url)).await?;
        Ok(Self::process_stream(process_id.to_string(), resp))
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError> {
        let url = self.url(routes::PROCESS_SIGNAL, &[("handle", handle), ("id", process_id)]);
        self.send(self.http.post(url).json(&SignalRequest { signal }))
            .await?;
        Ok(())
    }

    async fn stream_in(&self, handle: &str, dst_path: &str, tar: TarStream) -> Result<(), GardenError> {
        let url = self.url(routes::FILES, &[("handle", handle)]);
        // If the caller's tar stream fails, the upload is aborted and reqwest only says so;
        // keep the stream's own error to report instead.
        let failed: Arc<Mutex<Option<GardenError>>> = Arc::default();
        let seen = failed.clone();
        let tar = tar.inspect(move |chunk| {
            if let Err(e) = chunk {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e.clone());
            }
        });
        let req = self
            .http
            .put(url)
            .query(&[("path", dst_path)])
            .body(reqwest::Body::wrap_stream(tar));
        match self.send(req).await {
            Ok(_) => Ok(()),
            Err(e) => Err(failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(e)),
        }
    }

    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError> {
        let url = self.url(routes::FILES, &[("handle", handle)]);
        let resp = self.send(self.http.get(url).query(&[("path", src_path)])).await?;
        Ok(Box::pin(resp.bytes_stream().map(|chunk| {
            chunk.map_err(|e| transport("reading the tar stream", &e))
        })))
    }

    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError> {
        self.json(self.http.post(self.url(routes::METRICS, &[])).json(handles))
            .await
    }
}
