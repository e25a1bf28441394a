//! The JSON documents of an image, as plain data: OCI descriptors, image indexes and
//! manifests, `docker save`'s `manifest.json`, and the part of the image config we check.
//! Choosing a manifest for this host is a pure function, so it is tested without any files.

use std::fmt;

use serde::Deserialize;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A `sha256:<64 lowercase hex>` content address. Other algorithms are refused when parsed:
/// the OCI spec registers sha512 too, but no tool we know of writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(format!("digest {s:?} is not ALGORITHM:HEX"));
        };
        if algorithm != "sha256" {
            return Err(format!(
                "digest {s:?} uses {algorithm}; only sha256 digests are supported"
            ));
        }
        Digest::from_hex(hex).ok_or_else(|| format!("digest {s:?} is not sha256:<64 lowercase hex digits>"))
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest { hex: hex.to_string() })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Where an OCI image layout keeps the blob with this digest.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// An OCI content descriptor: what a blob is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `index.json`, or an image index (manifest list) blob.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: one config and the layers, bottom first.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A blob an index points at is either another index or a manifest. Registries and tools
/// do not always set `mediaType` on the descriptor, so the document's shape decides then.
pub enum IndexOrManifest {
    Index(Index),
    Manifest(Manifest),
}

impl IndexOrManifest {
    pub fn parse(json: &[u8], media_type: Option<&str>) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Shape {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            layers: Option<serde_json::Value>,
        }
        let shape: Shape = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let media_type = media_type.or(shape.media_type.as_deref());
        let is_index = match media_type {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) if shape.manifests.is_none() && shape.layers.is_none() => {
                return Err(format!("unsupported media type {other:?}"))
            }
            _ => shape.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(json)
                .map(IndexOrManifest::Index)
                .map_err(|e| format!("not an image index: {e}"))
        } else {
            serde_json::from_slice(json)
                .map(IndexOrManifest::Manifest)
                .map_err(|e| format!("not an image manifest: {e}"))
        }
    }
}

/// One image of `docker save`'s `manifest.json` (a JSON array, one entry per saved image).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerImage {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// The fields of an image config we use: the platform, to refuse an image for another
/// architecture with a clear error instead of runc's "exec format error", and the layers'
/// uncompressed digests, which are all `docker save` gives to verify its layers against.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The platform this cell runs, in OCI's words (`GOARCH` names).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// Buildx attaches provenance and SBOM documents as manifests for platform `unknown/unknown`;
/// they are not images.
fn is_attestation(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
}

/// The manifest of `index` to run on `os`/`arch`: the one for that platform, or else the only
/// one when it does not name a platform. The error lists what the index offers.
pub fn select<'a>(index: &'a Index, os: &str, arch: &str) -> Result<&'a Descriptor, String> {
    let candidates: Vec<&Descriptor> = index.manifests.iter().filter(|d| !is_attestation(d)).collect();
    if let Some(d) = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    }) {
        return Ok(d);
    }
    match candidates.as_slice() {
        [] => Err("the index lists no image manifests".into()),
        [only] if only.platform.is_none() => Ok(only),
        _ => {
            let offered: Vec<String> = candidates
                .iter()
                .map(|d| {
                    match (
                        &d.platform,
                        d.annotations.get("org.opencontainers.image.ref.name"),
                    ) {
                        (Some(p), _) => p.to_string(),
                        (None, Some(name)) => format!("{name:?} (no platform)"),
                        (None, None) => format!("{} (no platform)", d.digest),
                    }
                })
                .collect();
            Err(format!(
                "no manifest for {os}/{arch}; the index offers {}",
                offered.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest_char: char, platform: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: Some(OCI_MANIFEST.into()),
            digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
            size: 1,
            platform: platform.map(|(os, arch)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            annotations: Default::default(),
        }
    }

    #[test]
    fn digests_are_sha256_with_64_lowercase_hex_digits() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.blob_path(), format!("blobs/sha256/{hex}"));
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        let err = Digest::parse(&format!("sha512:{hex}")).unwrap_err();
        assert!(err.contains("only sha256"), "{err}");
        for bad in [
            "sha256:abc",
            "sha256",
            &format!("sha256:{}", "A".repeat(64)),
            "sha256:../../etc/passwd",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn selects_the_host_platform_and_skips_attestations() {
        let index = Index {
            manifests: vec![
                desc('a', Some(("linux", "arm64"))),
                desc('b', Some(("unknown", "unknown"))),
                desc('c', Some(("linux", "amd64"))),
            ],
        };
        assert!(select(&index, "linux", "amd64").unwrap().digest.contains("ccc"));
        assert!(select(&index, "linux", "arm64").unwrap().digest.contains("aaa"));
        let err = select(&index, "linux", "s390x").unwrap_err();
        assert_eq!(
            err,
            "no manifest for linux/s390x; the index offers linux/arm64, linux/amd64"
        );
    }

    #[test]
    fn the_only_manifest_is_chosen_unless_it_names_another_platform() {
        let only = Index {
            manifests: vec![desc('a', None), desc('b', Some(("unknown", "unknown")))],
        };
        assert!(select(&only, "linux", "amd64").unwrap().digest.contains("aaa"));
        let other = Index {
            manifests: vec![desc('a', Some(("linux", "arm64")))],
        };
        assert!(select(&other, "linux", "amd64").is_err());
        let two = Index {
            manifests: vec![desc('a', None), desc('b', None)],
        };
        assert!(select(&two, "linux", "amd64")
            .unwrap_err()
            .contains("(no platform)"));
        assert!(select(&Index { manifests: vec![] }, "linux", "amd64").is_err());
    }

    #[test]
    fn tells_indexes_from_manifests_by_media_type_or_shape() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#;
        assert!(matches!(
            IndexOrManifest::parse(index, None),
            Ok(IndexOrManifest::Index(_))
        ));
        assert!(matches!(
            IndexOrManifest::parse(manifest, None),
            Ok(IndexOrManifest::Manifest(_))
        ));
        assert!(matches!(
            IndexOrManifest::parse(manifest, Some(DOCKER_MANIFEST)),
            Ok(IndexOrManifest::Manifest(_))
        ));
        assert!(IndexOrManifest::parse(manifest, Some(OCI_INDEX)).is_err());
        assert!(IndexOrManifest::parse(b"{}", Some("text/plain")).is_err());
        assert!(IndexOrManifest::parse(b"nope", None).is_err());
    }
}
