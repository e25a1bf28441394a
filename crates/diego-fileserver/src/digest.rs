//! A blob's name: the SHA-256 of its bytes, as 64 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The SHA-256 of a blob's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest {given:?} is not a SHA-256: {problem}")]
pub struct DigestError {
    pub given: String,
    pub problem: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// 64 hex digits, optionally after `sha256:`; upper case is refused so each blob has one
    /// name (and one path on disk).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem| DigestError {
            given: s.to_string(),
            problem,
        };
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() != 64 {
            return Err(fail("it must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(fail("it must be lowercase hex digits (0-9, a-f)")),
            }
        }
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_digest_of_bytes_prints_as_lowercase_hex_and_parses_back() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
        assert_eq!(format!("sha256:{EMPTY}").parse::<Digest>().unwrap(), d);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
    }

    #[test]
    fn what_is_not_a_digest_says_why() {
        let escape = format!("{}a", "../".repeat(21));
        let upper = EMPTY.to_uppercase();
        let table = [
            ("", "it must be 64 hex digits"),
            ("abc", "it must be 64 hex digits"),
            (&EMPTY[1..], "it must be 64 hex digits"),
            (escape.as_str(), "it must be lowercase hex digits (0-9, a-f)"),
            (upper.as_str(), "it must be lowercase hex digits (0-9, a-f)"),
        ];
        for (given, problem) in table {
            let e = given.parse::<Digest>().unwrap_err();
            assert_eq!(e.problem, problem, "{given:?}");
            assert!(e.to_string().contains(problem), "{e}");
        }
    }
}
