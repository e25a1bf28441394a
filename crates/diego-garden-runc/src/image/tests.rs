use std::os::unix::fs::MetadataExt;

use super::testing::{gzip, sha256_hex, write_tar, Compression, ImageBuilder, LayerBuilder};
use super::*;
use crate::rootfs::{group_file, passwd_file};

fn as_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Two layers, the second plain, the first gzip: a file, a file the second layer deletes, and
/// a directory the second makes opaque.
fn two_layers() -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("etc/motd", "hello\n", 0o644)
                .file("etc/gone", "x", 0o644)
                .file("srv/old", "old", 0o644)
                .symlink("bin/sh", "/bin/true"),
            Compression::Gzip,
        )
        .layer(
            LayerBuilder::new()
                .whiteout("etc/gone")
                .opaque("srv")
                .file("srv/new", "new", 0o600),
            Compression::Plain,
        )
}

fn unpack(path: &Path, format: ImageFormat) -> Result<PathBuf, ImageError> {
    let image = Image::open(path, format)?;
    let dir = path.with_extension("unpacked");
    image.unpack(&dir)?;
    Ok(dir)
}

#[test]
fn unpacks_a_layout_dir_a_layout_tarball_and_a_docker_archive_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let builder = two_layers();
    let cases = [
        (
            tmp.path().join("layout"),
            ImageFormat::OciLayout,
            builder.write_oci_dir(&tmp.path().join("layout")),
        ),
        (
            tmp.path().join("oci.tar"),
            ImageFormat::OciLayout,
            builder.write_oci_tar(&tmp.path().join("oci.tar")),
        ),
        (
            tmp.path().join("docker.tar"),
            ImageFormat::DockerArchive,
            builder.write_docker_archive(&tmp.path().join("docker.tar")),
        ),
    ];
    for (path, format, built) in cases {
        let image = Image::open(&path, format).unwrap();
        assert_eq!(image.id(), built.id, "{}", path.display());
        assert_eq!(image.layer_count(), 2);
        assert!(String::from_utf8_lossy(image.config_json()).contains("diff_ids"));
        let dir = tmp.path().join(format!(
            "{}.unpacked",
            path.file_name().unwrap().to_string_lossy()
        ));
        image.unpack(&dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("etc/motd")).unwrap(), "hello\n");
        assert!(
            !dir.join("etc/gone").exists(),
            "whiteout not applied from {}",
            path.display()
        );
        let srv: Vec<_> = fs::read_dir(dir.join("srv"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(srv, ["new"]);
        assert_eq!(fs::metadata(dir.join("srv/new")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_link(dir.join("bin/sh")).unwrap(), Path::new("/bin/true"));
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o755);
    }
    // The OCI forms share the manifest digest; docker's id is the config digest.
    let (_, oci) = builder.oci_files();
    let (_, docker) = builder.docker_files();
    assert_ne!(oci.id, docker.id);
}

#[test]
fn takes_the_hosts_manifest_from_a_multi_platform_index() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("multi");
    let built = two_layers()
        .with_other_platforms(&["s390x", "riscv64"])
        .write_oci_dir(&path);
    // The decoys' blobs do not exist: choosing one would fail.
    let image = Image::open(&path, ImageFormat::OciLayout).unwrap();
    assert_eq!(image.id(), built.id);
    image.unpack(&tmp.path().join("out")).unwrap();
    assert!(tmp.path().join("out/srv/new").is_file());
}

#[test]
fn a_modified_layer_is_refused_naming_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("layout");
    let built = two_layers().write_oci_dir(&path);
    let (gz, plain) = (path.join(&built.layers[0]), path.join(&built.layers[1]));

    // Same tar, recompressed: valid content, but not the bytes the manifest names.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&gz).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    fs::write(&gz, flate2_best(&tar)).unwrap();
    let err = unpack(&path, ImageFormat::OciLayout).unwrap_err();
    let ImageError::DigestMismatch { blob, expected, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(blob, &format!("layer {}", built.layers[0]));
    assert_eq!(expected, &format!("sha256:{}", &built.layers[0][13..]));
    assert!(err.to_string().contains("is corrupt or was modified"), "{err}");

    // A flipped byte in a plain layer.
    fs::write(&gz, gzip(&tar)).unwrap();
    assert_eq!(sha256_hex(&fs::read(&gz).unwrap()), built.layers[0][13..]);
    let mut bytes = fs::read(&plain).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&plain, &bytes).unwrap();
    let err = unpack(&path, ImageFormat::OciLayout).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { blob, .. } if blob.contains(&built.layers[1])),
        "{err}"
    );
}

fn flate2_best(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn a_modified_manifest_config_or_docker_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let builder = two_layers();

    // The config blob of an OCI layout, rewritten.
    let (mut files, _) = builder.oci_files();
    let config = files
        .iter()
        .position(|(_, b)| String::from_utf8_lossy(b).contains("diff_ids"))
        .unwrap();
    files[config].1.extend_from_slice(b" ");
    let config_name = files[config].0.clone();
    super::testing::write_dir(&tmp.path().join("layout"), &files);
    let err = Image::open(&tmp.path().join("layout"), ImageFormat::OciLayout).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { blob, .. } if *blob == format!("config {config_name}")),
        "{err}"
    );

    // A docker layer changed: checked against the config's diff_ids after it is applied.
    let (mut files, built) = builder.docker_files();
    let layer = files.iter().position(|(n, _)| *n == built.layers[1]).unwrap();
    files[layer].1 = LayerBuilder::new().file("srv/evil", "x", 0o644).build();
    write_tar(&tmp.path().join("docker.tar"), &files);
    let err = unpack(&tmp.path().join("docker.tar"), ImageFormat::DockerArchive).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { blob, .. }
            if *blob == format!("layer {} (uncompressed)", built.layers[1])),
        "{err}"
    );

    // A docker config that does not match its name.
    let (mut files, _) = builder.docker_files();
    files[0].1.extend_from_slice(b"\n");
    write_tar(&tmp.path().join("docker2.tar"), &files);
    let err = Image::open(&tmp.path().join("docker2.tar"), ImageFormat::DockerArchive).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
}

#[test]
fn zstd_layers_are_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let built = ImageBuilder::new()
        .raw_layer(
            zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            format!("sha256:{}", "0".repeat(64)),
        )
        .write_oci_dir(&tmp.path().join("layout"));
    let err = unpack(&tmp.path().join("layout"), ImageFormat::OciLayout).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&built.layers[0]) && msg.contains("zstd"), "{msg}");
}

#[test]
fn escaping_entries_make_the_image_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    ImageBuilder::new()
        .layer(
            LayerBuilder::new().raw(tar::EntryType::Regular, b"../../escaped", None, b"x"),
            Compression::Gzip,
        )
        .write_oci_tar(&tmp.path().join("oci.tar"));
    let err = unpack(&tmp.path().join("oci.tar"), ImageFormat::OciLayout).unwrap_err();
    assert!(matches!(err, ImageError::Invalid { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"../../escaped\"") && msg.contains("gzip tar"),
        "{msg}"
    );
    assert!(!tmp.path().join("escaped").exists());
}

#[test]
fn images_for_another_platform_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let other = if manifest::host_platform().1 == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let path = tmp.path().join("d.tar");
    two_layers().architecture(other).write_docker_archive(&path);
    let err = Image::open(&path, ImageFormat::DockerArchive).unwrap_err();
    assert!(
        err.to_string().contains(&format!("built for linux/{other}")),
        "{err}"
    );
}

#[test]
fn the_wrong_scheme_gets_a_hint_and_junk_is_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let docker = tmp.path().join("d.tar");
    two_layers().write_docker_archive(&docker);
    let err = Image::open(&docker, ImageFormat::OciLayout).unwrap_err();
    assert!(err.to_string().contains("use docker-archive://"), "{err}");
    let oci = tmp.path().join("o.tar");
    two_layers().write_oci_tar(&oci);
    let err = Image::open(&oci, ImageFormat::DockerArchive).unwrap_err();
    assert!(err.to_string().contains("use oci://"), "{err}");
    let layout = tmp.path().join("layout");
    two_layers().write_oci_dir(&layout);
    let err = Image::open(&layout, ImageFormat::DockerArchive).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");

    let junk = tmp.path().join("junk.tar");
    fs::write(
        &junk,
        "definitely not a tar archive, but long enough to have a header..",
    )
    .unwrap();
    for format in [ImageFormat::OciLayout, ImageFormat::DockerArchive] {
        let err = Image::open(&junk, format).unwrap_err();
        assert!(matches!(err, ImageError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains(&junk.display().to_string()), "{err}");
    }
    let err = Image::open(&tmp.path().join("missing"), ImageFormat::OciLayout).unwrap_err();
    assert!(matches!(err, ImageError::Invalid { .. }), "{err}");

    // Two images in one docker save tarball.
    let (mut files, _) = two_layers().docker_files();
    let manifest = files.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
    let one: serde_json::Value = serde_json::from_slice(&manifest.1).unwrap();
    manifest.1 = serde_json::to_vec(&serde_json::json!([one[0], one[0]])).unwrap();
    write_tar(&tmp.path().join("two.tar"), &files);
    let err = Image::open(&tmp.path().join("two.tar"), ImageFormat::DockerArchive).unwrap_err();
    assert!(
        err.to_string().contains("lists 2 images (diego-test:latest"),
        "{err}"
    );
}

#[test]
fn adds_mount_points_and_the_vcap_user_when_the_image_lacks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bare.tar");
    ImageBuilder::new()
        .layer(
            LayerBuilder::new().file("app/run", "#!/bin/sh\n", 0o755),
            Compression::Plain,
        )
        .write_oci_tar(&path);
    let dir = unpack(&path, ImageFormat::OciLayout).unwrap();
    for (d, mode) in [("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777)] {
        assert_eq!(fs::metadata(dir.join(d)).unwrap().mode() & 0o7777, mode, "/{d}");
    }
    assert_eq!(fs::read_to_string(dir.join("etc/passwd")).unwrap(), passwd_file());
    assert_eq!(fs::read_to_string(dir.join("etc/group")).unwrap(), group_file());
    assert!(fs::read_to_string(dir.join("etc/hosts"))
        .unwrap()
        .contains("localhost"));
    let home = fs::metadata(dir.join("home/vcap")).unwrap();
    if as_root() {
        assert_eq!((home.uid(), home.gid()), (2000, 2000));
    }
}

#[test]
fn keeps_the_images_users_and_appends_vcap_only_if_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let with_app = tmp.path().join("app.tar");
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file(
                    "etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\napp:x:2000:2000::/app:/bin/sh",
                    0o644,
                )
                .file("etc/group", "root:x:0:\n", 0o644)
                .dir("tmp", 0o700),
            Compression::Gzip,
        )
        .write_docker_archive(&with_app);
    let dir = unpack(&with_app, ImageFormat::DockerArchive).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\napp:x:2000:2000::/app:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("etc/group")).unwrap(),
        "root:x:0:\nvcap:x:2000:\n"
    );
    assert_eq!(
        fs::metadata(dir.join("tmp")).unwrap().mode() & 0o7777,
        0o700,
        "the image's own /tmp"
    );

    let with_vcap = tmp.path().join("vcap.tar");
    let passwd = "vcap:x:3000:3000::/srv:/bin/bash\n";
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("etc/passwd", passwd, 0o644)
                .file("etc/group", "vcap:x:3000:\n", 0o644)
                .file("etc/hosts", "10.0.0.1 db\n", 0o644),
            Compression::Plain,
        )
        .write_docker_archive(&with_vcap);
    let dir = unpack(&with_vcap, ImageFormat::DockerArchive).unwrap();
    assert_eq!(fs::read_to_string(dir.join("etc/passwd")).unwrap(), passwd);
    assert_eq!(
        fs::read_to_string(dir.join("etc/hosts")).unwrap(),
        "10.0.0.1 db\n"
    );
    assert!(!dir.join("home/vcap").exists());
}

#[test]
fn a_symlinked_passwd_is_replaced_by_what_it_points_to_inside_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let host_file = tmp.path().join("host-passwd");
    fs::write(&host_file, "host:x:0:0::/:/bin/sh\n").unwrap();
    let path = tmp.path().join("links.tar");
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .symlink("etc/passwd", host_file.to_str().unwrap())
                .file("usr/share/group", "staff:x:50:\n", 0o644)
                .symlink("etc/group", "../usr/share/group"),
            Compression::Plain,
        )
        .write_oci_tar(&path);
    let dir = unpack(&path, ImageFormat::OciLayout).unwrap();
    let passwd = fs::symlink_metadata(dir.join("etc/passwd")).unwrap();
    assert!(passwd.is_file());
    assert_eq!(fs::read_to_string(dir.join("etc/passwd")).unwrap(), passwd_file());
    assert!(fs::symlink_metadata(dir.join("etc/group")).unwrap().is_file());
    assert_eq!(
        fs::read_to_string(dir.join("etc/group")).unwrap(),
        "staff:x:50:\nvcap:x:2000:\n"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host:x:0:0::/:/bin/sh\n");
}
