//! [`BbsUrls`]: the BBS processes a client may talk to, parsed once.
//!
//! Every role and the CLI take `--bbs URL[,URL…]`; several `diego bbs` on one store serve the
//! same API, and [`crate::BbsClient`] fails over between them in this order.

use std::fmt;
use std::str::FromStr;

/// One or more BBS base URLs (`http://host:port`, no trailing `/`), in the order they are
/// tried. Never empty; no URL twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbsUrls(Vec<String>);

/// A BBS URL list that cannot be used: which entry, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BbsUrlError {
    #[error("no BBS URL given (expected URL[,URL…], e.g. http://10.0.0.1:8889,http://10.0.0.2:8889)")]
    Empty,
    #[error("BBS URL {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("BBS URL {url:?} is listed twice")]
    Duplicate { url: String },
}

impl BbsUrls {
    /// A comma-separated list: `http://10.0.0.1:8889,http://10.0.0.2:8889`. Spaces around
    /// entries are ignored.
    pub fn parse(list: &str) -> Result<Self, BbsUrlError> {
        if list.trim().is_empty() {
            return Err(BbsUrlError::Empty);
        }
        Self::new(list.split(','))
    }

    /// Each item one URL, or itself a comma-separated list (a TOML array of either).
    pub fn new<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Result<Self, BbsUrlError> {
        let mut urls: Vec<String> = Vec::new();
        for item in items {
            for raw in item.as_ref().split(',') {
                let url = validate(raw.trim())?;
                if urls.contains(&url) {
                    return Err(BbsUrlError::Duplicate { url });
                }
                urls.push(url);
            }
        }
        if urls.is_empty() {
            return Err(BbsUrlError::Empty);
        }
        Ok(BbsUrls(urls))
    }

    /// One URL, taken as given (a trailing `/` dropped) without checking it: for callers that
    /// built the URL themselves (a test's `http://127.0.0.1:{port}`).
    pub fn one(url: impl Into<String>) -> Self {
        BbsUrls(vec![url.into().trim_end_matches('/').to_string()])
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one URL.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first URL: the one a client starts with.
    pub fn first(&self) -> &str {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

fn validate(raw: &str) -> Result<String, BbsUrlError> {
    let invalid = |reason: &str| BbsUrlError::Invalid {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.is_empty() {
        return Err(invalid("empty entry in the list"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| invalid(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a BBS URL takes no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("a BBS URL takes no user or password"));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

impl FromStr for BbsUrls {
    type Err = BbsUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A single URL, unchecked, as [`BbsUrls::one`].
impl From<&str> for BbsUrls {
    fn from(url: &str) -> Self {
        BbsUrls::one(url)
    }
}

/// A single URL, unchecked, as [`BbsUrls::one`].
impl From<String> for BbsUrls {
    fn from(url: String) -> Self {
        BbsUrls::one(url)
    }
}

impl From<&String> for BbsUrls {
    fn from(url: &String) -> Self {
        BbsUrls::one(url.as_str())
    }
}

impl From<&BbsUrls> for BbsUrls {
    fn from(urls: &BbsUrls) -> Self {
        urls.clone()
    }
}

/// `http://a:8889,http://b:8889`: the form `--bbs` takes.
impl fmt::Display for BbsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let cases: &[(&str, &[&str])] = &[
            ("http://127.0.0.1:8889", &["http://127.0.0.1:8889"]),
            ("http://127.0.0.1:8889/", &["http://127.0.0.1:8889"]),
            (
                "http://10.0.0.1:8889,http://10.0.0.2:8889",
                &["http://10.0.0.1:8889", "http://10.0.0.2:8889"],
            ),
            (" http://a:1 , https://b:2/ ", &["http://a:1", "https://b:2"]),
            ("http://[::1]:8889", &["http://[::1]:8889"]),
        ];
        for (input, want) in cases {
            let got = BbsUrls::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.as_slice(), *want, "{input}");
            assert_eq!(got.first(), want[0]);
        }
    }

    #[test]
    fn refusals_name_the_bad_entry() {
        let cases: &[(&str, &str)] = &[
            ("", "no BBS URL given"),
            ("http://a:1,,http://b:2", "BBS URL \"\": empty entry"),
            ("http://a:1,10.0.0.2:8889", "BBS URL \"10.0.0.2:8889\":"),
            (
                "ftp://a:1",
                "BBS URL \"ftp://a:1\": the scheme must be http or https",
            ),
            ("http://a:1,http://a:1/", "BBS URL \"http://a:1\" is listed twice"),
            ("http://a:1?x=1", "takes no query"),
            ("http://u:p@a:1", "takes no user"),
            ("http://a:notaport", "BBS URL \"http://a:notaport\": not a URL"),
        ];
        for (input, want) in cases {
            let err = BbsUrls::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn items_may_be_urls_or_lists() {
        let got = BbsUrls::new(["http://a:1", "http://b:2,http://c:3"]).unwrap();
        assert_eq!(got.as_slice(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(got.to_string(), "http://a:1,http://b:2,http://c:3");
        assert_eq!(BbsUrls::new(Vec::<String>::new()), Err(BbsUrlError::Empty));
    }
}
