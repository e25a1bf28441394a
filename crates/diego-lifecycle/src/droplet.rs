//! The droplet: what staging leaves for the launcher, as one gzipped tar —
//!
//! ```text
//! app/                  the build directory, as the buildpack left it
//! deps/<index>/…        what the buildpack supplied
//! profile.d/*.sh        sourced by the launcher before the start command
//! staging_info.json     the staging result (detected buildpack, start command)
//! ```
//!
//! Symlinks are stored as symlinks, never followed, so a link in the app's directory cannot
//! pull a file from outside it into the droplet; where a droplet is unpacked, the executor's
//! download keeps every entry inside its destination.

use std::io::{self, Write};
use std::path::Path;

use crate::builder::{Layout, StagingResult};

/// The staging result's name inside the droplet.
pub const STAGING_INFO: &str = "staging_info.json";

/// What `diego-builder --output-metadata` writes: the staging result and the droplet it
/// wrote, named by its SHA-256 (lowercase hex), so whoever uploads the droplet can check the
/// file server holds exactly it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedDroplet {
    #[serde(flatten)]
    pub result: StagingResult,
    pub droplet_sha256: String,
    pub droplet_size: u64,
    /// The buildpack cache packed for the next staging (`--output-cache`), by its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_sha256: Option<String>,
}

/// The SHA-256 (lowercase hex) and size of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((hex, size))
}

/// Writes the droplet of `layout` and `result` to `out`.
pub fn pack(layout: &Layout, result: &StagingResult, out: impl Write) -> io::Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, dir) in [
        ("app", &layout.build_dir),
        ("deps", &layout.deps_dir),
        ("profile.d", &layout.profile_dir),
    ] {
        if dir.exists() {
            tar.append_dir_all(name, dir)?;
        } else {
            empty_dir(&mut tar, name)?;
        }
    }
    let info = serde_json::to_vec_pretty(result).map_err(io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(info.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, STAGING_INFO, info.as_slice())?;
    tar.into_inner()?.finish()?.flush()
}

fn empty_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut header, name, io::empty())
}

/// The staging result inside a droplet read from `input` (a check of a droplet written).
pub fn staging_info(input: impl io::Read) -> io::Result<StagingResult> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.path()?.as_ref() == Path::new(STAGING_INFO) {
            return serde_json::from_reader(entry).map_err(io::Error::other);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("the droplet has no {STAGING_INFO}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_droplet_holds_the_app_its_deps_its_profile_and_the_result() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            build_dir: root.path().join("app"),
            cache_dir: root.path().join("cache"),
            deps_dir: root.path().join("deps"),
            profile_dir: root.path().join("profile.d"),
        };
        std::fs::create_dir_all(layout.build_dir.join("static")).unwrap();
        std::fs::write(layout.build_dir.join("static/index.html"), "hi").unwrap();
        std::fs::write(root.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), layout.build_dir.join("link")).unwrap();
        std::fs::create_dir_all(layout.deps_dir.join("0")).unwrap();
        std::fs::write(layout.deps_dir.join("0/runtime"), "python3").unwrap();
        std::fs::create_dir_all(root.path().join("cache")).unwrap();
        std::fs::write(root.path().join("cache/kept"), "not in the droplet").unwrap();
        let result = StagingResult {
            lifecycle_type: "buildpack".into(),
            detected_buildpack: "static".into(),
            process_types: [("web".to_string(), "httpd".to_string())].into(),
            start_command: "httpd".into(),
        };
        let mut droplet = Vec::new();
        pack(&layout, &result, &mut droplet).unwrap();

        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(droplet.as_slice()));
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let kind = e.header().entry_type();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            entries.push((e.path().unwrap().display().to_string(), kind, link));
        }
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        for want in [
            "app/static/index.html",
            "deps/0/runtime",
            "profile.d",
            STAGING_INFO,
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing: {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("kept")),
            "the cache stays out: {names:?}"
        );
        let link = entries
            .iter()
            .find(|(n, _, _)| n == "app/link")
            .expect("the link is packed");
        assert_eq!(link.1, tar::EntryType::Symlink, "a symlink is not followed");
        assert_eq!(staging_info(droplet.as_slice()).unwrap(), result);
    }
}
