//! The BBS: Diego's API server and the only writer of the store.
//!
//! Layers (never the other way): `handlers` (parse, call one controller, map errors) →
//! `controllers` (lifecycle rules over the model's pure transitions, compare-and-swap
//! retries) → `diego_store::Store`. `events` turns the store's change feed into Diego's
//! event stream over SSE. Depends on `diego-model`, `diego-store` and `diego-client` (route
//! constants, rep client); never on `diego-cli`.

pub mod active;
pub mod auction_requests;
pub mod callbacks;
pub mod config;
pub mod contract;
pub mod controllers;
pub mod converger;
pub mod error;
pub mod events;
pub mod extract;
pub mod follower;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod rep_notify;
pub mod state;

pub use config::{BbsConfig, StoreConfig};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use diego_client::routes::bbs as r;
use diego_model::{Clock, SystemClock};
use diego_store::DynStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handlers::{
    actual_lrps, cells, desired_lrps, evacuation, events as event_handlers, locks, system, tasks,
};
use crate::state::{AppState, Bbs};

#[derive(Debug, thiserror::Error)]
pub enum BbsError {
    #[error("opening the store: {0}")]
    Store(#[from] diego_store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Member(#[from] diego_runtime::SupervisorError),
}

/// A BBS serving in the background.
pub struct RunningBbs {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Finishes when `shutdown` is cancelled and in-flight requests have drained.
    pub task: JoinHandle<Result<(), BbsError>>,
}

impl RunningBbs {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Opens the store named by `config.store`, binds `config.listen` and serves until
/// `shutdown` is cancelled.
pub async fn start(config: BbsConfig, shutdown: CancellationToken) -> Result<RunningBbs, BbsError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, clock.clone()).await?;
    start_with_store(config, store, clock, shutdown).await
}

/// Opens the configured store backend.
pub async fn open_store(config: &BbsConfig, clock: Arc<dyn Clock>) -> Result<DynStore, BbsError> {
    Ok(match &config.store {
        StoreConfig::Sqlite { data_dir } => {
            let options = diego_store::sqlite::SqliteOptions {
                change_retention: config.event_retention,
                ..Default::default()
            };
            Arc::new(diego_store::sqlite::SqliteStore::open(data_dir, clock, options)?)
        }
        StoreConfig::Memory => Arc::new(diego_store::memory::MemoryStore::new(
            clock,
            config.event_retention,
        )),
        StoreConfig::Etcd(options) => {
            let options = diego_store::etcd::EtcdOptions {
                change_retention: config.event_retention,
                ..options.clone()
            };
            Arc::new(diego_store::etcd::EtcdStore::connect(options, clock).await?)
        }
    })
}

/// Serves over an already-open store with an injected clock (tests use a manual clock).
pub async fn start_with_store(
    config: BbsConfig,
    store: DynStore,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<RunningBbs, BbsError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| BbsError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| BbsError::Bind {
        addr: config.listen,
        source,
    })?;
    let url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", diego_runtime::tls::scheme(config.tls.as_ref())));
    let role = Arc::new(active::ActiveRole::new(store.clone(), &config.lock, url));
    // Members stop in reverse order: the active work first, then the lock is released, then
    // the API stops answering (event streams end with it).
    let http_stop = CancellationToken::new();
    let serve_limits = config.serve_limits;
    let tls = config.tls.clone();
    let state: AppState = Arc::new(Bbs {
        callbacks: callbacks::Callbacks::new(store.clone(), role.clone(), clock.clone()),
        role: role.clone(),
        converger: Default::default(),
        store,
        clock,
        reps: rep_notify::RepNotifier::new(config.tls.as_ref()),
        metrics: Default::default(),
        shutdown: http_stop.clone(),
        config,
    });
    let app = router(state.clone());
    tracing::info!(%addr, owner = %role.owner(), "BBS listening");
    let mut members = diego_runtime::Supervisor::new(shutdown);
    members.add(
        "bbs http",
        http_stop.clone(),
        diego_runtime::serve(listener, app, http_stop, serve_limits, tls),
    );
    let lock_role = role.clone();
    members.spawn(
        "bbs lock",
        move |stop| async move { lock_role.hold_lock(stop).await },
    );
    members.spawn("bbs active work", move |stop| async move {
        role.while_active(stop, move |token| active_work(state.clone(), token))
            .await
    });
    let task = tokio::spawn(async move { members.wait().await.map_err(BbsError::from) });
    Ok(RunningBbs { addr, task })
}

/// What only the active BBS runs, until `stop` (losing the lock, or shutdown).
async fn active_work(state: AppState, stop: CancellationToken) -> Result<(), diego_runtime::PassError> {
    let from = *state.store.watch_head().borrow();
    let (requester, sender) = auction_requests::AuctionRequester::new(
        state.store.clone(),
        state.config.auction.clone(),
        state.config.tls.as_ref(),
        stop.clone(),
    );
    let convergence = state.config.convergence.clone();
    let sending = async {
        sender.await;
        Ok(())
    };
    tokio::try_join!(
        sending,
        follower::run(state.clone(), requester.clone(), from, stop.clone()),
        converger::run(state.clone(), requester, convergence, stop.clone()),
    )?;
    Ok(())
}

/// Every route of the BBS.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let routes = Router::new()
        .route(r::PING, get(system::ping))
        .route(r::OPENAPI, get(system::openapi))
        .route(r::METRICS, get(system::metrics))
        .route(r::TASKS, get(tasks::list).post(tasks::desire))
        .route(r::TASK, get(tasks::get).delete(tasks::delete))
        .route(r::TASK_START, post(tasks::start))
        .route(r::TASK_COMPLETE, post(tasks::complete))
        .route(r::TASK_REJECT, post(tasks::reject))
        .route(r::TASK_FAIL, post(tasks::fail))
        .route(r::TASK_CANCEL, post(tasks::cancel))
        .route(r::TASK_RESOLVING, post(tasks::resolving))
        .route(
            r::DESIRED_LRPS,
            get(desired_lrps::list).post(desired_lrps::desire),
        )
        .route(
            r::DESIRED_LRP,
            get(desired_lrps::get)
                .patch(desired_lrps::update)
                .delete(desired_lrps::delete),
        )
        .route(r::SCHEDULING_INFOS, get(desired_lrps::scheduling_infos))
        .route(r::SCHEDULING_INFO, get(desired_lrps::scheduling_info))
        .route(r::ACTUAL_LRPS, get(actual_lrps::list))
        .route(r::ACTUAL_LRP, get(actual_lrps::get))
        .route(r::ACTUAL_LRP_CLAIM, post(actual_lrps::claim))
        .route(r::ACTUAL_LRP_START, post(actual_lrps::start))
        .route(r::ACTUAL_LRP_CRASH, post(actual_lrps::crash))
        .route(r::ACTUAL_LRP_FAIL, post(actual_lrps::fail))
        .route(r::PLACEMENT_FAILURES, post(actual_lrps::placement_failures))
        .route(r::ACTUAL_LRP_REMOVE, post(actual_lrps::remove))
        .route(r::ACTUAL_LRP_RETIRE, post(actual_lrps::retire))
        .route(r::ACTUAL_LRP_EVACUATE_RUNNING, post(evacuation::evacuate_running))
        .route(r::ACTUAL_LRP_EVACUATE_CLAIMED, post(evacuation::evacuate_claimed))
        .route(r::ACTUAL_LRP_EVACUATE_CRASHED, post(evacuation::evacuate_crashed))
        .route(r::ACTUAL_LRP_EVACUATE_STOPPED, post(evacuation::evacuate_stopped))
        .route(
            r::ACTUAL_LRP_REMOVE_EVACUATING,
            post(evacuation::remove_evacuating),
        )
        .route(r::DOMAINS, get(cells::list_domains).post(cells::upsert_domain))
        .route(r::CELLS, get(cells::list_cells).post(cells::register_cell))
        .route(r::LAPSED_CELLS, get(cells::list_lapsed_cells))
        .route(r::CELL, axum::routing::delete(cells::remove_cell))
        .route(
            r::LOCK,
            get(locks::get).post(locks::acquire).delete(locks::release),
        )
        .route(r::EVENTS_LRPS, get(event_handlers::lrps))
        .route(r::EVENTS_TASKS, get(event_handlers::tasks))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body));
    diego_runtime::metrics::record_requests(routes, &state.metrics.registry).with_state(state)
}

/// [`start`], then wait for it to finish.
pub async fn run(config: BbsConfig, shutdown: CancellationToken) -> Result<(), BbsError> {
    let running = start(config, shutdown).await?;
    running.task.await.unwrap_or(Ok(()))
}
