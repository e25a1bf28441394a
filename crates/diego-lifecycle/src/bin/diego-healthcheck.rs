//! `diego-healthcheck --port N [--uri PATH]`: whether the app in this container answers
//! (Diego's spy). Exits 0 when a TCP connection to the port succeeds (or, with `--uri`, when
//! an HTTP GET of that path answers 2xx) within the timeout, 1 otherwise, saying why on stderr;
//! usable as a run action in a check or monitor.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "diego-healthcheck",
    version,
    about = "Check that the app in this container answers"
)]
struct Args {
    /// The port the app listens on.
    #[arg(long, env = "PORT")]
    port: u16,
    /// GET this path over HTTP and expect a 2xx status (else only connect).
    #[arg(long, value_name = "PATH")]
    uri: Option<String>,
    /// The address to check.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Give up after this long.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match check(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthcheck failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    let addr = SocketAddr::new(args.host, args.port);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let Some(uri) = &args.uri else {
        return Ok(());
    };
    let path = if uri.starts_with('/') {
        uri.clone()
    } else {
        format!("/{uri}")
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: diego-healthcheck\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending GET {path}: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream
            .read(&mut head[got..])
            .map_err(|e| format!("reading the answer to GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer ({line:?})"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}
