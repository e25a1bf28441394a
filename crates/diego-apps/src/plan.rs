//! Pure translations from apps to the BBS's work: the staging Task of a package, the desired
//! LRP of a staged app, and the steps that make the BBS's LRPs in [`DOMAIN`] match the apps.

use std::collections::{BTreeMap, BTreeSet};

use diego_model::action::DownloadAction;
use diego_model::action::UploadAction;
use diego_model::task::{DesireTaskRequest, TaskDefinition};
use diego_model::{
    Action, Check, CheckDefinition, DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate,
    EnvironmentVariable, Routes, RunAction, CF_ROUTER,
};

use diego_fileserver::{routes, Digest};

use crate::model::{App, Build, HealthCheckType, APP_PORT, DOMAIN, STAGING_LOG_SOURCE};

/// Where the lifecycle lives inside containers.
const LIFECYCLE_DIR: &str = "/tmp/lifecycle";
const BUILDPACKS_DIR: &str = "/tmp/buildpacks";
/// Where the app's bits are staged and where the droplet is unpacked.
const STAGING_APP_DIR: &str = "/tmp/app";
const DROPLET_FILE: &str = "/tmp/droplet.tgz";
const STAGING_RESULT_FILE: &str = "/tmp/staging-result.json";
const CACHE_DIR: &str = "/tmp/cache";
const CACHE_FILE: &str = "/tmp/cache.tgz";
const APP_ROOT: &str = "/home/vcap";
/// The lifecycle bundles on the file server.
pub const LIFECYCLE_BUNDLE: &str = "lifecycle.tgz";
pub const BUILDPACKS_BUNDLE: &str = "buildpacks.tgz";
/// The source type of an instance's lines (with its index: `APP/PROC/WEB/0`), as Cloud
/// Foundry's.
const APP_LOG_SOURCE: &str = "APP/PROC/WEB";
/// Memory of a staging container (Diego's stager's default); its disk is the app's quota, so a
/// package that unpacks larger than the app may be fails its staging.
const STAGING_MEMORY_MB: i32 = 1024;

/// What a plan needs to know about the places around it.
#[derive(Debug, Clone)]
pub struct Urls {
    /// The file server, as cells reach it.
    pub file_server: String,
    /// This service, as the BBS reaches it (the staging callback).
    pub apps: String,
}

impl Urls {
    fn blob(&self, digest: &Digest) -> String {
        format!("{}{}", self.file_server, routes::blob_path(digest))
    }

    /// Where an Upload action POSTs a blob whose digest it does not know.
    fn new_blob(&self) -> String {
        format!("{}{}", self.file_server, routes::BLOBS)
    }

    fn bundle(&self, name: &str) -> String {
        format!("{}{}", self.file_server, routes::lifecycle_path(name))
    }
}

fn download(from: String, to: &str, artifact: &str, cache_key: &str, sha256: Option<&Digest>) -> Action {
    Action {
        download: Some(DownloadAction {
            artifact: artifact.to_string(),
            from,
            to: to.to_string(),
            cache_key: cache_key.to_string(),
            checksum_algorithm: sha256.map(|_| "sha256".to_string()).unwrap_or_default(),
            checksum_value: sha256.map(Digest::hex).unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The lifecycle's executables into `/tmp/lifecycle` (cached on the cell, revalidated by ETag).
fn lifecycle(urls: &Urls) -> Action {
    download(
        urls.bundle(LIFECYCLE_BUNDLE),
        LIFECYCLE_DIR,
        "",
        "lifecycle",
        None,
    )
}

/// The staging Task of `build` (of `app`'s package): download the lifecycle, the buildpacks,
/// the package and the last staging's cache, run the builder, upload the droplet and the new
/// cache; its result is the builder's metadata and its completion calls this service back.
pub fn staging_task(app: &App, build: &Build, urls: &Urls, buildpack_order: &[String]) -> DesireTaskRequest {
    let mut args = vec![
        "--build-dir".to_string(),
        STAGING_APP_DIR.into(),
        "--buildpacks-dir".into(),
        BUILDPACKS_DIR.into(),
        "--buildpack-order".into(),
        buildpack_order.join(","),
        "--cache-dir".into(),
        CACHE_DIR.into(),
        "--output-cache".into(),
        CACHE_FILE.into(),
        "--work-dir".into(),
        "/tmp/staging".into(),
        "--output-droplet".into(),
        DROPLET_FILE.into(),
        "--output-metadata".into(),
        STAGING_RESULT_FILE.into(),
    ];
    if let Some(bp) = &app.buildpack {
        args.push("--buildpack".into());
        args.push(bp.clone());
    }
    // The last staging's cache, when there is one; a cache collected meanwhile only makes
    // this staging start cold.
    let cache = app.build_cache.as_ref().map(|digest| {
        Action::try_(download(
            urls.blob(digest),
            CACHE_DIR,
            "build cache",
            "",
            Some(digest),
        ))
    });
    let mut steps = vec![
        lifecycle(urls),
        download(
            urls.bundle(BUILDPACKS_BUNDLE),
            BUILDPACKS_DIR,
            "",
            "buildpacks",
            None,
        ),
        download(
            urls.blob(&build.package_digest),
            STAGING_APP_DIR,
            "app package",
            "",
            Some(&build.package_digest),
        ),
        Action::run(RunAction {
            path: format!("{LIFECYCLE_DIR}/diego-builder"),
            args,
            ..Default::default()
        }),
        Action {
            upload: Some(UploadAction {
                artifact: "droplet".into(),
                from: DROPLET_FILE.into(),
                to: urls.new_blob(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Action {
            upload: Some(UploadAction {
                artifact: "build cache".into(),
                from: CACHE_FILE.into(),
                to: urls.new_blob(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(c) = cache {
        steps.insert(3, c);
    }
    let action = Action::serial(steps);
    DesireTaskRequest {
        task_guid: build.task_guid(),
        domain: DOMAIN.into(),
        task_definition: TaskDefinition {
            rootfs: format!("preloaded:{}", app.stack),
            action: Some(action),
            memory_mb: STAGING_MEMORY_MB,
            disk_mb: app.disk_mb,
            log_guid: app.guid.clone(),
            log_source: STAGING_LOG_SOURCE.into(),
            result_file: STAGING_RESULT_FILE.into(),
            completion_callback_url: format!(
                "{}{}",
                urls.apps,
                crate::routes::staging_completed_path(&build.guid)
            ),
            annotation: serde_json::json!({"app": app.name, "app_guid": app.guid, "build": build.guid})
                .to_string(),
            ..Default::default()
        },
    }
}

/// The `routes` of `app`'s desired LRP.
pub fn lrp_routes(app: &App) -> Routes {
    let mut routes = Routes::new();
    if !app.routes.is_empty() {
        routes.insert(
            CF_ROUTER.to_string(),
            serde_json::json!([{"hostnames": app.routes, "port": APP_PORT}]),
        );
    }
    routes
}

/// The desired LRP that runs `app`'s droplet (`None` when it has none): download the
/// lifecycle and the droplet, start the droplet's command with the launcher.
pub fn desired_lrp(app: &App, urls: &Urls) -> Option<DesiredLrp> {
    let droplet = app.droplet.as_ref()?;
    let env_app = diego_lifecycle::env::App {
        guid: app.guid.clone(),
        name: app.name.clone(),
        port: APP_PORT,
        memory_mb: app.memory_mb as u64,
        disk_mb: app.disk_mb as u64,
        uris: app.routes.clone(),
    };
    let user: Vec<(String, String)> = app.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let env = diego_lifecycle::env::lrp_env(&env_app, &user)
        .into_iter()
        .map(|(k, v)| EnvironmentVariable::new(&k, &v))
        .collect();
    let check = match app.health_check.kind {
        HealthCheckType::Port => Some(Check::tcp(APP_PORT.into())),
        HealthCheckType::Http => Some(Check::http(
            APP_PORT.into(),
            app.health_check.endpoint.as_deref().unwrap_or("/"),
        )),
        HealthCheckType::Process => None,
    };
    Some(DesiredLrp {
        process_guid: app.process_guid(),
        domain: DOMAIN.into(),
        rootfs: format!("preloaded:{}", droplet.stack),
        instances: app.instances,
        env,
        setup: Some(Action::serial(vec![
            lifecycle(urls),
            download(
                urls.blob(&droplet.digest),
                APP_ROOT,
                "droplet",
                &format!("droplet-{}", droplet.digest),
                Some(&droplet.digest),
            ),
        ])),
        action: Some(Action::run(RunAction {
            path: format!("{LIFECYCLE_DIR}/diego-launcher"),
            args: vec![APP_ROOT.into(), droplet.start_command.clone()],
            ..Default::default()
        })),
        check_definition: check.map(|c| CheckDefinition {
            checks: vec![c],
            ..Default::default()
        }),
        memory_mb: app.memory_mb,
        disk_mb: app.disk_mb,
        ports: vec![APP_PORT.into()],
        routes: lrp_routes(app),
        log_guid: app.guid.clone(),
        log_source: APP_LOG_SOURCE.into(),
        annotation: annotation(app),
        ..Default::default()
    })
}

/// What the LRP's annotation records: which app and which version it runs.
fn annotation(app: &App) -> String {
    serde_json::json!({"app": app.name, "app_guid": app.guid, "version": app.version}).to_string()
}

/// One step of a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// An app whose LRP is missing (never made, or deleted behind the service's back).
    Desire(Box<DesiredLrp>),
    /// An app whose LRP has other instances or routes than the app.
    Update {
        process_guid: String,
        update: DesiredLrpUpdate,
    },
    /// An LRP in the domain no app has (an old version, a deleted app, one made by hand).
    Remove { process_guid: String },
}

/// What makes `lrps` (the BBS's LRPs in [`DOMAIN`]) match `apps`.
pub fn sync_steps<'a>(
    apps: impl IntoIterator<Item = &'a App>,
    lrps: &[DesiredLrpSchedulingInfo],
    urls: &Urls,
) -> Vec<SyncStep> {
    let existing: BTreeMap<&str, &DesiredLrpSchedulingInfo> =
        lrps.iter().map(|l| (l.process_guid.as_str(), l)).collect();
    let mut wanted = BTreeSet::new();
    let mut steps = Vec::new();
    for app in apps {
        let Some(lrp) = desired_lrp(app, urls) else {
            continue;
        };
        wanted.insert(lrp.process_guid.clone());
        match existing.get(lrp.process_guid.as_str()) {
            None => steps.push(SyncStep::Desire(Box::new(lrp))),
            Some(have) => {
                let mut update = DesiredLrpUpdate::default();
                if have.instances != lrp.instances {
                    update.instances = Some(lrp.instances);
                }
                if have.routes != lrp.routes {
                    update.routes = Some(lrp.routes.clone());
                }
                if update != DesiredLrpUpdate::default() {
                    steps.push(SyncStep::Update {
                        process_guid: lrp.process_guid.clone(),
                        update,
                    });
                }
            }
        }
    }
    for guid in existing.keys() {
        if !wanted.contains(*guid) {
            steps.push(SyncStep::Remove {
                process_guid: guid.to_string(),
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Droplet, HealthCheck};

    /// A digest of 32 bytes `hex` (two hex digits) each.
    fn digest(hex: &str) -> Digest {
        hex.repeat(32).parse().unwrap()
    }

    fn urls() -> Urls {
        Urls {
            file_server: "http://127.0.0.1:8892".into(),
            apps: "http://127.0.0.1:8893".into(),
        }
    }

    fn app(name: &str, instances: i32, staged: bool) -> App {
        App {
            guid: format!("{name}-guid"),
            name: name.into(),
            instances,
            memory_mb: 128,
            disk_mb: 256,
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            routes: vec![format!("{name}.diego.localhost")],
            health_check: HealthCheck::default(),
            buildpack: None,
            stack: "busybox".into(),
            package: None,
            droplet: staged.then(|| Droplet {
                digest: digest("ab"),
                size: 10,
                package_digest: digest("cd"),
                requested_buildpack: None,
                stack: "busybox".into(),
                detected_buildpack: "static".into(),
                start_command: "busybox httpd -f -p $PORT".into(),
                staged_at_ms: 1,
            }),
            build: None,
            build_cache: None,
            version: 3,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    fn info(lrp: &DesiredLrp) -> DesiredLrpSchedulingInfo {
        DesiredLrpSchedulingInfo {
            process_guid: lrp.process_guid.clone(),
            domain: lrp.domain.clone(),
            instances: lrp.instances,
            routes: lrp.routes.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn a_staged_app_becomes_an_lrp_that_downloads_its_droplet_and_launches_it() {
        let a = app("web", 2, true);
        let lrp = desired_lrp(&a, &urls()).unwrap();
        assert_eq!(lrp.process_guid, "web-guid-3");
        assert_eq!(lrp.domain, DOMAIN);
        assert_eq!(lrp.rootfs, "preloaded:busybox");
        assert_eq!(lrp.log_guid, "web-guid");
        assert_eq!(lrp.ports, [8080]);
        assert_eq!(
            lrp.routes[CF_ROUTER],
            serde_json::json!([{"hostnames": ["web.diego.localhost"], "port": 8080}])
        );
        let setup = serde_json::to_value(&lrp.setup).unwrap();
        let droplet = &setup["serial"]["actions"][1]["download"];
        assert_eq!(
            droplet["from"],
            format!("http://127.0.0.1:8892/v1/blobs/{}", "ab".repeat(32))
        );
        assert_eq!(droplet["checksum_algorithm"], "sha256");
        assert_eq!(droplet["to"], "/home/vcap");
        let run = lrp.action.as_ref().unwrap().run.as_ref().unwrap();
        assert_eq!(run.path, "/tmp/lifecycle/diego-launcher");
        assert_eq!(run.args, ["/home/vcap", "busybox httpd -f -p $PORT"]);
        let env: Vec<&str> = lrp.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["PORT", "MEMORY_LIMIT", "VCAP_APPLICATION", "GREETING"]);
        assert_eq!(lrp.check_definition.unwrap().checks, [Check::tcp(8080)]);
        assert!(
            desired_lrp(&app("new", 1, false), &urls()).is_none(),
            "nothing to run before staging"
        );
    }

    #[test]
    fn a_staging_task_runs_the_builder_and_calls_back() {
        let mut a = app("web", 1, false);
        a.buildpack = Some("static".into());
        let build = Build {
            guid: "b1".into(),
            package_digest: digest("cd"),
            state: crate::model::BuildState::Staging,
            error: None,
            droplet_digest: None,
            started_at_ms: 1,
            finished_at_ms: None,
        };
        let req = staging_task(&a, &build, &urls(), &["static".into(), "python".into()]);
        assert_eq!(req.task_guid, "staging-b1");
        assert_eq!(req.domain, DOMAIN);
        let def = &req.task_definition;
        assert_eq!(
            (def.log_guid.as_str(), def.log_source.as_str()),
            ("web-guid", "STG")
        );
        assert_eq!(
            def.completion_callback_url,
            "http://127.0.0.1:8893/v1/staging/b1/completed"
        );
        assert_eq!(def.result_file, "/tmp/staging-result.json");
        let action = serde_json::to_value(&def.action).unwrap();
        let steps = action["serial"]["actions"].as_array().unwrap();
        assert_eq!(steps[2]["download"]["checksum_value"], "cd".repeat(32));
        let args: Vec<String> = serde_json::from_value(steps[3]["run"]["args"].clone()).unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--buildpack-order", "static,python"]),
            "{args:?}"
        );
        assert!(
            args.windows(2).any(|w| w == ["--buildpack", "static"]),
            "{args:?}"
        );
        assert_eq!(steps[4]["upload"]["to"], "http://127.0.0.1:8892/v1/blobs");
        assert_eq!(steps[5]["upload"]["from"], "/tmp/cache.tgz");
        assert_eq!(steps.len(), 6, "no cache to give yet");
        a.build_cache = Some(digest("ef"));
        let req = staging_task(&a, &build, &urls(), &["static".into()]);
        let action = serde_json::to_value(&req.task_definition.action).unwrap();
        let steps = action["serial"]["actions"].as_array().unwrap();
        let cache = &steps[3]["try"]["action"]["download"];
        assert_eq!(cache["to"], "/tmp/cache");
        assert_eq!(cache["checksum_value"], "ef".repeat(32));
        assert!(steps[4]["run"].is_object(), "the builder runs after it");
    }

    #[test]
    fn the_sync_desires_what_is_missing_updates_what_differs_and_removes_the_rest() {
        let u = urls();
        let web = app("web", 2, true);
        let api = app("api", 1, true);
        let unstaged = app("new", 1, false);
        let mut api_lrp = info(&desired_lrp(&api, &u).unwrap());
        api_lrp.instances = 5;
        let mut old_version = info(&desired_lrp(&web, &u).unwrap());
        old_version.process_guid = "web-guid-2".into();
        let by_hand = DesiredLrpSchedulingInfo {
            process_guid: "sneaky".into(),
            domain: DOMAIN.into(),
            ..Default::default()
        };
        let steps = sync_steps([&web, &api, &unstaged], &[api_lrp, old_version, by_hand], &u);
        let summary: Vec<String> = steps
            .iter()
            .map(|s| match s {
                SyncStep::Desire(l) => format!("desire {}", l.process_guid),
                SyncStep::Update { process_guid, update } => {
                    format!(
                        "update {process_guid} {:?} {}",
                        update.instances,
                        update.routes.is_some()
                    )
                }
                SyncStep::Remove { process_guid } => format!("remove {process_guid}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "desire web-guid-3",
                "update api-guid-3 Some(1) false",
                "remove sneaky",
                "remove web-guid-2",
            ]
        );
        let in_step = info(&desired_lrp(&web, &u).unwrap());
        assert!(
            sync_steps([&web], &[in_step], &u).is_empty(),
            "nothing to do when they match"
        );
    }
}
