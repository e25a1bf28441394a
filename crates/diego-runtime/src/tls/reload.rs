//! The material in force and its reload, and the rustls hooks that read it at each
//! handshake: a certificate resolver and a peer verifier for each side.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{load_material, TlsError, TlsFiles};

/// What handshakes use: the role's certificate and key, and verifiers over the CA.
pub(super) struct Material {
    pub certified: Arc<CertifiedKey>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    pub server_verifier: Arc<WebPkiServerVerifier>,
}

/// What the files looked like when last read: modification time and size of each.
type Stamp = [Option<(SystemTime, u64)>; 3];

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.ca, &files.cert, &files.key].map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    })
}

pub(super) struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    current: RwLock<Arc<Material>>,
    /// When the files were last looked at, and how they looked (loaded or refused: a
    /// refused change is reported once, not at every look).
    checked: Mutex<(Instant, Stamp)>,
}

impl Reloading {
    pub fn new(files: TlsFiles, provider: Arc<CryptoProvider>, interval: Duration) -> Result<Self, TlsError> {
        // Stamped before reading: a change made while reading is seen at the next look.
        let seen = stamp(&files);
        let material = load_material(&files, &provider)?;
        Ok(Self {
            files,
            provider,
            interval,
            current: RwLock::new(Arc::new(material)),
            checked: Mutex::new((Instant::now(), seen)),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The material in force, reloaded first if the files changed since they were last
    /// looked at (at most once per interval; a handshake that finds another one looking
    /// does not wait for it).
    pub fn current(&self) -> Arc<Material> {
        if let Ok(mut checked) = self.checked.try_lock() {
            if checked.0.elapsed() >= self.interval {
                checked.0 = Instant::now();
                let now = stamp(&self.files);
                if now != checked.1 {
                    checked.1 = now;
                    self.reload();
                }
            }
        }
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload(&self) {
        match load_material(&self.files, &self.provider) {
            Ok(material) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
                tracing::info!(
                    ca = %self.files.ca.display(),
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "TLS files changed; new handshakes use them"
                );
            }
            Err(e) => tracing::warn!(
                file = %e.path().display(),
                error = %e,
                "TLS files changed but do not load; keeping the previous ones"
            ),
        }
    }
}

fn debug_hook(f: &mut fmt::Formatter<'_>, name: &str, files: &TlsFiles) -> fmt::Result {
    let shown: [&PathBuf; 3] = [&files.ca, &files.cert, &files.key];
    f.debug_tuple(name).field(&shown).finish()
}

/// The server's certificate: the role's, as in force at the handshake.
pub(super) struct ServerCert(pub Arc<Reloading>);

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hook(f, "ServerCert", self.0.files())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

/// The client's certificate, presented to every server.
pub(super) struct ClientCert(pub Arc<Reloading>);

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hook(f, "ClientCert", self.0.files())
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Requires a client certificate signed by the CA in force.
pub(super) struct ClientVerifier(pub Arc<Reloading>);

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hook(f, "ClientVerifier", self.0.files())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive a reload. A client of ours has one certificate
    /// and presents it whatever the hints.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().client_verifier.supported_verify_schemes()
    }
}

/// Trusts a server whose certificate the CA in force signed for the name connected to.
pub(super) struct ServerVerifier(pub Arc<Reloading>);

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hook(f, "ServerVerifier", self.0.files())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}
