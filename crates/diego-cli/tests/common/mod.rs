//! Shared by the CLI tests that drive the real `diego` binary.
#![allow(dead_code)]

use std::process::Stdio;

use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_diego");

/// `diego ARGS` against `bbs`, to completion: (success, stdout then stderr).
pub async fn diego(bbs: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DIEGO_BBS_URL", bbs)
        .output()
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A quiet `diego ARGS` in the background, killed when dropped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("DIEGO_BBS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning diego")
}
