//! The download step: fetches an archive over HTTP, checks its checksum, and extracts it into
//! the container at `to` through the backend's `stream_in` (a tar stream; gzip is unwrapped
//! first).
//!
//! Diego's texts, logged only when `artifact` is set: `Downloading X...`, `Downloaded X (54.2M)`;
//! failures are emittable `Downloading X failed` (or `Downloading failed`) and
//! `Copying X into the container failed: <err>`, also logged on stderr.
//!
//! Phase 1 limits: no cache (`cache_key` is ignored), the body is held in memory, only sha256
//! checksums, no zip archives.

use std::io::Read;

use async_trait::async_trait;
use bytes::Bytes;
use diego_model::action::DownloadAction;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Step, StepContext, StepError};

pub struct DownloadStep {
    action: DownloadAction,
    ctx: StepContext,
}

/// Longest error line logged (Diego truncates too: a bad URL can echo a huge body).
const MAX_ERROR_LINE: usize = 1024;

impl DownloadStep {
    pub fn new(action: DownloadAction, ctx: StepContext) -> Self {
        Self { action, ctx }
    }

    fn progress(&self, message: String) {
        if !self.action.artifact.is_empty() {
            self.ctx.streamer.stdout(&message);
        }
    }

    fn fail(&self, message: String, cause: &str) -> StepError {
        tracing::warn!(from = %self.action.from, to = %self.action.to, cause, "download failed");
        let mut line = message.clone();
        if line.len() > MAX_ERROR_LINE {
            let mut cut = MAX_ERROR_LINE - " (error truncated)".len();
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" (error truncated)");
        }
        self.ctx.streamer.stderr(&line);
        StepError::Emittable(message)
    }

    /// The archive as a tar stream, checksum verified.
    async fn fetch(&self) -> Result<Bytes, String> {
        let response = self
            .ctx
            .http
            .get(&self.action.from)
            .send()
            .await
            .map_err(|e| format!("fetching {}: {e}", self.action.from))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("fetching {}: HTTP {status}", self.action.from));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading {}: {e}", self.action.from))?;
        verify_checksum(
            &self.action.checksum_algorithm,
            &self.action.checksum_value,
            &body,
        )?;
        to_tar(body).await
    }
}

fn verify_checksum(algorithm: &str, expected: &str, body: &[u8]) -> Result<(), String> {
    if algorithm.is_empty() && expected.is_empty() {
        return Ok(());
    }
    let actual = match algorithm.to_ascii_lowercase().as_str() {
        "sha256" => hex(&Sha256::digest(body)),
        other => return Err(format!("checksum algorithm {other:?} is not supported yet")),
    };
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(format!(
            "checksum mismatch: {algorithm} is {actual}, expected {expected}"
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Gzip is unwrapped (on a blocking thread); zip is refused; anything else is taken as tar.
async fn to_tar(body: Bytes) -> Result<Bytes, String> {
    if body.starts_with(&[0x1f, 0x8b]) {
        return tokio::task::spawn_blocking(move || {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut tar)
                .map(|_| Bytes::from(tar))
                .map_err(|e| format!("gunzip: {e}"))
        })
        .await
        .map_err(|e| format!("gunzip: {e}"))?;
    }
    if body.starts_with(b"PK\x03\x04") {
        return Err("zip archives are not supported yet".into());
    }
    Ok(body)
}

/// Bytes as Cloud Foundry's `bytefmt` prints them: `512B`, `1K`, `1.5K`, `54.2M`.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (size, unit) in UNITS {
        if bytes >= size {
            let value = format!("{:.1}", bytes as f64 / size as f64);
            return format!("{}{unit}", value.trim_end_matches(".0"));
        }
    }
    format!("{bytes}B")
}

#[async_trait]
impl Step for DownloadStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let artifact = &self.action.artifact;
        self.progress(format!("Downloading {artifact}..."));
        let tar = tokio::select! {
            res = self.fetch() => res,
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
        };
        let tar = match tar {
            Ok(t) => t,
            Err(cause) => {
                let message = if artifact.is_empty() {
                    "Downloading failed".to_string()
                } else {
                    format!("Downloading {artifact} failed")
                };
                return Err(self.fail(message, &cause));
            }
        };
        let size = tar.len() as u64;
        let stream: diego_garden::TarStream = Box::pin(futures_util::stream::once(async move { Ok(tar) }));
        if let Err(err) = self
            .ctx
            .backend
            .stream_in(&self.ctx.handle, &self.action.to, stream)
            .await
        {
            let message = if artifact.is_empty() {
                format!("Copying into the container failed: {err}")
            } else {
                format!("Copying {artifact} into the container failed: {err}")
            };
            return Err(self.fail(message, &err.to_string()));
        }
        if size == 0 {
            self.progress(format!("Downloaded {artifact}"));
        } else {
            self.progress(format!("Downloaded {artifact} ({})", byte_size(size)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use diego_garden::ContainerBackend;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::steps::testing::Harness;

    /// Serves `body` at `/ok` and 404 elsewhere, for as many requests as come.
    async fn serve(body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = conn.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    }
                    let (status, body) = if req.starts_with(b"GET /ok ") {
                        ("200 OK", body)
                    } else {
                        ("404 Not Found", b"nope".to_vec())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    conn.write_all(head.as_bytes()).await.unwrap();
                    conn.write_all(&body).await.unwrap();
                });
            }
        });
        format!("http://{addr}")
    }

    fn download(base: &str, path: &str, artifact: &str) -> DownloadAction {
        DownloadAction {
            artifact: artifact.into(),
            from: format!("{base}{path}"),
            to: "/home/vcap".into(),
            ..Default::default()
        }
    }

    async fn streamed_in(h: &Harness) -> Vec<u8> {
        let mut out = h.backend.stream_out("c", "/home/vcap").await.unwrap();
        let mut data = Vec::new();
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        data
    }

    #[tokio::test]
    async fn a_tgz_is_unwrapped_checked_and_streamed_in() {
        let tar = b"pretend this is a tar stream".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let tgz = gz.finish().unwrap();
        let sha = hex(&Sha256::digest(&tgz));
        let base = serve(tgz).await;
        let h = Harness::by_path().await;
        let mut a = download(&base, "/ok", "droplet");
        a.checksum_algorithm = "sha256".into();
        a.checksum_value = sha;
        DownloadStep::new(a, h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(streamed_in(&h).await, tar);
        assert_eq!(
            h.sink.messages(),
            ["Downloading droplet...", "Downloaded droplet (2.7K)"]
        );
    }

    #[tokio::test]
    async fn failures_use_diegos_texts() {
        let base = serve(b"plain tar".to_vec()).await;
        let h = Harness::by_path().await;
        let err = DownloadStep::new(download(&base, "/missing", "droplet"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Downloading droplet failed".into()));
        assert_eq!(
            h.sink.messages(),
            ["Downloading droplet...", "Downloading droplet failed"]
        );

        let h = Harness::by_path().await;
        let mut a = download(&base, "/ok", "");
        a.checksum_algorithm = "sha256".into();
        a.checksum_value = "00".into();
        let err = DownloadStep::new(a, h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Downloading failed".into()));
        assert_eq!(
            h.sink.messages(),
            ["Downloading failed"],
            "no progress without an artifact"
        );

        let h = Harness::by_path().await;
        h.backend.destroy("c").await.unwrap();
        let err = DownloadStep::new(download(&base, "/ok", "lifecycle"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.emittable().unwrap(),
            "Copying lifecycle into the container failed: not found: container \"c\""
        );
    }

    #[test]
    fn checksums_and_sizes() {
        assert!(verify_checksum("", "", b"x").is_ok());
        let sha = hex(&Sha256::digest(b"x"));
        assert!(verify_checksum("SHA256", &sha.to_uppercase(), b"x").is_ok());
        assert!(verify_checksum("sha256", &sha, b"y")
            .unwrap_err()
            .starts_with("checksum mismatch"));
        assert!(verify_checksum("md5", "abc", b"x")
            .unwrap_err()
            .contains("not supported"));
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1024, "1K"),
            (1536, "1.5K"),
            (56_832_819, "54.2M"),
        ];
        for (n, want) in cases {
            assert_eq!(byte_size(n), want);
        }
    }
}
