//! Talking to a file server: upload what it lacks, download with the checksum checked.

use bytes::Bytes;

use crate::blobs::{GcReport, Stored};
use crate::digest::Digest;
use crate::routes;

/// Why a file-server call failed.
#[derive(Debug, thiserror::Error)]
pub enum FileServerError {
    /// Nothing answered at the URL.
    #[error("file server at {url} unreachable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The server refused the request; `message` is its own words.
    #[error("file server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// No such blob.
    #[error("the file server holds no blob {0}")]
    NotFound(Digest),
    /// What came back is not what was asked for.
    #[error("the file server sent {what}")]
    Corrupt { what: String },
}

#[derive(Clone)]
pub struct FileServerClient {
    url: String,
    http: reqwest::Client,
}

impl FileServerClient {
    pub fn new(url: impl Into<String>) -> Result<Self, FileServerError> {
        Self::with_tls(url, None)
    }

    /// Like [`FileServerClient::new`], over mutual TLS when `tls` is given.
    pub fn with_tls(
        url: impl Into<String>,
        tls: Option<&diego_runtime::tls::Tls>,
    ) -> Result<Self, FileServerError> {
        let url = url.into().trim_end_matches('/').to_string();
        let http = diego_runtime::http_client(tls)
            .build()
            .map_err(|e| FileServerError::Unavailable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(FileServerClient { url, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `url` of blob `d`: what a container's Download action fetches.
    pub fn blob_url(&self, d: &Digest) -> String {
        format!("{}{}", self.url, routes::blob_path(d))
    }

    /// Where a container's Upload action POSTs a blob whose digest it does not know.
    pub fn blobs_url(&self) -> String {
        format!("{}{}", self.url, routes::BLOBS)
    }

    /// `url` of lifecycle bundle `name` (`NAME.tgz`).
    pub fn lifecycle_url(&self, name: &str) -> String {
        format!("{}{}", self.url, routes::lifecycle_path(name))
    }

    /// The lifecycle bundles served.
    pub async fn lifecycle(&self) -> Result<Vec<crate::lifecycle::BundleInfo>, FileServerError> {
        let resp = self
            .http
            .get(format!("{}{}", self.url, routes::LIFECYCLE))
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        Self::answer(resp, "a list of lifecycle bundles").await
    }

    fn unavailable(&self, e: &reqwest::Error) -> FileServerError {
        FileServerError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    async fn refused(resp: reqwest::Response) -> FileServerError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        FileServerError::Refused { status, message }
    }

    /// A success's JSON body (`what` it is, for the error), or the refusal.
    async fn answer<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
        what: &str,
    ) -> Result<T, FileServerError> {
        if !resp.status().is_success() {
            return Err(Self::refused(resp).await);
        }
        resp.json().await.map_err(|e| FileServerError::Corrupt {
            what: format!("{what} that could not be read: {e}"),
        })
    }

    /// Whether blob `d` is held, and the server's upload limit when it says.
    async fn probe(&self, d: &Digest) -> Result<(bool, Option<u64>), FileServerError> {
        let resp = self
            .http
            .head(self.blob_url(d))
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        let limit = resp
            .headers()
            .get(routes::MAX_UPLOAD_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match resp.status().as_u16() {
            200 => Ok((true, limit)),
            404 => Ok((false, limit)),
            _ => Err(Self::refused(resp).await),
        }
    }

    /// Whether blob `d` is held.
    pub async fn has(&self, d: &Digest) -> Result<bool, FileServerError> {
        Ok(self.probe(d).await?.0)
    }

    /// Stores `bytes` as a blob unless the server holds it already (then nothing is sent). An
    /// upload over the server's limit is refused as the server would, without sending it.
    pub async fn upload(&self, bytes: Bytes) -> Result<Stored, FileServerError> {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        let (held, limit) = self.probe(&digest).await?;
        if held {
            return Ok(Stored {
                digest,
                size,
                created: false,
            });
        }
        if let Some(limit) = limit.filter(|l| size > *l) {
            return Err(FileServerError::Refused {
                status: 413,
                message: routes::too_large_message(Some(size), limit),
            });
        }
        let resp = self
            .http
            .put(self.blob_url(&digest))
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        Self::answer(resp, "an upload answer").await
    }

    /// Blob `d`, checked against its digest.
    pub async fn download(&self, d: &Digest) -> Result<Bytes, FileServerError> {
        let resp = self
            .http
            .get(self.blob_url(d))
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(FileServerError::NotFound(*d)),
            _ => return Err(Self::refused(resp).await),
        }
        let bytes = resp.bytes().await.map_err(|e| self.unavailable(&e))?;
        let got = Digest::of(&bytes);
        if got != *d {
            return Err(FileServerError::Corrupt {
                what: format!("blob {d} with content hashing to {got}"),
            });
        }
        Ok(bytes)
    }

    /// Deletes every blob not in `keep` older than `grace_seconds` (the server's default
    /// when `None`).
    pub async fn collect(
        &self,
        keep: &[Digest],
        grace_seconds: Option<u64>,
    ) -> Result<GcReport, FileServerError> {
        let body = serde_json::json!({"keep": keep, "grace_seconds": grace_seconds});
        let resp = self
            .http
            .post(format!("{}{}", self.url, routes::GC))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        Self::answer(resp, "a collection report").await
    }
}
