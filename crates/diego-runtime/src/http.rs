//! The HTTP seam: one server loop and one client builder for every role.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client waits for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client builder every role starts from: bounded connect time, no Nagle delay on the
/// small JSON requests roles exchange. Callers add their own request timeout.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
