//! Sticky sessions as gorouter does them. Pure.
//!
//! When a backend's response sets `JSESSIONID`, the router adds a `__VCAP_ID__` cookie
//! holding the instance guid, with the same attributes (path, domain, expiry, flags), so it
//! lives and dies with the session. A request carrying `__VCAP_ID__` goes to that instance
//! while it is in the pool; when it is gone the request is balanced normally and the cookie
//! is set again to the instance that answered.

use axum::http::header::{HeaderMap, COOKIE, SET_COOKIE};

pub const VCAP_ID: &str = "__VCAP_ID__";
pub const JSESSIONID: &str = "JSESSIONID";

/// The instance guid a request's `__VCAP_ID__` cookie names.
pub fn requested_instance(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == VCAP_ID)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The `__VCAP_ID__` cookie to add to a response from `instance_guid`, if any: when the
/// response sets `JSESSIONID` (with its attributes), or when the request asked for another
/// instance (the session moved; `Path=/`).
pub fn cookie_for(response: &HeaderMap, instance_guid: &str, requested: Option<&str>) -> Option<String> {
    let session = response
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| {
            c.split_once('=')
                .is_some_and(|(name, _)| name.trim() == JSESSIONID)
        });
    if let Some(session) = session {
        let attributes = session.split_once(';').map_or("", |(_, rest)| rest.trim());
        return Some(if attributes.is_empty() {
            format!("{VCAP_ID}={instance_guid}")
        } else {
            format!("{VCAP_ID}={instance_guid}; {attributes}")
        });
    }
    match requested {
        Some(asked) if asked != instance_guid => Some(format!("{VCAP_ID}={instance_guid}; Path=/; HttpOnly")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: axum::http::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_instance_a_request_asks_for() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["JSESSIONID=abc"], None),
            (&["JSESSIONID=abc; __VCAP_ID__=guid-1"], Some("guid-1")),
            (&["a=1", "__VCAP_ID__=\"guid-2\"; b=2"], Some("guid-2")),
            (&["__VCAP_ID__="], None),
            (&["X__VCAP_ID__=guid-3"], None),
        ];
        for (cookies, want) in cases {
            assert_eq!(
                requested_instance(&headers(COOKIE, cookies)),
                *want,
                "{cookies:?}"
            );
        }
    }

    #[test]
    fn the_cookie_a_response_gets() {
        // (response Set-Cookie, requested instance) → cookie for instance "g1"
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (&[], None, None),
            (&["other=1"], None, None),
            // A session starts: same attributes as JSESSIONID.
            (
                &[
                    "other=1",
                    "JSESSIONID=s1; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=Lax",
                ],
                None,
                Some("__VCAP_ID__=g1; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"),
            ),
            (&["JSESSIONID=s1"], None, Some("__VCAP_ID__=g1")),
            // A session ends: the cookie expires with it.
            (
                &["JSESSIONID=; Max-Age=0; Path=/"],
                Some("g1"),
                Some("__VCAP_ID__=g1; Max-Age=0; Path=/"),
            ),
            // The instance asked for is gone: the cookie moves to the one that answered.
            (&[], Some("g0"), Some("__VCAP_ID__=g1; Path=/; HttpOnly")),
            // It answered as asked: nothing to refresh.
            (&[], Some("g1"), None),
        ];
        for (set, requested, want) in cases {
            let got = cookie_for(&headers(SET_COOKIE, set), "g1", *requested);
            assert_eq!(got.as_deref(), *want, "{set:?} requested {requested:?}");
        }
    }
}
