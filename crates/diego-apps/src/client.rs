//! Talking to the apps service (the CLI's `diego app …`).

use serde::de::DeserializeOwned;

use crate::model::{AppSpec, Build};
use crate::routes;
use crate::service::{AppView, Info, PackageAnswer, SyncReport};

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("apps service at {url} unreachable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The service refused the request; `message` is its own words.
    #[error("{message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("the apps service sent {what} that could not be read: {reason}")]
    Decode { what: String, reason: String },
}

impl AppsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, AppsError::Refused { status: 404, .. })
    }
}

#[derive(Clone)]
pub struct AppsClient {
    url: String,
    http: reqwest::Client,
}

impl AppsClient {
    pub fn new(url: impl Into<String>, tls: Option<&diego_runtime::tls::Tls>) -> Result<Self, AppsError> {
        let url = url.into().trim_end_matches('/').to_string();
        let http = diego_runtime::http_client(tls)
            .build()
            .map_err(|e| AppsError::Unavailable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(AppsClient { url, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, AppsError> {
        let resp = req.send().await.map_err(|e| AppsError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| AppsError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Err(AppsError::Refused {
                status: status.as_u16(),
                kind: v["type"].as_str().unwrap_or_default().to_string(),
                message: v["message"].as_str().map(str::to_string).unwrap_or(text),
            });
        }
        let text = if text.is_empty() { "null".to_string() } else { text };
        serde_json::from_str(&text).map_err(|e| AppsError::Decode {
            what: what.into(),
            reason: e.to_string(),
        })
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn info(&self) -> Result<Info, AppsError> {
        self.send(self.http.get(self.at(routes::INFO)), "its info").await
    }

    pub async fn list(&self) -> Result<Vec<AppView>, AppsError> {
        self.send(self.http.get(self.at(routes::APPS)), "a list of apps")
            .await
    }

    pub async fn get(&self, name: &str) -> Result<AppView, AppsError> {
        self.send(self.http.get(self.at(&routes::app_path(name))), "an app")
            .await
    }

    /// Creates the app or changes the fields `spec` gives.
    pub async fn put(&self, name: &str, spec: &AppSpec) -> Result<AppView, AppsError> {
        self.send(
            self.http.put(self.at(&routes::app_path(name))).json(spec),
            "an app",
        )
        .await
    }

    pub async fn delete(&self, name: &str) -> Result<(), AppsError> {
        self.send::<()>(self.http.delete(self.at(&routes::app_path(name))), "a deletion")
            .await
    }

    /// Gives the app the package `digest` (on the file server already); stages it unless the
    /// droplet came from the same bits.
    pub async fn package(
        &self,
        name: &str,
        digest: &diego_fileserver::Digest,
    ) -> Result<PackageAnswer, AppsError> {
        let body = serde_json::json!({ "digest": digest });
        self.send(
            self.http.post(self.at(&routes::packages_path(name))).json(&body),
            "a package answer",
        )
        .await
    }

    pub async fn build(&self, name: &str, guid: &str) -> Result<Build, AppsError> {
        self.send(self.http.get(self.at(&routes::build_path(name, guid))), "a build")
            .await
    }

    pub async fn restart(&self, name: &str) -> Result<AppView, AppsError> {
        self.send(self.http.post(self.at(&routes::restart_path(name))), "an app")
            .await
    }

    pub async fn collect(
        &self,
        grace_seconds: Option<u64>,
    ) -> Result<diego_fileserver::blobs::GcReport, AppsError> {
        let body = serde_json::json!({ "grace_seconds": grace_seconds });
        self.send(
            self.http.post(self.at(routes::GC)).json(&body),
            "a collection report",
        )
        .await
    }

    pub async fn sync(&self) -> Result<SyncReport, AppsError> {
        self.send(self.http.post(self.at(routes::SYNC)), "a sync report")
            .await
    }
}
