//! Who a container process runs as: a user name from the process spec resolved against the
//! container's `/etc/passwd`, with a non-root default.

/// A resolved user: what the OCI `process.user` and the process's `HOME`/`USER` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl User {
    /// The default, non-root user every preloaded rootfs has (Cloud Foundry's `vcap`).
    pub fn default_user() -> Self {
        User {
            name: "vcap".into(),
            uid: 2000,
            gid: 2000,
            home: "/home/vcap".into(),
        }
    }

    pub fn root() -> Self {
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        }
    }

    /// Resolves a process's `user` against `passwd` (the contents of the rootfs's
    /// `/etc/passwd`, if it has one). Empty means the default user; `root` always resolves,
    /// even without a passwd file.
    pub fn resolve(name: &str, passwd: Option<&str>) -> Result<Self, UnknownUser> {
        if name.is_empty() {
            return Ok(User::default_user());
        }
        if let Some(user) = passwd.and_then(|p| parse_passwd(p).find(|u| u.name == name)) {
            return Ok(user);
        }
        match name {
            "root" => Ok(User::root()),
            _ => Err(UnknownUser(name.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {0:?} is not in the container's /etc/passwd")]
pub struct UnknownUser(pub String);

/// The well-formed entries of an `/etc/passwd` file; malformed lines are skipped, as libc does.
pub fn parse_passwd(passwd: &str) -> impl Iterator<Item = User> + '_ {
    passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(User {
            name: fields[0].to_string(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5].to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\n\
                          vcap:x:2000:2000:vcap:/home/vcap:/bin/sh\napp:x:1500:1600::/app:/bin/sh\n";

    #[test]
    fn empty_name_is_the_non_root_default() {
        let u = User::resolve("", Some(PASSWD)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (2000, 2000, "/home/vcap"));
        assert_eq!(User::resolve("", None).unwrap(), User::default_user());
    }

    #[test]
    fn names_are_looked_up_in_passwd() {
        let u = User::resolve("app", Some(PASSWD)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1500, 1600, "/app"));
        assert_eq!(User::resolve("root", None).unwrap(), User::root());
        assert_eq!(
            User::resolve("ghost", Some(PASSWD)),
            Err(UnknownUser("ghost".into()))
        );
        assert_eq!(parse_passwd(PASSWD).count(), 3);
    }
}
