//! Mutual TLS between roles: the one place where certificates are read, checked and reloaded.
//!
//! A role given [`TlsFiles`] (a CA, its own certificate and its key, all PEM) loads them
//! into a [`Tls`], which [`serve`](crate::serve) turns into a server that requires a client
//! certificate signed by the CA, and [`http_client`](crate::http_client) into a client that
//! presents the role's certificate and trusts only the CA. Both read the files through
//! the same [`Tls`]: every few seconds at most ([`RELOAD_CHECK_INTERVAL`]) a handshake
//! looks at the files' modification times and sizes, and when they changed the new files
//! are loaded for that and later handshakes, without a restart. A file that does not load
//! (unreadable, not PEM, a key that does not match the certificate) keeps the previous
//! material in force and is logged once per change, naming the file.
//!
//! Sessions are never resumed: every connection's handshake verifies the peer against the
//! CA in force, so a rotated CA takes effect on the next connection.
//!
//! [`certs`] makes the CA and the component certificates (`diego certs`), with rcgen.

pub mod certs;
mod reload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use reload::{Material, Reloading};

/// How often at most the files are looked at for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The protocol every role speaks over TLS.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The three files of a role's TLS identity, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA whose certificates peers must present (and the only one trusted).
    pub ca: PathBuf,
    /// This role's certificate (chain), presented as server and as client.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

/// What is wrong with a TLS file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
}

impl TlsError {
    fn invalid(path: &Path, problem: impl fmt::Display) -> Self {
        TlsError::Invalid {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. } | TlsError::Invalid { path, .. } => path,
        }
    }
}

/// A role's loaded TLS identity and trust, reloaded when its files change. Cheap to clone:
/// clones share the material, so a server and the clients of one role reload together.
#[derive(Clone)]
pub struct Tls {
    reloading: Arc<Reloading>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", self.files()).finish()
    }
}

impl Tls {
    /// Loads `files`, failing with the file that is missing or wrong.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        Self::load_checking_every(files, RELOAD_CHECK_INTERVAL)
    }

    /// Like [`Tls::load`], looking at the files for changes every `interval` at most.
    pub fn load_checking_every(files: TlsFiles, interval: Duration) -> Result<Tls, TlsError> {
        // ring, as NATS already uses: aws-lc-rs would add a C build (cmake) to every build.
        // rustls deprecates ring's provider for lacking post-quantum key exchange; the
        // classical suites it has are what the roles need between themselves.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Tls {
            reloading: Arc::new(Reloading::new(files, provider, interval)?),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        self.reloading.files()
    }

    /// The configuration of a server that requires a client certificate signed by the CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let resolver = Arc::new(reload::ServerCert(self.reloading.clone()));
        let verifier = Arc::new(reload::ClientVerifier(self.reloading.clone()));
        let mut config = ServerConfig::builder_with_provider(self.reloading.provider().clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        // Every handshake verifies the client against the CA in force (see the module doc).
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Arc::new(config)
    }

    /// The configuration of a client that presents the role's certificate and trusts only
    /// the CA.
    pub fn client_config(&self) -> ClientConfig {
        let verifier = Arc::new(reload::ServerVerifier(self.reloading.clone()));
        let resolver = Arc::new(reload::ClientCert(self.reloading.clone()));
        let mut config = ClientConfig::builder_with_provider(self.reloading.provider().clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            // Not dangerous: webpki's verifier over the CA in force, swapped on reload.
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        config
    }
}

/// The scheme of a role's URLs: `https` with TLS, `http` without.
pub fn scheme(tls: Option<&Tls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Reads and checks the three files into what handshakes use.
fn load_material(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
    let ca = read_certs(&files.ca)?;
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| TlsError::invalid(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::invalid(&files.key, format!("no PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::invalid(
            &files.key,
            format!("not the key of the certificate in {}: {e}", files.cert.display()),
        )
    })?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::invalid(&files.ca, e))?;
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::invalid(&files.ca, e))?;
    Ok(Material {
        certified: Arc::new(certified),
        client_verifier,
        server_verifier,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::invalid(path, "holds no PEM certificate"));
    }
    Ok(certs)
}
