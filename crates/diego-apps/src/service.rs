//! `diego apps`: the HTTP API over the [`AppStore`], the staging callback, and the sync worker
//! that makes the BBS's LRPs in [`DOMAIN`] match the apps (Diego's nsync) and keeps the domain
//! fresh so convergence may remove what no app wants.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_client::{ActualLrpQuery, BbsClient, DesiredLrpQuery};
use diego_fileserver::{Digest, FileServerClient};
use diego_model::cell::UpsertDomainRequest;
use diego_model::task::TaskCallback;
use diego_runtime::ServeLimits;
use diego_runtime::{PassError, Waker, Worker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::model::{self, App, AppSpec, Build, BuildState, Droplet, Known, Package, DOMAIN};
use crate::plan::{self, SyncStep, Urls};
use crate::status::{self, InstanceStatus};
use crate::store::{AppStore, StoreError};
use crate::{metrics::Metrics, routes};

/// The buildpacks the builder tries, in order, unless configured otherwise.
pub const DEFAULT_BUILDPACK_ORDER: [&str; 4] = ["binary", "python", "nodejs", "static"];
/// The domain of apps' default routes (`NAME.<domain>`).
pub const DEFAULT_DOMAIN: &str = "diego.localhost";
/// How often the sync runs unless configured otherwise (Diego's nsync bulker: 30 s).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AppsConfig {
    pub listen: SocketAddr,
    /// Where the apps are kept (`apps.json`).
    pub data_dir: PathBuf,
    pub bbs: diego_client::BbsUrls,
    /// The file server, as this service and the cells reach it.
    pub file_server_url: String,
    /// This service as the BBS reaches it, for staging callbacks [default: `http://` and the
    /// address bound].
    pub external_url: Option<String>,
    /// Where staging logs are read from to say why a staging failed; told to clients.
    pub logs_url: Option<String>,
    /// The router clients reach apps through; told to clients.
    pub router_url: Option<String>,
    pub domain: String,
    /// The stack of an app that names none.
    pub default_stack: String,
    pub buildpack_order: Vec<String>,
    pub sync_interval: Duration,
    pub limits: ServeLimits,
    pub tls: Option<diego_runtime::tls::Tls>,
}

impl AppsConfig {
    pub fn new(
        listen: SocketAddr,
        data_dir: PathBuf,
        bbs: diego_client::BbsUrls,
        file_server_url: &str,
    ) -> Self {
        AppsConfig {
            listen,
            data_dir,
            bbs,
            file_server_url: file_server_url.trim_end_matches('/').to_string(),
            external_url: None,
            logs_url: None,
            router_url: None,
            domain: DEFAULT_DOMAIN.into(),
            default_stack: "debian".into(),
            buildpack_order: DEFAULT_BUILDPACK_ORDER.iter().map(|s| s.to_string()).collect(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            limits: ServeLimits::default(),
            tls: None,
        }
    }
}

/// A started service.
pub struct RunningApps {
    pub addr: SocketAddr,
    pub url: String,
    /// Ends after shutdown: the listener and the sync worker.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// What `GET /v1/info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub file_server_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_url: Option<String>,
    pub domain: String,
    pub default_stack: String,
    pub buildpacks: Vec<String>,
}

/// One app as `GET /v1/apps/{name}` shows it: the app, and its instances as the BBS has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    #[serde(flatten)]
    pub app: App,
    /// `STAGING`, `STAGING_FAILED`, `PENDING` (no droplet yet), `STOPPED` (0 instances) or
    /// `STARTED`.
    pub state: String,
    pub process_guid: String,
    pub running: usize,
    pub instances_status: Vec<InstanceStatus>,
    /// Where to reach the app through the router (`http://HOST[:PORT]/`).
    pub urls: Vec<String>,
}

/// The answer to a package: whether it is being staged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageAnswer {
    pub staging: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    pub app: App,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageRequest {
    digest: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub desired: usize,
    pub updated: usize,
    pub removed: usize,
    pub failed: usize,
}

struct Shared {
    store: AppStore,
    bbs: BbsClient,
    files: FileServerClient,
    logs: Option<diego_logs::LogsClient>,
    /// For the cells' container metrics.
    http: reqwest::Client,
    urls: Urls,
    info: Info,
    /// `:PORT` of the router's URL that apps' URLs carry (empty for port 80 or no router).
    route_port: String,
    sync_waker: Waker,
    sync_interval: Duration,
    /// One sync at a time (the worker's and `POST /v1/sync`'s).
    sync_lock: tokio::sync::Mutex<()>,
    metrics: Metrics,
    registry: Arc<diego_runtime::metrics::Metrics>,
}

type AppState = Arc<Shared>;

/// An API error: a status, Diego's error type and a message.
struct ApiErr(StatusCode, &'static str, String);

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        diego_runtime::error_response(self.0, self.1, &self.2)
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "apps: the store failed");
        ApiErr(StatusCode::INTERNAL_SERVER_ERROR, "UnknownError", e.to_string())
    }
}

impl From<model::FieldError> for ApiErr {
    fn from(e: model::FieldError) -> Self {
        ApiErr(StatusCode::UNPROCESSABLE_ENTITY, "InvalidRequest", e.to_string())
    }
}

fn bad_json(e: JsonRejection) -> ApiErr {
    ApiErr(StatusCode::BAD_REQUEST, "InvalidRequest", e.body_text())
}

fn no_app(name: &str) -> ApiErr {
    ApiErr(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no app is named {name:?}"),
    )
}

fn upstream(what: &str, e: impl std::fmt::Display) -> ApiErr {
    ApiErr(StatusCode::BAD_GATEWAY, "Unavailable", format!("{what}: {e}"))
}

fn now_ms() -> u64 {
    use diego_model::Clock as _;
    (diego_model::SystemClock.now() / 1_000_000) as u64
}

/// Opens the store, binds, and serves and syncs until `shutdown`.
pub async fn start(config: AppsConfig, shutdown: CancellationToken) -> anyhow::Result<RunningApps> {
    use anyhow::Context as _;
    let store = AppStore::open(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let external = config.external_url.clone().unwrap_or_else(|| url.clone());
    let bbs = BbsClient::with_tls(config.bbs.clone(), config.tls.as_ref());
    let files = FileServerClient::with_tls(&config.file_server_url, config.tls.as_ref())?;
    let logs = match &config.logs_url {
        Some(u) => Some(diego_logs::LogsClient::with_tls(u, config.tls.as_ref())?),
        None => None,
    };
    let http = diego_runtime::http_client(config.tls.as_ref()).build()?;
    let worker = Worker::new("apps-sync").every(config.sync_interval);
    let metrics = Metrics::default();
    let shared = Arc::new(Shared {
        store,
        bbs,
        files,
        logs,
        http,
        urls: Urls {
            file_server: config.file_server_url.clone(),
            apps: external.trim_end_matches('/').to_string(),
        },
        info: Info {
            file_server_url: config.file_server_url.clone(),
            logs_url: config.logs_url.clone(),
            router_url: config.router_url.clone(),
            domain: config.domain.clone(),
            default_stack: config.default_stack.clone(),
            buildpacks: config.buildpack_order.clone(),
        },
        route_port: route_port(config.router_url.as_deref()),
        sync_waker: worker.waker(),
        sync_interval: config.sync_interval,
        sync_lock: tokio::sync::Mutex::new(()),
        registry: metrics.build(),
        metrics,
    });
    let app = router(shared.clone());
    let (limits, tls) = (config.limits, config.tls);
    let serve_stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let syncing = {
            let shared = shared.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                worker
                    .run(stop, || {
                        let shared = shared.clone();
                        async move { sync(&shared).await.map(|_| ()) }
                    })
                    .await
            })
        };
        let served = diego_runtime::serve(listener, app, serve_stop, limits, tls).await;
        shutdown.cancel();
        let synced = syncing.await;
        served.context("serving")?;
        synced
            .context("sync worker")?
            .map_err(|e| anyhow::anyhow!("sync worker: {e}"))
    });
    Ok(RunningApps { addr, url, task })
}

fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route(routes::INFO, get(info))
        .route(routes::APPS, get(list_apps))
        .route(routes::APP, get(get_app).put(put_app).delete(delete_app))
        .route(routes::PACKAGES, post(post_package))
        .route(routes::BUILD, get(get_build))
        .route(routes::RESTART, post(restart))
        .route(routes::STAGING_COMPLETED, post(staging_completed))
        .route(routes::GC, post(collect))
        .route(routes::SYNC, post(sync_now))
        .route(routes::HEALTH, get(|| async { "ok\n" }))
        .route(
            routes::METRICS,
            diego_runtime::metrics::endpoint(state.registry.clone()),
        )
        .fallback(diego_runtime::no_such_route);
    diego_runtime::metrics::record_requests(routes, &state.registry).with_state(state)
}

async fn info(State(s): State<AppState>) -> Json<Info> {
    Json(s.info.clone())
}

fn app_state(app: &App) -> &'static str {
    match (&app.build, &app.droplet) {
        (Some(b), _) if b.state == BuildState::Staging => "STAGING",
        (Some(b), None) if b.state == BuildState::Failed => "STAGING_FAILED",
        (_, None) => "PENDING",
        (_, Some(_)) if app.instances == 0 => "STOPPED",
        _ => "STARTED",
    }
}

/// `:PORT` of `router_url` for apps' URLs; empty when there is no router or it is on port 80.
fn route_port(router_url: Option<&str>) -> String {
    router_url
        .and_then(|u| u.trim_end_matches('/').rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| *p != "80" && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|p| format!(":{p}"))
        .unwrap_or_default()
}

fn view(s: &Shared, app: App, actuals: &[diego_model::ActualLrp]) -> AppView {
    let process_guid = app.process_guid();
    let mine = actuals.iter().filter(|a| a.process_guid == process_guid);
    let instances_status = if app.runnable() {
        status::instances(app.instances, mine, model::APP_PORT.into())
    } else {
        Vec::new()
    };
    let urls = app
        .routes
        .iter()
        .map(|h| format!("http://{h}{}/", s.route_port))
        .collect();
    AppView {
        state: app_state(&app).to_string(),
        process_guid,
        running: status::running(&instances_status),
        instances_status,
        urls,
        app,
    }
}

async fn list_apps(State(s): State<AppState>) -> Result<Json<Vec<AppView>>, ApiErr> {
    let apps = s.store.all().await;
    let actuals = s
        .bbs
        .actual_lrps(&ActualLrpQuery {
            domain: Some(DOMAIN.into()),
            ..Default::default()
        })
        .await
        .map_err(|e| upstream("listing the apps' instances from the BBS", e))?;
    Ok(Json(apps.into_values().map(|a| view(&s, a, &actuals)).collect()))
}

async fn app_view(s: &Shared, app: App) -> Result<AppView, ApiErr> {
    let actuals = s
        .bbs
        .actual_lrps(&ActualLrpQuery {
            process_guid: Some(app.process_guid()),
            ..Default::default()
        })
        .await
        .map_err(|e| upstream("reading the app's instances from the BBS", e))?;
    let mut v = view(s, app, &actuals);
    add_usage(s, &mut v.instances_status).await;
    Ok(v)
}

/// Each running instance's memory, disk and CPU, from its cell; an instance whose cell does
/// not answer within a second is shown without.
async fn add_usage(s: &Shared, statuses: &mut [InstanceStatus]) {
    let cells: std::collections::BTreeSet<String> = statuses
        .iter()
        .filter(|st| st.state == "RUNNING")
        .map(|st| st.cell_id.clone())
        .collect();
    if cells.is_empty() {
        return;
    }
    let Ok(presences) = s.bbs.cells().await else {
        return;
    };
    let mut usage = BTreeMap::new();
    for p in presences.iter().map(|p| &p.cell_presence) {
        if !cells.contains(&p.cell_id) {
            continue;
        }
        let rep = diego_client::RepClient::new(&p.rep_url, s.http.clone(), Duration::from_secs(1));
        if let Ok(metrics) = rep.container_metrics().await {
            usage.extend(metrics.into_iter().map(|m| (m.guid.clone(), m)));
        }
    }
    for st in statuses.iter_mut() {
        if let Some(m) = usage.get(&st.instance_guid) {
            st.usage = Some(status::Usage {
                memory_bytes: m.memory_bytes,
                disk_bytes: m.disk_bytes,
                cpu_percent: m.cpu_percent,
            });
        }
    }
}

async fn get_app(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<AppView>, ApiErr> {
    let app = s.store.get(&name).await.ok_or_else(|| no_app(&name))?;
    Ok(Json(app_view(&s, app).await?))
}

async fn put_app(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<AppSpec>, JsonRejection>,
) -> Result<Response, ApiErr> {
    let Json(spec) = body.map_err(bad_json)?;
    model::check_name(&name)?;
    spec.check(&Known {
        buildpacks: &s.info.buildpacks,
    })?;
    let now = now_ms();
    let (app, created) = s
        .store
        .update(|apps| {
            let created = !apps.contains_key(&name);
            let app = apps.entry(name.clone()).or_insert_with(|| App {
                guid: uuid::Uuid::new_v4().to_string(),
                name: name.clone(),
                instances: model::DEFAULT_INSTANCES,
                memory_mb: model::DEFAULT_MEMORY_MB,
                disk_mb: model::DEFAULT_DISK_MB,
                env: BTreeMap::new(),
                routes: vec![format!("{name}.{}", s.info.domain)],
                health_check: Default::default(),
                buildpack: None,
                stack: s.info.default_stack.clone(),
                package: None,
                droplet: None,
                build: None,
                build_cache: None,
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
            });
            if spec.changes_instances(app) && app.runnable() {
                app.version += 1;
            }
            let before = app.clone();
            spec.apply(app);
            if *app != before || created {
                app.updated_at_ms = now;
            }
            Ok::<_, ApiErr>((app.clone(), created))
        })
        .await?;
    s.sync_waker.wake();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(app_view(&s, app).await?)).into_response())
}

async fn delete_app(State(s): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiErr> {
    let app = s
        .store
        .update(|apps| apps.remove(&name).ok_or_else(|| no_app(&name)))
        .await?;
    if let Some(b) = app.build.as_ref().filter(|b| b.state == BuildState::Staging) {
        if let Err(e) = s.bbs.cancel_task(&b.task_guid()).await {
            tracing::info!(app = %name, error = %e, "cancelling the deleted app's staging");
        }
    }
    // Its LRPs go now (with their routes), not at the next sync.
    let lrps = domain_lrps(&s.bbs)
        .await
        .map_err(|e| upstream("listing the LRPs to remove from the BBS", e))?;
    let prefix = format!("{}-", app.guid);
    for lrp in lrps.iter().filter(|l| l.process_guid.starts_with(&prefix)) {
        match s.bbs.remove_desired_lrp(&lrp.process_guid).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(upstream("removing the app's LRP from the BBS", e)),
        }
    }
    tracing::info!(app = %name, guid = %app.guid, "app deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn post_package(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<PackageRequest>, JsonRejection>,
) -> Result<Response, ApiErr> {
    let Json(req) = body.map_err(bad_json)?;
    let digest: Digest = req.digest.parse().map_err(|e| model::FieldError {
        field: "digest".into(),
        problem: format!("{e}"),
    })?;
    if s.store.get(&name).await.is_none() {
        return Err(no_app(&name));
    }
    let held = s
        .files
        .has(&digest)
        .await
        .map_err(|e| upstream("asking the file server for the package", e))?;
    if !held {
        return Err(model::FieldError {
            field: "digest".into(),
            problem: format!("the file server holds no blob {digest}; upload the package there first"),
        }
        .into());
    }
    let now = now_ms();
    enum Next {
        Unchanged(App),
        Staging(App, Build),
        New(App, Build),
    }
    let next = s
        .store
        .update(|apps| {
            let app = apps.get_mut(&name).ok_or_else(|| no_app(&name))?;
            // The same bits again change nothing (and write nothing).
            if app.package.as_ref().is_none_or(|p| p.digest != digest) {
                app.package = Some(Package {
                    digest,
                    uploaded_at_ms: now,
                });
            }
            if let Some(b) = app
                .build
                .as_ref()
                .filter(|b| b.state == BuildState::Staging && b.package_digest == digest)
            {
                return Ok::<_, ApiErr>(Next::Staging(app.clone(), b.clone()));
            }
            let fits = app.droplet.as_ref().is_some_and(|d| {
                d.package_digest == digest && d.requested_buildpack == app.buildpack && d.stack == app.stack
            });
            if fits {
                return Ok(Next::Unchanged(app.clone()));
            }
            let build = Build {
                guid: uuid::Uuid::new_v4().to_string(),
                package_digest: digest,
                state: BuildState::Staging,
                error: None,
                droplet_digest: None,
                started_at_ms: now,
                finished_at_ms: None,
            };
            app.build = Some(build.clone());
            app.updated_at_ms = now;
            Ok(Next::New(app.clone(), build))
        })
        .await?;
    let (app, build) = match next {
        Next::Unchanged(app) => {
            s.sync_waker.wake();
            let answer = PackageAnswer {
                staging: false,
                build: None,
                app,
            };
            return Ok((StatusCode::OK, Json(answer)).into_response());
        }
        Next::Staging(app, build) => (app, build),
        Next::New(app, build) => {
            let req = plan::staging_task(&app, &build, &s.urls, &s.info.buildpacks);
            if let Err(e) = s.bbs.desire_task(&req).await {
                let message = format!("the BBS refused the staging task: {e}");
                finish_build(&s, &build.guid, Err(message.clone())).await?;
                return Err(upstream("staging", message));
            }
            s.metrics.stagings_started.inc();
            tracing::info!(app = %name, build = %build.guid, package = %digest, "staging");
            (app, build)
        }
    };
    let answer = PackageAnswer {
        staging: true,
        build: Some(build),
        app,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

async fn get_build(
    State(s): State<AppState>,
    Path((name, guid)): Path<(String, String)>,
) -> Result<Json<Build>, ApiErr> {
    let app = s.store.get(&name).await.ok_or_else(|| no_app(&name))?;
    app.build.filter(|b| b.guid == guid).map(Json).ok_or_else(|| {
        ApiErr(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("app {name:?} has no build {guid:?}"),
        )
    })
}

async fn restart(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<AppView>, ApiErr> {
    let now = now_ms();
    let app = s
        .store
        .update(|apps| {
            let app = apps.get_mut(&name).ok_or_else(|| no_app(&name))?;
            if !app.runnable() {
                return Err(ApiErr(
                    StatusCode::CONFLICT,
                    "InvalidRequest",
                    format!("app {name:?} has not been staged yet: push it first"),
                ));
            }
            app.version += 1;
            app.updated_at_ms = now;
            Ok(app.clone())
        })
        .await?;
    sync(&s)
        .await
        .map_err(|e| upstream("replacing the instances", e))?;
    Ok(Json(app_view(&s, app).await?))
}

/// Records how build `guid` ended (a droplet, or why not); a build no app has any more (the
/// app was deleted or pushed again meanwhile) changes nothing.
async fn finish_build(
    s: &Shared,
    guid: &str,
    outcome: Result<(Droplet, Option<Digest>), String>,
) -> Result<bool, ApiErr> {
    let now = now_ms();
    s.store
        .update(|apps| {
            let Some(app) = apps.values_mut().find(|a| {
                a.build
                    .as_ref()
                    .is_some_and(|b| b.guid == guid && b.state == BuildState::Staging)
            }) else {
                return Ok(false);
            };
            let build = app.build.as_mut().expect("found by its build");
            build.finished_at_ms = Some(now);
            match outcome {
                Ok((droplet, cache)) => {
                    build.state = BuildState::Staged;
                    build.droplet_digest = Some(droplet.digest);
                    app.droplet = Some(droplet);
                    if cache.is_some() {
                        app.build_cache = cache;
                    }
                    app.version += 1;
                }
                Err(reason) => {
                    build.state = BuildState::Failed;
                    build.error = Some(reason);
                }
            }
            app.updated_at_ms = now;
            Ok::<_, ApiErr>(true)
        })
        .await
}

/// Why a staging failed, in words: when the builder exited non-zero (the Task's reason is
/// `Exit status N`), its own `staging failed: …` line from the staging log if the log server
/// has it; else the Task's failure reason, which already says what failed (a download, an
/// upload).
async fn explain_failure(s: &Shared, app_guid: &str, since_ms: u64, reason: &str) -> String {
    let builder_exited = reason.starts_with("Exit status ");
    if let Some(logs) = s.logs.as_ref().filter(|_| builder_exited) {
        let query = diego_logs::LogQuery {
            since_ns: Some(since_ms.saturating_mul(1_000_000)),
            source: Some(model::STAGING_LOG_SOURCE.into()),
            ..Default::default()
        };
        // The line may reach the log server just after the task completes.
        for _ in 0..10 {
            if let Ok(lines) = logs.recent(app_guid, &query).await {
                if let Some(line) = lines
                    .iter()
                    .rev()
                    .find(|l| l.message.starts_with("staging failed: "))
                {
                    return line.message.trim_start_matches("staging failed: ").to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    reason.to_string()
}

async fn staging_completed(
    State(s): State<AppState>,
    Path(guid): Path<String>,
    body: Result<Json<TaskCallback>, JsonRejection>,
) -> Result<StatusCode, ApiErr> {
    let Json(cb) = body.map_err(bad_json)?;
    let apps = s.store.all().await;
    let Some(app) = apps
        .values()
        .find(|a| a.build.as_ref().is_some_and(|b| b.guid == guid))
        .cloned()
    else {
        tracing::info!(build = %guid, "a staging of no app completed (deleted meanwhile); its droplet is left to collection");
        return Ok(StatusCode::OK);
    };
    let build = app.build.clone().expect("found by its build");
    let mut cache = None;
    let outcome = if cb.failed {
        Err(explain_failure(&s, &app.guid, build.started_at_ms, &cb.failure_reason).await)
    } else {
        match serde_json::from_str::<diego_lifecycle::droplet::StagedDroplet>(&cb.result) {
            Err(e) => Err(format!("the builder's result is not readable: {e}")),
            Ok(staged) => {
                // A cache that did not arrive only makes the next staging start cold.
                if let Some(c) = staged
                    .cache_sha256
                    .as_deref()
                    .and_then(|c| c.parse::<Digest>().ok())
                {
                    if s.files.has(&c).await.unwrap_or(false) {
                        cache = Some(c);
                    }
                }
                match staged.droplet_sha256.parse::<Digest>() {
                    Err(e) => Err(format!("the builder's droplet digest: {e}")),
                    Ok(d) => match s.files.has(&d).await {
                        Ok(true) => Ok(Droplet {
                            digest: d,
                            size: staged.droplet_size,
                            package_digest: build.package_digest,
                            requested_buildpack: app.buildpack.clone(),
                            stack: app.stack.clone(),
                            detected_buildpack: staged.result.detected_buildpack,
                            start_command: staged.result.start_command,
                            staged_at_ms: now_ms(),
                        }),
                        Ok(false) => Err(format!("the droplet {d} was not uploaded to the file server")),
                        // Not known yet: answer 503 so the BBS tries again.
                        Err(e) => {
                            return Err(ApiErr(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "Unavailable",
                                e.to_string(),
                            ))
                        }
                    },
                }
            }
        }
    };
    let ok = outcome.is_ok();
    if let Err(reason) = &outcome {
        tracing::info!(app = %app.name, build = %guid, reason = %reason, "staging failed");
    }
    if finish_build(&s, &guid, outcome.map(|d| (d, cache))).await? {
        if ok {
            s.metrics.stagings_succeeded.inc();
        } else {
            s.metrics.stagings_failed.inc();
        }
    }
    s.sync_waker.wake();
    Ok(StatusCode::OK)
}

async fn collect(
    State(s): State<AppState>,
    body: Option<Json<GcRequest>>,
) -> Result<Json<diego_fileserver::blobs::GcReport>, ApiErr> {
    let grace = body.and_then(|Json(r)| r.grace_seconds);
    let keep: HashSet<Digest> = s.store.all().await.values().flat_map(App::blobs).collect();
    let keep: Vec<Digest> = keep.into_iter().collect();
    let report = s
        .files
        .collect(&keep, grace)
        .await
        .map_err(|e| upstream("collecting the file server's blobs", e))?;
    Ok(Json(report))
}

async fn sync_now(State(s): State<AppState>) -> Result<Json<SyncReport>, ApiErr> {
    sync(&s).await.map(Json).map_err(|e| upstream("syncing", e))
}

/// One sync: the BBS's LRPs in the domain made to match the apps, stagings whose Task has
/// vanished marked failed, and the domain kept fresh when every step succeeded.
async fn sync(s: &Shared) -> Result<SyncReport, PassError> {
    let _one = s.sync_lock.lock().await;
    let lrps = domain_lrps(&s.bbs).await.map_err(PassError::retry)?;
    let apps = s.store.all().await;
    let mut report = SyncReport::default();
    for step in plan::sync_steps(apps.values(), &lrps, &s.urls) {
        let (done, what) = match &step {
            SyncStep::Desire(lrp) => (s.bbs.desire_lrp(lrp).await.map(|_| ()), &mut report.desired),
            SyncStep::Update { process_guid, update } => (
                s.bbs.update_desired_lrp(process_guid, update).await.map(|_| ()),
                &mut report.updated,
            ),
            SyncStep::Remove { process_guid } => match s.bbs.remove_desired_lrp(process_guid).await {
                Err(e) if e.is_not_found() => (Ok(()), &mut report.removed),
                other => (other, &mut report.removed),
            },
        };
        match done {
            Ok(()) => *what += 1,
            Err(e) => {
                report.failed += 1;
                tracing::warn!(step = ?step_name(&step), error = %e, "apps sync: a step failed");
            }
        }
    }
    check_stagings(s, &apps).await;
    s.metrics.sync_desired.inc_by(report.desired as u64);
    s.metrics.sync_updated.inc_by(report.updated as u64);
    s.metrics.sync_removed.inc_by(report.removed as u64);
    if report.failed > 0 {
        return Err(PassError::retry(format!("{} sync steps failed", report.failed)));
    }
    // Fresh for a few intervals: a sync that stops running lets the domain lapse, and then
    // convergence leaves extra instances alone rather than act on a stale view.
    let ttl = (s.sync_interval * 4).as_secs().max(30) as i64;
    s.bbs
        .upsert_domain(&UpsertDomainRequest {
            domain: DOMAIN.into(),
            ttl_seconds: ttl,
        })
        .await
        .map_err(PassError::retry)?;
    if report != SyncReport::default() {
        tracing::info!(?report, "apps sync");
    }
    Ok(report)
}

/// The BBS's LRPs in the apps' domain.
async fn domain_lrps(bbs: &BbsClient) -> diego_client::Result<Vec<diego_model::DesiredLrpSchedulingInfo>> {
    bbs.scheduling_infos(&DesiredLrpQuery {
        domain: Some(DOMAIN.into()),
        ..Default::default()
    })
    .await
}

fn step_name(step: &SyncStep) -> String {
    match step {
        SyncStep::Desire(l) => format!("desire {}", l.process_guid),
        SyncStep::Update { process_guid, .. } => format!("update {process_guid}"),
        SyncStep::Remove { process_guid } => format!("remove {process_guid}"),
    }
}

/// A staging whose Task the BBS no longer has, and that no callback finished, failed.
async fn check_stagings(s: &Shared, apps: &crate::store::Apps) {
    let now = now_ms();
    for app in apps.values() {
        let Some(b) = app.build.as_ref().filter(|b| b.state == BuildState::Staging) else {
            continue;
        };
        if now.saturating_sub(b.started_at_ms) < 10_000 {
            continue;
        }
        match s.bbs.task(&b.task_guid()).await {
            Err(e) if e.is_not_found() => {
                let reason = "the staging task is gone from the BBS without a result".to_string();
                if matches!(finish_build(s, &b.guid, Err(reason)).await, Ok(true)) {
                    s.metrics.stagings_failed.inc();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_port;

    #[test]
    fn apps_urls_carry_the_routers_port_unless_it_is_80() {
        for (router, port) in [
            (Some("http://127.0.0.1:8080"), ":8080"),
            (Some("http://127.0.0.1:8080/"), ":8080"),
            (Some("http://127.0.0.1:80"), ""),
            (Some("http://router.example"), ""),
            (None, ""),
        ] {
            assert_eq!(route_port(router), port, "{router:?}");
        }
    }
}
