//! Reading a log server: recent lines, and follow streams over SSE.

use std::collections::VecDeque;
use std::time::Duration;

use diego_client::sse::SseParser;

use crate::line::LogLine;
use crate::query::LogQuery;
use crate::routes;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// Nothing answered at the URL.
    #[error("log server at {url} unreachable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The server refused the request (bad filters).
    #[error("log server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The answer was not what the protocol says.
    #[error("log server sent {what} that could not be read: {reason}")]
    Decode { what: String, reason: String },
}

/// What a follow stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    Lines(Vec<LogLine>),
    /// Lines the server evicted before this follower could read them.
    Dropped(u64),
}

#[derive(Clone)]
pub struct LogsClient {
    url: String,
    http: reqwest::Client,
}

impl LogsClient {
    pub fn new(url: impl Into<String>) -> Result<Self, LogsError> {
        Self::with_tls(url, None)
    }

    /// Like [`LogsClient::new`], over mutual TLS when `tls` is given (`url` is then
    /// `https://…`).
    pub fn with_tls(
        url: impl Into<String>,
        tls: Option<&diego_runtime::tls::Tls>,
    ) -> Result<Self, LogsError> {
        let url = url.into().trim_end_matches('/').to_string();
        let http = diego_runtime::http_client(tls)
            .build()
            .map_err(|e| LogsError::Unavailable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(LogsClient { url, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unavailable(&self, e: reqwest::Error) -> LogsError {
        LogsError::Unavailable {
            url: self.url.clone(),
            reason: format!("{e:#}"),
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &LogQuery,
        last_event_id: Option<u64>,
    ) -> Result<reqwest::Response, LogsError> {
        let mut req = self.http.get(format!("{}{path}", self.url)).query(query);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.map_err(|e| self.unavailable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or(text);
        Err(LogsError::Refused { status, message })
    }

    /// The most recent lines of `log_guid` matching `query`, oldest first.
    pub async fn recent(&self, log_guid: &str, query: &LogQuery) -> Result<Vec<LogLine>, LogsError> {
        let resp = self
            .get(&routes::logs_path(routes::LOGS, log_guid), query, None)
            .await?;
        let body = resp.bytes().await.map_err(|e| self.unavailable(e))?;
        let mut lines = Vec::new();
        for raw in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines.push(decode(raw)?);
        }
        Ok(lines)
    }

    /// Opens a follow stream of `log_guid`; with `last_event_id` it resumes after that line
    /// (what [`Follow::last_event_id`] of an earlier stream said).
    pub async fn follow(
        &self,
        log_guid: &str,
        query: &LogQuery,
        last_event_id: Option<u64>,
    ) -> Result<Follow, LogsError> {
        let resp = self
            .get(&routes::logs_path(routes::FOLLOW, log_guid), query, last_event_id)
            .await?;
        Ok(Follow {
            url: self.url.clone(),
            resp,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            last_event_id,
        })
    }

    /// Whether the server answers its health route within `timeout`.
    pub async fn healthy(&self, timeout: Duration) -> bool {
        let req = self
            .http
            .get(format!("{}{}", self.url, routes::HEALTH))
            .timeout(timeout);
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }
}

fn decode(raw: &[u8]) -> Result<LogLine, LogsError> {
    serde_json::from_slice(raw).map_err(|e| LogsError::Decode {
        what: format!("a line ({})", String::from_utf8_lossy(&raw[..raw.len().min(80)])),
        reason: e.to_string(),
    })
}

/// An open follow stream.
pub struct Follow {
    url: String,
    resp: reqwest::Response,
    parser: SseParser,
    ready: VecDeque<FollowEvent>,
    last_event_id: Option<u64>,
}

impl Follow {
    /// The next event; `None` when the server ended the stream (it stopped).
    pub async fn next(&mut self) -> Result<Option<FollowEvent>, LogsError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            let chunk = match self.resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(LogsError::Unavailable {
                        url: self.url.clone(),
                        reason: format!("follow stream broke: {e:#}"),
                    })
                }
            };
            for frame in self.parser.feed(&chunk) {
                match frame.event.as_str() {
                    routes::EVENT_LINES => {
                        let mut lines = Vec::new();
                        for raw in frame.data.split('\n').filter(|l| !l.is_empty()) {
                            lines.push(decode(raw.as_bytes())?);
                        }
                        if let Some(id) = frame.id {
                            self.last_event_id = Some(id);
                        }
                        self.ready.push_back(FollowEvent::Lines(lines));
                    }
                    routes::EVENT_DROPPED => {
                        let count = serde_json::from_str::<serde_json::Value>(&frame.data)
                            .ok()
                            .and_then(|v| v.get("count")?.as_u64())
                            .ok_or_else(|| LogsError::Decode {
                                what: "a dropped frame".into(),
                                reason: frame.data.clone(),
                            })?;
                        self.ready.push_back(FollowEvent::Dropped(count));
                    }
                    _ => {}
                }
            }
        }
    }

    /// The seq of the last line delivered (to resume from with [`LogsClient::follow`]).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }
}
