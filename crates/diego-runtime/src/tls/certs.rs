//! A cluster's certificates: one CA per cluster and one certificate per component, each
//! usable as server and as client (`diego certs init` / `diego certs issue`).
//!
//! A directory holds `ca.pem` and `ca-key.pem`, and `ROLE.pem` and `ROLE-key.pem` for each
//! issued component. Keys are ECDSA P-256, written mode 0600. Every file is written beside
//! its place and renamed into it, so a role reloading its files never reads half of one.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// The names a component certificate is for unless told otherwise: what a role on the same
/// machine connects to.
pub const DEFAULT_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// How long a CA is valid.
pub const CA_VALID_DAYS: u32 = 3650;

/// How long a component certificate is valid unless told otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 365;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{} already exists: a new CA would invalidate every certificate it signed (pass --force to replace it)", path.display())]
    CaExists { path: PathBuf },
    #[error("no CA: {} does not exist (create one with `diego certs init --dir {}`)", path.display(), dir.display())]
    NoCa { path: PathBuf, dir: PathBuf },
    #[error("role {role:?}: {problem}")]
    BadRole { role: String, problem: &'static str },
    #[error("host {host:?}: not a DNS name or an IP address")]
    BadHost { host: String },
    #[error("{}: {problem}", path.display())]
    BadCa { path: PathBuf, problem: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The files [`init`] or [`issue`] wrote: the certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates the CA of a cluster in `dir` (created if absent). Refuses to replace an existing
/// CA unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<Written, CertsError> {
    let written = Written {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    };
    if !force {
        for path in [&written.cert, &written.key] {
            if path.exists() {
                return Err(CertsError::CaExists { path: path.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // A name of its own: two clusters' CAs are told apart in errors and by TLS peers, which
    // look an issuer up by name.
    let (cert, key) = ca_pem(&format!("diego CA {:08x}", fastrand::u32(..)))?;
    write_file(&written.key, &key, 0o600)?;
    write_file(&written.cert, &cert, 0o644)?;
    Ok(written)
}

/// Issues `role`'s certificate, signed by the CA in `dir`, for each of `hosts` (DNS names
/// and IP addresses; [`DEFAULT_HOSTS`] when empty), valid `days` days for both server and
/// client authentication. An existing certificate of the role is replaced (rotation).
pub fn issue(dir: &Path, role: &str, hosts: &[String], days: u32) -> Result<Written, CertsError> {
    check_role(role)?;
    let ca_cert = dir.join(CA_CERT);
    let ca_key = dir.join(CA_KEY);
    for path in [&ca_cert, &ca_key] {
        if !path.exists() {
            return Err(CertsError::NoCa {
                path: path.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertsError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let (ca_cert_pem, ca_key_pem) = (read(&ca_cert)?, read(&ca_key)?);
    let (cert, key) = issue_pem(&ca_cert_pem, &ca_key_pem, role, hosts, days).map_err(|e| match e {
        IssueError::CaKey(problem) => CertsError::BadCa {
            path: ca_key,
            problem,
        },
        IssueError::CaCert(problem) => CertsError::BadCa {
            path: ca_cert,
            problem,
        },
        IssueError::Other(e) => e,
    })?;
    let written = Written {
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}-key.pem")),
    };
    write_file(&written.key, &key, 0o600)?;
    write_file(&written.cert, &cert, 0o644)?;
    Ok(written)
}

/// A new self-signed CA named `name`: (certificate PEM, key PEM).
pub fn ca_pem(name: &str) -> Result<(String, String), CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = named(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    (params.not_before, params.not_after) = validity(CA_VALID_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Why [`issue_pem`] failed: which CA file is unusable, or something else.
#[derive(Debug)]
pub enum IssueError {
    CaCert(String),
    CaKey(String),
    Other(CertsError),
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        IssueError::Other(e.into())
    }
}

/// A certificate for `role` (its common name) and `hosts`, signed by the CA given as PEM:
/// (certificate PEM, key PEM).
pub fn issue_pem(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    role: &str,
    hosts: &[String],
    days: u32,
) -> Result<(String, String), IssueError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)
        .map_err(|e| IssueError::CaKey(format!("not a PEM private key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| IssueError::CaCert(format!("not a PEM CA certificate: {e}")))?;
    let hosts: Vec<String> = if hosts.is_empty() {
        DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
    } else {
        hosts.to_vec()
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = named(role);
    params.subject_alt_names = hosts
        .iter()
        .map(|h| san(h))
        .collect::<Result<_, _>>()
        .map_err(IssueError::Other)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    (params.not_before, params.not_after) = validity(days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "diego");
    name.push(DnType::CommonName, common_name);
    name
}

fn san(host: &str) -> Result<SanType, CertsError> {
    let bad = || CertsError::BadHost {
        host: host.to_string(),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(bad());
    }
    Ok(SanType::DnsName(host.to_string().try_into().map_err(|_| bad())?))
}

fn check_role(role: &str) -> Result<(), CertsError> {
    let bad = |problem| CertsError::BadRole {
        role: role.to_string(),
        problem,
    };
    if role.is_empty() {
        return Err(bad("must not be empty"));
    }
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || role.starts_with('.')
    {
        return Err(bad(
            "use letters, digits, '-', '_' and '.' only (it names the files ROLE.pem and ROLE-key.pem)",
        ));
    }
    if role == "ca" {
        return Err(bad("\"ca\" is the CA's own file name"));
    }
    Ok(())
}

/// A positive 16-byte serial, unique with overwhelming odds.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// From an hour ago (clocks of a cluster differ a little) to `days` from now.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    )
}

/// Writes `contents` to `path` with `mode` through a temporary file renamed into place.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_dns_names_or_ip_addresses() {
        assert!(matches!(san("127.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(san("bbs.cluster.internal"), Ok(SanType::DnsName(_))));
        for bad in ["", "a..b", "-x.example", "has space", "a/b"] {
            assert!(matches!(san(bad), Err(CertsError::BadHost { .. })), "{bad:?}");
        }
    }

    #[test]
    fn roles_name_files() {
        assert!(check_role("bbs").is_ok());
        assert!(check_role("cell-z1_2").is_ok());
        for bad in ["", "ca", "../x", ".hidden", "a b"] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_refuses_to_replace_a_ca_and_issue_needs_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), "bbs", &[], 1).unwrap_err();
        assert!(err.to_string().contains("ca.pem does not exist"), "{err}");
        init(dir.path(), false).unwrap();
        let err = init(dir.path(), false).unwrap_err();
        assert!(matches!(err, CertsError::CaExists { .. }), "{err}");
        let first = std::fs::read(dir.path().join("ca.pem")).unwrap();
        init(dir.path(), true).unwrap();
        assert_ne!(first, std::fs::read(dir.path().join("ca.pem")).unwrap());
        let written = issue(dir.path(), "bbs", &[], 1).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for key in [written.key, dir.path().join("ca-key.pem")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
    }
}
