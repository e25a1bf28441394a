//! Running host commands (`mount`, `umount`, `tar`, `busybox`, `runc`): the crate's only way
//! to make privileged system calls, since `unsafe` (and so raw libc) is denied.

use std::io;
use std::process::Command;

/// Runs `cmd` to completion and returns its stdout; a failure to start or a non-zero exit is
/// an error carrying the program's name and its stderr.
pub fn run(cmd: &mut Command) -> io::Result<Vec<u8>> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_exit_status_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo nope >&2; exit 4"])).unwrap_err();
        assert!(
            err.to_string().contains("exit status: 4") && err.to_string().contains("nope"),
            "{err}"
        );
        assert_eq!(run(Command::new("sh").args(["-c", "echo hi"])).unwrap(), b"hi\n");
        let err = run(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
