//! The upload step (diego-spec §2, UploadAction): streams `from` out of the container (the
//! backend's `stream_out`, a tar stream), takes the first entry, which must be a regular file,
//! and POSTs its content as the request body to `to`. A relative `from` is relative to the
//! user's home (`/home/vcap` for the default user, `/root` for root, `/home/<user>` otherwise,
//! as the preloaded root filesystems lay them out).
//!
//! Texts: `Uploading X...` and `Uploaded X (1.5K)` on stdout when `artifact` is set; a failure
//! is the emittable `Uploading X failed` (`Uploading failed` without an artifact), logged on
//! stderr followed by its cause. Any 2xx answer is success.

use std::io::{Seek, SeekFrom};

use async_trait::async_trait;
use diego_model::action::UploadAction;
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::download::byte_size;
use super::{Step, StepContext, StepError};

pub struct UploadStep {
    action: UploadAction,
    ctx: StepContext,
}

impl UploadStep {
    pub fn new(action: UploadAction, ctx: StepContext) -> Self {
        Self { action, ctx }
    }

    /// `from` as an absolute path in the container.
    fn source(&self) -> String {
        let from = &self.action.from;
        if from.starts_with('/') {
            return from.clone();
        }
        let home = match self.action.user.as_str() {
            "" | "vcap" => "/home/vcap".to_string(),
            "root" => "/root".to_string(),
            user => format!("/home/{user}"),
        };
        format!("{home}/{}", from.trim_start_matches("./"))
    }

    /// Copies the file out to a temporary file and uploads it; the size uploaded.
    async fn upload(&self) -> Result<u64, String> {
        let source = self.source();
        let mut tar = self
            .ctx
            .backend
            .stream_out(&self.ctx.handle, &source)
            .await
            .map_err(|e| format!("streaming {source} out of the container: {e}"))?;
        let spooled = tempfile::tempfile().map_err(|e| format!("creating a temporary file: {e}"))?;
        let mut out = tokio::fs::File::from_std(
            spooled
                .try_clone()
                .map_err(|e| format!("creating a temporary file: {e}"))?,
        );
        while let Some(chunk) = tar.next().await {
            let chunk = chunk.map_err(|e| format!("streaming {source} out of the container: {e}"))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("spooling {source}: {e}"))?;
        }
        out.flush().await.map_err(|e| format!("spooling {source}: {e}"))?;
        drop(out);
        let (content, size) = tokio::task::spawn_blocking(move || first_file(spooled))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading {source} from the container's tar stream: {e}"))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(content),
            64 * 1024,
        ));
        let url = &self.action.to;
        let response = self
            .ctx
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("uploading to {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("uploading to {url}: HTTP {status}"));
        }
        Ok(size)
    }
}

/// The content of the first entry of the tar in `spooled`, copied to a new temporary file, and
/// its size (blocking).
fn first_file(mut spooled: std::fs::File) -> std::io::Result<(std::fs::File, u64)> {
    use std::io::{Error, ErrorKind};
    spooled.seek(SeekFrom::Start(0))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(spooled));
    let mut entries = archive.entries()?;
    let mut entry = entries
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "the tar stream is empty"))??;
    let kind = entry.header().entry_type();
    if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("it is not a regular file (tar entry type {:?})", kind),
        ));
    }
    let mut content = tempfile::tempfile()?;
    let size = std::io::copy(&mut entry, &mut content)?;
    content.seek(SeekFrom::Start(0))?;
    Ok((content, size))
}

#[async_trait]
impl Step for UploadStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let artifact = &self.action.artifact;
        if !artifact.is_empty() {
            self.ctx.streamer.stdout(&format!("Uploading {artifact}..."));
        }
        let result = tokio::select! {
            res = self.upload() => res,
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
        };
        match result {
            Ok(size) => {
                if !artifact.is_empty() {
                    self.ctx
                        .streamer
                        .stdout(&format!("Uploaded {artifact} ({})", byte_size(size)));
                }
                Ok(())
            }
            Err(cause) => {
                tracing::warn!(from = %self.action.from, to = %self.action.to, %cause, "upload failed");
                let message = if artifact.is_empty() {
                    "Uploading failed".to_string()
                } else {
                    format!("Uploading {artifact} failed")
                };
                self.ctx.streamer.stderr(&message);
                self.ctx.streamer.stderr(&cause);
                Err(StepError::Emittable(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use diego_garden::ContainerBackend;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::archive::tests::{raw_tar, Raw};
    use crate::steps::testing::Harness;

    /// Accepts POSTs, keeping each body; answers `status`.
    async fn receiver(status: &'static str) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let kept = got.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let n = conn.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    };
                    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
                    assert!(head.starts_with("post "), "{head}");
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    while req.len() < head_end + len {
                        let n = conn.read(&mut buf).await.unwrap();
                        req.extend_from_slice(&buf[..n]);
                    }
                    kept.lock().unwrap().push(req[head_end..].to_vec());
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    conn.write_all(resp.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{addr}/droplet"), got)
    }

    async fn put(h: &Harness, path: &str, tar: Vec<u8>) {
        let stream: diego_garden::TarStream =
            Box::pin(futures_util::stream::once(
                async move { Ok(bytes::Bytes::from(tar)) },
            ));
        h.backend.stream_in("c", path, stream).await.unwrap();
    }

    #[tokio::test]
    async fn the_first_file_is_posted_with_diegos_texts() {
        let (url, got) = receiver("201 Created").await;
        let h = Harness::by_path().await;
        let content = vec![42u8; 1536];
        put(
            &h,
            "/home/vcap/out.bin",
            raw_tar(&[Raw::File("out.bin", &content)]),
        )
        .await;
        let a = UploadAction {
            artifact: "droplet".into(),
            from: "out.bin".into(),
            to: url,
            ..Default::default()
        };
        UploadStep::new(a, h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(got.lock().unwrap().as_slice(), [content]);
        assert_eq!(
            h.sink.messages(),
            ["Uploading droplet...", "Uploaded droplet (1.5K)"]
        );
    }

    #[tokio::test]
    async fn failures_are_uploading_failed() {
        let (url, _) = receiver("500 Internal Server Error").await;
        let h = Harness::by_path().await;
        put(&h, "/tmp/f", raw_tar(&[Raw::File("f", b"x")])).await;
        put(&h, "/tmp/d", raw_tar(&[Raw::Dir("d/")])).await;
        let cases = [
            ("/tmp/f", "droplet", "Uploading droplet failed", "HTTP 500"),
            ("/tmp/d", "", "Uploading failed", "not a regular file"),
            (
                "/tmp/missing",
                "",
                "Uploading failed",
                "streaming /tmp/missing out",
            ),
        ];
        for (from, artifact, want, cause) in cases {
            let h2 = Harness::by_path().await;
            let mut ctx = h.ctx.clone();
            ctx.streamer = h2.ctx.streamer.clone();
            let a = UploadAction {
                artifact: artifact.into(),
                from: from.into(),
                to: url.clone(),
                ..Default::default()
            };
            let err = UploadStep::new(a, ctx)
                .perform(CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(err, StepError::Emittable(want.into()));
            let messages = h2.sink.messages();
            assert!(messages.contains(&want.to_string()), "{messages:?}");
            assert!(messages.last().unwrap().contains(cause), "{messages:?}");
        }
    }
}
