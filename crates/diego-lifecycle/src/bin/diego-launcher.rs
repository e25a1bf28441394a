//! `diego-launcher ROOT START_COMMAND`: starts a staged app (Diego's soldier) — completes
//! `VCAP_APPLICATION` with the instance's variables, then becomes `/bin/sh` running the
//! profiles and the start command in `ROOT/app`. See docs/190-lifecycle.md.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use diego_lifecycle::{env, launch};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, start_command] = args.as_slice() else {
        eprintln!("usage: diego-launcher ROOT START_COMMAND");
        return ExitCode::from(2);
    };
    let argv = launch::argv(root, start_command);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if let Ok(vcap) = std::env::var("VCAP_APPLICATION") {
        let var = |k: &str| std::env::var(k).ok();
        cmd.env("VCAP_APPLICATION", env::complete_vcap_application(&vcap, var));
    }
    // Only returns when the exec failed.
    let e = cmd.exec();
    eprintln!("diego-launcher: starting {}: {e}", argv[0]);
    ExitCode::from(1)
}
