//! How the launcher starts a droplet's command: in `app/`, after sourcing every
//! `profile.d/*.sh` (in name order) and the app's own `app/.profile`, then the command by
//! `exec bash -c COMMAND` (or `/bin/sh -c` where there is no bash, as in busybox), so it may be
//! any shell command line (`$PORT`, `&&`, builtins) and a lone simple command becomes the
//! container's process and gets its signals: bash and busybox's sh exec it, Debian's dash
//! would stay as its parent (measured: `/proc/PID/comm` of `sh -c "exec sh -c 'sleep 3'"` is
//! `sh` under dash, `sleep` under busybox).

/// The argv that starts `start_command` in a droplet unpacked at `root`.
pub fn argv(root: &str, start_command: &str) -> Vec<String> {
    let root = shell_quote(root);
    let script = format!(
        "cd {root}/app || exit 1\n\
         for f in {root}/profile.d/*.sh; do [ -f \"$f\" ] && . \"$f\"; done\n\
         [ -f .profile ] && . ./.profile\n\
         command -v bash >/dev/null 2>&1 && exec bash -c {command}\n\
         exec /bin/sh -c {command}\n",
        command = shell_quote(start_command)
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_in_app_after_the_profiles_with_the_environment() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("it's here");
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::create_dir_all(dir.join("profile.d")).unwrap();
        std::fs::write(dir.join("profile.d/a.sh"), "export FROM_A=a\n").unwrap();
        std::fs::write(dir.join("profile.d/b.sh"), "export FROM_B=\"$FROM_A-b\"\n").unwrap();
        std::fs::write(dir.join("app/.profile"), "export FROM_APP=app\n").unwrap();
        let argv = argv(dir.to_str().unwrap(), "echo \"$PWD $FROM_B $FROM_APP $PORT\"");
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("PORT", "8080")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pwd = dir.join("app");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{} a-b app 8080\n", pwd.display())
        );
    }

    #[test]
    fn a_droplet_without_profiles_still_starts() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        let argv = argv(root.path().to_str().unwrap(), "exit 7");
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap();
        assert_eq!(
            status.code(),
            Some(7),
            "the command's own exit status is the launcher's"
        );
    }

    #[test]
    fn a_lone_command_replaces_the_launcher_and_gets_its_signals() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        let argv = argv(root.path().to_str().unwrap(), "sleep 30");
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(
                std::time::Instant::now() < deadline,
                "the launcher did not exec the command"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
