//! The apps layer end to end, on real runc containers (root, runc, busybox-static): `diego
//! dev` with its apps service, file server, router and log server; apps pushed from
//! `examples/` with `diego app push`, reached through the router, scaled, restarted and
//! deleted; stagings that cannot succeed fail with a reason and leave nothing behind; the sync
//! removes an LRP made behind the service's back in its domain and restores one deleted
//! behind it; an archive that would write outside its directory is refused.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diego_apps::AppsClient;
use diego_client::{BbsClient, DesiredLrpQuery};
use diego_fileserver::{Digest, FileServerClient};
use diego_testkit::{eventually, free_port};

mod common;
use common::cluster::start_dev;
use common::{lifecycle_dir, RuncLeftovers, BIN};

const WAIT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Dev {
    bbs: BbsClient,
    apps: AppsClient,
    apps_url: String,
    files: FileServerClient,
    router: String,
}

/// `diego ARGS` with the dev's BBS and apps service: (success, stdout, stderr).
async fn diego(dev: &Dev, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("DIEGO_BBS_URL", dev.bbs.base_url())
        .env("DIEGO_APPS_URL", &dev.apps_url)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /` through the router for `host`: (status, body).
async fn through_router(dev: &Dev, host: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/", dev.router))
        .header("host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

async fn answers(dev: &Dev, host: &str, text: &str) {
    eventually(WAIT, || async {
        let (status, body) = through_router(dev, host).await;
        (status == 200 && body.contains(text))
            .then_some(())
            .ok_or(format!("{host}: {status} {body:.200}"))
    })
    .await;
}

async fn push(dev: &Dev, dir: &Path, extra: &[&str]) -> (bool, serde_json::Value, String) {
    push_on(dev, dir, "busybox", extra).await
}

async fn push_on(dev: &Dev, dir: &Path, stack: &str, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let dir = dir.display().to_string();
    let mut args = vec!["app", "push", &dir, "--stack", stack, "-o", "json"];
    args.extend(extra);
    let (ok, out, err) = diego(dev, &args).await;
    (ok, serde_json::from_str(&out).unwrap_or_default(), err)
}

async fn lrps(dev: &Dev) -> Vec<String> {
    let mut guids: Vec<String> = dev
        .bbs
        .scheduling_infos(&DesiredLrpQuery {
            domain: Some("cf-apps".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.process_guid)
        .collect();
    guids.sort();
    guids
}

async fn held(dev: &Dev, digests: &[Digest]) -> Vec<Digest> {
    let mut out = Vec::new();
    for d in digests {
        if dev.files.has(d).await.unwrap() {
            out.push(*d);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_pushed_routed_scaled_restarted_synced_and_deleted() {
    if !common::runc_usable("apps_are_pushed_routed_scaled_restarted_synced_and_deleted") {
        return;
    }
    // The debian stack (python3, node): built once per machine, cached after.
    let rootfs = diego_cli::commands::rootfs::default_cache_dir();
    let built = std::process::Command::new(BIN)
        .args(["rootfs", "build", "debian", "--cache-dir"])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(built.status.success(), "diego rootfs build debian: {built:?}");
    let rootfs = rootfs.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = RuncLeftovers::for_depot(&dir.path().join("dev/cell-0/depot"));
    let (apps_port, router_port, files_port) = (free_port(), free_port(), free_port());
    let lifecycle = lifecycle_dir().display().to_string();
    let (apps_listen, router_listen, files_listen) = (
        format!("127.0.0.1:{apps_port}"),
        format!("127.0.0.1:{router_port}"),
        format!("127.0.0.1:{files_port}"),
    );
    let (_proc, bbs) = start_dev(
        dir.path(),
        &[
            "--apps-listen",
            &apps_listen,
            "--router-listen",
            &router_listen,
            "--file-server-listen",
            &files_listen,
            "--lifecycle-dir",
            &lifecycle,
            "--max-upload-bytes",
            "2000000",
            "--rootfs-dir",
            &rootfs,
        ],
        1,
    )
    .await;
    let apps_url = format!("http://{apps_listen}");
    let dev = Dev {
        bbs,
        apps: AppsClient::new(&apps_url, None).unwrap(),
        apps_url,
        files: FileServerClient::new(format!("http://{files_listen}")).unwrap(),
        router: format!("http://{router_listen}"),
    };
    eventually(WAIT, || async {
        dev.apps.info().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;

    // A static site and a binary with a Procfile, each staged and answering at its route.
    let (ok, site, err) = push(&dev, &repo().join("examples/static-site"), &[]).await;
    assert!(ok, "push static-site: {err}");
    assert_eq!(site["running"], 1, "{site}");
    assert_eq!(site["droplet"]["detected_buildpack"], "static");
    assert!(err.contains("[STG]"), "the staging log is shown live: {err}");
    answers(&dev, "static-site.diego.localhost", "Hello from static-site").await;
    let (ok, bin, err) = push(&dev, &repo().join("examples/binary-app"), &[]).await;
    assert!(ok, "push binary-app: {err}");
    assert_eq!(bin["droplet"]["detected_buildpack"], "binary");
    answers(&dev, "binary-app.diego.localhost", "binary").await;
    // A Python app reading PORT and a Node.js app, on the debian stack.
    for (app, buildpack, text) in [
        ("python-app", "python", "Hello from python-app, instance 0"),
        ("node-app", "nodejs", "Hello from node-app, instance 0"),
    ] {
        let (ok, view, err) = push_on(&dev, &repo().join("examples").join(app), "debian", &[]).await;
        assert!(ok, "push {app}: {err}");
        assert_eq!(view["droplet"]["detected_buildpack"], buildpack, "{view}");
        assert!(err.contains("[STG]"), "{err}");
        answers(&dev, &format!("{app}.diego.localhost"), text).await;
        let (ok, logs, _) = diego(&dev, &["app", "logs", app]).await;
        assert!(
            ok && logs.contains("[STG]") && logs.contains("[APP/PROC/WEB/0]"),
            "{logs}"
        );
        // Its instance, with what its container uses, from the cell.
        let status = dev.apps.get(app).await.unwrap().instances_status;
        let usage = status[0].usage.as_ref().unwrap_or_else(|| panic!("{status:?}"));
        assert!(usage.memory_bytes > 0, "{status:?}");
    }
    let (ok, logs, _) = diego(&dev, &["app", "logs", "binary-app"]).await;
    assert!(
        ok && logs.contains("[STG]") && logs.contains("staged with buildpack binary"),
        "{logs}"
    );
    let (ok, logs, _) = diego(&dev, &["app", "logs", "static-site"]).await;
    assert!(
        ok && logs.contains("[STG]") && logs.contains("staged with buildpack static"),
        "{logs}"
    );

    // The same bits again: nothing uploaded, nothing staged.
    let (ok, again, err) = push(&dev, &repo().join("examples/static-site"), &[]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("unchanged on the file server") && err.contains("not staging again"),
        "{err}"
    );
    assert_eq!(again["droplet"], site["droplet"]);
    // Staged again (a buildpack named now): the last staging's cache is given to it.
    assert!(
        again["build_cache"].is_string(),
        "the staging left its cache: {again}"
    );
    let (ok, restaged, err) = push(
        &dev,
        &repo().join("examples/static-site"),
        &["--buildpack", "static"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("Downloaded build cache"), "{err}");
    assert_ne!(
        restaged["droplet"]["requested_buildpack"],
        again["droplet"]["requested_buildpack"]
    );
    answers(&dev, "static-site.diego.localhost", "Hello from static-site").await;

    // Scale, restart.
    let (ok, _, err) = diego(&dev, &["app", "scale", "static-site", "-i", "2"]).await;
    assert!(ok, "scale: {err}");
    let view = dev.apps.get("static-site").await.unwrap();
    assert_eq!((view.running, view.app.instances), (2, 2));
    let before = view.process_guid.clone();
    let (ok, _, err) = diego(&dev, &["app", "restart", "static-site"]).await;
    assert!(ok, "restart: {err}");
    let view = dev.apps.get("static-site").await.unwrap();
    assert_ne!(
        view.process_guid, before,
        "new instances under a new process guid"
    );
    assert_eq!(view.running, 2);
    eventually(WAIT, || async {
        let l = lrps(&dev).await;
        (!l.contains(&before))
            .then_some(())
            .ok_or(format!("{before} still desired: {l:?}"))
    })
    .await;
    answers(&dev, "static-site.diego.localhost", "Hello from static-site").await;

    // The sync: an LRP made by hand in the domain goes; the app's LRP deleted behind the
    // service's back comes back.
    let stray = diego_model::DesiredLrp {
        process_guid: "stray".into(),
        domain: "cf-apps".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 0,
        action: Some(diego_model::Action::run(diego_model::RunAction {
            path: "sleep".into(),
            args: vec!["3600".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    dev.bbs.desire_lrp(&stray).await.unwrap();
    dev.bbs.remove_desired_lrp(&view.process_guid).await.unwrap();
    // (The LRP comes back once its old instances are gone: until then the BBS refuses to desire
    // the same process guid again, and the next sync tries again.)
    eventually(WAIT, || async {
        let report = dev.apps.sync().await;
        let l = lrps(&dev).await;
        (l.contains(&view.process_guid) && !l.contains(&"stray".to_string()))
            .then_some(())
            .ok_or(format!("{l:?} after {report:?}"))
    })
    .await;
    answers(&dev, "static-site.diego.localhost", "Hello from static-site").await;

    // Failures leave no LRP, and their blobs go at the next collection.
    let nothing = tempfile::tempdir().unwrap();
    std::fs::write(nothing.path().join("notes.txt"), "no app here").unwrap();
    let (ok, _, err) = push(&dev, nothing.path(), &["--name", "nothing"]).await;
    assert!(!ok, "a directory no buildpack detects");
    assert!(
        err.contains("no buildpack detected this app; tried, in order: binary, python, nodejs, static"),
        "{err}"
    );
    assert_eq!(dev.apps.get("nothing").await.unwrap().state, "STAGING_FAILED");
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("app.py"), "print('hi')\n").unwrap();
    std::fs::write(broken.path().join("requirements.txt"), "no-such-package==1.0\n").unwrap();
    let (ok, _, err) = push(
        &dev,
        broken.path(),
        &["--name", "broken", "--buildpack", "python"],
    )
    .await;
    assert!(!ok, "a failing build step");
    assert!(err.contains("buildpack \"python\" failed at bin/supply"), "{err}");
    let big = tempfile::tempdir().unwrap();
    // Incompressible: the packed directory stays over the limit.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(big.path().join("index.html"), noise).unwrap();
    let (ok, _, err) = push(&dev, big.path(), &["--name", "big"]).await;
    assert!(!ok, "an oversized upload");
    assert!(
        err.contains("more than this file server's limit of 2000000 bytes"),
        "{err}"
    );
    assert!(
        dev.apps.get("big").await.unwrap_err().is_not_found(),
        "no app is made for it"
    );
    let l = lrps(&dev).await;
    assert_eq!(
        l.len(),
        4,
        "only static-site, binary-app, python-app and node-app run: {l:?}"
    );

    // A package that would write outside its directory is refused in the container.
    let escape = format!("/tmp/diego-escape-{}", uuid::Uuid::new_v4());
    let evil = evil_archive(&escape);
    let stored = dev.files.upload(evil.into()).await.unwrap();
    dev.apps.put("evil", &Default::default()).await.unwrap();
    let answer = dev.apps.package("evil", &stored.digest).await.unwrap();
    let build = answer.build.unwrap();
    refused(&dev, "evil", &build.guid).await;
    assert!(!Path::new(&escape).exists(), "nothing was written at {escape}");

    // A package that unpacks larger than the app's disk quota fills only its own container.
    let huge = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(200 << 20);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, "zeros", std::io::repeat(0).take(200 << 20))
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    };
    assert!(huge.len() < 2_000_000, "{} bytes packed", huge.len());
    let stored = dev.files.upload(huge.into()).await.unwrap();
    let spec = diego_apps::AppSpec {
        disk_mb: Some(64),
        ..Default::default()
    };
    dev.apps.put("huge", &spec).await.unwrap();
    let build = dev
        .apps
        .package("huge", &stored.digest)
        .await
        .unwrap()
        .build
        .unwrap();
    refused(&dev, "huge", &build.guid).await;

    // Deleting: the LRP and its route go at once, the blobs at the next collection.
    let site = dev.apps.get("static-site").await.unwrap().app;
    let (ok, _, err) = diego(&dev, &["app", "delete", "static-site"]).await;
    assert!(ok, "delete: {err}");
    assert!(!lrps(&dev).await.iter().any(|g| g.starts_with(&site.guid)));
    eventually(WAIT, || async {
        let (status, body) = through_router(&dev, "static-site.diego.localhost").await;
        (status == 404)
            .then_some(())
            .ok_or(format!("{status} {body:.100}"))
    })
    .await;
    let mut doomed = site.blobs();
    for name in ["nothing", "broken", "evil", "huge", "python-app", "node-app"] {
        doomed.extend(dev.apps.get(name).await.unwrap().app.blobs());
        assert!(diego(&dev, &["app", "delete", name]).await.0, "delete {name}");
    }
    // What the remaining app refers to stays (an empty build cache packs to the same blob for
    // every app).
    let kept = dev.apps.get("binary-app").await.unwrap().app.blobs();
    doomed.retain(|d| !kept.contains(d));
    doomed.sort();
    doomed.dedup();
    assert!(
        doomed.len() >= 7,
        "the failed apps' packages are among them: {doomed:?}"
    );
    assert_eq!(
        held(&dev, &doomed).await.len(),
        doomed.len(),
        "held until collected"
    );
    let (ok, out, err) = diego(&dev, &["app", "gc", "--grace-seconds", "0"]).await;
    assert!(ok && out.contains("deleted"), "{out}{err}");
    assert!(
        held(&dev, &doomed).await.is_empty(),
        "the deleted apps' blobs are gone"
    );
    assert_eq!(held(&dev, &kept).await, kept, "the remaining app's blobs stay");
    answers(&dev, "binary-app.diego.localhost", "binary").await;
}

/// Waits for `name`'s build `guid` to end, and checks the executor refused its package.
async fn refused(dev: &Dev, name: &str, guid: &str) {
    let finished = eventually(WAIT, || async {
        let b = dev.apps.build(name, guid).await.map_err(|e| e.to_string())?;
        (b.state != diego_apps::model::BuildState::Staging)
            .then_some(b)
            .ok_or("staging".to_string())
    })
    .await;
    assert_eq!(finished.state, diego_apps::model::BuildState::Failed, "{name}");
    let why = finished.error.unwrap_or_default();
    assert!(
        why.contains("Copying app package into the container failed"),
        "{name}: {why}"
    );
}

/// A gzipped tar whose second entry writes through a symlink it made (`out -> /tmp`) to
/// `target`, and whose third climbs out with `..`.
fn evil_archive(target: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "out", "/tmp").unwrap();
    let name = Path::new(target).file_name().unwrap().to_str().unwrap();
    let body = b"escaped\n";
    for path in [format!("out/{name}"), format!("../../../../tmp/{name}")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: the tar crate refuses such paths through set_path.
        let bytes = path.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        tar.append(&h, &body[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}
