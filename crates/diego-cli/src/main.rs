//! The `diego` binary; everything lives in the `diego_cli` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // The runc backend's per-process supervisor and per-container net-in proxy (internal, not
    // in --help): dispatched before any parsing or runtime so that they stay small for as long
    // as their processes run.
    let mut args = std::env::args_os();
    let helper: Option<fn(std::env::ArgsOs) -> i32> = match args.nth(1) {
        Some(a) if a == "garden-shim" => Some(diego_garden_runc::shim::main),
        Some(a) if a == "garden-netin" => Some(diego_garden_runc::netin::proxy::main),
        _ => None,
    };
    if let Some(helper) = helper {
        let code = helper(args);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    diego_cli::run(diego_cli::Cli::parse())
}
