//! The HTTP seam: one server loop and one client builder for every role.

mod body_idle;
mod error;
mod limits;
mod serve;

use std::time::Duration;

use crate::tls::Tls;

pub use error::{error_response, no_such_route};
pub use limits::{
    ServeLimits, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
pub use serve::{serve, Handler};

/// A response header saying the server did not act on the request (`serve()` sets it on the
/// 503 it answers a connection over its limit with, before reading the request): a client
/// may send the request again, to this server or another, without risk of applying it twice.
pub const UNPROCESSED_HEADER: &str = "diego-request-unprocessed";

/// How long a client waits for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client keeps an idle connection for reuse: below the server's
/// [`DEFAULT_HEADER_READ_TIMEOUT`], so a client drops an idle connection before the server
/// closes it, rather than sending a request into a connection the server is closing.
pub const CLIENT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client builder every role starts from: bounded connect time, no Nagle delay on the
/// small JSON requests roles exchange, idle connections dropped before servers close them.
/// Callers add their own request timeout.
///
/// With `tls`, the client presents the role's certificate and trusts only the CA of `tls`
/// (reloaded with it), and refuses `http://` URLs: a role with TLS talks to other roles over
/// TLS only. Without, it speaks plain HTTP and has no TLS roots at all.
pub fn http_client(tls: Option<&Tls>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(CLIENT_POOL_IDLE_TIMEOUT);
    match tls {
        Some(tls) => builder
            .use_preconfigured_tls(tls.client_config())
            .https_only(true),
        None => builder,
    }
}
