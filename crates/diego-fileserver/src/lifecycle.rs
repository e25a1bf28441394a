//! The lifecycle bundles: what a staging or app container downloads besides its app — the
//! builder, launcher and healthcheck executables, the buildpacks. Each subdirectory `NAME` of
//! the file server's `--lifecycle-dir` is packed once at start (in name order, without times,
//! so the same files give the same bytes and `ETag` across restarts) and served from memory
//! as `NAME.tgz`.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use crate::digest::Digest;

/// One packed bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub digest: Digest,
    pub bytes: Bytes,
}

/// What `GET /v1/lifecycle` lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundleInfo {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// The bundles served, by file name (`NAME.tgz`).
#[derive(Debug, Clone, Default)]
pub struct Bundles(BTreeMap<String, Bundle>);

impl Bundles {
    /// Packs each subdirectory of `dir` (blocking). Files at its top are ignored.
    pub fn pack(dir: &Path) -> std::io::Result<Self> {
        let mut bundles = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let (bytes, _) = diego_lifecycle::archive::pack_tree_to_vec(&entry.path())?;
            let digest = Digest::of(&bytes);
            bundles.insert(
                format!("{name}.tgz"),
                Bundle {
                    digest,
                    bytes: Bytes::from(bytes),
                },
            );
        }
        Ok(Bundles(bundles))
    }

    pub fn get(&self, name: &str) -> Option<&Bundle> {
        self.0.get(name)
    }

    pub fn list(&self) -> Vec<BundleInfo> {
        self.0
            .iter()
            .map(|(name, b)| BundleInfo {
                name: name.clone(),
                digest: b.digest,
                size: b.bytes.len() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subdirectory_is_a_bundle_whose_digest_is_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("buildpacks/static/bin")).unwrap();
        std::fs::write(dir.path().join("buildpacks/static/bin/detect"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(dir.path().join("lifecycle")).unwrap();
        std::fs::write(dir.path().join("lifecycle/diego-launcher"), "elf").unwrap();
        std::fs::write(dir.path().join("README"), "not a bundle").unwrap();
        let bundles = Bundles::pack(dir.path()).unwrap();
        let names: Vec<String> = bundles.list().into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["buildpacks.tgz", "lifecycle.tgz"]);
        let b = bundles.get("lifecycle.tgz").unwrap();
        assert_eq!(b.digest, Digest::of(&b.bytes));
        assert_eq!(
            Bundles::pack(dir.path())
                .unwrap()
                .get("lifecycle.tgz")
                .unwrap()
                .digest,
            b.digest,
            "packing again gives the same bytes"
        );
    }
}
