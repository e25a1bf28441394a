//! Mutual TLS through the one server loop and the one client builder, over real sockets on
//! 127.0.0.1, with certificates made by the code behind `diego certs`: a client of the CA is
//! served; one without a certificate, or with one from another CA, is refused at the
//! handshake; a server whose files are replaced presents the new certificate to new
//! connections, and keeps the old one when the new file is bad.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use diego_runtime::tls::{certs, Tls, TlsFiles};
use diego_runtime::{http_client, serve, ServeLimits};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The longest a test waits for something that must happen.
const BOUND: Duration = Duration::from_secs(20);
/// How often the server under test looks at its files.
const CHECK: Duration = Duration::from_millis(100);

/// A CA in a temporary directory with `roles` issued.
fn cert_dir(roles: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), false).unwrap();
    for role in roles {
        certs::issue(dir.path(), role, &[], 1).unwrap();
    }
    dir
}

fn files(dir: &Path, role: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}-key.pem")),
    }
}

/// A TLS server, stopped when dropped (also when the test fails).
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    async fn start(tls: Tls) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = Router::new().route("/ok", get(|| async { "ok" }));
        tokio::spawn(serve(
            listener,
            app,
            stop.clone(),
            ServeLimits::default(),
            Some(tls),
        ));
        Server { addr, stop }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/ok", self.addr.port())
    }
}

/// A raw TLS connection with `config`; returns the server's first certificate and what came
/// of a request on it: the response text, or the error (a refusal arrives as an alert).
async fn raw_request(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> (Option<CertificateDer<'static>>, std::io::Result<String>) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        Err(e) => return (None, Err(e)),
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c[0].clone().into_owned());
    let exchange = async {
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    };
    (
        peer,
        tokio::time::timeout(BOUND, exchange)
            .await
            .expect("an answer or an error"),
    )
}

/// The alert the server refused the connection with.
fn alert(result: &std::io::Result<String>) -> Option<AlertDescription> {
    let e = result.as_ref().err()?;
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// A client that trusts `ca` and presents no certificate.
fn anonymous_client(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn a_client_with_a_certificate_of_the_ca_is_served() {
    let dir = cert_dir(&["bbs", "cell"]);
    let server = Server::start(Tls::load(files(dir.path(), "bbs")).unwrap()).await;
    let client = Tls::load(files(dir.path(), "cell")).unwrap();
    let http = http_client(Some(&client)).build().unwrap();
    let response = http.get(server.url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");

    // The same address over plain HTTP is refused by the client itself: it speaks TLS only.
    let plain = http
        .get(format!("http://{}/ok", server.addr))
        .send()
        .await
        .unwrap_err();
    assert!(
        plain.is_builder() || plain.to_string().contains("scheme"),
        "{plain:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let dir = cert_dir(&["bbs"]);
    let server = Server::start(Tls::load(files(dir.path(), "bbs")).unwrap()).await;
    let (peer, result) = raw_request(server.addr, anonymous_client(&dir.path().join("ca.pem"))).await;
    assert!(peer.is_some(), "the client did verify the server");
    assert_eq!(
        alert(&result),
        Some(AlertDescription::CertificateRequired),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_client_with_a_certificate_of_another_ca_is_refused_at_the_handshake() {
    let ours = cert_dir(&["bbs"]);
    let theirs = cert_dir(&["cell"]);
    let server = Server::start(Tls::load(files(ours.path(), "bbs")).unwrap()).await;
    // It trusts our CA (so it gets as far as presenting its certificate) but holds theirs.
    let mut stranger = files(theirs.path(), "cell");
    stranger.ca = ours.path().join("ca.pem");
    let stranger = Tls::load(stranger).unwrap();
    let (_, result) = raw_request(server.addr, stranger.client_config()).await;
    assert_eq!(alert(&result), Some(AlertDescription::UnknownCA), "{result:?}");

    // Through the client builder the refusal is an error too, never a response.
    let http = http_client(Some(&stranger)).build().unwrap();
    let refused = http.get(server.url()).send().await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn new_connections_see_a_replaced_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = cert_dir(&["bbs", "cell"]);
    let bbs = files(dir.path(), "bbs");
    let server = Server::start(Tls::load_checking_every(bbs.clone(), CHECK).unwrap()).await;
    let client = Tls::load(files(dir.path(), "cell")).unwrap();
    let first = CertificateDer::from_pem_file(&bbs.cert).unwrap();
    let (peer, result) = raw_request(server.addr, client.client_config()).await;
    assert_eq!(peer.as_ref(), Some(&first));
    assert!(result.unwrap().starts_with("HTTP/1.1 200"));

    // Re-issued: a new key and serial under the same names.
    certs::issue(dir.path(), "bbs", &[], 1).unwrap();
    let second = CertificateDer::from_pem_file(&bbs.cert).unwrap();
    assert_ne!(first, second);
    let seen = eventually(|| async {
        let (peer, result) = raw_request(server.addr, client.client_config()).await;
        (peer.as_ref() == Some(&second) && result.is_ok()).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the server never presented the re-issued certificate"
    );

    // A certificate that is not PEM: the server goes on with the one it has.
    std::fs::write(&bbs.cert, "not a certificate\n").unwrap();
    for _ in 0..5 {
        tokio::time::sleep(CHECK * 2).await;
        let (peer, result) = raw_request(server.addr, client.client_config()).await;
        assert_eq!(peer.as_ref(), Some(&second));
        assert!(result.unwrap().starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn loading_names_the_file_that_is_wrong() {
    let dir = cert_dir(&["bbs", "cell"]);
    let mut wrong = files(dir.path(), "bbs");
    wrong.key = dir.path().join("cell-key.pem");
    let err = Tls::load(wrong).unwrap_err();
    assert_eq!(err.path(), dir.path().join("cell-key.pem"));
    assert!(
        err.to_string().contains("not the key of the certificate"),
        "{err}"
    );

    let mut missing = files(dir.path(), "bbs");
    missing.ca = dir.path().join("nope.pem");
    let err = Tls::load(missing).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

/// Polls `probe` until it gives a value, for at most [`BOUND`]. (`diego_testkit::eventually`
/// is out of reach: the testkit depends on this crate.)
async fn eventually<T, F, Fut>(mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = probe().await {
            return Some(value);
        }
        tokio::time::sleep(CHECK).await;
    }
    None
}

#[tokio::test]
async fn a_plain_http_request_is_told_to_use_tls() {
    let dir = cert_dir(&["bbs"]);
    let server = Server::start(Tls::load(files(dir.path(), "bbs")).unwrap()).await;
    let response = http_client(None)
        .build()
        .unwrap()
        .get(format!("http://{}/ok", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("HTTPS only"));
}
