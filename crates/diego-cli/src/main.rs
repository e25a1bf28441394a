//! The `diego` binary; everything lives in the `diego_cli` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    diego_cli::run(diego_cli::Cli::parse())
}
