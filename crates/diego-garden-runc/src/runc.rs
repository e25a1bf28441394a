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

    /// The runc executable.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// runc's private state directory (`--root`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
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

    /// `runc run --detach`: runc starts the container's init process and exits, handing its
    /// stdio to the container (so the caller must not give it pipes it will not read). The
    /// init's host pid is written to `pid_file`.
    pub fn run_detached(&self, bundle: &Path, id: &str, pid_file: &Path) -> Command {
        let mut cmd = self.command();
        cmd.args(["run", "--detach", "--pid-file"])
            .arg(pid_file)
            .arg("--bundle")
            .arg(bundle)
            .arg(id);
        cmd
    }

    /// `runc exec --process FILE` in the foreground: runc passes its stdio to the process and
    /// exits with the process's exit code (128 + signal when killed). The process's host pid
    /// is written to `pid_file`.
    pub fn exec(&self, id: &str, process_json: &Path, pid_file: &Path) -> Command {
        let mut cmd = self.command();
        cmd.args(["exec", "--pid-file"])
            .arg(pid_file)
            .arg("--process")
            .arg(process_json)
            .arg(id);
        cmd
    }

    /// The ids of the containers in this state dir (`runc list --quiet`).
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let out = host::run(self.command().args(["list", "--quiet"]))?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect())
    }

    /// Every container in this state dir with its status (`running`, `stopped`, `created`,
    /// `paused`), from one `runc list --format json`.
    pub fn list_states(&self) -> std::io::Result<Vec<(String, String)>> {
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
            status: String,
        }
        let out = host::run(self.command().args(["list", "--format", "json"]))?;
        // runc prints `null` when there are none.
        let entries: Option<Vec<Entry>> = serde_json::from_slice(&out).map_err(std::io::Error::other)?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.id, e.status))
            .collect())
    }

    /// The host pid of a running container's init (`runc state`); `None` when the container
    /// is not running.
    fn init_pid(&self, id: &str) -> std::io::Result<Option<u32>> {
        #[derive(serde::Deserialize)]
        struct State {
            pid: u32,
            status: String,
        }
        let out = host::run(self.command().args(["state", id]))?;
        let state: State = serde_json::from_slice(&out).map_err(std::io::Error::other)?;
        Ok((state.status == "running" && state.pid > 0).then_some(state.pid))
    }

    /// The init pids of every running container in this state dir.
    pub fn running_init_pids(&self) -> std::io::Result<Vec<(String, u32)>> {
        let mut pids = Vec::new();
        for (id, status) in self.list_states()? {
            if status != "running" {
                continue;
            }
            // Gone between the listing and the state: not running any more.
            if let Ok(Some(pid)) = self.init_pid(&id) {
                pids.push((id, pid));
            }
        }
        Ok(pids)
    }

    /// `runc --version`: is the binary there and runnable?
    pub fn version(&self) -> std::io::Result<String> {
        let out = host::run(Command::new(&self.binary).arg("--version"))?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    /// `runc delete --force`: kills the container if it still runs and removes its state. A
    /// container runc does not know is not an error.
    /// `runc kill ID KILL`: SIGKILL to the container's init (and so its whole pid namespace).
    pub fn kill(&self, id: &str) -> std::io::Result<()> {
        host::run(self.command().args(["kill", id, "KILL"])).map(|_| ())
    }

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

    #[test]
    fn exec_passes_the_process_file_and_pid_file() {
        let runc = Runc::new("runc", "/r");
        let args = |cmd: Command| -> Vec<String> {
            cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
        };
        assert_eq!(
            args(runc.exec("c1", Path::new("/p.json"), Path::new("/pid"))),
            [
                "--root",
                "/r",
                "exec",
                "--pid-file",
                "/pid",
                "--process",
                "/p.json",
                "c1"
            ]
        );
        assert_eq!(
            args(runc.run_detached(Path::new("/b"), "c1", Path::new("/pid"))),
            [
                "--root",
                "/r",
                "run",
                "--detach",
                "--pid-file",
                "/pid",
                "--bundle",
                "/b",
                "c1"
            ]
        );
    }
}
