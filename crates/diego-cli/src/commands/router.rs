//! `diego router`: the HTTP router in front of the apps' instances, following the BBS.

use diego_client::BbsUrls;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use diego_routing::router::{self, Balance, Cidr, RouterConfig};
use tokio_util::sync::CancellationToken;

use crate::process;

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// Address the proxy listens on.
    #[arg(long, value_name = "ADDR", default_value = router::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address of the admin listener (/routes, /health, /metrics).
    #[arg(long, value_name = "ADDR", default_value = router::DEFAULT_ADMIN_LISTEN)]
    pub admin: SocketAddr,
    /// A log server (`diego logs-server`) to send each app its RTR lines: one per request an
    /// instance answered.
    #[arg(long, value_name = "URL")]
    pub logs_url: Option<String>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub config_file: crate::config::ConfigArgs,
}

/// How the router forwards; shared with `diego dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// How a route's instances share requests: round-robin or least-connections.
    #[arg(long, value_name = "HOW", default_value = "round-robin", value_parser = parse_balance)]
    pub balance: Balance,
    /// Longest wait for a backend's response head before answering 504 (500ms, 60s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub backend_timeout: Duration,
    /// Longest wait for a connection to a backend; a connect that times out is tried on another instance.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long requests in flight get to finish after SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Attempts per request, the first included (only failed connects are tried again); 1 to 16.
    #[arg(long, value_name = "N", default_value_t = diego_routing::router::retry::DEFAULT_MAX_ATTEMPTS as u8,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    pub max_attempts: u8,
    /// Idle kept-alive connections kept per backend.
    #[arg(long, value_name = "N", default_value_t = router::DEFAULT_MAX_IDLE_PER_BACKEND)]
    pub max_idle_per_backend: usize,
    /// A client (ADDR or ADDR/BITS) whose X-Forwarded-Proto is believed, such as a TLS-terminating
    /// load balancer in front of the router (repeatable).
    #[arg(long = "trusted-proxy", value_name = "ADDR[/BITS]")]
    pub trusted_proxies: Vec<Cidr>,
}

impl ProxyArgs {
    pub fn apply(&self, config: &mut RouterConfig) {
        config.balance = self.balance;
        config.backend_timeout = self.backend_timeout;
        config.connect_timeout = self.connect_timeout;
        config.drain_timeout = self.drain_timeout;
        config.max_attempts = usize::from(self.max_attempts);
        config.max_idle_per_backend = self.max_idle_per_backend;
        config.trusted_proxies = self.trusted_proxies.clone();
    }
}

fn parse_balance(s: &str) -> Result<Balance, String> {
    s.parse()
}

/// `500ms`, `20s`, `2m`, or plain seconds; more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use 500ms, 20s or 2m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds < 1e9) {
        return Err(format!("{s:?}: a duration must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// RTR lines shipped to a log server: the router's access hook, and the shipper's loop.
pub struct RtrShipping {
    pub hook: router::AccessHook,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RtrShipping {
    /// Starts shipping to `logs_url` (refused, naming the flag, when it is no http URL), over
    /// mutual TLS with `tls`.
    pub fn start(logs_url: &str, tls: Option<&diego_runtime::tls::Tls>) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let logs_url = crate::commands::role_url("--logs-url", logs_url, "", tls)?;
        let mut config = diego_logs::ShipperConfig::new(logs_url);
        config.tls = tls.cloned();
        let (shipper, task) = diego_logs::Shipper::start(config, stop.clone()).context("--logs-url")?;
        Ok(RtrShipping {
            hook: router::ship_to(shipper),
            stop,
            task,
        })
    }

    /// Sends what is queued (briefly) and ends.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub async fn run(
    bbs: &BbsUrls,
    args: RouterArgs,
    tls: Option<diego_runtime::tls::Tls>,
) -> anyhow::Result<()> {
    process::init_logging();
    let shutdown = CancellationToken::new();
    process::cancel_on_signal(shutdown.clone());
    let mut config = RouterConfig::new(bbs, args.listen, args.admin);
    args.proxy.apply(&mut config);
    let shipping = args
        .logs_url
        .as_deref()
        .map(|url| RtrShipping::start(url, tls.as_ref()))
        .transpose()?;
    let admin_scheme = diego_runtime::tls::scheme(tls.as_ref());
    config.tls = tls;
    config.access_hook = shipping.as_ref().map(|s| s.hook.clone());
    let running = router::start(config, shutdown)
        .await
        .with_context(|| format!("binding {} and {}", args.listen, args.admin))?;
    eprintln!(
        "diego router listening on http://{} (admin {admin_scheme}://{}), following the BBS at {bbs}{}",
        running.addr,
        running.admin_addr,
        args.logs_url
            .as_deref()
            .map(|u| format!(", RTR lines to {u}"))
            .unwrap_or_default()
    );
    let ended = running.task.await.context("router task");
    if let Some(s) = shipping {
        s.finish().await;
    }
    ended??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("20s", 20_000),
            ("2m", 120_000),
            ("60", 60_000),
            ("1.5s", 1_500),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in ["", "0", "0s", "ten", "5h", "-1s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_flags_are_named() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            router: RouterArgs,
        }
        for (argv, flag) in [
            (&["x", "--balance", "random"][..], "--balance"),
            (&["x", "--backend-timeout", "soon"], "--backend-timeout"),
            (&["x", "--trusted-proxy", "10.0.0.0/40"], "--trusted-proxy"),
            (&["x", "--max-attempts", "0"], "--max-attempts"),
            (&["x", "--listen", "nowhere"], "--listen"),
        ] {
            let err = Wrap::try_parse_from(argv).err().expect("refused").to_string();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
        let w = Wrap::try_parse_from(["x"]).unwrap();
        assert_eq!(w.router.listen.to_string(), router::DEFAULT_LISTEN);
        assert_eq!(w.router.admin.to_string(), router::DEFAULT_ADMIN_LISTEN);
        assert_eq!(w.router.proxy.balance, Balance::RoundRobin);
        assert_eq!(w.router.proxy.backend_timeout, router::DEFAULT_BACKEND_TIMEOUT);
        assert_eq!(w.router.proxy.drain_timeout, router::DEFAULT_DRAIN_TIMEOUT);
    }
}
