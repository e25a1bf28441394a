//! Local container images unpacked into read-only base root filesystems (the lower dir of each
//! container's overlay, like a preloaded tree). [`crate::rootfs::RootfsStore`] caches the result
//! by image digest; this module only reads an image and writes one tree.
//!
//! Accepted, all on the local disk (nothing is pulled from a registry):
//! - an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`), or the same
//!   packed in a tarball (`docker buildx --output type=oci`, `skopeo copy … oci-archive:`);
//!   `index.json` may point at a manifest or at an image index, from which the manifest for
//!   this host's platform (or the only one) is taken;
//! - a `docker save` tarball, by its `manifest.json` (`Config`, `RepoTags`, `Layers`).
//!
//! Every blob is checked against its sha256 before it is trusted: indexes, manifests, configs
//! and layers of an OCI layout by their descriptor digests; a `docker save` config by its file
//! name and its layers by the config's `rootfs.diff_ids`. A layer is hashed while it is
//! applied, so a mismatch is found after its bytes were written — into a temporary directory
//! the caller discards. Layers are plain or gzip tars; zstd is refused for now (it would add a
//! decoder dependency for layers no local tool writes by default). `image/layer.rs` applies
//! layers: whiteouts, and how paths are kept inside the root.
//!
//! The unpacked tree is completed for the backend (`image/skeleton.rs`): mount points runc
//! needs, and the default user `vcap` (2000:2000) added to `/etc/passwd` and `/etc/group` if
//! absent.

mod layer;
mod manifest;
mod skeleton;
mod source;
#[doc(hidden)]
pub mod testing;

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use tracing::info;

use manifest::{Digest, DockerImage, ImageConfig, IndexOrManifest, Manifest, OCI_INDEX};
use source::Source;

/// Indexes, manifests and configs larger than this are refused (the OCI distribution spec
/// lets registries refuse manifests over 4 MiB too).
const MAX_JSON: u64 = 4 << 20;
/// An index pointing at an index pointing at … a manifest: deeper than this is a loop.
const MAX_INDEX_DEPTH: usize = 4;

/// Which kind of file a rootfs URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `oci:///path`: an OCI image layout, a directory or a tarball of one.
    OciLayout,
    /// `docker-archive:///path`: a `docker save` tarball.
    DockerArchive,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image is malformed, incomplete, for another platform, or contains an entry it may
    /// not (a path escaping the root): fix or rebuild the image.
    #[error("image {}: {reason}", image.display())]
    Invalid { image: PathBuf, reason: String },
    /// A blob's content is not what its digest says.
    #[error(
        "image {}: {blob} is corrupt or was modified: expected {expected}, its content hashes to sha256:{actual}",
        image.display()
    )]
    DigestMismatch {
        image: PathBuf,
        blob: String,
        expected: String,
        actual: String,
    },
    /// Well-formed, but uses something this backend cannot read (zstd layers).
    #[error("image {}: {reason}", image.display())]
    Unsupported { image: PathBuf, reason: String },
    /// Writing the tree failed on this host (a full disk, …); retrying may help.
    #[error("image {}: {context}", image.display())]
    Unavailable {
        image: PathBuf,
        context: String,
        #[source]
        source: io::Error,
    },
}

/// How a layer's bytes are checked.
#[derive(Debug)]
enum Verify {
    /// The blob as stored (OCI descriptors).
    Blob { digest: Digest, size: u64 },
    /// The uncompressed tar (a `docker save` layer against the config's `diff_ids`).
    Uncompressed(Digest),
}

#[derive(Debug)]
struct LayerRef {
    /// The file in the image: `blobs/sha256/…` or `<id>/layer.tar`.
    name: String,
    media_type: Option<String>,
    verify: Verify,
}

/// An image whose index, manifest and config were read and verified; its layers are read
/// only by [`Image::unpack`].
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    source: Source,
    id: Digest,
    config: Vec<u8>,
    layers: Vec<LayerRef>,
}

impl Image {
    /// Reads the image's metadata (not its layers) and checks its digests and platform.
    pub fn open(path: &Path, format: ImageFormat) -> Result<Image, ImageError> {
        let source = Source::open(path).map_err(|e| ImageError::Invalid {
            image: path.into(),
            reason: if e.kind() == io::ErrorKind::NotFound {
                "does not exist".into()
            } else {
                format!("cannot be read as a directory or tar archive: {e}")
            },
        })?;
        let image = match format {
            ImageFormat::OciLayout => open_oci(path, source),
            ImageFormat::DockerArchive => open_docker(path, source),
        }?;
        let config: ImageConfig = serde_json::from_slice(&image.config)
            .map_err(|e| image.invalid(format!("the image config is not valid JSON: {e}")))?;
        let (os, arch) = manifest::host_platform();
        if !config.architecture.is_empty()
            && (config.architecture != arch || !matches!(config.os.as_str(), "" | "linux"))
        {
            return Err(image.invalid(format!(
                "built for {}/{}; this cell runs {os}/{arch}",
                config.os, config.architecture
            )));
        }
        Ok(image)
    }

    /// `sha256:…` naming this image's content: the manifest digest of an OCI image, the
    /// config digest (docker's image id) of a `docker save` one.
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// The id's hex digits, safe as a file name.
    pub fn id_hex(&self) -> &str {
        self.id.hex()
    }

    /// The image config JSON (environment, entrypoint, …), verified.
    pub fn config_json(&self) -> &[u8] {
        &self.config
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Applies every layer, bottom first, to `dir` (created; must not exist or be empty) and
    /// completes the tree for the backend. On error `dir` holds a partial tree the caller
    /// must remove.
    pub fn unpack(&self, dir: &Path) -> Result<(), ImageError> {
        fs::create_dir_all(dir).map_err(self.unavailable(format!("creating {}", dir.display())))?;
        let options = layer::Options {
            chown: running_as_root(),
        };
        for l in &self.layers {
            let applied = self.apply_layer(l, dir, options)?;
            info!(
                image = %self.path.display(), layer = %l.name, entries = applied.entries,
                whiteouts = applied.whiteouts, skipped = applied.skipped, "applied image layer"
            );
        }
        skeleton::complete(dir, options.chown)
            .map_err(|(context, source)| self.unavailable(context)(source))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(self.unavailable(format!("chmod {}", dir.display())))
    }

    fn apply_layer(
        &self,
        l: &LayerRef,
        dir: &Path,
        options: layer::Options,
    ) -> Result<layer::Applied, ImageError> {
        let raw = self
            .source
            .open_file(&l.name)
            .map_err(|e| self.invalid(format!("layer {}: {e}", l.name)))?
            .ok_or_else(|| self.invalid(format!("layer {} is missing", l.name)))?;
        let verify_blob = matches!(l.verify, Verify::Blob { .. });
        let mut buffered = BufReader::with_capacity(256 << 10, Digesting::new(raw, verify_blob));
        let magic = buffered
            .fill_buf()
            .map_err(|e| self.invalid(format!("reading layer {}: {e}", l.name)))?;
        let zstd = magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || l.media_type.as_deref().is_some_and(|m| m.ends_with("zstd"));
        if zstd {
            return Err(ImageError::Unsupported {
                image: self.path.clone(),
                reason: format!(
                    "layer {} is zstd-compressed; only uncompressed and gzip layers are supported \
                     (rebuild or copy the image with gzip compression)",
                    l.name
                ),
            });
        }
        let gzip = magic.starts_with(&[0x1f, 0x8b]);
        let mut stream = if gzip {
            Decoded::Gzip(MultiGzDecoder::new(buffered))
        } else {
            Decoded::Plain(buffered)
        };
        let mut uncompressed = Digesting::new(&mut stream, !verify_blob);
        let applied = layer::apply(&mut uncompressed, dir, options);
        // The digest covers the whole blob, including what the tar reader leaves unread (the
        // end-of-archive blocks and any padding).
        let decoded = io::copy(&mut uncompressed, &mut io::sink());
        let (diff_hex, _) = uncompressed.finish();
        let mut raw = stream.into_inner();
        let drained = io::copy(&mut raw, &mut io::sink());
        let (blob_hex, blob_size) = raw.into_inner().finish();

        let mismatch = |expected: &Digest, actual: String, what: &str| ImageError::DigestMismatch {
            image: self.path.clone(),
            blob: format!("layer {}{what}", l.name),
            expected: expected.to_string(),
            actual,
        };
        match &l.verify {
            Verify::Blob { digest, size } => {
                drained.map_err(|e| self.invalid(format!("reading layer {}: {e}", l.name)))?;
                if blob_hex != digest.hex() {
                    return Err(mismatch(digest, blob_hex, ""));
                }
                if blob_size != *size {
                    return Err(self.invalid(format!(
                        "layer {} is {blob_size} bytes, its descriptor says {size}",
                        l.name
                    )));
                }
            }
            Verify::Uncompressed(digest) => {
                if decoded.is_ok() && diff_hex != digest.hex() {
                    return Err(mismatch(digest, diff_hex, " (uncompressed)"));
                }
            }
        }
        let applied = applied.map_err(|e| match e {
            layer::LayerError::Write { context, source } => self.unavailable(format!(
                "unpacking layer {} into {}: {context}",
                l.name,
                dir.display()
            ))(source),
            other => self.invalid(format!(
                "layer {} ({}): {other}",
                l.name,
                if gzip { "gzip tar" } else { "tar" }
            )),
        })?;
        decoded.map_err(|e| self.invalid(format!("layer {}: {e}", l.name)))?;
        Ok(applied)
    }

    fn invalid(&self, reason: String) -> ImageError {
        ImageError::Invalid {
            image: self.path.clone(),
            reason,
        }
    }

    fn unavailable(&self, context: String) -> impl FnOnce(io::Error) -> ImageError + '_ {
        move |source| ImageError::Unavailable {
            image: self.path.clone(),
            context,
            source,
        }
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        image: path.into(),
        reason: reason.into(),
    }
}

/// A small file of the image, `None` when absent; too large or unreadable is an error.
fn read_small(path: &Path, source: &Source, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
    source
        .read_small(name, MAX_JSON)
        .map_err(|e| invalid(path, format!("reading {name}: {e}")))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A JSON blob of an OCI layout, checked against its descriptor.
fn json_blob(
    path: &Path,
    source: &Source,
    digest: &str,
    size: u64,
    what: &str,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest = Digest::parse(digest).map_err(|r| invalid(path, format!("{what}: {r}")))?;
    let name = digest.blob_path();
    let bytes =
        read_small(path, source, &name)?.ok_or_else(|| invalid(path, format!("{what} {name} is missing")))?;
    let actual = sha256_hex(&bytes);
    if actual != digest.hex() {
        return Err(ImageError::DigestMismatch {
            image: path.into(),
            blob: format!("{what} {name}"),
            expected: digest.to_string(),
            actual,
        });
    }
    if bytes.len() as u64 != size {
        return Err(invalid(
            path,
            format!(
                "{what} {name} is {} bytes, its descriptor says {size}",
                bytes.len()
            ),
        ));
    }
    Ok((digest, bytes))
}

fn open_oci(path: &Path, source: Source) -> Result<Image, ImageError> {
    let Some(layout) = read_small(path, &source, "oci-layout")? else {
        let hint = if read_small(path, &source, "manifest.json")?.is_some() {
            "; it looks like a `docker save` tarball: use docker-archive:// for it"
        } else {
            ""
        };
        return Err(invalid(
            path,
            format!("not an OCI image layout: it has no oci-layout file{hint}"),
        ));
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let layout: Layout = serde_json::from_slice(&layout)
        .map_err(|e| invalid(path, format!("oci-layout is not valid: {e}")))?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(ImageError::Unsupported {
            image: path.into(),
            reason: format!(
                "image layout version {} (only 1.x is supported)",
                layout.image_layout_version
            ),
        });
    }
    let index = read_small(path, &source, "index.json")?
        .ok_or_else(|| invalid(path, "not an OCI image layout: it has no index.json"))?;
    let mut doc = IndexOrManifest::parse(&index, Some(OCI_INDEX))
        .map_err(|r| invalid(path, format!("index.json: {r}")))?;
    let (os, arch) = manifest::host_platform();
    let mut chosen: Option<(Digest, Manifest)> = None;
    for _ in 0..MAX_INDEX_DEPTH {
        match doc {
            IndexOrManifest::Index(index) => {
                let d = manifest::select(&index, os, arch).map_err(|r| invalid(path, r))?;
                let (digest, bytes) = json_blob(path, &source, &d.digest, d.size, "manifest")?;
                doc = IndexOrManifest::parse(&bytes, d.media_type.as_deref())
                    .map_err(|r| invalid(path, format!("manifest {}: {r}", digest.blob_path())))?;
                if let IndexOrManifest::Manifest(m) = &doc {
                    chosen = Some((digest, m.clone()));
                    break;
                }
            }
            IndexOrManifest::Manifest(_) => unreachable!("index.json is parsed as an index"),
        }
    }
    let (id, manifest) = chosen.ok_or_else(|| invalid(path, "image indexes nest too deeply (a loop?)"))?;
    let (_, config) = json_blob(
        path,
        &source,
        &manifest.config.digest,
        manifest.config.size,
        "config",
    )?;
    let layers = manifest
        .layers
        .iter()
        .map(|d| {
            let digest = Digest::parse(&d.digest).map_err(|r| invalid(path, format!("layer: {r}")))?;
            Ok(LayerRef {
                name: digest.blob_path(),
                media_type: d.media_type.clone(),
                verify: Verify::Blob { digest, size: d.size },
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(Image {
        path: path.into(),
        source,
        id,
        config,
        layers,
    })
}

fn open_docker(path: &Path, source: Source) -> Result<Image, ImageError> {
    if source.is_dir() {
        return Err(invalid(
            path,
            "docker-archive:// takes a `docker save` tarball, not a directory (use oci:// for an OCI image layout)",
        ));
    }
    let Some(manifest) = read_small(path, &source, "manifest.json")? else {
        let hint = if read_small(path, &source, "index.json")?.is_some() {
            "; it looks like an OCI image layout: use oci:// for it"
        } else {
            ""
        };
        return Err(invalid(
            path,
            format!("not a `docker save` tarball: it has no manifest.json{hint}"),
        ));
    };
    let images: Vec<DockerImage> = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(path, format!("manifest.json is not valid: {e}")))?;
    let [image] = images.as_slice() else {
        return Err(invalid(
            path,
            format!(
                "manifest.json lists {} images ({}); docker-archive:// takes a tarball of exactly one",
                images.len(),
                images
                    .iter()
                    .map(|i| i.repo_tags.as_deref().unwrap_or_default().join(" "))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let config = read_small(path, &source, &image.config)?.ok_or_else(|| {
        invalid(
            path,
            format!("config {} named in manifest.json is missing", image.config),
        )
    })?;
    let id = Digest::from_hex(&sha256_hex(&config)).expect("sha256 is 64 hex digits");
    // `docker save` names the config after its digest (`<hex>.json`, or `blobs/sha256/<hex>`
    // since docker 25): a name that says otherwise means the config was changed.
    let named = image
        .config
        .strip_suffix(".json")
        .or_else(|| image.config.strip_prefix("blobs/sha256/"))
        .and_then(Digest::from_hex);
    if let Some(named) = named.filter(|n| *n != id) {
        return Err(ImageError::DigestMismatch {
            image: path.into(),
            blob: format!("config {}", image.config),
            expected: named.to_string(),
            actual: id.hex().to_string(),
        });
    }
    let config_doc: ImageConfig = serde_json::from_slice(&config)
        .map_err(|e| invalid(path, format!("config {} is not valid: {e}", image.config)))?;
    let diff_ids = config_doc.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(invalid(
            path,
            format!(
                "manifest.json lists {} layers but the config's rootfs.diff_ids has {}; \
                 the layers cannot be verified",
                image.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let layers = image
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(name, diff_id)| {
            let digest = Digest::parse(diff_id).map_err(|r| invalid(path, format!("config diff_id: {r}")))?;
            Ok(LayerRef {
                name: name.clone(),
                media_type: None,
                verify: Verify::Uncompressed(digest),
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(Image {
        path: path.into(),
        source,
        id,
        config,
        layers,
    })
}

/// `/proc/self` belongs to the process's effective uid; without `unsafe` there is no
/// `geteuid` here.
fn running_as_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(true)
}

/// A reader that counts everything read through it, and hashes it if asked to (a layer is
/// verified either as stored or uncompressed, never both).
struct Digesting<R> {
    inner: R,
    hasher: Option<Sha256>,
    len: u64,
}

impl<R: Read> Digesting<R> {
    fn new(inner: R, hash: bool) -> Self {
        Digesting {
            inner,
            hasher: hash.then(Sha256::new),
            len: 0,
        }
    }

    /// The hex digest (empty when not hashing) and the byte count.
    fn finish(self) -> (String, u64) {
        let hex = self
            .hasher
            .map(|h| format!("{:x}", h.finalize()))
            .unwrap_or_default();
        (hex, self.len)
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}
type RawLayer = BufReader<Digesting<Box<dyn Read>>>;

/// A layer's tar stream, decompressed if need be, that gives its raw reader back so the rest of
/// the blob can be hashed.
enum Decoded {
    Plain(RawLayer),
    Gzip(MultiGzDecoder<RawLayer>),
}

impl Decoded {
    fn into_inner(self) -> RawLayer {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(r) => r.into_inner(),
        }
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
        }
    }
}

#[cfg(test)]
mod tests;
