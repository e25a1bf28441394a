//! The `ip` command (iproute2): the one way this harness changes links and namespaces.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Runs `ip ARGS` to completion; its stderr becomes the error when it fails.
pub(super) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip -n NETNS ARGS`.
pub(super) fn ip_in(netns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all)
}
