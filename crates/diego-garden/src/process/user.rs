//! The user the server runs as. The process backend cannot switch users (that needs
//! `setuid` in the child, i.e. `unsafe` or root tooling), so a process may only ask for this one.

use crate::GardenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub uid: u32,
    /// From `/etc/passwd`; `None` when the uid has no entry there.
    pub name: Option<String>,
}

impl CurrentUser {
    /// Reads the real uid from `/proc/self/status` and its name from `/etc/passwd`.
    pub fn detect() -> Result<Self, GardenError> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| GardenError::Unavailable(format!("reading /proc/self/status: {e}")))?;
        let uid = uid_from_status(&status)
            .ok_or_else(|| GardenError::Unavailable("no Uid line in /proc/self/status".into()))?;
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| name_from_passwd(&p, uid));
        Ok(Self { uid, name })
    }

    /// Whether a process spec's `user` means this user (empty = the default = this user).
    pub fn accepts(&self, user: &str) -> bool {
        user.is_empty() || self.name.as_deref() == Some(user) || user.parse() == Ok(self.uid)
    }
}

fn uid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn name_from_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let entry_uid: u32 = f.nth(1)?.parse().ok()?;
        (entry_uid == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uid_and_name() {
        assert_eq!(
            uid_from_status("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        let passwd = "root:x:0:0:root:/root:/bin/bash\nvcap:x:1000:1000::/home/vcap:/bin/sh\n";
        assert_eq!(name_from_passwd(passwd, 1000).as_deref(), Some("vcap"));
        assert_eq!(name_from_passwd(passwd, 7), None);
        let u = CurrentUser {
            uid: 1000,
            name: Some("vcap".into()),
        };
        assert!(u.accepts("") && u.accepts("vcap") && u.accepts("1000"));
        assert!(!u.accepts("root") && !u.accepts("0"));
    }
}
