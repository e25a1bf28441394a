//! Reading the files of an image by name, whether it is a directory (an OCI image layout) or a
//! tarball (a packed layout, or a `docker save` archive).
//!
//! A tarball is never unpacked to disk: one pass over its headers records where each member's
//! bytes start, and a member is read by seeking there. Symlink and hard-link members (old
//! `docker save` links a repeated layer to its first copy) are followed by name inside the
//! archive, never on the host.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// The most hops followed from a link member before giving up (a loop, or a malicious chain).
const MAX_LINK_HOPS: usize = 16;

#[derive(Debug)]
pub enum Source {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        files: HashMap<String, Member>,
        links: HashMap<String, String>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Member {
    offset: u64,
    size: u64,
}

impl Source {
    /// `path` as a directory, or as a tarball indexed now. Errors are the host's (missing
    /// file, unreadable, not a tar).
    pub fn open(path: &Path) -> io::Result<Source> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let mut archive = tar::Archive::new(BufReader::new(File::open(path)?));
        let (mut files, mut links) = (HashMap::new(), HashMap::new());
        for entry in archive.entries_with_seek()? {
            let entry = entry?;
            let Some(name) = normalize(&entry.path()?) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() || kind.is_contiguous() {
                let member = Member {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                files.insert(name, member);
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name()? else {
                    continue;
                };
                // A hard link names a member; a symlink is relative to its own directory.
                let joined = if kind.is_symlink() && !target.is_absolute() {
                    Path::new(&name).parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.into_owned()
                };
                if let Some(target) = normalize_lexically(&joined) {
                    links.insert(name, target);
                }
            }
        }
        Ok(Source::Tar {
            path: path.to_path_buf(),
            files,
            links,
        })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Source::Dir(_))
    }

    /// The member or file `name` (a relative path without `..`), or `None` when the image has
    /// no such file.
    pub fn open_file(&self, name: &str) -> io::Result<Option<Box<dyn Read>>> {
        let Some(name) = normalize(Path::new(name)) else {
            return Ok(None);
        };
        match self {
            Source::Dir(dir) => match File::open(dir.join(name)) {
                Ok(f) if f.metadata()?.is_file() => Ok(Some(Box::new(f))),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Source::Tar { path, files, links } => {
                let mut name = name;
                for _ in 0..MAX_LINK_HOPS {
                    if let Some(member) = files.get(&name) {
                        let mut file = File::open(path)?;
                        file.seek(SeekFrom::Start(member.offset))?;
                        return Ok(Some(Box::new(file.take(member.size))));
                    }
                    match links.get(&name) {
                        Some(target) => name = target.clone(),
                        None => return Ok(None),
                    }
                }
                Ok(None)
            }
        }
    }

    /// The whole file `name`, refused when it is over `limit` bytes (a manifest or config is a
    /// few KiB; the limit keeps a hostile image from exhausting memory).
    pub fn read_small(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} is larger than {limit} bytes"),
            ));
        }
        Ok(Some(bytes))
    }
}

/// `path` as `a/b/c`: leading `/` and `.` components dropped; `None` for a path with `..`
/// or for the archive root itself.
fn normalize(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Like [`normalize`], but `..` steps back (a link target such as `../abc/layer.tar`),
/// and a path that climbs above the archive root is refused.
fn normalize_lexically(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }

    fn read(source: &Source, name: &str) -> Option<String> {
        source.open_file(name).unwrap().map(|mut r| {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    }

    #[test]
    fn reads_tar_members_by_name_and_follows_links_inside_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.tar");
        let bytes = tar_with(|b| {
            add(b, "./manifest.json", b"[]");
            add(b, "abc/layer.tar", b"layer bytes");
            add(b, "big", &[7u8; 3000]);
            link(b, tar::EntryType::Symlink, "def/layer.tar", "../abc/layer.tar");
            link(b, tar::EntryType::Link, "hard", "abc/layer.tar");
            link(b, tar::EntryType::Symlink, "escape", "../../etc/passwd");
            link(b, tar::EntryType::Symlink, "loop", "loop");
        });
        std::fs::write(&path, bytes).unwrap();
        let source = Source::open(&path).unwrap();
        assert!(!source.is_dir());
        assert_eq!(read(&source, "manifest.json").as_deref(), Some("[]"));
        assert_eq!(read(&source, "/abc/layer.tar").as_deref(), Some("layer bytes"));
        assert_eq!(read(&source, "def/layer.tar").as_deref(), Some("layer bytes"));
        assert_eq!(read(&source, "hard").as_deref(), Some("layer bytes"));
        assert_eq!(read(&source, "escape"), None);
        assert_eq!(read(&source, "loop"), None);
        assert_eq!(read(&source, "../abc/layer.tar"), None);
        assert_eq!(read(&source, "missing"), None);
        assert_eq!(source.read_small("big", 3000).unwrap().unwrap().len(), 3000);
        let err = source.read_small("big", 2999).unwrap_err();
        assert!(err.to_string().contains("larger than 2999"), "{err}");
    }

    #[test]
    fn reads_directory_files_and_refuses_parent_components() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(layout.join("index.json"), "{}").unwrap();
        std::fs::write(tmp.path().join("secret"), "no").unwrap();
        let source = Source::open(&layout).unwrap();
        assert!(source.is_dir());
        assert_eq!(read(&source, "index.json").as_deref(), Some("{}"));
        assert_eq!(read(&source, "../secret"), None);
        assert_eq!(read(&source, "blobs/sha256"), None, "a directory is not a file");
        assert!(Source::open(&tmp.path().join("nope")).is_err());
    }
}
