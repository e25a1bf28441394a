//! One probe of one check, run from the cell against the host address the check's container
//! port maps to. Failures read like the output of Diego's `healthcheck` binary, since users
//! see them in their logs and in crash reasons:
//! `Failed to make TCP connection to port 8080: connection refused`,
//! `Failed to make HTTP request to '/' on port 8080: timed out after 1.00 seconds`,
//! `Received status code 503 in 3ms`.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use diego_model::Check;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::CheckContext;

/// Connect / request timeout when a check gives 0 (Diego's default).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Succeeds when a TCP connection is established.
    Tcp,
    /// Succeeds on `200 OK` to `GET path`.
    Http { path: String },
}

/// A check ready to run: the model's [`Check`] with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    /// The port inside the container, as the user configured it (and as messages name it).
    pub port: u16,
    /// Connect timeout (TCP) or time to the response headers (HTTP).
    pub timeout: Duration,
    /// The check's own steady interval; `None` = the context's default.
    pub interval: Option<Duration>,
}

impl Probe {
    /// The probe for `check`, or why it cannot be run (validation should have refused it).
    pub fn from_check(check: &Check) -> Result<Self, String> {
        let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0);
        match (&check.tcp_check, &check.http_check) {
            (Some(t), None) => Ok(Self {
                kind: ProbeKind::Tcp,
                port: port(t.port).ok_or_else(|| format!("tcp_check: invalid port {}", t.port))?,
                timeout: millis_or(t.connect_timeout_ms, DEFAULT_PROBE_TIMEOUT),
                interval: positive_millis(t.interval_ms),
            }),
            (None, Some(h)) => Ok(Self {
                kind: ProbeKind::Http {
                    path: if h.path.is_empty() {
                        "/".into()
                    } else {
                        h.path.clone()
                    },
                },
                port: port(h.port).ok_or_else(|| format!("http_check: invalid port {}", h.port))?,
                timeout: millis_or(h.request_timeout_ms, DEFAULT_PROBE_TIMEOUT),
                interval: positive_millis(h.interval_ms),
            }),
            _ => Err("a check must have exactly one of tcp_check, http_check".into()),
        }
    }

    /// Runs the probe once; the error is the user-facing failure text.
    pub async fn run(&self, ctx: &CheckContext) -> Result<(), String> {
        match &self.kind {
            ProbeKind::Tcp => self
                .tcp(ctx)
                .await
                .map_err(|e| format!("Failed to make TCP connection to port {}: {e}", self.port)),
            ProbeKind::Http { path } => self.http(ctx, path).await,
        }
    }

    async fn tcp(&self, ctx: &CheckContext) -> Result<(), String> {
        self.dial(ctx).await.map(|_| ())
    }

    /// A connection to the check's port: through the context's dialer when it has one, else to
    /// the resolved host address.
    async fn dial(&self, ctx: &CheckContext) -> Result<TcpStream, String> {
        let connecting = match &ctx.dialer {
            Some(dial) => dial(self.port),
            None => {
                let addr = (ctx.resolver)(self.port).ok_or_else(not_mapped)?;
                Box::pin(TcpStream::connect(addr))
            }
        };
        match timeout(self.timeout, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(io_text(&e)),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }

    /// `GET path` over a dialled connection (HTTP/1.1, `Connection: close`): the status code.
    async fn http_over_dialer(&self, ctx: &CheckContext, path: &str) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let exchange = async {
            let mut stream = self.dial(ctx).await?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: diego-healthcheck\r\nConnection: close\r\n\r\n", self.port);
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| io_text(&e))?;
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.contains(&b'\n') && head.len() < 4096 {
                let n = stream.read(&mut buf).await.map_err(|e| io_text(&e))?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&head);
            let status = line
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|code| code.parse::<u16>().ok());
            status.ok_or_else(|| "EOF".to_string())
        };
        match timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(self.timeout)),
        }
    }

    async fn http(&self, ctx: &CheckContext, path: &str) -> Result<(), String> {
        let failed = |why: String| {
            format!(
                "Failed to make HTTP request to '{path}' on port {}: {why}",
                self.port
            )
        };
        let start = Instant::now();
        if ctx.dialer.is_some() {
            return match self.http_over_dialer(ctx, path).await {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!(
                    "Received status code {code} in {}ms",
                    start.elapsed().as_millis()
                )),
                Err(e) => Err(failed(e)),
            };
        }
        let addr = (ctx.resolver)(self.port).ok_or_else(|| failed(not_mapped()))?;
        let url = format!("http://{addr}{path}");
        match timeout(self.timeout, ctx.http.get(&url).send()).await {
            Err(_) => Err(failed(timed_out(self.timeout))),
            Ok(Err(e)) => Err(failed(reqwest_text(&e))),
            Ok(Ok(resp)) if resp.status() == reqwest::StatusCode::OK => Ok(()),
            Ok(Ok(resp)) => Err(format!(
                "Received status code {} in {}ms",
                resp.status().as_u16(),
                start.elapsed().as_millis()
            )),
        }
    }
}

fn millis_or(ms: i64, default: Duration) -> Duration {
    positive_millis(ms).unwrap_or(default)
}

fn positive_millis(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

fn not_mapped() -> String {
    "port is not mapped to the host".into()
}

/// As the `healthcheck` binary words a timeout.
fn timed_out(d: Duration) -> String {
    format!("timed out after {:.2} seconds", d.as_secs_f64())
}

/// An I/O error the way Go prints the common ones (`connection refused`), otherwise Rust's
/// text without the `(os error N)` suffix.
fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::HostUnreachable => "no route to host".into(),
        io::ErrorKind::NetworkUnreachable => "network is unreachable".into(),
        io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

/// reqwest's own text ("error sending request for url …") says little; the innermost cause
/// (usually an I/O error) is what the user can act on.
fn reqwest_text(e: &reqwest::Error) -> String {
    let mut source = e.source();
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io_text(io);
        }
        innermost = Some(s);
        source = s.source();
    }
    innermost.map_or_else(|| e.to_string(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use diego_model::{HttpCheck, TcpCheck};

    use super::*;

    #[test]
    fn defaults_apply_when_zero() {
        let p = Probe::from_check(&Check::http(8080, "")).unwrap();
        assert_eq!(
            p,
            Probe {
                kind: ProbeKind::Http { path: "/".into() },
                port: 8080,
                timeout: DEFAULT_PROBE_TIMEOUT,
                interval: None,
            }
        );
        let t = Probe::from_check(&Check {
            tcp_check: Some(TcpCheck {
                port: 9000,
                connect_timeout_ms: 250,
                interval_ms: 5_000,
            }),
            http_check: None,
        })
        .unwrap();
        assert_eq!(t.timeout, Duration::from_millis(250));
        assert_eq!(t.interval, Some(Duration::from_secs(5)));
        assert_eq!(t.kind, ProbeKind::Tcp);
    }

    #[test]
    fn malformed_checks_are_refused() {
        assert!(Probe::from_check(&Check::default()).is_err());
        assert!(Probe::from_check(&Check::tcp(70_000)).is_err());
        assert!(Probe::from_check(&Check::tcp(0)).is_err());
        let both = Check {
            tcp_check: Some(TcpCheck::default()),
            http_check: Some(HttpCheck::default()),
        };
        assert!(Probe::from_check(&both).is_err());
    }

    #[test]
    fn texts_read_like_go() {
        assert_eq!(timed_out(Duration::from_secs(1)), "timed out after 1.00 seconds");
        assert_eq!(
            timed_out(Duration::from_millis(250)),
            "timed out after 0.25 seconds"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_text(&refused), "connection refused");
        let os = io::Error::from_raw_os_error(2);
        assert!(!io_text(&os).contains("os error"), "{}", io_text(&os));
    }
}
