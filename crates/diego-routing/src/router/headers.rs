//! What the router changes in the headers it forwards. Pure.
//!
//! Toward the backend:
//! - hop-by-hop headers are removed (RFC 9110 §7.6.1: `Connection`, the headers it lists,
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`); an upgrade keeps `Upgrade` and gets
//!   `Connection: upgrade` back, since that is the request the backend must see;
//! - `X-Forwarded-For` gets the client's address appended;
//! - `X-Forwarded-Proto` is the client's own only when the client is a trusted hop (an
//!   address in `--trusted-proxy`: a load balancer that terminates TLS in front of the
//!   router); from anyone else it is replaced by `http`, the scheme the router served;
//! - `X-Request-Id` is kept when the client sent a usable one, else a new UUID, and
//!   gorouter's `X-Vcap-Request-Id` carries the same id.
//!
//! Toward the client, the backend's hop-by-hop headers are removed the same way.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");

/// The longest client-given request id kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 200;

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// An address range given as `ADDR` or `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or ADDR/BITS range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr {
            addr: addr.to_canonical(),
            bits,
        })
    }
}

/// Whether `connection` (the `Connection` header's values) lists `token`.
fn lists(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` with an `Upgrade`).
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    if lists(headers, "upgrade") {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, those `Connection` names included.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Puts an upgrade back after [`strip_hop_by_hop`].
fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// What the router knows of the client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// Whether `ip` is in `--trusted-proxy`.
    pub trusted: bool,
}

/// Rewrites a request's headers for the backend (see the module's rules) and returns its
/// request id. `new_id` makes an id when the client sent none.
pub fn to_backend(
    headers: &mut HeaderMap,
    client: Client,
    upgrade: Option<HeaderValue>,
    new_id: impl FnOnce() -> String,
) -> HeaderValue {
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        restore_upgrade(headers, u);
    }

    let ip = client.ip.to_canonical().to_string();
    let forwarded_for = match joined(headers, &X_FORWARDED_FOR) {
        Some(chain) if !chain.is_empty() => format!("{chain}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, v);
    }

    let proto = headers
        .get(&X_FORWARDED_PROTO)
        .filter(|_| client.trusted)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"https") || v.as_bytes().eq_ignore_ascii_case(b"http"))
        .cloned()
        .unwrap_or(HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PROTO, proto);

    let id = headers
        .get(&X_REQUEST_ID)
        .filter(|v| usable_id(v))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&new_id()).expect("a generated id is a header value"));
    headers.insert(X_REQUEST_ID, id.clone());
    headers.insert(X_VCAP_REQUEST_ID, id.clone());
    id
}

/// Every value of `name`, comma-joined as one list (RFC 9110 §5.3).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut parts = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let first = parts.next()?.to_string();
    Some(parts.fold(first, |acc, p| acc + ", " + p))
}

fn usable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
}

/// Rewrites a backend's response headers for the client. A `101 Switching Protocols` keeps
/// its `Upgrade` and `Connection: upgrade`.
pub fn to_client(headers: &mut HeaderMap, switching: bool) {
    let upgrade = if switching {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        restore_upgrade(headers, u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }

    fn client(ip: &str, trusted: bool) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            trusted,
        }
    }

    type Pairs = &'static [(&'static str, &'static str)];
    /// (client headers, client address, trusted) → headers the backend gets
    type Case = (Pairs, &'static str, bool, Pairs);

    #[test]
    fn requests_reach_the_backend_rewritten() {
        // (client headers, client, trusted) → headers the backend gets
        let cases: &[Case] = &[
            (
                &[("host", "web"), ("accept", "*/*")],
                "127.0.0.1",
                false,
                &[
                    ("accept", "*/*"),
                    ("host", "web"),
                    ("x-forwarded-for", "127.0.0.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-request-id", "new-id"),
                    ("x-vcap-request-id", "new-id"),
                ],
            ),
            // A chain is appended to; a kept id goes to both id headers; an untrusted
            // client's proto is replaced.
            (
                &[
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-for", "10.0.0.2"),
                    ("x-forwarded-proto", "https"),
                    ("x-request-id", "abc-123"),
                    ("x-vcap-request-id", "spoofed"),
                ],
                "127.0.0.9",
                false,
                &[
                    ("x-forwarded-for", "10.0.0.1, 10.0.0.2, 127.0.0.9"),
                    ("x-forwarded-proto", "http"),
                    ("x-request-id", "abc-123"),
                    ("x-vcap-request-id", "abc-123"),
                ],
            ),
            // A trusted hop's proto is kept; nonsense from it is not.
            (
                &[("x-forwarded-proto", "https")],
                "127.0.0.1",
                true,
                &[
                    ("x-forwarded-for", "127.0.0.1"),
                    ("x-forwarded-proto", "https"),
                    ("x-request-id", "new-id"),
                    ("x-vcap-request-id", "new-id"),
                ],
            ),
            (
                &[("x-forwarded-proto", "gopher"), ("x-request-id", "")],
                "::ffff:127.0.0.1",
                true,
                &[
                    ("x-forwarded-for", "127.0.0.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-request-id", "new-id"),
                    ("x-vcap-request-id", "new-id"),
                ],
            ),
            // Hop-by-hop headers go, with whatever Connection names.
            (
                &[
                    ("connection", "keep-alive, x-secret"),
                    ("keep-alive", "timeout=5"),
                    ("x-secret", "1"),
                    ("te", "trailers"),
                    ("transfer-encoding", "chunked"),
                    ("proxy-authorization", "Basic eA=="),
                    ("upgrade", "websocket"),
                    ("x-kept", "yes"),
                ],
                "127.0.0.1",
                false,
                &[
                    ("x-forwarded-for", "127.0.0.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-kept", "yes"),
                    ("x-request-id", "new-id"),
                    ("x-vcap-request-id", "new-id"),
                ],
            ),
        ];
        for (i, (given, ip, trusted, want)) in cases.iter().enumerate() {
            let mut h = map(given);
            let id = to_backend(&mut h, client(ip, *trusted), None, || "new-id".into());
            let want: Vec<(String, String)> = map(want)
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let mut want = want;
            want.sort();
            assert_eq!(pairs(&h), want, "case {i}");
            assert_eq!(Some(&id), h.get(&X_REQUEST_ID), "case {i}");
        }
    }

    #[test]
    fn an_unusable_request_id_is_replaced() {
        for bad in ["has space", &"x".repeat(MAX_REQUEST_ID + 1)] {
            let mut h = map(&[("x-request-id", bad)]);
            let id = to_backend(&mut h, client("127.0.0.1", false), None, || "fresh".into());
            assert_eq!(id, "fresh", "{bad:?}");
        }
    }

    #[test]
    fn an_upgrade_keeps_what_the_backend_needs() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let upgrade = upgrade_of(&h);
        assert_eq!(upgrade.as_ref().map(|v| v.to_str().unwrap()), Some("websocket"));
        to_backend(&mut h, client("127.0.0.1", false), upgrade, || "id".into());
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "k");

        // Upgrade without Connection: upgrade is no upgrade.
        assert_eq!(upgrade_of(&map(&[("upgrade", "websocket")])), None);
        assert!(upgrade_of(&map(&[("connection", "keep-alive, upgrade"), ("upgrade", "h2c")])).is_some());
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_except_a_switch() {
        let given = [
            ("connection", "upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ];
        let mut h = map(&given);
        to_client(&mut h, false);
        assert_eq!(
            pairs(&h),
            [("content-type".to_string(), "text/plain".to_string())]
        );

        let mut h = map(&given);
        to_client(&mut h, true);
        let names: Vec<String> = pairs(&h).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["connection", "content-type", "upgrade"]);
    }

    #[test]
    fn trusted_ranges() {
        let cases = [
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.0/8", "127.255.0.1", true),
            ("10.0.0.0/9", "10.127.0.1", true),
            ("10.0.0.0/9", "10.128.0.1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("::1", "::1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "127.0.0.1", false),
        ];
        for (range, ip, want) in cases {
            let cidr: Cidr = range.parse().unwrap();
            assert_eq!(cidr.contains(ip.parse().unwrap()), want, "{range} ∋ {ip}");
        }
        for bad in ["", "localhost", "10.0.0.0/33", "::/129", "1.2.3.4/x"] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
