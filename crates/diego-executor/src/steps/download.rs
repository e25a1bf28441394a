//! The download step: fetches an archive over HTTP into a temporary file (hashing it on the
//! way), checks its checksum, makes it safe ([`crate::archive`]: tar, tgz or zip in; a clean
//! tar out) and extracts that into the container at `to` through the backend's `stream_in`.
//! With a `cache_key` and a cell cache ([`crate::download_cache`]) the verified archive is kept
//! and revalidated with the server next time.
//!
//! Diego's texts, logged only when `artifact` is set: `Downloading X...`, `Downloaded X (54.2M)`
//! (`Downloaded X` when the cache answered); failures are emittable `Downloading X failed` (or
//! `Downloading failed`) — a checksum mismatch included, its cause logged on stderr after it —
//! and `Copying X into the container failed: <err>` when the archive is refused or the backend
//! fails, also logged on stderr. Checksum fields that cannot be used (an unknown algorithm, a
//! value without an algorithm) fail the step as invalid before anything is fetched.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use async_trait::async_trait;
use diego_model::action::DownloadAction;
use futures_util::StreamExt;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Step, StepContext, StepError};
use crate::archive::{self, ArchiveError};
use crate::checksum::{Expected, Hasher};
use crate::download_cache::Validators;

pub struct DownloadStep {
    action: DownloadAction,
    ctx: StepContext,
}

/// Longest error line logged (Diego truncates too: a bad URL can echo a huge body).
const MAX_ERROR_LINE: usize = 1024;

/// Why a download failed, by which of Diego's texts it gets.
enum Failure {
    /// Fetching, checksum: `Downloading X failed`.
    Download(String),
    /// Unpacking, refusing, `stream_in`: `Copying X into the container failed: <err>`.
    Copy(String),
}

/// A fetched (or cached) archive, checksum verified.
struct Fetched {
    file: File,
    /// Bytes downloaded now (0 when the cache's copy was still good).
    downloaded: u64,
}

impl DownloadStep {
    pub fn new(action: DownloadAction, ctx: StepContext) -> Self {
        Self { action, ctx }
    }

    fn progress(&self, message: String) {
        if !self.action.artifact.is_empty() {
            self.ctx.streamer.stdout(&message);
        }
    }

    fn log_error(&self, line: &str) {
        let mut line = line.to_string();
        if line.len() > MAX_ERROR_LINE {
            let mut cut = MAX_ERROR_LINE - " (error truncated)".len();
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" (error truncated)");
        }
        self.ctx.streamer.stderr(&line);
    }

    fn fail(&self, failure: Failure) -> StepError {
        let artifact = &self.action.artifact;
        let (message, cause) = match failure {
            Failure::Download(cause) => (
                if artifact.is_empty() {
                    "Downloading failed".to_string()
                } else {
                    format!("Downloading {artifact} failed")
                },
                Some(cause),
            ),
            Failure::Copy(err) => (
                if artifact.is_empty() {
                    format!("Copying into the container failed: {err}")
                } else {
                    format!("Copying {artifact} into the container failed: {err}")
                },
                None,
            ),
        };
        tracing::warn!(from = %self.action.from, to = %self.action.to, cause = cause.as_deref().unwrap_or(&message), "download failed");
        self.log_error(&message);
        if let Some(cause) = &cause {
            self.log_error(cause);
        }
        StepError::Emittable(message)
    }

    fn cache_key(&self) -> Option<&str> {
        let key = self.action.cache_key.as_str();
        (!key.is_empty() && self.ctx.download_cache.is_some()).then_some(key)
    }

    /// The archive, from the server or the cache, checksum verified.
    async fn fetch(&self, expected: &Option<Expected>) -> Result<Fetched, String> {
        let url = &self.action.from;
        let cache = self.ctx.download_cache.as_ref();
        let key = self.cache_key();
        let mut validators = key.and_then(|k| cache?.validators(k)).unwrap_or_default();
        // At most twice: a 304 whose entry was evicted meanwhile asks again without validators.
        let (response, status) = loop {
            let mut request = self.ctx.http.get(url);
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &validators.last_modified {
                request = request.header(IF_MODIFIED_SINCE, modified);
            }
            let response = request.send().await.map_err(|e| format!("fetching {url}: {e}"))?;
            let status = response.status();
            let (Some(cache), Some(key)) = (cache, key) else {
                break (response, status);
            };
            if status == StatusCode::NOT_MODIFIED && !validators.is_empty() {
                if let Some(file) = cache.open_cached(key) {
                    tracing::debug!(%url, key, "download cache hit (304)");
                    let file = verify_file(file, expected.clone()).await?;
                    return Ok(Fetched { file, downloaded: 0 });
                }
                tracing::debug!(%url, key, "304 for an entry evicted meanwhile: fetching again");
                validators = Validators::default();
                continue;
            }
            if !status.is_success() {
                // Anything but 304 invalidates what we had.
                cache.remove(key);
            }
            break (response, status);
        };
        if !status.is_success() {
            return Err(format!("fetching {url}: HTTP {status}"));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let fresh = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let tmp_dir = cache.map(|c| c.tmp_dir()).unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| format!("creating a temporary file in {}: {e}", tmp_dir.display()))?;
        let mut out = tokio::fs::File::from_std(
            tmp.reopen()
                .map_err(|e| format!("opening {}: {e}", tmp.path().display()))?,
        );
        let mut hasher = expected.as_ref().map(|e| Hasher::new(e.algorithm));
        let mut downloaded = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading {url}: {e}"))?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            downloaded += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", tmp.path().display()))?;
        }
        out.flush()
            .await
            .map_err(|e| format!("writing {}: {e}", tmp.path().display()))?;
        drop(out);
        if let (Some(e), Some(h)) = (expected, hasher) {
            e.check(h).map_err(|e| e.to_string())?;
        }
        let file = match (cache, key) {
            (Some(cache), Some(key)) => {
                let cache = cache.clone();
                let key = key.to_string();
                tokio::task::spawn_blocking(move || cache.store(&key, tmp, fresh))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("caching the download: {e}"))?
            }
            // The name goes now; the open file lives until it has been streamed in.
            _ => tmp.into_file(),
        };
        Ok(Fetched { file, downloaded })
    }
}

/// Re-checks a cached archive against the checksum this action asks for (another action may
/// have cached it under the same key with another checksum, or none).
async fn verify_file(file: File, expected: Option<Expected>) -> Result<File, String> {
    let Some(expected) = expected else {
        return Ok(file);
    };
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut hasher = Hasher::new(expected.algorithm);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("reading the cached download: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        expected.check(hasher).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        Ok(file)
    })
    .await
    .map_err(|e| e.to_string())?
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

impl DownloadStep {
    async fn download(&self, expected: Option<Expected>) -> Result<u64, Failure> {
        let fetched = self.fetch(&expected).await.map_err(Failure::Download)?;
        let tmp_dir = self
            .ctx
            .download_cache
            .as_ref()
            .map(|c| c.tmp_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut input = fetched.file;
        let (clean, report) = tokio::task::spawn_blocking(move || {
            input.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
            let mut out = tempfile::NamedTempFile::new_in(tmp_dir).map_err(ArchiveError::Io)?;
            let report = archive::normalise(&mut input, std::io::BufWriter::new(out.as_file_mut()))?;
            Ok::<_, ArchiveError>((out.into_file(), report))
        })
        .await
        .map_err(|e| Failure::Copy(e.to_string()))?
        .map_err(|e| Failure::Copy(e.to_string()))?;
        for skipped in &report.skipped {
            self.log_error(&format!(
                "Skipped archive entry {:?}: {}",
                skipped.path, skipped.reason
            ));
        }
        let mut clean = tokio::fs::File::from_std(clean);
        tokio::io::AsyncSeekExt::seek(&mut clean, SeekFrom::Start(0))
            .await
            .map_err(|e| Failure::Copy(e.to_string()))?;
        let stream: diego_garden::TarStream = Box::pin(
            tokio_util::io::ReaderStream::with_capacity(clean, 64 * 1024).map(|chunk| {
                chunk.map_err(|e| diego_garden::GardenError::Unavailable(format!("reading the archive: {e}")))
            }),
        );
        self.ctx
            .backend
            .stream_in(&self.ctx.handle, &self.action.to, stream)
            .await
            .map_err(|e| Failure::Copy(e.to_string()))?;
        Ok(fetched.downloaded)
    }
}

#[async_trait]
impl Step for DownloadStep {
    async fn perform(&self, cancel: CancellationToken) -> Result<(), StepError> {
        let a = &self.action;
        let expected = match Expected::from_fields(&a.checksum_algorithm, &a.checksum_value) {
            Ok(e) => e,
            Err(err) => {
                let message = format!("download from {}: {err}", a.from);
                self.log_error(&message);
                return Err(StepError::Invalid(message));
            }
        };
        self.progress(format!("Downloading {}...", a.artifact));
        let downloaded = tokio::select! {
            res = self.download(expected) => res,
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
        };
        match downloaded {
            Ok(0) => self.progress(format!("Downloaded {}", a.artifact)),
            Ok(size) => self.progress(format!("Downloaded {} ({})", a.artifact, byte_size(size))),
            Err(failure) => return Err(self.fail(failure)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use diego_garden::ContainerBackend;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::archive::tests::{gzip, raw_tar, Raw};
    use crate::checksum::{digest_hex, Algorithm};
    use crate::download_cache::DownloadCache;
    use crate::steps::testing::Harness;

    /// Serves `body` at `/ok` (with an ETag; `304` when the request's If-None-Match has it) and
    /// 404 elsewhere; counts the requests that got the body.
    struct Server {
        base: String,
        bodies: Arc<AtomicUsize>,
    }

    async fn serve(body: Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(AtomicUsize::new(0));
        let counted = bodies.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let body = body.clone();
                let counted = counted.clone();
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
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    let (status, body) = if text.contains("if-none-match: \"v1\"") {
                        ("304 Not Modified", Vec::new())
                    } else if req.starts_with(b"GET /ok ") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", body)
                    } else {
                        ("404 Not Found", b"nope".to_vec())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\netag: \"v1\"\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    conn.write_all(head.as_bytes()).await.unwrap();
                    conn.write_all(&body).await.unwrap();
                });
            }
        });
        Server {
            base: format!("http://{addr}"),
            bodies,
        }
    }

    fn download(base: &str, path: &str, artifact: &str) -> DownloadAction {
        DownloadAction {
            artifact: artifact.into(),
            from: format!("{base}{path}"),
            to: "/home/vcap".into(),
            ..Default::default()
        }
    }

    /// The clean tar the fake backend got, as `path → content` of its regular files.
    async fn streamed_in(h: &Harness) -> HashMap<String, String> {
        let mut out = h.backend.stream_out("c", "/home/vcap").await.unwrap();
        let mut data = Vec::new();
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        let mut files = HashMap::new();
        for e in tar::Archive::new(&data[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().into_owned(), s);
        }
        files
    }

    #[tokio::test]
    async fn a_tgz_is_checked_cleaned_and_streamed_in() {
        let tgz = gzip(&raw_tar(&[Raw::File("./app/run", b"echo hi")]));
        let size = tgz.len() as u64;
        for alg in [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256] {
            let server = serve(tgz.clone()).await;
            let h = Harness::by_path().await;
            let mut a = download(&server.base, "/ok", "droplet");
            a.checksum_algorithm = alg.name().into();
            a.checksum_value = digest_hex(alg, &tgz);
            DownloadStep::new(a, h.ctx.clone())
                .perform(CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(streamed_in(&h).await["app/run"], "echo hi");
            assert_eq!(
                h.sink.messages(),
                [
                    "Downloading droplet...".to_string(),
                    format!("Downloaded droplet ({})", byte_size(size))
                ]
            );
        }
    }

    #[tokio::test]
    async fn failures_use_diegos_texts() {
        let server = serve(raw_tar(&[Raw::File("f", b"1")])).await;
        let h = Harness::by_path().await;
        let err = DownloadStep::new(download(&server.base, "/missing", "droplet"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Downloading droplet failed".into()));
        let messages = h.sink.messages();
        assert_eq!(
            messages[..2],
            ["Downloading droplet...", "Downloading droplet failed"]
        );
        assert!(messages[2].contains("HTTP 404"), "{messages:?}");

        let h = Harness::by_path().await;
        let mut a = download(&server.base, "/ok", "");
        a.checksum_algorithm = "sha1".into();
        a.checksum_value = "00".into();
        let err = DownloadStep::new(a, h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Emittable("Downloading failed".into()));
        let messages = h.sink.messages();
        assert_eq!(
            messages[0], "Downloading failed",
            "no progress without an artifact"
        );
        assert!(messages[1].starts_with("checksum mismatch: sha1"), "{messages:?}");
        assert!(
            h.backend.stream_out("c", "/home/vcap").await.is_err(),
            "nothing streamed in"
        );

        for (alg, value, want) in [
            ("crc32", "1", "checksum algorithm \"crc32\" is not supported"),
            ("", "abc", "checksum_value is set but checksum_algorithm is empty"),
        ] {
            let h = Harness::by_path().await;
            let mut a = download(&server.base, "/ok", "droplet");
            a.checksum_algorithm = alg.into();
            a.checksum_value = value.into();
            let err = DownloadStep::new(a, h.ctx.clone())
                .perform(CancellationToken::new())
                .await
                .unwrap_err();
            assert!(matches!(&err, StepError::Invalid(m) if m.contains(want)), "{err}");
        }
        assert_eq!(
            server.bodies.load(Ordering::SeqCst),
            1,
            "bad checksum fields fetch nothing"
        );

        let h = Harness::by_path().await;
        h.backend.destroy("c").await.unwrap();
        let err = DownloadStep::new(download(&server.base, "/ok", "lifecycle"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.emittable().unwrap(),
            "Copying lifecycle into the container failed: not found: container \"c\""
        );
    }

    #[tokio::test]
    async fn a_malicious_archive_is_refused_before_the_backend_sees_it() {
        let server = serve(raw_tar(&[Raw::File("ok", b"1"), Raw::File("../escape", b"x")])).await;
        let h = Harness::by_path().await;
        let err = DownloadStep::new(download(&server.base, "/ok", "app"), h.ctx.clone())
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.emittable().unwrap(),
            "Copying app into the container failed: archive entry \"../escape\" has a '..' path component"
        );
        assert!(h.backend.stream_out("c", "/home/vcap").await.is_err());
    }

    #[tokio::test]
    async fn a_304_for_an_entry_gone_from_the_cache_downloads_again() {
        let tar = raw_tar(&[Raw::File("f", b"cached")]);
        let server = serve(tar.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = DownloadCache::open(dir.path().join("cache"), 1 << 20).unwrap();
        let mut a = download(&server.base, "/ok", "buildpack");
        a.cache_key = "bp".into();
        let run = || async {
            let h = Harness::by_path().await;
            let mut ctx = h.ctx.clone();
            ctx.download_cache = Some(cache.clone());
            DownloadStep::new(a.clone(), ctx)
                .perform(CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(streamed_in(&h).await["f"], "cached");
        };
        run().await;
        // The cached file goes behind the index's back (as an eviction racing the request
        // would): the server's 304 finds nothing, so the archive is fetched again.
        for entry in std::fs::read_dir(cache.dir()).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        run().await;
        assert_eq!(
            server.bodies.load(Ordering::SeqCst),
            2,
            "fetched again after the 304"
        );
    }

    #[tokio::test]
    async fn the_cache_revalidates_and_reuses_the_archive() {
        let tar = raw_tar(&[Raw::File("f", b"cached")]);
        let server = serve(tar.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = DownloadCache::open(dir.path().join("cache"), 1 << 20).unwrap();
        let mut a = download(&server.base, "/ok", "buildpack");
        a.cache_key = "bp".into();
        a.checksum_algorithm = "md5".into();
        a.checksum_value = digest_hex(Algorithm::Md5, &tar);
        for round in 0..2 {
            let h = Harness::by_path().await;
            let mut ctx = h.ctx.clone();
            ctx.download_cache = Some(cache.clone());
            DownloadStep::new(a.clone(), ctx)
                .perform(CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(streamed_in(&h).await["f"], "cached", "round {round}");
            let done = h.sink.messages().pop().unwrap();
            if round == 0 {
                assert_eq!(
                    done,
                    format!("Downloaded buildpack ({})", byte_size(tar.len() as u64))
                );
            } else {
                assert_eq!(done, "Downloaded buildpack", "served from the cache");
            }
        }
        assert_eq!(
            server.bodies.load(Ordering::SeqCst),
            1,
            "the second download got a 304"
        );
        assert_eq!(cache.usage().0, ["bp"]);

        // A cached archive is checked against the checksum of the action using it.
        let h = Harness::by_path().await;
        let mut ctx = h.ctx.clone();
        ctx.download_cache = Some(cache.clone());
        let mut wrong = a.clone();
        wrong.checksum_value = digest_hex(Algorithm::Md5, b"other");
        let err = DownloadStep::new(wrong, ctx)
            .perform(CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.emittable().unwrap(), "Downloading buildpack failed");
    }

    #[test]
    fn sizes_print_like_bytefmt() {
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
