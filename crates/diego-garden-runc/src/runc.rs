//! The `runc` command line, with a private state directory (`--root`) so this backend never
//! sees or touches containers that other runc users on the host own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host;

#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    state_dir: PathBuf,
}

impl Runc {
    pub fn new(binary: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Runc {
            binary: binary.into(),
            state_dir: state_dir.into(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_dir);
        cmd
    }

    /// `runc run` in the foreground: runc's stdin/stdout/stderr become the container process's
    /// and its exit code is the process's (128 + signal when killed). runc deletes the
    /// container when it exits. The caller sets up stdio and spawns.
    pub fn run(&self, bundle: &Path, id: &str) -> Command {
        let mut cmd = self.command();
        cmd.arg("run").arg("--bundle").arg(bundle).arg(id);
        cmd
    }

    /// `runc delete --force`: kills the container if it still runs and removes its state. A
    /// container runc does not know is not an error.
    pub fn delete_force(&self, id: &str) -> std::io::Result<()> {
        match host::run(self.command().args(["delete", "--force", id])) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_uses_the_private_state_dir() {
        let cmd = Runc::new("runc", "/run/diego-runc").run(Path::new("/b"), "c1");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["--root", "/run/diego-runc", "run", "--bundle", "/b", "c1"]);
    }
}
