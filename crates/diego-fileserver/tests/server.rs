//! The file server over real HTTP on loopback, through its client and raw requests.

use bytes::Bytes;
use diego_fileserver::blobs::GcReport;
use diego_fileserver::server::{self, RunningServer, ServerConfig};
use diego_fileserver::{Digest, FileServerClient, FileServerError};
use tokio_util::sync::CancellationToken;

async fn start(dir: &std::path::Path, max_upload_bytes: u64) -> (RunningServer, CancellationToken) {
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.to_path_buf());
    config.max_upload_bytes = max_upload_bytes;
    let running = server::start(config, stop.clone())
        .await
        .expect("file server starts");
    (running, stop)
}

async fn stop(running: RunningServer, stop: CancellationToken) {
    stop.cancel();
    running.task.await.unwrap().unwrap();
}

/// Each of `want` is a line of the server's `/metrics`.
async fn has_metrics(http: &reqwest::Client, url: &str, want: &[&str]) {
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for w in want {
        assert!(metrics.lines().any(|l| l == *w), "{w:?} missing from\n{metrics}");
    }
}

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap();
    (
        status,
        v["type"].as_str().unwrap().into(),
        v["message"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn blobs_are_uploaded_once_downloaded_checked_and_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (running, token) = start(dir.path(), 1 << 20).await;
    let c = FileServerClient::new(&running.url).unwrap();
    let bytes = Bytes::from(vec![7u8; 300_000]);
    let d = Digest::of(&bytes);
    assert!(!c.has(&d).await.unwrap());
    let first = c.upload(bytes.clone()).await.unwrap();
    assert_eq!((first.digest, first.size, first.created), (d, 300_000, true));
    let again = c.upload(bytes.clone()).await.unwrap();
    assert!(!again.created, "held already: not sent again");
    assert_eq!(c.download(&d).await.unwrap(), bytes);

    // A PUT of a held blob answers 200 without storing anything new.
    let http = reqwest::Client::new();
    let put = http.put(c.blob_url(&d)).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);

    // ETag and If-None-Match.
    let got = http.get(c.blob_url(&d)).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    let etag = got.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{d}\""));
    assert_eq!(got.headers()["content-length"], "300000");
    let cached = http
        .get(c.blob_url(&d))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status().as_u16(), 304);
    let other = http
        .get(c.blob_url(&d))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);

    has_metrics(
        &http,
        &running.url,
        &[
            "fileserver_uploads_total 1",
            "fileserver_uploads_existing_total 1",
            "fileserver_upload_bytes_total 300000",
            "fileserver_not_modified_total 1",
            "fileserver_blobs 1",
            "fileserver_blob_bytes 300000",
        ],
    )
    .await;

    stop(running, token).await;
    let (running, token) = start(dir.path(), 1 << 20).await;
    assert_eq!(running.held.blobs, 1, "the blob outlives the restart");
    let c = FileServerClient::new(&running.url).unwrap();
    assert_eq!(c.download(&d).await.unwrap(), bytes);
    stop(running, token).await;
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_reason_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (running, token) = start(dir.path(), 1_000).await;
    let c = FileServerClient::new(&running.url).unwrap();
    let http = reqwest::Client::new();

    let bad_name = http
        .put(format!("{}/v1/blobs/not-a-digest", running.url))
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, kind, message) = error_of(bad_name).await;
    assert_eq!((status, kind.as_str()), (400, "InvalidRequest"));
    assert!(
        message.contains("\"not-a-digest\"") && message.contains("64 hex digits"),
        "{message}"
    );

    let claimed = Digest::of(b"what the client meant");
    let wrong = http
        .put(c.blob_url(&claimed))
        .body("what it sent")
        .send()
        .await
        .unwrap();
    let (status, kind, message) = error_of(wrong).await;
    assert_eq!((status, kind.as_str()), (422, "ChecksumMismatch"));
    assert!(
        message.contains(&claimed.hex()) && message.contains(&Digest::of(b"what it sent").hex()),
        "{message}"
    );

    let big = Bytes::from(vec![1u8; 1_001]);
    match c.upload(big.clone()).await {
        Err(FileServerError::Refused { status: 413, message }) => {
            assert!(message.contains("limit of 1000 bytes"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The client refused it without sending it, from the limit the server states; sent
    // anyway, with its Content-Length, the server refuses it.
    let raw = http
        .put(c.blob_url(&Digest::of(&big)))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["x-diego-max-upload-bytes"], "1000");
    let (status, _, message) = error_of(raw).await;
    assert_eq!(status, 413);
    assert!(message.contains("the upload has 1001 bytes"), "{message}");
    // The same without a Content-Length: cut off as it streams.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..11).map(|_| Ok(Bytes::from(vec![2u8; 100]))).collect();
    let streamed = http
        .put(c.blob_url(&Digest::of(&[2u8; 1_100])))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status().as_u16(), 413);

    assert!(matches!(
        c.download(&claimed).await,
        Err(FileServerError::NotFound(_))
    ));
    let report = c.collect(&[], Some(0)).await.unwrap();
    assert_eq!(
        report,
        GcReport::default(),
        "no blob was left by a refused upload"
    );
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    stop(running, token).await;
}

#[tokio::test]
async fn collection_keeps_what_is_referred_to_and_what_is_young() {
    let dir = tempfile::tempdir().unwrap();
    let (running, token) = start(dir.path(), 1 << 20).await;
    let c = FileServerClient::new(&running.url).unwrap();
    let keep = c.upload(Bytes::from_static(b"droplet")).await.unwrap().digest;
    let drop = c.upload(Bytes::from_static(b"old package")).await.unwrap().digest;
    let young = c.collect(&[keep], None).await.unwrap();
    assert_eq!(young.deleted, 0, "the default grace period spares new blobs");
    let report = c.collect(&[keep], Some(0)).await.unwrap();
    assert_eq!(
        report,
        GcReport {
            deleted: 1,
            freed_bytes: 11,
            kept: 1,
            kept_bytes: 7
        }
    );
    assert!(c.has(&keep).await.unwrap());
    assert!(!c.has(&drop).await.unwrap());

    let http = reqwest::Client::new();
    has_metrics(
        &http,
        &running.url,
        &[
            "fileserver_gc_deleted_total 1",
            "fileserver_blobs 1",
            "fileserver_blob_bytes 7",
        ],
    )
    .await;
    let bad = http
        .post(format!("{}/v1/gc", running.url))
        .json(&serde_json::json!({"keep": ["nope"]}))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(bad).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("keep") && message.contains("\"nope\""),
        "{message}"
    );
    stop(running, token).await;
}

#[tokio::test]
async fn a_post_stores_a_blob_under_the_digest_of_its_body_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (running, token) = start(dir.path(), 1000).await;
    let c = FileServerClient::new(&running.url).unwrap();
    let http = reqwest::Client::new();
    let body = b"a droplet".to_vec();
    let resp = http.post(c.blobs_url()).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["digest"], Digest::of(&body).hex());
    assert_eq!(
        c.download(&Digest::of(&body)).await.unwrap(),
        Bytes::from(body.clone())
    );
    let again = http.post(c.blobs_url()).body(body).send().await.unwrap();
    assert_eq!(again.status(), 200, "held already");
    let (status, kind, _) = error_of(
        http.post(c.blobs_url())
            .body(vec![0u8; 1001])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, kind.as_str()), (413, "PayloadTooLarge"));
    stop(running, token).await;
}

#[tokio::test]
async fn lifecycle_bundles_are_served_packed_with_an_etag() {
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lifecycle.path().join("lifecycle")).unwrap();
    std::fs::write(lifecycle.path().join("lifecycle/diego-launcher"), "#!/bin/sh\n").unwrap();
    let stop_token = CancellationToken::new();
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path().to_path_buf());
    config.lifecycle_dir = Some(lifecycle.path().to_path_buf());
    let running = server::start(config, stop_token.clone()).await.unwrap();
    let c = FileServerClient::new(&running.url).unwrap();
    let listed = c.lifecycle().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "lifecycle.tgz");
    let http = reqwest::Client::new();
    let resp = http.get(c.lifecycle_url("lifecycle.tgz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(Digest::of(&bytes), listed[0].digest);
    assert_eq!(bytes.len() as u64, listed[0].size);
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for e in archive.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert_eq!(names, ["diego-launcher"]);
    let cached = http
        .get(c.lifecycle_url("lifecycle.tgz"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let (status, _, message) = error_of(http.get(c.lifecycle_url("nope.tgz")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(message.contains("there are: lifecycle.tgz"), "{message}");
    stop(running, stop_token).await;
}
