//! Download checksums (diego-spec §2, `checksum_algorithm`/`checksum_value`): md5, sha1 or
//! sha256 of the downloaded bytes (the archive as served, before unpacking), compared in hex
//! without regard to case.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The algorithms Diego accepts.
pub const ALGORITHMS: [&str; 3] = ["md5", "sha1", "sha256"];

/// A checksum an action asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
}

/// An action's checksum fields could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("checksum algorithm {0:?} is not supported (use one of md5, sha1, sha256)")]
    UnknownAlgorithm(String),
    #[error("checksum_value is set but checksum_algorithm is empty")]
    MissingAlgorithm,
    #[error("checksum_algorithm {0:?} is set but checksum_value is empty")]
    MissingValue(String),
    #[error("checksum mismatch: {algorithm} of the download is {actual}, expected {expected}")]
    Mismatch {
        algorithm: &'static str,
        actual: String,
        expected: String,
    },
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// What a download must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub value: String,
}

impl Expected {
    /// The checksum an action asks for: `None` when both fields are empty; an error when only
    /// one is set or the algorithm is unknown.
    pub fn from_fields(algorithm: &str, value: &str) -> Result<Option<Expected>, ChecksumError> {
        let value = value.trim();
        let algorithm = match (algorithm.is_empty(), value.is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => return Err(ChecksumError::MissingAlgorithm),
            (false, true) => return Err(ChecksumError::MissingValue(algorithm.to_string())),
            (false, false) => match algorithm.to_ascii_lowercase().as_str() {
                "md5" => Algorithm::Md5,
                "sha1" => Algorithm::Sha1,
                "sha256" => Algorithm::Sha256,
                _ => return Err(ChecksumError::UnknownAlgorithm(algorithm.to_string())),
            },
        };
        Ok(Some(Expected {
            algorithm,
            value: value.to_ascii_lowercase(),
        }))
    }

    /// Compares a finished [`Hasher`]'s result.
    pub fn check(&self, hasher: Hasher) -> Result<(), ChecksumError> {
        let actual = hasher.finish_hex();
        if actual == self.value {
            Ok(())
        } else {
            Err(ChecksumError::Mismatch {
                algorithm: self.algorithm.name(),
                actual,
                expected: self.value.clone(),
            })
        }
    }
}

/// An incremental hash of one of the [`Algorithm`]s (bodies are hashed as they stream to disk).
pub enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex(&h.finalize()),
            Hasher::Sha1(h) => hex(&h.finalize()),
            Hasher::Sha256(h) => hex(&h.finalize()),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex digest of `data` (tests and small inputs).
pub fn digest_hex(algorithm: Algorithm, data: &[u8]) -> String {
    let mut h = Hasher::new(algorithm);
    h.update(data);
    h.finish_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // Digests of "abc" from the algorithms' own test vectors.
        assert_eq!(
            digest_hex(Algorithm::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            digest_hex(Algorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            digest_hex(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fields_are_parsed_and_checked() {
        assert_eq!(Expected::from_fields("", "").unwrap(), None);
        for alg in ALGORITHMS {
            let algorithm = Expected::from_fields(alg, "x").unwrap().unwrap().algorithm;
            assert_eq!(algorithm.name(), alg);
            let want = digest_hex(algorithm, b"payload");
            let e = Expected::from_fields(&alg.to_uppercase(), &want.to_uppercase())
                .unwrap()
                .unwrap();
            let mut h = Hasher::new(e.algorithm);
            h.update(b"pay");
            h.update(b"load");
            e.check(h).unwrap();
            let mut h = Hasher::new(e.algorithm);
            h.update(b"other");
            let err = e.check(h).unwrap_err();
            assert!(matches!(err, ChecksumError::Mismatch { .. }), "{err}");
            assert!(err.to_string().contains(&want), "{err}");
        }
        assert_eq!(
            Expected::from_fields("crc32", "1").unwrap_err(),
            ChecksumError::UnknownAlgorithm("crc32".into())
        );
        assert_eq!(
            Expected::from_fields("", "abc").unwrap_err(),
            ChecksumError::MissingAlgorithm
        );
        assert_eq!(
            Expected::from_fields("sha1", " ").unwrap_err(),
            ChecksumError::MissingValue("sha1".into())
        );
    }
}
