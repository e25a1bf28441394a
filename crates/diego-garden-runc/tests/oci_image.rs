//! Containers from local images with real runc (root; needs runc and busybox-static): a
//! `docker save` tarball and an OCI image layout tarball whose layers hold the busybox tree
//! plus a marker file, each unpacked once into the store and shared by its containers.

mod common;

use std::path::Path;

use diego_garden::{ContainerBackend, ContainerSpec, ExitStatus, ProcessSpec};
use diego_garden_runc::image::testing::{Compression, ImageBuilder, LayerBuilder};
use diego_garden_runc::RootfsStore;

const TOOLS: &[&str] = &["runc", "/bin/busybox", "mount", "umount", "kill"];

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        path: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

/// Stdout, stderr and exit status of a process run to its end.
async fn run(
    backend: &diego_garden_runc::RuncBackend,
    handle: &str,
    spec: ProcessSpec,
) -> (String, String, ExitStatus) {
    common::collect(backend.run(handle, spec).await.unwrap().events).await
}

fn image_dirs(store: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(store.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sha256-") && !n.ends_with(".lock"))
        .collect();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_processes_in_containers_from_a_docker_archive_and_an_oci_layout_tarball() {
    let Some(sandbox) = common::Sandbox::new("oci_image_run", TOOLS, 3) else {
        return;
    };
    let busybox = RootfsStore::new(sandbox.root.join("busybox-store"), None)
        .resolve("preloaded:busybox")
        .unwrap();
    let images = sandbox.root.join("images");
    std::fs::create_dir(&images).unwrap();

    // One layer: busybox and the marker, as `docker save` writes it (uncompressed).
    let docker = images.join("busybox-docker.tar");
    let docker_id = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .tree(&busybox)
                .file("marker", "from docker save\n", 0o644),
            Compression::Plain,
        )
        .write_docker_archive(&docker)
        .id;
    // Two layers, gzip then plain: the second adds the marker and deletes the image's users,
    // so the backend's default user comes from the passwd the unpacker writes.
    let oci = images.join("busybox-oci.tar");
    let oci_id = ImageBuilder::new()
        .layer(LayerBuilder::new().tree(&busybox), Compression::Gzip)
        .layer(
            LayerBuilder::new()
                .file("marker", "from an OCI layout\n", 0o644)
                .whiteout("etc/passwd")
                .whiteout("etc/group"),
            Compression::Plain,
        )
        .write_oci_tar(&oci)
        .id;

    let cases = [
        (
            format!("docker-archive://{}", docker.display()),
            "from docker save\n",
        ),
        (format!("oci://{}", oci.display()), "from an OCI layout\n"),
    ];
    for (rootfs, marker) in cases {
        let handle = common::unique("img");
        sandbox
            .backend
            .create(ContainerSpec {
                handle: handle.clone(),
                rootfs: rootfs.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating a container from {rootfs}: {e}"));

        let (out, err, exit) = run(&sandbox.backend, &handle, sh("cat /marker")).await;
        assert_eq!(
            (out.as_str(), err.as_str(), exit.code),
            (marker, "", 0),
            "{rootfs}"
        );

        let (out, err, exit) = run(&sandbox.backend, &handle, sh("echo out; echo err >&2; exit 3")).await;
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"), "{rootfs}");
        assert_eq!(
            exit,
            ExitStatus {
                code: 3,
                signal: None,
                oom_killed: false
            },
            "{rootfs}"
        );

        let (out, err, _) = run(&sandbox.backend, &handle, sh("id -u; id -un; pwd")).await;
        assert_eq!(out, "2000\nvcap\n/home/vcap\n", "{rootfs}: stderr {err}");

        sandbox.backend.destroy(&handle).await.unwrap();
    }

    // Each image was unpacked once into the store, keyed by its id, and outlives its containers.
    let store = sandbox.root.join("store");
    let mut expected = vec![
        format!("sha256-{}", &docker_id[7..]),
        format!("sha256-{}", &oci_id[7..]),
    ];
    expected.sort();
    assert_eq!(image_dirs(&store), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_one_image_share_its_tree_but_not_their_writes() {
    let Some(sandbox) = common::Sandbox::new("oci_image_shared", TOOLS, 3) else {
        return;
    };
    let busybox = RootfsStore::new(sandbox.root.join("busybox-store"), None)
        .resolve("preloaded:busybox")
        .unwrap();
    let layout = sandbox.root.join("layout");
    ImageBuilder::new()
        .layer(
            LayerBuilder::new().tree(&busybox).file("marker", "base\n", 0o644),
            Compression::Gzip,
        )
        .write_oci_dir(&layout);
    let rootfs = format!("oci://{}", layout.display());

    let (a, b) = (common::unique("img-a"), common::unique("img-b"));
    let spec = |handle: &str| ContainerSpec {
        handle: handle.into(),
        rootfs: rootfs.clone(),
        ..Default::default()
    };
    let (made_a, made_b) = tokio::join!(sandbox.backend.create(spec(&a)), sandbox.backend.create(spec(&b)));
    made_a.unwrap();
    made_b.unwrap();
    assert_eq!(image_dirs(&sandbox.root.join("store")).len(), 1);

    let mut write = sh("echo changed > /marker");
    write.user = "root".into();
    let (_, err, exit) = run(&sandbox.backend, &a, write).await;
    assert_eq!(exit.code, 0, "stderr: {err}");
    let (out, _, _) = run(&sandbox.backend, &a, sh("cat /marker")).await;
    assert_eq!(out, "changed\n");
    let (out, _, _) = run(&sandbox.backend, &b, sh("cat /marker")).await;
    assert_eq!(out, "base\n");

    sandbox.backend.destroy(&a).await.unwrap();
    sandbox.backend.destroy(&b).await.unwrap();
    let base = std::fs::read_dir(sandbox.root.join("store/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(base.join("rootfs/marker")).unwrap(),
        "base\n"
    );
}
