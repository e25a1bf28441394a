//! Builders of small images for tests — this crate's unit tests and its integration tests:
//! layers from in-memory entries or a host directory, written as an OCI image layout
//! (directory or tarball) or a `docker save` tarball. Panics on IO errors; not for production.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::manifest::{host_platform, OCI_INDEX, OCI_MANIFEST};

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// One layer's tar, built entry by entry.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.preserve_absolute(true);
        LayerBuilder { tar }
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(EntryType::Directory, mode, uid, gid, 0);
        self.tar.append_data(&mut h, path, &[][..]).expect("tar dir");
        self
    }

    pub fn file(self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.file_owned(path, contents, mode, 0, 0)
    }

    pub fn file_owned(
        mut self,
        path: &str,
        contents: impl AsRef<[u8]>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let contents = contents.as_ref();
        let mut h = header(EntryType::Regular, mode, uid, gid, contents.len() as u64);
        self.tar.append_data(&mut h, path, contents).expect("tar file");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar.append_link(&mut h, path, target).expect("tar symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(EntryType::Link, 0o644, 0, 0, 0);
        self.tar.append_link(&mut h, path, target).expect("tar hard link");
        self
    }

    /// Deletes `path` of the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    /// Hides everything the layers below put in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// An entry with a name the tar crate would refuse to write (`../x`): for escape tests.
    pub fn raw(mut self, kind: EntryType, name: &[u8], link: Option<&[u8]>, contents: &[u8]) -> Self {
        let mut h = header(kind, 0o644, 0, 0, contents.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.tar.append(&h, contents).expect("tar raw entry");
        self
    }

    /// Every file, directory and symlink under `dir`, at the layer's root, with their modes
    /// and owners. Symlinks are stored as symlinks.
    pub fn tree(mut self, dir: &Path) -> Self {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let host = dir.join(&rel);
            let mut children: Vec<_> = fs::read_dir(&host)
                .expect("listing tree")
                .map(|e| e.expect("listing tree").file_name())
                .collect();
            children.sort();
            for name in children {
                let rel = rel.join(&name);
                let host = dir.join(&rel);
                let meta = fs::symlink_metadata(&host).expect("stat tree entry");
                let mode = meta.mode() & 0o7777;
                let (uid, gid) = (meta.uid().into(), meta.gid().into());
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&host).expect("readlink");
                    let mut h = header(EntryType::Symlink, mode, uid, gid, 0);
                    self.tar.append_link(&mut h, &rel, target).expect("tar symlink");
                } else if meta.is_dir() {
                    let mut h = header(EntryType::Directory, mode, uid, gid, 0);
                    self.tar.append_data(&mut h, &rel, &[][..]).expect("tar dir");
                    stack.push(rel);
                } else if meta.is_file() {
                    let mut h = header(EntryType::Regular, mode, uid, gid, meta.len());
                    let file = fs::File::open(&host).expect("open tree file");
                    self.tar.append_data(&mut h, &rel, file).expect("tar file");
                }
            }
        }
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.tar.into_inner().expect("finishing tar")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

struct Layer {
    blob: Vec<u8>,
    media_type: String,
    diff_id: String,
}

/// What a written image is called inside: its cache key, and where its layers are.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `sha256:…` of the manifest (OCI) or of the config (docker save): the cache key.
    pub id: String,
    /// The layers' file names inside the image (`blobs/sha256/…` or `…/layer.tar`).
    pub layers: Vec<String>,
}

/// An image: layers bottom first, and a config naming the platform.
pub struct ImageBuilder {
    layers: Vec<Layer>,
    architecture: String,
    other_platforms: Vec<String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            architecture: host_platform().1.to_string(),
            other_platforms: Vec::new(),
        }
    }

    pub fn layer(self, layer: LayerBuilder, compression: Compression) -> Self {
        let tar = layer.build();
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        let (blob, media_type) = match compression {
            Compression::Plain => (tar, "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => (gzip(&tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
        };
        self.raw_layer(blob, media_type, diff_id)
    }

    /// A layer blob as given (e.g. zstd bytes), with its media type and uncompressed digest.
    pub fn raw_layer(mut self, blob: Vec<u8>, media_type: &str, diff_id: String) -> Self {
        self.layers.push(Layer {
            blob,
            media_type: media_type.into(),
            diff_id,
        });
        self
    }

    /// The config's architecture (default: this host's).
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.into();
        self
    }

    /// Puts the manifest in a multi-platform image index next to manifests for `archs` and a
    /// buildx attestation, whose blobs are absent: choosing any of them fails.
    pub fn with_other_platforms(mut self, archs: &[&str]) -> Self {
        self.other_platforms = archs.iter().map(|a| a.to_string()).collect();
        self
    }

    fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config json")
    }

    /// The files of an OCI image layout.
    pub fn oci_files(&self) -> (Vec<(String, Vec<u8>)>, BuiltImage) {
        let mut files = Vec::new();
        let mut blob = |bytes: Vec<u8>| -> serde_json::Value {
            let hex = sha256_hex(&bytes);
            let size = bytes.len();
            files.push((format!("blobs/sha256/{hex}"), bytes));
            serde_json::json!({"digest": format!("sha256:{hex}"), "size": size})
        };
        let config = blob(self.config());
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                let mut d = blob(l.blob.clone());
                d["mediaType"] = l.media_type.clone().into();
                d
            })
            .collect();
        let layer_names = layers
            .iter()
            .map(|d| format!("blobs/sha256/{}", &d["digest"].as_str().unwrap()[7..]))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config["digest"], "size": config["size"]},
            "layers": layers,
        });
        let mut manifest_desc = blob(serde_json::to_vec(&manifest).unwrap());
        manifest_desc["mediaType"] = OCI_MANIFEST.into();
        let id = manifest_desc["digest"].as_str().unwrap().to_string();
        let top = if self.other_platforms.is_empty() {
            manifest_desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
            manifest_desc
        } else {
            let missing = |n: usize| format!("sha256:{}", format!("{:x}", n % 16).repeat(64));
            let mut manifests: Vec<serde_json::Value> = self
                .other_platforms
                .iter()
                .enumerate()
                .map(|(i, arch)| {
                    serde_json::json!({"mediaType": OCI_MANIFEST, "digest": missing(i + 1),
                    "size": 100, "platform": {"os": "linux", "architecture": arch}})
                })
                .collect();
            manifests.push(
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": missing(15),
                "size": 100, "platform": {"os": "unknown", "architecture": "unknown"}}),
            );
            manifest_desc["platform"] = serde_json::json!({"os": "linux", "architecture": self.architecture});
            manifests.push(manifest_desc);
            let index =
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
            let mut d = blob(serde_json::to_vec(&index).unwrap());
            d["mediaType"] = OCI_INDEX.into();
            d
        };
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]});
        files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
        files.push(("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
        (
            files,
            BuiltImage {
                id,
                layers: layer_names,
            },
        )
    }

    /// The files of a `docker save` tarball (the `manifest.json` form).
    pub fn docker_files(&self) -> (Vec<(String, Vec<u8>)>, BuiltImage) {
        let config = self.config();
        let config_hex = sha256_hex(&config);
        let mut files = vec![(format!("{config_hex}.json"), config)];
        let mut names = Vec::new();
        for l in &self.layers {
            let name = format!("{}/layer.tar", &l.diff_id[7..]);
            files.push((name.clone(), l.blob.clone()));
            names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": ["diego-test:latest"],
            "Layers": names,
        }]);
        files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
        (
            files,
            BuiltImage {
                id: format!("sha256:{config_hex}"),
                layers: names,
            },
        )
    }

    pub fn write_oci_dir(&self, dir: &Path) -> BuiltImage {
        let (files, built) = self.oci_files();
        write_dir(dir, &files);
        built
    }

    pub fn write_oci_tar(&self, path: &Path) -> BuiltImage {
        let (files, built) = self.oci_files();
        write_tar(path, &files);
        built
    }

    pub fn write_docker_archive(&self, path: &Path) -> BuiltImage {
        let (files, built) = self.docker_files();
        write_tar(path, &files);
        built
    }
}

pub fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).expect("creating layout dirs");
        fs::write(&path, bytes).expect("writing layout file");
    }
}

pub fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut tar = tar::Builder::new(fs::File::create(path).expect("creating image tar"));
    for (name, bytes) in files {
        let mut h = header(EntryType::Regular, 0o644, 0, 0, bytes.len() as u64);
        tar.append_data(&mut h, name, bytes.as_slice())
            .expect("tar image file");
    }
    tar.into_inner().expect("finishing image tar");
}
