//! The `diego` command: server roles (`diego bbs`, `diego dev`), client commands for the
//! BBS (`task`, `lrp`, `actual`, `cells`, `domains`, `events`), simulated cells for scale
//! tests (`sim-cells`), the cluster's TLS certificates (`certs`) and benchmarks.
//!
//! The top of the dependency graph: it may use every crate, nothing depends on it. Argument
//! types live in [`cli`] and beside each command in [`commands`]; [`output`] renders tables
//! and JSON; [`report`] turns errors into messages and exit codes.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod output;
pub mod process;
pub mod report;

pub use cli::Cli;

use std::process::ExitCode;

/// Runs one invocation and returns its exit code (0 ok, 1 failure, 2 usage error).
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // As the commands see it: a default URL is https:// with TLS.
    let tls_given = cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_key.is_some();
    let bbs_url = cli.bbs_urls().map_or_else(
        |_| String::new(),
        |urls| {
            urls.iter()
                .map(|u| match u.strip_prefix("http://") {
                    Some(rest) if tls_given && u == cli::DEFAULT_BBS_URL => format!("https://{rest}"),
                    _ => u.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    let result = runtime.block_on(commands::dispatch(cli));
    // Do not wait for background work (an event stream's reader) at exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report::report(&e, &bbs_url),
    }
}
