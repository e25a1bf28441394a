//! Where a container lives on the host, and how container paths map onto it.
//!
//! Layout of one container, `<depot>/<handle>/`:
//!
//! ```text
//! root/            the container's root: container path P ↦ root/P
//! root/home/vcap/  home: processes' default working dir and $HOME; relative paths start here
//! root/tmp/        $TMPDIR
//! processes/<id>/  stdout, stderr (appended as read) and exit (JSON) of each process
//! ```
//!
//! Only `stream_in`/`stream_out` paths go through this mapping. A process's `path` and an
//! absolute `dir` are host paths, because processes see the host's filesystem (there is no
//! chroot), which is what "no isolation" means.

use std::path::{Component, Path, PathBuf};

use crate::GardenError;

/// The home directory inside the container, as Cloud Foundry's rootfs has it.
pub const CONTAINER_HOME: &str = "home/vcap";

#[derive(Debug, Clone)]
pub struct ContainerDirs {
    /// `<depot>/<handle>`: everything of the container; removed on destroy.
    pub base: PathBuf,
    pub root: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

impl ContainerDirs {
    pub fn new(depot: &Path, handle: &str) -> Self {
        let base = depot.join(handle);
        let root = base.join("root");
        Self {
            home: root.join(CONTAINER_HOME),
            tmp: root.join("tmp"),
            root,
            base,
        }
    }

    pub fn process(&self, id: &str) -> PathBuf {
        self.base.join("processes").join(id)
    }

    /// The host path of container path `path`: absolute paths are under the container's root,
    /// relative ones under its home. `..` may not climb above the root.
    pub fn host_path(&self, path: &str) -> Result<PathBuf, GardenError> {
        let (start, rel) = match path.strip_prefix('/') {
            Some(rest) => (Vec::new(), rest),
            None => (vec![CONTAINER_HOME], path),
        };
        let mut parts: Vec<&str> = start.iter().flat_map(|s| s.split('/')).collect();
        for c in Path::new(rel).components() {
            match c {
                Component::Normal(s) => parts.push(
                    s.to_str()
                        .ok_or_else(|| GardenError::Invalid(format!("path {path:?} is not valid UTF-8")))?,
                ),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(GardenError::Invalid(format!(
                            "path {path:?} leaves the container's root filesystem"
                        )));
                    }
                }
            }
        }
        Ok(parts.iter().fold(self.root.clone(), |p, s| p.join(s)))
    }
}

/// Handles and process ids name directories, so they must be plain file names.
pub fn validate_name(kind: &str, name: &str) -> Result<(), GardenError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(GardenError::Invalid(format!(
            "{kind} {name:?} must be 1-128 characters of A-Z a-z 0-9 - _ . and not start with '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_map_under_root_and_relative_ones_under_home() {
        let d = ContainerDirs::new(Path::new("/depot"), "h");
        assert_eq!(d.host_path("/").unwrap(), PathBuf::from("/depot/h/root"));
        assert_eq!(
            d.host_path("/app/x").unwrap(),
            PathBuf::from("/depot/h/root/app/x")
        );
        assert_eq!(
            d.host_path("app").unwrap(),
            PathBuf::from("/depot/h/root/home/vcap/app")
        );
        assert_eq!(d.host_path("").unwrap(), d.home);
        assert_eq!(
            d.host_path("../../etc").unwrap(),
            PathBuf::from("/depot/h/root/etc")
        );
        assert_eq!(
            d.host_path("/a/../b/./c").unwrap(),
            PathBuf::from("/depot/h/root/b/c")
        );
        assert!(matches!(d.host_path("/.."), Err(GardenError::Invalid(_))));
        assert!(matches!(d.host_path("../../../x"), Err(GardenError::Invalid(_))));
    }

    #[test]
    fn names_must_be_plain_file_names() {
        assert!(validate_name("handle", "abc-1_2.3").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b"] {
            assert!(validate_name("handle", bad).is_err(), "{bad:?}");
        }
    }
}
