//! The `diego` binary; everything lives in the `diego_cli` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // The runc backend's per-process supervisor (internal, not in --help): dispatched before
    // any parsing or runtime so that it stays small for as long as its process runs.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "garden-shim") {
        let code = diego_garden_runc::shim::main(args);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    diego_cli::run(diego_cli::Cli::parse())
}
